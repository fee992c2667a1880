"""Statistics in the data stage and their comparison with the champion's, before training.

Tables of CSV data sets against a champion export whose `assets.extra/tfship-statistics.json`
comes from the base data: shifted or new values are drift (recorded, the stage passes); a
dropped, retyped or emptied feature is a schema violation (exit 4, the feature named)."""

from __future__ import annotations

import hashlib
import json
import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tfship.config import load_config
from tfship.data import run_data
from tfship.data.schema import Feature, Kind, Schema
from tfship.data.statistics import (
    DRIFT_FILE,
    EXPORT_STATISTICS,
    STATISTICS_FILE,
    champion_statistics,
    embed_statistics,
    in_memory_statistics,
    statistics_of,
)
from tfship.data.streamed import StreamSplits
from tfship.errors import DataError, ExitCode, InfraError
from tfship.rundir import RunDir

COLORS = ("red", "green", "blue")


def write_csv(path: Path, n: int = 90, *, shift: float = 0.0, colors=COLORS, drop: bool = False,
              numeric_color: bool = False, empty_x: bool = False) -> Path:  # fmt: skip
    rng = np.random.default_rng(0)
    lines = ["x,label" if drop else "x,color,label"]
    for i in range(n):
        x = "" if empty_x else f"{rng.normal(5.0 + shift, 1.0):.3f}"
        color = str(i % 3) if numeric_color else colors[i % len(colors)]
        label = "ab"[i % 2]
        lines.append(f"{x},{label}" if drop else f"{x},{color},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def cfg_for(path: Path, *sets: str) -> Any:
    return load_config(None, env={}, overrides=["data.source=csv", f"data.path={path}", *sets])


@pytest.fixture
def champion(tmp_path: Path) -> Path:
    """An export directory (as the export stage leaves it) holding the base data's statistics."""
    base = write_csv(tmp_path / "base.csv")
    run = RunDir(tmp_path / "champion-run")
    res = run_data(cfg_for(base), run)
    export = tmp_path / "export" / "3"
    entry = embed_statistics(run.root, export, res.fingerprint)
    assert entry is not None
    (export / "assets.extra" / "tfship-manifest.json").write_text(json.dumps({"statistics": entry}))
    return export


def test_in_memory_statistics_describe_every_training_example() -> None:
    schema = Schema(
        (Feature("x", Kind.NUMERIC, "float32", ()), Feature("c", Kind.CATEGORICAL, "string", ())),
        "label",
    )
    x = {"x": np.asarray([1.0, 2.0, np.nan, 5.0], np.float32), "c": np.asarray(["a", "b", "a", ""])}
    doc = in_memory_statistics(schema, x, np.asarray([0, 1, 0, 1]))
    assert doc["examples"] == 4
    num = doc["features"]["x"]
    assert (num["count"], num["missing"], num["min"], num["max"]) == (4, 1, 1.0, 5.0)
    assert num["mean"] == pytest.approx(8 / 3) and num["std"] == pytest.approx(np.std([1, 2, 5]))
    cat = doc["features"]["c"]
    assert cat["missing"] == 1 and cat["top"] == [["a", 2], ["b", 1]]
    assert doc["label"]["top"] == [["0", 2], ["1", 2]]


def test_run_data_writes_statistics_and_records_no_reference_without_a_champion(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path / "run")
    run_data(cfg_for(write_csv(tmp_path / "d.csv")), run)
    stats = json.loads((run.root / STATISTICS_FILE).read_text())
    assert stats["scope"] == "all" and stats["split"] == "train"
    assert set(stats["features"]) == {"x", "color"} and stats["examples"] > 0
    drift = json.loads((run.root / DRIFT_FILE).read_text())
    assert drift["reference"]["available"] is False
    assert "no champion statistics" in drift["reference"]["note"]
    assert drift["drift"] == drift["violations"] == [] and drift["mode"] == "report"


def test_the_same_data_as_the_champion_has_no_drift(tmp_path: Path, champion: Path) -> None:
    run = RunDir(tmp_path / "run")
    run_data(cfg_for(write_csv(tmp_path / "same.csv")), run, champion=champion)
    drift = json.loads((run.root / DRIFT_FILE).read_text())
    assert drift["reference"]["available"] is True
    assert drift["measured"] and drift["drift"] == [] and drift["drifted_features"] == []


DRIFT_TABLE = [
    # (id, csv options, extra config, drifted (feature, check) pairs that must be found)
    ("numeric_mean_shifted_by_4_std", {"shift": 4.0}, [], {("x", "mean_shift")}),
    ("unseen_categories", {"colors": ("red", "purple", "orange")}, [],
     {("color", "unseen_rate"), ("color", "linf")}),
    ("committed_bounds_decide", {"shift": 4.0}, ["gate.data.bounds.mean_shift=10"], set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "sets", "found"), [t[1:] for t in DRIFT_TABLE], ids=[t[0] for t in DRIFT_TABLE]
)
def test_drift_against_the_champion_is_recorded_and_does_not_fail_the_data_stage(
    tmp_path: Path, champion: Path, opts: dict[str, Any], sets: list[str], found: set
) -> None:
    run = RunDir(tmp_path / "run")
    run_data(cfg_for(write_csv(tmp_path / "d.csv", **opts), *sets), run, champion=champion)
    drift = json.loads((run.root / DRIFT_FILE).read_text())
    pairs = {(f["feature"], f["check"]) for f in drift["drift"]}
    assert found <= pairs and (found or not pairs)
    assert drift["drifted_features"] == sorted({f for f, _ in found})
    # Every measured check is recorded, drifted or not, with its bound.
    assert {(f["feature"], f["check"]) for f in drift["measured"]} >= {
        ("x", "mean_shift"),
        ("x", "std_ratio"),
        ("color", "linf"),
        ("color", "unseen_rate"),
        ("color", "missing_rate_change"),
    }


VIOLATIONS = [
    # (id, csv options, feature named, words)
    ("feature_dropped", {"drop": True}, "color", "not in the data"),
    ("feature_retyped", {"numeric_color": True}, "color", "is numeric; the reference has"),
    ("feature_all_missing", {"empty_x": True}, "x", "no values at all"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "feature", "words"), [t[1:] for t in VIOLATIONS], ids=[t[0] for t in VIOLATIONS]
)
def test_a_schema_violation_against_the_champion_fails_with_exit_4(
    tmp_path: Path, champion: Path, opts: dict[str, Any], feature: str, words: str
) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(DataError) as exc:
        run_data(cfg_for(write_csv(tmp_path / "d.csv", **opts)), run, champion=champion)
    assert exc.value.exit_code == ExitCode.DATA == 4
    assert f"'{feature}'" in str(exc.value) and words in str(exc.value)
    recorded = json.loads((run.root / DRIFT_FILE).read_text())["violations"]
    assert [v["feature"] for v in recorded] == [feature]


@pytest.mark.parametrize(
    ("opts", "feature", "words"), [t[1:] for t in VIOLATIONS], ids=[t[0] for t in VIOLATIONS]
)
def test_an_intended_schema_change_is_recorded_not_a_violation(
    tmp_path: Path, champion: Path, opts: dict[str, Any], feature: str, words: str
) -> None:
    # Without gate.data.schema_changes a removed feature could never reach production.
    run = RunDir(tmp_path / "run")
    cfg = cfg_for(write_csv(tmp_path / "d.csv", **opts), f"gate.data.schema_changes=[{feature}]")
    run_data(cfg, run, champion=champion)
    doc = json.loads((run.root / DRIFT_FILE).read_text())
    assert doc["violations"] == []
    assert [(v["feature"], words in v["message"]) for v in doc["expected_schema_changes"]] == [
        (feature, True)
    ]


def test_a_schema_change_intended_for_another_feature_still_fails(
    tmp_path: Path, champion: Path
) -> None:
    cfg = cfg_for(write_csv(tmp_path / "d.csv", drop=True), "gate.data.schema_changes=[x]")
    with pytest.raises(DataError, match=r"gate\.data\.schema_changes") as exc:
        run_data(cfg, RunDir(tmp_path / "run"), champion=champion)
    assert "'color'" in str(exc.value)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"features": {"x": {"type": "numeric"}}}', id="numbers_missing"),
        pytest.param(b'{"features": {"x": 5, "color": [1]}}', id="features_not_objects"),
        pytest.param(b'{"features": {"x": {"type": "numeric", "mean": "a"}}}', id="mean_a_str"),
        pytest.param(b"\xff\xfe not utf-8", id="not_utf8"),
    ],
)
def test_malformed_champion_statistics_are_recorded_not_a_crash(
    tmp_path: Path, champion: Path, raw: bytes
) -> None:
    # Another tfship version's format, or a file edited by hand: no comparison, no traceback.
    (champion / EXPORT_STATISTICS).write_bytes(raw)
    manifest = champion / "assets.extra" / "tfship-manifest.json"
    manifest.write_text(json.dumps({"statistics": {"sha256": hashlib.sha256(raw).hexdigest()}}))
    run = RunDir(tmp_path / "run")
    run_data(cfg_for(write_csv(tmp_path / "d.csv")), run, champion=champion)
    ref = json.loads((run.root / DRIFT_FILE).read_text())["reference"]
    assert ref["available"] is False and ref["error"] is True
    assert "champion" in ref["note"]


