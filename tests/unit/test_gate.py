# ruff: noqa: E501  (the report snapshot and verdict table read best unwrapped)
"""Evaluation gate: verdict table, champion resolution, report, MR comment, evaluation."""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.moto import AWS_TEST_ENV, moto_fixture
from tfship import cli
from tfship.champion import resolve_champion
from tfship.config import GateConfig, load_config
from tfship.errors import ConfigError, InfraError, ModelError
from tfship.fsutil import atomic_write_json
from tfship.gate import decide, run_gate
from tfship.mr_comment import post_report
from tfship.report import CONFUSION_SIZE_PX, MARKER, plot_confusion, render_markdown, run_report
from tfship.rundir import RunDir

GOOD = {
    "accuracy": 0.97,
    "macro_f1": 0.96,
    "min_class_f1": 0.90,
    "min_class_recall": 0.91,
    "loss": 0.10,
    "p50_latency_ms": 1.0,
    "p95_latency_ms": 2.0,
    "p50_latency_ms_batch32": 3.0,
    "p95_latency_ms_batch32": 4.0,
}
CHAMP = {**GOOD, "accuracy": 0.96, "p95_latency_ms": 1.8}


def gate(**kw: Any) -> GateConfig:
    return GateConfig.model_validate(kw)


# --- verdict table ----------------------------------------------------------------------------

TABLE = [
    # (id, gate config, candidate overrides, champion?, override reason, verdict, exit code)
    ("absolute_min_met", {"absolute": {"accuracy": {"min": 0.95}}}, {}, False, None, "passed", 0),
    (
        "absolute_min_missed",
        {"absolute": {"accuracy": {"min": 0.98}}},
        {},
        False,
        None,
        "failed",
        7,
    ),
    (
        "absolute_max_met",
        {"absolute": {"p95_latency_ms": {"max": 50}}},
        {},
        False,
        None,
        "passed",
        0,
    ),
    (
        "absolute_max_exceeded",
        {"absolute": {"p95_latency_ms": {"max": 1.5}}},
        {},
        False,
        None,
        "failed",
        7,
    ),
    (
        "nan_metric_fails",
        {"absolute": {"loss": {"max": 1.0}}},
        {"loss": math.nan},
        False,
        None,
        "failed",
        7,
    ),
    (
        "change_higher_better_within",
        {"change": {"accuracy": {"max_regression": 0.0}}},
        {},
        True,
        None,
        "passed",
        0,
    ),
    (
        "change_higher_better_regressed",
        {"change": {"accuracy": {"max_regression": 0.005}}},
        {"accuracy": 0.95},
        True,
        None,
        "failed",
        7,
    ),
    (
        "change_lower_better_relative_within",
        {"change": {"p95_latency_ms": {"max_regression": 0.2, "relative": True}}},
        {"p95_latency_ms": 2.15},
        True,
        None,
        "passed",
        0,
    ),
    (
        "change_lower_better_relative_regressed",
        {"change": {"p95_latency_ms": {"max_regression": 0.1, "relative": True}}},
        {"p95_latency_ms": 2.15},
        True,
        None,
        "failed",
        7,
    ),
    (
        "change_explicit_better_flips_direction",
        {"change": {"accuracy": {"max_regression": 0.0, "better": "lower"}}},
        {},
        True,
        None,
        "failed",
        7,
    ),
    (
        "first_run_applies_only_absolute",
        {"absolute": {"accuracy": {"min": 0.95}}, "change": {"accuracy": {"max_regression": 0}}},
        {"accuracy": 0.96},
        False,
        None,
        "passed",
        0,
    ),
    (
        "dry_run_failure_exits_zero",
        {"run_mode": "dry_run", "absolute": {"accuracy": {"min": 0.99}}},
        {},
        False,
        None,
        "dry_run_failed",
        0,
    ),
    (
        "dry_run_pass",
        {"run_mode": "dry_run", "absolute": {"accuracy": {"min": 0.9}}},
        {},
        False,
        None,
        "passed",
        0,
    ),
    ("disabled_needs_no_thresholds", {"run_mode": "disabled"}, {}, False, None, "disabled", 0),
    (
        "disabled_with_failing_thresholds",
        {"run_mode": "disabled", "absolute": {"accuracy": {"min": 0.99}}},
        {},
        False,
        None,
        "disabled",
        0,
    ),
    (
        "override_lets_failure_pass",
        {"absolute": {"accuracy": {"min": 0.99}}},
        {},
        False,
        "relabelled data set, see #12",
        "passed_with_override",
        0,
    ),
    (
        "override_not_needed_keeps_passed",
        {"absolute": {"accuracy": {"min": 0.9}}},
        {},
        False,
        "just in case",
        "passed",
        0,
    ),
]


