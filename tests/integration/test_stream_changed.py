"""`tfship data snapshot` / `tfship data changed` with `data.stream` (issue 16): the listing is
compared with the baseline's file list (`diff_listings`), locally and on S3 through moto; exit
0 = changed (retrain), 12 = unchanged."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import stream_shards as ss
from tests.helpers.moto import moto_fixture, use_test_credentials
from tfship.cli import main
from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.datachange import run_changed, scan
from tfship.errors import ExitCode

FILES, PER_FILE = 4, 20


def write_config(tmp: Path, path: str, **stream: Any) -> Path:
    cfg = PipelineConfig.model_validate(
        {
            "data": {
                "source": "tfrecord",
                "path": path,
                "label": "y",
                "features": {"v": {"kind": "numeric", "shape": [3]}},
                "stream": {"hash_key": "id", "hash_key_dtype": "int64", **stream},
            }
        }
    )
    out = tmp / "pipeline.yaml"
    out.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    return out


def snapshot(config: Path, run: Path) -> None:
    assert main(["data", "snapshot", "--config", str(config), "--run-dir", str(run)]) == 0


def changed(config: Path, since: Path | str) -> int:
    return main(["data", "changed", "--config", str(config), "--since", str(since)])


def same_size_rewrite(shard: Path, tmp: Path) -> None:
    """Another content, the same size: x shifted (the NaN positions and sizes stay)."""
    ss.write_tfrecords(tmp / "shifted", FILES, PER_FILE, shift=3.0)
    new = tmp / "shifted" / shard.name
    assert new.stat().st_size == shard.stat().st_size
    assert new.read_bytes() != shard.read_bytes()
    stat = shard.stat()
    shutil.copyfile(new, shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def add(folder: Path, tmp: Path) -> None:
    ss.write_tfrecords(tmp / "extra", 1, PER_FILE, prefix="more")
    shutil.copy(tmp / "extra" / "more-00000.tfrecord", folder)


CHANGES = {
    "unchanged": (lambda folder, tmp: None, ExitCode.NO_CHANGE, None),
    "added": (add, ExitCode.OK, ("added", ("more-00000.tfrecord",))),
    "removed": (
        lambda folder, tmp: (folder / "part-00002.tfrecord").unlink(),
        ExitCode.OK,
        ("removed", ("part-00002.tfrecord",)),
    ),
    "modified, same size": (
        lambda folder, tmp: same_size_rewrite(folder / "part-00001.tfrecord", tmp),
        ExitCode.OK,
        ("modified", ("part-00001.tfrecord",)),
    ),
    "modified, other size": (
        lambda folder, tmp: ss.write_tfrecords(folder, 1, PER_FILE + 3, seed=9),
        ExitCode.OK,
        ("modified", ("part-00000.tfrecord",)),
    ),
}


@pytest.mark.parametrize("case", list(CHANGES))
def test_local_shards_against_a_snapshot(case: str, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    ss.write_tfrecords(folder, FILES, PER_FILE)
    config = write_config(tmp_path, str(folder / "*.tfrecord"))
    snapshot(config, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "data.manifest.json").read_text())
    # The snapshot's fingerprint is the one the stages record; the listing has versions.
    assert (
        recorded["fingerprint"]
        == load_splits(
            PipelineConfig.model_validate(yaml.safe_load(config.read_text()))
        ).fingerprint
    )
    assert all(f["version"] for f in recorded["files"]) and len(recorded["files"]) == FILES
    change, code, expected = CHANGES[case]
    change(folder, tmp_path)
    assert changed(config, tmp_path / "run") == code
    if expected is not None:
        cfg = PipelineConfig.model_validate(yaml.safe_load(config.read_text()))
        result = run_changed(cfg, str(tmp_path / "run"))
        field, names = expected
        assert getattr(result, field) == names and result.changed
        others = {"added", "removed", "modified"} - {field}
        assert not any(getattr(result, f) for f in others)


def test_a_tfship_data_manifest_without_versions_still_sees_a_same_size_rewrite(
    tmp_path: Path,
) -> None:
    # `tfship data` records path, size and "" (no checksum on local disk) and no version:
    # an unchanged listing is then checked against the recorded fingerprint's content sample.
    folder = tmp_path / "shards"
    ss.write_tfrecords(folder, FILES, PER_FILE)
    config = write_config(tmp_path, str(folder))
    assert main(["data", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert changed(config, tmp_path / "run") == ExitCode.NO_CHANGE
    same_size_rewrite(folder / "part-00003.tfrecord", tmp_path)
    cfg = PipelineConfig.model_validate(yaml.safe_load(config.read_text()))
    result = run_changed(cfg, str(tmp_path / "run"))
    assert result.changed and "fingerprint (content sample) differs" in result.reason
    # A baseline with only a fingerprint (an old export's tfship-manifest.json) is compared by it.
    export = tmp_path / "export" / "1" / "assets.extra"
    export.mkdir(parents=True)
    fp = scan(cfg).fingerprint
    (export / "tfship-manifest.json").write_text(json.dumps({"data_fingerprint": fp}))
    assert changed(config, export.parent) == ExitCode.NO_CHANGE


def test_explicit_split_locations_are_listed_per_split(tmp_path: Path) -> None:
    for i, name in enumerate(("train", "validation", "test")):
        ss.write_tfrecords(tmp_path / name, 2, 30, prefix=f"p{i}")
    locations = {s: str(tmp_path / s / "*.tfrecord") for s in ("train", "validation", "test")}
    cfg = PipelineConfig.model_validate(
        {
            "data": {
                "source": "tfrecord",
                "label": "y",
                "features": {"v": {"kind": "numeric", "shape": [3]}},
                "stream": {"locations": locations},
            }
        }
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    snap = scan(cfg)
    assert snap.fingerprint == load_splits(cfg).fingerprint
    snapshot(config, tmp_path / "run")
    assert changed(config, tmp_path / "run") == ExitCode.NO_CHANGE
    (tmp_path / "test" / "p2-00001.tfrecord").unlink()
    result = run_changed(cfg, str(tmp_path / "run"))
    assert result.removed == ("test/p2-00001.tfrecord",) and result.exit_code == 0


s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)


def test_s3_listing_is_compared_by_etag(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    use_test_credentials(monkeypatch)
    bucket = "tfship-changed-test"
    local = tmp_path / "local"
    paths = ss.write_tfrecords(local, FILES, PER_FILE)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for p in paths:
        s3.upload_file(str(p), bucket, f"data/{p.name}")
    config = write_config(
        tmp_path,
        f"s3://{bucket}/data/part-*",
        s3_endpoint_url=s3_endpoint,
        stage_dir=str(tmp_path / "stage"),
    )
    cfg = PipelineConfig.model_validate(yaml.safe_load(config.read_text()))
    snapshot(config, tmp_path / "run")
    assert changed(config, tmp_path / "run") == ExitCode.NO_CHANGE
    # Another content of the same size: the ETag tells.
    ss.write_tfrecords(tmp_path / "shifted", FILES, PER_FILE, shift=3.0)
    shifted = tmp_path / "shifted" / "part-00002.tfrecord"
    assert shifted.stat().st_size == paths[2].stat().st_size
    s3.upload_file(str(shifted), bucket, "data/part-00002.tfrecord")
    result = run_changed(cfg, str(tmp_path / "run"))
    assert (result.modified, result.added, result.removed) == (("part-00002.tfrecord",), (), ())
    assert result.fingerprint is None  # decided by the listing: no shard downloaded
    s3.upload_file(str(paths[0]), bucket, "data/part-00009.tfrecord")
    s3.delete_object(Bucket=bucket, Key="data/part-00001.tfrecord")
    result = run_changed(cfg, str(tmp_path / "run"))
    assert result.added == ("part-00009.tfrecord",) and result.removed == ("part-00001.tfrecord",)
    assert changed(config, tmp_path / "run") == ExitCode.OK