def test_embed_statistics_copies_the_file_with_its_sha256(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    res = run_data(cfg_for(write_csv(tmp_path / "d.csv")), run)
    entry = embed_statistics(run.root, tmp_path / "export", res.fingerprint)
    copied = (tmp_path / "export" / EXPORT_STATISTICS).read_bytes()
    assert copied == (run.root / STATISTICS_FILE).read_bytes()
    assert entry == {
        "file": "assets.extra/tfship-statistics.json",
        "sha256": hashlib.sha256(copied).hexdigest(),
        "scope": "all",
        "examples": res.sizes["train"],
    }
    # Statistics of other data than the export's are not embedded; no statistics, nothing.
    assert embed_statistics(run.root, tmp_path / "other", "0" * 64) is None
    assert embed_statistics(tmp_path / "nowhere", tmp_path / "other") is None


def test_champion_statistics_that_do_not_match_their_manifest_are_refused(
    tmp_path: Path, champion: Path
) -> None:
    stats = champion / EXPORT_STATISTICS
    stats.write_text(stats.read_text().replace('"red"', '"RED"'))
    with pytest.raises(DataError, match="do not match the sha256 in its manifest"):
        champion_statistics(cfg_for(tmp_path / "x.csv"), champion)


MODELS_CONFIG = """model_config_list {
  config {
    name: "m"
    base_path: "/models/m"
    model_platform: "tensorflow"
    version_labels { key: "stable" value: 3 }
  }
}
"""


def test_champion_statistics_are_read_from_the_labelled_version_in_the_repository(
    tmp_path: Path, champion: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    cfg = cfg_for(tmp_path / "x.csv", "project.model_name=m", f"serving.model_repository={repo}")
    assert "no `stable` version" in champion_statistics(cfg).note  # no models.config yet
    (repo / "models.config").write_text(MODELS_CONFIG)
    (repo / "m" / "3").mkdir()
    ref = champion_statistics(cfg)
    assert ref.statistics is None and ref.version == 3 and "exported without them" in ref.note
    (repo / "m" / "3").rmdir()
    shutil.copytree(champion, repo / "m" / "3")
    ref = champion_statistics(cfg)
    assert ref.version == 3 and set(ref.statistics["features"]) == {"x", "color"}


def test_streamed_statistics_are_the_profiles_sample_not_a_second_read() -> None:
    sample = {"format": "tfship-statistics/1", "examples": 7, "features": {},
              "sample": {"files": 2, "of_files": 9, "records": 7}}  # fmt: skip
    for profiles, split in (
        ({"all": sample}, "all"),
        ({"validation": {}, "train": sample}, "train"),
    ):
        splits = SimpleNamespace(
            streamed=True,
            fingerprint="f" * 64,
            profiles={k: SimpleNamespace(statistics=v) for k, v in profiles.items()},
        )
        # StreamSplits' own method on a stand-in holding only its profiles (no data read).
        splits.training_statistics = partial(StreamSplits.training_statistics, splits)
        doc = statistics_of(splits)
        assert doc["scope"] == "sample" and doc["split"] == split
        assert doc["sample"]["of_files"] == 9 and doc["fingerprint"] == "f" * 64


def test_an_unreadable_repository_is_recorded_not_a_training_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tfship.data.statistics as statistics

    def unreadable(*_: Any, **__: Any) -> Any:
        raise InfraError("s3://bucket/models.config: access denied")

    monkeypatch.setattr(statistics, "champion_statistics", unreadable)
    run = RunDir(tmp_path / "run")
    run_data(cfg_for(write_csv(tmp_path / "d.csv")), run)
    ref = json.loads((run.root / DRIFT_FILE).read_text())["reference"]
    assert ref["available"] is False and ref["error"] is True and "access denied" in ref["note"]
