"""`tfship data snapshot` / `tfship data changed`: exit 12 when nothing changed, 0 otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfship.cli import main
from tfship.config import load_config
from tfship.data import load_splits
from tfship.datachange import EXPORT_DATA_MANIFEST, run_changed, run_snapshot, scan
from tfship.errors import ConfigError, ExitCode
from tfship.rundir import RunDir

RNG = np.random.default_rng(7)


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(path)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for c, cls in enumerate(("cat", "dog")):
        for i in range(5):
            write_png(root / cls / f"{i}.png", seed=100 * c + i)
    return root


def image_cfg(root: Path):
    return load_config(None, env={}, overrides=["data.source=image_folder", f"data.path={root}"])


def snapshot_args(root: Path, run_dir: Path) -> list[str]:
    return [
        "--set",
        "data.source=image_folder",
        "--set",
        f"data.path={root}",
        "--run-dir",
        str(run_dir),
    ]


def changed_exit(root: Path, since: Path | str) -> int:
    return main(
        [
            "data",
            "changed",
            "--since",
            str(since),
            "--set",
            "data.source=image_folder",
            "--set",
            f"data.path={root}",
            "--output",
            "json",
        ]
    )


def test_scan_fingerprint_equals_the_loaders_fingerprint_for_every_file_source(
    images: Path, tmp_path: Path
) -> None:
    x = RNG.integers(0, 256, size=(30, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    for source, path in (("image_folder", images), ("npz", tmp_path / "d.npz")):
        cfg = load_config(None, env={}, overrides=[f"data.source={source}", f"data.path={path}"])
        assert scan(cfg).fingerprint == load_splits(cfg).fingerprint
        assert scan(cfg).files == load_splits(cfg).files


def test_unchanged_data_exits_with_the_no_change_code(images: Path, tmp_path: Path) -> None:
    assert main(["data", "snapshot", *snapshot_args(images, tmp_path / "run")]) == 0
    assert changed_exit(images, tmp_path / "run") == ExitCode.NO_CHANGE == 12


def test_an_added_file_means_retrain(images: Path, tmp_path: Path) -> None:
    run_snapshot(image_cfg(images), RunDir(tmp_path / "run"))
    write_png(images / "dog" / "new.png", seed=999)
    result = run_changed(image_cfg(images), str(tmp_path / "run"))
    assert (result.changed, result.added, result.exit_code) == (True, ("dog/new.png",), 0)
    assert changed_exit(images, tmp_path / "run" / "data.manifest.json") == 0


def test_a_removed_file_means_retrain(images: Path, tmp_path: Path) -> None:
    run_snapshot(image_cfg(images), RunDir(tmp_path / "run"))
    (images / "cat" / "3.png").unlink()
    result = run_changed(image_cfg(images), str(tmp_path / "run"))
    assert (result.changed, result.removed, result.exit_code) == (True, ("cat/3.png",), 0)


def test_a_modified_file_means_retrain(images: Path, tmp_path: Path) -> None:
    run_snapshot(image_cfg(images), RunDir(tmp_path / "run"))
    write_png(images / "cat" / "0.png", seed=12345)  # same name, same size, new pixels
    result = run_changed(image_cfg(images), str(tmp_path / "run"))
    assert (result.changed, result.modified, result.exit_code) == (True, ("cat/0.png",), 0)


def test_min_changed_files_lets_a_small_change_wait(images: Path, tmp_path: Path) -> None:
    run_snapshot(image_cfg(images), RunDir(tmp_path / "run"))
    write_png(images / "dog" / "new.png", seed=999)
    result = run_changed(image_cfg(images), str(tmp_path / "run"), min_changed_files=2)
    assert (result.changed, result.exit_code) == (False, ExitCode.NO_CHANGE)


def test_the_manifest_written_by_tfship_data_is_a_valid_baseline(
    images: Path, tmp_path: Path
) -> None:
    assert main(["data", *snapshot_args(images, tmp_path / "run")]) == 0  # bare `tfship data`
    assert (tmp_path / "run" / "data.json").is_file()
    assert changed_exit(images, tmp_path / "run") == 12


def test_an_export_with_only_a_fingerprint_is_compared_by_fingerprint(
    images: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export" / "3"
    (export / "assets.extra").mkdir(parents=True)
    fp = scan(image_cfg(images)).fingerprint
    (export / "assets.extra" / "tfship-manifest.json").write_text(
        json.dumps({"schema": "tfship-manifest/1", "data_fingerprint": fp})
    )
    assert changed_exit(images, export) == 12
    write_png(images / "cat" / "extra.png", seed=5)
    result = run_changed(image_cfg(images), str(export))
    assert (result.changed, result.reason) == (True, "fingerprint differs")


def test_built_in_demo_data_is_unchanged_against_its_own_snapshot(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    run_snapshot(cfg, RunDir(tmp_path / "run"))
    assert run_changed(cfg, str(tmp_path / "run")).exit_code == 12


def test_a_missing_baseline_is_a_config_error_naming_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no data manifest there \(looked for .*data.manifest"):
        run_changed(load_config(None, env={}), str(tmp_path / "nowhere"))


def test_champion_without_a_repository_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gate\.champion_repository is not set"):
        run_changed(load_config(None, env={}), "champion")


def test_champion_repository_without_a_labelled_version_means_first_run_retrain(
    tmp_path: Path,
) -> None:
    cfg = load_config(None, env={}, overrides=[f"gate.champion_repository={tmp_path}"])
    result = run_changed(cfg, "champion")
    assert (result.changed, result.exit_code, result.reason) == (
        True,
        0,
        "no champion yet (first run)",
    )


def fake_export(images: Path, export: Path) -> Path:
    """An export's two data records, as tfship.export writes them (tests/unit/test_export.py)."""
    snap = run_snapshot(image_cfg(images), RunDir(export.parent / "snapshot-run"))
    (export / EXPORT_DATA_MANIFEST).parent.mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"")
    (export / EXPORT_DATA_MANIFEST).write_bytes(snap.manifest.read_bytes())
    (export / "assets.extra" / "tfship-manifest.json").write_text(
        json.dumps({"schema": "tfship-manifest/1", "data_fingerprint": snap.fingerprint})
    )
    return export


def test_an_export_with_a_data_manifest_names_the_changed_files(
    images: Path, tmp_path: Path
) -> None:
    export = fake_export(images, tmp_path / "export" / "3")
    assert changed_exit(images, export) == 12
    (images / "cat" / "3.png").unlink()
    write_png(images / "dog" / "0.png", seed=4242)
    result = run_changed(image_cfg(images), str(export))
    assert (result.changed, result.removed, result.modified) == (
        True,
        ("cat/3.png",),
        ("dog/0.png",),
    )
    assert result.reason == "0 added, 1 removed, 1 modified"
    assert result.since == str(export / EXPORT_DATA_MANIFEST)


def test_since_champion_diffs_file_by_file_against_the_stable_versions_data_manifest(
    images: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    fake_export(images, repo / "digits" / "4")
    (repo / "models.config").write_text(
        'model_config_list { config { name: "digits" base_path: "/models/digits" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 4 } } }\n'
    )
    cfg = load_config(
        None,
        env={},
        overrides=[
            "data.source=image_folder",
            f"data.path={images}",
            f"gate.champion_repository={repo}",
        ],
    )
    assert run_changed(cfg, "champion").exit_code == ExitCode.NO_CHANGE
    write_png(images / "cat" / "new.png", seed=77)
    result = run_changed(cfg, "champion")
    assert (result.changed, result.added, result.exit_code) == (True, ("cat/new.png",), 0)