@pytest.mark.parametrize(
    "cfg,cand,has_champ,reason,verdict,code", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_gate_table_gives_the_exact_verdict_and_exit_code(
    cfg, cand, has_champ, reason, verdict, code
):
    from tfship.gate import VERDICTS

    got, checks, override = decide(
        gate(**cfg),
        {**GOOD, **cand},
        CHAMP if has_champ else None,
        override_reason=reason,
        environ={"GITLAB_USER_LOGIN": "alice"},
    )
    assert got == verdict
    assert int(VERDICTS[got]) == code
    if not has_champ:
        assert all(c.kind == "absolute" for c in checks)
    if reason:
        assert override is not None and override.approver == "alice"
        assert override.applied == (verdict == "passed_with_override")


def test_change_check_records_baseline_bound_and_delta():
    _, checks, _ = decide(
        gate(change={"p95_latency_ms": {"max_regression": 0.1, "relative": True}}),
        {**GOOD, "p95_latency_ms": 2.15},
        CHAMP,
    )
    (c,) = checks
    assert (c.kind, c.baseline, c.passed) == ("change", 1.8, False)
    assert c.bound == pytest.approx(1.98)
    assert c.delta == pytest.approx(0.35)
    assert c.threshold == "<= champion + 10%"
    assert "worse than the champion's 1.8" in c.why


@pytest.mark.parametrize("run_mode", ["enabled", "dry_run"])
def test_no_thresholds_is_a_config_error_never_a_pass(run_mode):
    with pytest.raises(ConfigError, match="no thresholds"):
        decide(gate(run_mode=run_mode), GOOD, CHAMP)


def test_first_run_with_only_change_thresholds_is_a_config_error():
    with pytest.raises(ConfigError, match="first run"):
        decide(gate(change={"accuracy": {"max_regression": 0}}), GOOD, None)


def test_empty_override_reason_is_rejected():
    with pytest.raises(ConfigError, match="override"):
        decide(gate(absolute={"accuracy": {"min": 0.99}}), GOOD, None, override_reason="  ")


def test_override_approver_comes_from_github_actor_and_env_reason():
    verdict, _, ov = decide(
        gate(absolute={"accuracy": {"min": 0.99}}),
        GOOD,
        None,
        environ={
            "CI": "true",
            "GITHUB_EVENT_NAME": "workflow_dispatch",
            "GITHUB_ACTOR": "bob",
            "TFSHIP_GATE_OVERRIDE_REASON": "accepted by PM",
        },
    )
    assert verdict == "passed_with_override"
    assert (ov.approver, ov.approver_source, ov.reason) == ("bob", "GITHUB_ACTOR", "accepted by PM")


@pytest.mark.parametrize(
    "ci_env",
    [
        {"CI": "true", "GITLAB_USER_LOGIN": "alice"},  # an automatic GitLab job
        {"CI": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_ACTOR": "bob"},
    ],
)
def test_an_override_variable_in_an_automatic_ci_job_is_refused_not_applied(ci_env):
    with pytest.raises(ConfigError, match="no person started"):
        decide(
            gate(absolute={"accuracy": {"min": 0.99}}),
            GOOD,
            None,
            environ={**ci_env, "TFSHIP_GATE_OVERRIDE_REASON": "left in the CI settings"},
        )


def test_an_override_variable_in_a_manual_gitlab_job_is_applied():
    verdict, _, ov = decide(
        gate(absolute={"accuracy": {"min": 0.99}}),
        GOOD,
        None,
        environ={
            "CI": "true",
            "CI_JOB_MANUAL": "true",
            "GITLAB_USER_LOGIN": "alice",
            "TFSHIP_GATE_OVERRIDE_REASON": "new label set, see #12",
        },
    )
    assert verdict == "passed_with_override"
    assert ov.approver == "alice"


def test_unknown_gate_metric_is_rejected_at_config_load():
    with pytest.raises(ConfigError, match="unknown metric"):
        load_config(overrides=["gate.absolute={acuracy: {min: 0.9}}"])


# --- run directory fixtures -------------------------------------------------------------------

CLASSES = ["0", "1", "2"]


def metrics_doc(cand: dict[str, float], champ: dict[str, float] | None) -> dict[str, Any]:
    def model(version: int, m: dict[str, float]) -> dict[str, Any]:
        return {
            "path": f"/runs/x/export/{version}",
            "version": version,
            "metrics": m,
            "per_class": {
                c: {"precision": 0.9, "recall": 0.95, "f1": 0.925, "support": 10} for c in CLASSES
            },
            "confusion": [[9, 1, 0], [0, 10, 0], [1, 0, 9]],
            "latency_ms": {"1": {"p50": 1.0, "p95": 2.0}, "32": {"p50": 3.0, "p95": 4.0}},
            "manifest": {"schema": "tfship-manifest/1", "version": version},
        }

    return {
        "schema": "tfship-metrics/1",
        "test_examples": 30,
        "data_fingerprint": "ab" * 32,
        "class_names": CLASSES,
        "candidate": model(3, cand),
        "champion": None
        if champ is None
        else {**model(2, champ), "source": "repository", "label": "stable"},
        "champion_note": "champion: version 2 labelled `stable` in repo"
        if champ
        else "first run: no version of 'digits' is labelled `stable` in repo/models.config",
        "machine": {"cpus": 2},
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    return RunDir(tmp_path / "run").ensure()


def write_metrics(run_dir: RunDir, cand=GOOD, champ=CHAMP) -> None:
    atomic_write_json(run_dir.evaluation / "metrics.json", metrics_doc(cand, champ))


def test_run_gate_writes_every_check_champion_and_override(run_dir):
    write_metrics(run_dir)
    cfg = load_config(
        overrides=[
            "gate.absolute={accuracy: {min: 0.99}}",
            "gate.change={accuracy: {max_regression: 0}}",
        ]
    )
    res = run_gate(cfg, run_dir, override_reason="known", environ={"GITLAB_USER_LOGIN": "carol"})
    doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    assert doc["verdict"] == res.verdict == "passed_with_override"
    assert doc["exit_code"] == 0 and doc["first_run"] is False
    assert doc["champion"]["version"] == 2 and doc["champion"]["manifest"]["version"] == 2
    assert [(c["kind"], c["metric"], c["passed"]) for c in doc["checks"]] == [
        ("absolute", "accuracy", False),
        ("change", "accuracy", True),
    ]
    assert set(doc["checks"][1]) >= {"candidate", "baseline", "threshold", "delta", "passed"}
    assert doc["failed"] == ["absolute:accuracy"]
    assert doc["override"]["approver"] == "carol" and doc["override"]["applied"] is True


@pytest.fixture(autouse=True)
def _only_gate_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser imports every command module; these tests need only the gate's own.
    monkeypatch.setattr(cli, "COMMANDS", ("evaluate", "gate", "report"))


def _cli(run_dir: RunDir, *args: str) -> int:
    config = run_dir.root.parent / "pipeline.yaml"  # no gate section: thresholds via --set
    config.write_text("version: 1\n")
    return cli.main([*args, "--run-dir", str(run_dir.root), "--config", str(config)])


def test_gate_command_exit_codes_are_7_failed_0_passed_3_unconfigured(run_dir, capsys):
    write_metrics(run_dir)
    assert _cli(run_dir, "gate", "--set", "gate.absolute={accuracy: {min: 0.99}}") == 7
    assert _cli(run_dir, "gate", "--set", "gate.absolute={accuracy: {min: 0.9}}") == 0
    assert _cli(run_dir, "gate") == 3
    assert "no thresholds" in capsys.readouterr().err
    assert (
        _cli(
            run_dir,
            "gate",
            "--set",
            "gate.absolute={accuracy: {min: 0.99}}",
            "--override-reason",
            "ok by lead",
        )
        == 0
    )


# --- champion resolution ----------------------------------------------------------------------


def _fake_saved_model(path: Path, version: int) -> None:
    (path / "assets.extra").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"\x08\x01")
    atomic_write_json(
        path / "assets.extra" / "tfship-manifest.json",
        {"schema": "tfship-manifest/1", "version": version},
    )


def _repository(base: Path, labels: str) -> None:
    for v in (1, 2):
        _fake_saved_model(base / "digits" / str(v), v)
    (base / "models.config").write_text(
        'model_config_list {\n  config {\n    name: "digits"\n    base_path: "/models/digits"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 versions: 2 } }\n"
        f"{labels}  }}\n}}\n"
    )


def test_champion_is_the_version_labelled_stable_in_the_model_repository(tmp_path):
    _repository(
        tmp_path,
        '    version_labels { key: "stable" value: 1 }\n'
        '    version_labels { key: "canary" value: 2 }\n',
    )
    cfg = load_config(overrides=[f"gate.champion_repository={tmp_path}"])
    found = resolve_champion(cfg)
    assert found.champion is not None
    assert (found.champion.version, found.champion.label) == (1, "stable")
    assert found.champion.path == str(tmp_path / "digits" / "1")
    assert found.champion.manifest == {"schema": "tfship-manifest/1", "version": 1}


def test_no_stable_label_is_an_explicit_first_run(tmp_path):
    _repository(tmp_path, '    version_labels { key: "canary" value: 2 }\n')
    found = resolve_champion(load_config(overrides=[f"gate.champion_repository={tmp_path}"]))
    assert found.champion is None and found.note.startswith("first run")


def test_empty_repository_is_a_first_run_and_explicit_path_wins(tmp_path):
    cfg = load_config(overrides=[f"gate.champion_repository={tmp_path / 'none'}"])
    assert resolve_champion(cfg).champion is None
    _fake_saved_model(tmp_path / "7", 7)
    assert resolve_champion(cfg, tmp_path / "7").champion.version == 7


def test_stable_label_pointing_at_a_missing_version_is_a_model_error(tmp_path):
    _repository(tmp_path, '    version_labels { key: "stable" value: 5 }\n')
    with pytest.raises(ModelError, match="version 5"):
        resolve_champion(load_config(overrides=[f"gate.champion_repository={tmp_path}"]))


def test_in_ci_a_repository_that_does_not_exist_is_reported_not_called_a_first_run(
    tmp_path, monkeypatch, run_dir
):
    monkeypatch.chdir(tmp_path)  # the default serving.model_repository, ./models, is absent
    found = resolve_champion(load_config(), environ={"CI": "true"})
    assert found.champion is None and found.no_repository
    assert found.note.startswith("no model repository configured")
    assert "change thresholds were skipped" in found.note
    # Outside CI the same situation is the local quick start's first run.
    assert resolve_champion(load_config(), environ={}).note.startswith("first run")

    doc = metrics_doc(GOOD, None)
    atomic_write_json(
        run_dir.evaluation / "metrics.json",
        {**doc, "champion_note": found.note, "no_repository": True},
    )
    cfg = load_config(overrides=["gate.absolute={accuracy: {min: 0.9}}"])
    res = run_gate(cfg, run_dir, environ={})
    gate_doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    assert gate_doc["no_repository"] is True and gate_doc["first_run"] is False
    assert gate_doc["champion_note"].startswith("no model repository configured")
    assert not res.first_run and "no model repository configured" in res.render_text()


moto_endpoint = pytest.fixture(scope="module", name="moto_endpoint")(moto_fixture)


@pytest.fixture()
def s3_champion(moto_endpoint, monkeypatch, tmp_path, request):
    """An S3 model repository (moto_server) whose models.config labels version 1 `stable`."""
    import boto3

    from tfship.serving.repository_s3 import S3Repository

    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    bucket = request.node.name.replace("_", "-")[:40].lower()
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    repo = S3Repository(f"s3://{bucket}/serving", endpoint_url=moto_endpoint)
    _fake_saved_model(tmp_path / "export" / "1", 1)
    (tmp_path / "export" / "1" / "variables").mkdir()
    (tmp_path / "export" / "1" / "variables" / "variables.index").write_bytes(b"\x00" * 4096)
    repo.publish("digits", 1, tmp_path / "export" / "1")
    repo.write_text(
        "models.config",
        'model_config_list { config { name: "digits" base_path: "s3://x/digits" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }\n',
    )
    cfg = load_config(
        overrides=[
            f"serving.model_repository={repo.url}",
            f"serving.s3_endpoint_url={moto_endpoint}",
        ]
    )
    return cfg, repo, tmp_path / "export" / "1"


@pytest.mark.integration
def test_the_stable_champion_in_an_s3_repository_is_downloaded_and_verified(s3_champion, tmp_path):
    cfg, _, published = s3_champion
    found = resolve_champion(cfg, scratch=tmp_path / "scratch", environ={"CI": "true"})
    champ = found.champion
    assert champ is not None and (champ.version, champ.label) == (1, "stable")
    assert champ.path == str(tmp_path / "scratch" / "1")
    from tfship.serving.repository import local_manifest

    assert local_manifest(Path(champ.path)) == local_manifest(published)
    assert champ.manifest == {"schema": "tfship-manifest/1", "version": 1}
    assert found.note.startswith("champion: version 1") and not found.no_repository


@pytest.mark.integration
def test_an_s3_champion_that_does_not_match_its_manifest_is_refused(
    s3_champion, tmp_path, monkeypatch
):
    cfg, _, _ = s3_champion
    from tfship.serving.repository_s3 import S3Repository

    real = S3Repository.version_manifest

    def says_other_bytes(self, model, version):
        files = real(self, model, version)
        return {
            k: (size, "0" * 64) if k == "saved_model.pb" else (size, sha)
            for k, (size, sha) in files.items()
        }

    monkeypatch.setattr(S3Repository, "version_manifest", says_other_bytes)
    with pytest.raises(InfraError, match="does not match the repository"):
        resolve_champion(cfg, scratch=tmp_path / "scratch")


# --- report -----------------------------------------------------------------------------------

EXPECTED_REPORT = f"""{MARKER}
## digits v3: evaluation

:x: **Gate FAILED**: this model may not be deployed (run mode `enabled`)

Compared with the champion v2 labelled `stable` on the same test split.

| check | candidate | champion | threshold | Δ | result | threshold from |
|---|---|---|---|---|---|---|
| accuracy (absolute) | 0.9700 | 0.9600 | >= 0.99 | +0.0100 | :x: | --set gate.absolute (local run by alice) |
| p95_latency_ms (change) | 2.0000 | 1.8000 | <= champion + 10% | +0.2000 | :x: | --set gate.change (local run by alice) |
| loss (change) | 0.1000 | 0.1000 | <= champion | +0.0000 | :white_check_mark: | --set gate.change (local run by alice) |

### Failed checks

- **accuracy** (absolute): 0.97 is below the minimum 0.99 by 0.02.
- **p95_latency_ms** (change): 2 is worse than the champion's 1.8 by 0.2; allowed: <= champion + 10% = 1.98.

<details><summary>Metrics, breakdown, slices and latency</summary>

| metric | candidate | champion | note |
|---|---|---|---|
| accuracy | 0.9700 | 0.9600 |  |
| loss | 0.1000 | 0.1000 |  |
| macro_f1 | 0.9600 | 0.9600 |  |
| min_class_f1 | 0.9000 | 0.9000 |  |
| min_class_recall | 0.9100 | 0.9100 |  |

| class | precision | recall | f1 | support |
|---|---|---|---|---|
| 0 | 0.900 | 0.950 | 0.925 | 10 |
| 1 | 0.900 | 0.950 | 0.925 | 10 |
| 2 | 0.900 | 0.950 | 0.925 | 10 |

| batch size | p50 ms | p95 ms |
|---|---|---|
| 1 | 1.00 | 2.00 |
| 32 | 3.00 | 4.00 |

Test examples: 30; data fingerprint `abababababab`; latency measured on 2 CPU(s) of the CI machine.

</details>

![confusion](confusion.png)
"""


def _failing_gate(run_dir: RunDir) -> None:
    write_metrics(run_dir)
    cfg = load_config(
        env={"GITLAB_USER_LOGIN": "alice"},  # a local run recorded with a stable name
        overrides=[
            "gate.absolute={accuracy: {min: 0.99}}",
            "gate.change={p95_latency_ms: {max_regression: 0.1, relative: true}, loss: {}}",
        ],
    )
    assert run_gate(cfg, run_dir).verdict == "failed"


def test_report_md_matches_the_snapshot_for_a_known_gate_json(run_dir):
    _failing_gate(run_dir)
    gate_doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    metrics = json.loads((run_dir.evaluation / "metrics.json").read_text())
    assert render_markdown(gate_doc, metrics, ["confusion.png"]) == EXPECTED_REPORT


def test_first_run_report_says_there_is_no_champion(run_dir):
    write_metrics(run_dir, champ=None)
    run_gate(load_config(overrides=["gate.absolute={accuracy: {min: 0.9}}"]), run_dir)
    md = run_report(run_dir).report_md.read_text()
    assert "**First run: no champion.** Only absolute thresholds apply." in md
    assert ":white_check_mark: **Gate passed**" in md


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_confusion_png_is_a_valid_png_of_the_expected_size(tmp_path):
    out = plot_confusion([[5, 1], [0, 6]], ["cat", "dog"], tmp_path / "confusion.png")
    assert _png_size(out) == CONFUSION_SIZE_PX


def test_report_appends_the_security_scan_summary_when_the_scan_ran(run_dir):
    write_metrics(run_dir, champ=None)
    run_gate(load_config(overrides=["gate.absolute={accuracy: {min: 0.9}}"]), run_dir)
    (run_dir.root / "scan").mkdir()
    (run_dir.root / "scan" / "summary.md").write_text("## Security scan\n\nall scans passed.\n")
    md = run_report(run_dir).report_md.read_text()
    assert md.index("## Security scan") > md.index("| check |")
    assert md.endswith("all scans passed.\n")


def test_report_plots_training_curves_from_train_json(run_dir):
    _failing_gate(run_dir)
    atomic_write_json(
        run_dir.train_json,
        {
            "history": [
                {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
                {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7},
            ]
        },
    )
    res = run_report(run_dir)
    assert [p.name for p in res.images] == ["confusion.png", "training.png"]
    assert _png_size(res.images[1]) == (800, 320)
    assert "![training](training.png)" in res.report_md.read_text()


# --- merge-request comment against local HTTP servers -----------------------------------------


class FakeApi:
    """A 127.0.0.1 HTTP server that records requests and answers like GitLab/GitHub."""

    def __init__(self, fail: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.comments: dict[int, str] = {}
        self.fail = fail
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                api.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": raw,
                    }
                )
                status, payload = api.respond(
                    self.command, self.path.split("?")[0], raw, self.headers.get("Content-Type", "")
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def respond(self, method: str, path: str, raw: bytes, ctype: str) -> tuple[int, Any]:
        if self.fail:
            return self.fail, {"message": "boom"}
        if path.endswith("/uploads"):
            return 201, {"markdown": "![confusion](/uploads/abc/confusion.png)"}
        if method == "GET" and path.endswith("/user"):  # the token's own (bot) user
            return 200, {"id": 1, "login": "tfship-bot", "username": "tfship-bot"}
        if method == "GET":
            me = {"id": 1, "login": "tfship-bot"}
            return 200, [
                {"id": i, "body": b, "author": me, "user": me} for i, b in self.comments.items()
            ]
        body = json.loads(raw)["body"]
        if method == "POST":
            cid = 100 + len(self.comments)
            self.comments[cid] = body
            return 201, {"id": cid, "body": body}
        cid = int(path.rsplit("/", 1)[1])
        self.comments[cid] = body
        return 200, {"id": cid, "body": body}

    def writes(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if r["method"] != "GET"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    server = FakeApi()
    yield server
    server.close()


@pytest.fixture
def report_dir(run_dir: RunDir) -> RunDir:
    _failing_gate(run_dir)
    run_report(run_dir)
    return run_dir


SECRET = "glpat-SECRET-token-123"


def gitlab_env(url: str) -> dict[str, str]:
    return {
        "CI_API_V4_URL": f"{url}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
        "TFSHIP_GITLAB_TOKEN": SECRET,
    }


def test_gitlab_first_post_creates_the_note_and_second_updates_the_same_note(
    api, report_dir, caplog
):
    caplog.set_level(logging.DEBUG)
    e = gitlab_env(api.url)
    first = post_report(report_dir.evaluation / "report.md", environ=e)
    second = post_report(report_dir.evaluation / "report.md", environ=e)
    assert (first.action, second.action) == ("created", "updated")
    assert first.comment_id == second.comment_id == 100
    notes = "/api/v4/projects/42/merge_requests/7/notes"
    assert api.writes() == [
        ("POST", "/api/v4/projects/42/uploads"),
        ("POST", notes),
        ("POST", "/api/v4/projects/42/uploads"),
        ("PUT", f"{notes}/100"),
    ]
    assert all(r["headers"]["PRIVATE-TOKEN"] == SECRET for r in api.requests)
    upload = api.requests[0]
    assert upload["headers"]["Content-Type"].startswith("multipart/form-data")
    assert b'filename="confusion.png"' in upload["body"] and b"\x89PNG" in upload["body"]
    body = json.loads(api.requests[-1]["body"])["body"]
    assert body.startswith(MARKER) and "![confusion](/uploads/abc/confusion.png)" in body
    assert list(api.comments) == [100]
    assert SECRET not in caplog.text


def test_github_first_post_creates_the_comment_and_second_patches_it(api, report_dir, tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 9}}))
    summary = tmp_path / "summary.md"
    e = {
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "acme/tfship",
        "GITHUB_TOKEN": SECRET,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_RUN_ID": "555",
        "GITHUB_SERVER_URL": "https://github.example",
    }
    first = post_report(report_dir.evaluation / "report.md", environ=e)
    second = post_report(report_dir.evaluation / "report.md", environ=e)
    assert (first.action, second.action) == ("created", "updated")
    assert api.writes() == [
        ("POST", "/repos/acme/tfship/issues/9/comments"),
        ("PATCH", "/repos/acme/tfship/issues/comments/100"),
    ]
    for r in api.requests:
        assert r["headers"]["Authorization"] == f"Bearer {SECRET}"
        assert r["headers"]["X-GitHub-Api-Version"] == "2022-11-28"
    body = json.loads(api.requests[-1]["body"])["body"]
    assert (
        "confusion.png: see [the run's artifacts](https://github.example/acme/tfship/actions/runs/555)"
        in body
    )
    assert MARKER in summary.read_text()


def test_api_failure_is_a_warning_and_keeps_the_gate_exit_code(report_dir, caplog, monkeypatch):
    failing = FakeApi(fail=500)
    try:
        for k, v in gitlab_env(failing.url).items():
            monkeypatch.setenv(k, v)
        assert (
            _cli(report_dir, "gate", "--post", "--set", "gate.absolute={accuracy: {min: 0.99}}")
            == 7
        )
        assert (
            _cli(report_dir, "gate", "--post", "--set", "gate.absolute={accuracy: {min: 0.9}}") == 0
        )
        assert _cli(report_dir, "report", "--post") == 0
    finally:
        failing.close()
    assert "GitLab API" in caplog.text and "HTTP 500" in caplog.text
    assert SECRET not in caplog.text


def test_missing_token_is_a_clear_warning_and_nothing_is_sent(api, report_dir):
    e = {**gitlab_env(api.url), "TFSHIP_GITLAB_TOKEN": ""}
    res = post_report(report_dir.evaluation / "report.md", environ=e)
    assert not res.posted and "TFSHIP_GITLAB_TOKEN is not set" in res.warnings[0]
    assert api.requests == []


# --- evaluation of an exported SavedModel -----------------------------------------------------


def _export_tiny_model(path: Path, seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
    def serve(pixels):
        p = model(pixels)
        return {"probabilities": p, "class_id": tf.argmax(p, axis=-1)}

    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exported")
    _export_tiny_model(root / "1", seed=1)
    _export_tiny_model(root / "2", seed=2)
    return root


@dataclass(frozen=True)
class _TestSplits:
    """The fields run_evaluate reads (built here, not through tfship.data's loaders)."""

    x_test: dict[str, np.ndarray]
    y_test: np.ndarray
    label_names: tuple[str, ...]
    fingerprint: str
    schema: Any = None


def _splits() -> _TestSplits:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (60, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 60).astype(np.int64)
    return _TestSplits({"pixels": x}, y, ("a", "b", "c"), "f" * 64)


@pytest.mark.slow
def test_evaluation_scores_the_serving_signature_of_the_export(exported):
    import tensorflow as tf

    from tfship.evaluate import evaluate_saved_model
    from tfship.task import load_task

    s = _splits()
    ev = evaluate_saved_model(
        exported / "2",
        s.x_test,
        s.y_test,
        task=load_task("classification", {}),
        label_names=s.label_names,
        latency_runs=5,
    )
    probs = (
        tf.saved_model.load(str(exported / "2"))
        .signatures["serving_default"](pixels=tf.constant(s.x_test["pixels"]))["probabilities"]
        .numpy()
    )
    assert ev.version == 2
    assert ev.metrics["accuracy"] == pytest.approx((probs.argmax(1) == s.y_test).mean())
    expected_loss = -np.log(np.clip(probs[np.arange(60), s.y_test], 1e-7, 1)).mean()
    assert ev.metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert np.asarray(ev.confusion).sum() == 60 and len(ev.confusion) == 3
    assert sum(c["support"] for c in ev.per_class.values()) == 60
    assert set(ev.latency_ms) == {"1", "32"}
    assert 0 < ev.metrics["p50_latency_ms"] <= ev.metrics["p95_latency_ms"]


@pytest.mark.slow
def test_evaluate_and_gate_compare_the_newest_export_with_the_stable_champion(exported, tmp_path):
    from tfship.gate import evaluate_and_gate

    run_dir = RunDir(tmp_path / "run")
    shutil.copytree(exported / "2", run_dir.export / "2")
    shutil.copytree(exported / "1", run_dir.export / "1")
    repo = tmp_path / "repo"
    shutil.copytree(exported / "1", repo / "digits" / "1")
    (repo / "models.config").write_text(
        'model_config_list { config { name: "digits" base_path: "/models/digits" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }\n'
    )
    cfg = load_config(
        overrides=[
            f"gate.champion_repository={repo}",
            "gate.latency_runs=5",
            "gate.absolute={accuracy: {min: 0.0}, p50_latency_ms: {max: 10000}}",
            "gate.change={loss: {max_regression: 100}}",
        ]
    )
    out = evaluate_and_gate(cfg, run_dir, splits=_splits())
    assert out.evaluation.candidate.version == 2 and out.evaluation.champion.version == 1
    assert out.gate.verdict == "passed" and out.exit_code == 0
    assert [c.kind for c in out.gate.checks] == ["absolute", "absolute", "change"]
    for name in ("metrics.json", "gate.json", "report.md", "confusion.png"):
        assert (run_dir.evaluation / name).is_file()
    doc = json.loads((run_dir.evaluation / "metrics.json").read_text())
    assert doc["champion"]["label"] == "stable" and doc["test_examples"] == 60
    assert doc["task"]["type"] == "classification" and doc["label_names"] == ["a", "b", "c"]
    # Today's digits keys stay, plus the task's new metric.
    assert set(doc["candidate"]["metrics"]) == set(GOOD) | {"top_k_accuracy"}
    assert len(doc["candidate"]["confusion"]) == 3 and set(doc["candidate"]["per_class"]) == {
        "a",
        "b",
        "c",
    }


@pytest.mark.slow
def test_a_model_without_the_serving_signature_is_a_model_error(exported, tmp_path):
    from tfship.evaluate import evaluate_saved_model
    from tfship.task import load_task

    s = _splits()
    with pytest.raises(ModelError, match=r"not|cannot"):
        evaluate_saved_model(
            tmp_path, s.x_test, s.y_test, task=load_task("classification", {}), label_names="abc"
        )
