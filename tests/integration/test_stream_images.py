"""Image folders streamed with tf.data (issue 16 item 1): class-per-sub-folder files decoded
in the graph, the same pixels as the in-memory path, a stable split on each file's relative
path, the bad-input policy for corrupt and oversized files, S3 through moto, and training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.moto import moto_fixture, use_test_credentials
from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.data.loaders import load_image_folder
from tfship.data.schema import Feature, Kind, Schema
from tfship.data.stream import HashSplit, SplitLocations, StreamOptions, StreamSource
from tfship.data.streamed import StreamSplits
from tfship.errors import DataError, ExitCode

CLASSES = ("cat", "dog", "owl")
PER_CLASS = 24
BUCKET = "tfship-stream-images"


def write_folder(root: Path, *, seed: int = 0, per_class: int = PER_CLASS) -> list[str]:
    """PNG and JPEG files of 6-14 pixels a side under one sub-folder per class; each class
    has its own mean brightness, so a small model can learn it. Returns the relative paths."""
    rng = np.random.default_rng(seed)
    rels = []
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(6, 15, size=2)
            base = 40 + 80 * k
            img = np.clip(rng.normal(base, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
            jpeg = i % 4 == 3
            data = tf.io.encode_jpeg(img, quality=95) if jpeg else tf.io.encode_png(img)
            rel = f"{name}/img{i:03d}.{'jpg' if jpeg else 'png'}"
            (root / rel).write_bytes(data.numpy())
            rels.append(rel)
    (root / "README.txt").write_text("not a class folder: ignored")
    (root / "cat" / "notes.txt").write_text("not an image: ignored")
    return rels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("images")
    return root, write_folder(root)


def schema(channels: int = 3, size: tuple[int, int] = (8, 8)) -> Schema:
    return Schema((Feature("pixels", Kind.IMAGE, "float32", (*size, channels)),), "label")


def opts(**kw: Any) -> StreamOptions:
    return StreamOptions(format="image_folder", shuffle_files=False, cycle_length=4, **kw)


def read_all(src: StreamSource, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with src.named_errors():
        for x, y in src.dataset(16, split=split, epoch=0).as_numpy_iterator():
            xs.append(x["pixels"])
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def make_cfg(root: Path | str, **data: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "data": {
                "source": "image_folder",
                "path": str(root),
                "image_size": [8, 8],
                "channels": 3,
                "stream": {"hash_key": "path", "cycle_length": 4},
                "shuffle_buffer": 32,
                **data,
            },
            "train": {"epochs": 2, "per_replica_batch_size": 8, "progress": "none"},
            "checkpoint": {"every_steps": 4, "keep": 2},
        }
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_streamed_pixels_match_the_in_memory_image_folder(folder, channels):
    root, rels = folder
    src = StreamSource.open(str(root), schema(channels), opts())
    assert [s.rel for s in src.shards] == sorted(rels)  # README.txt, notes.txt left out
    x, y = read_all(src)
    assert x.shape == (len(rels), 8, 8, channels) and x.dtype == np.float32
    assert y.tolist() == [r.split("/")[0].encode() for r in sorted(rels)]

    cfg = make_cfg(root, channels=channels, stream=None)
    mem = load_image_folder(cfg.data)
    mem_x = mem.columns["pixels"]
    order = [f.path for f in mem.files]
    assert order == sorted(rels)
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255
    # Both integer-valued 0..255; the resamplers' kernels differ in detail (see the docs).
    diff = np.abs(x - mem_x)
    assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


def test_an_image_of_the_model_size_is_read_exactly_as_pil_reads_it(tmp_path):
    rng = np.random.default_rng(3)
    for name in CLASSES[:2]:
        (tmp_path / name).mkdir()
        img = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        (tmp_path / name / "a.png").write_bytes(tf.io.encode_png(img).numpy())
    for channels in (1, 3):
        x, _ = read_all(StreamSource.open(str(tmp_path), schema(channels), opts()))
        mem = load_image_folder(make_cfg(tmp_path, channels=channels, stream=None).data)
        assert np.abs(x - mem.columns["pixels"]).max() <= (1 if channels == 1 else 0)


def test_the_hash_split_on_the_relative_path_is_disjoint_complete_and_stable(folder, tmp_path):
    root, rels = folder
    hs = HashSplit("path", 0.2, 0.2)
    seen: dict[str, list[str]] = {}
    for split in ("train", "validation", "test"):
        src = StreamSource.open(str(root), schema(), opts(hash_split=hs))
        files = [s.rel for s in src.split_shards(split)]
        mask = hs.mask(tf.constant(sorted(rels)), split).numpy()
        assert files == [r for r, m in zip(sorted(rels), mask, strict=True) if m]
        seen[split] = files
        # Read in another file order and interleave: the same examples.
        shuffled = StreamSource.open(
            str(root), schema(), replace_opts(hash_split=hs, shuffle_files=True, cycle_length=2)
        )
        _, y1 = read_all(src, split)
        _, y2 = read_all(shuffled, split)
        assert len(y1) == len(files) and sorted(y1.tolist()) == sorted(y2.tolist())
    assert sorted(r for files in seen.values() for r in files) == sorted(rels)
    assert all(seen.values())
    # Adding images never moves the existing ones: the split of a file is its path's alone.
    more = tmp_path / "more"
    write_folder(more, seed=7, per_class=PER_CLASS + 8)
    grown = StreamSource.open(str(more), schema(), opts(hash_split=hs))
    assert set(seen["train"]) <= {s.rel for s in grown.split_shards("train")}


def replace_opts(**kw: Any) -> StreamOptions:
    base = {"format": "image_folder", "shuffle_files": False, "cycle_length": 4, **kw}
    return StreamOptions(**base)


def test_explicit_split_folders_read_each_split_from_its_own_folder(tmp_path):
    for i, split in enumerate(("train", "validation", "test")):
        write_folder(tmp_path / split, seed=i, per_class=4)
    loc = SplitLocations(*(str(tmp_path / s) for s in ("train", "validation", "test")))
    for split in ("train", "validation", "test"):
        src = StreamSource.open("", schema(), opts(split_locations=loc), split=split)
        _, y = read_all(src)
        assert len(y) == 12 and sorted(set(y.tolist())) == [c.encode() for c in CLASSES]


def _corrupt_folder(tmp_path: Path) -> Path:
    write_folder(tmp_path, per_class=6)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    return tmp_path


def test_a_corrupt_image_fails_naming_the_file(tmp_path):
    root = _corrupt_folder(tmp_path)
    src = StreamSource.open(str(root), schema(), opts())
    with pytest.raises(DataError, match=r"broken\.png cannot be decoded") as info:
        read_all(src)
    assert info.value.exit_code == ExitCode.DATA
    assert "on_error: skip" in str(info.value.hint)


def test_a_corrupt_image_is_skipped_and_counted_up_to_the_maximum(tmp_path):
    root = _corrupt_folder(tmp_path)
    src = StreamSource.open(str(root), schema(), opts(on_error="skip", max_bad_records=1))
    _, y = read_all(src)
    assert len(y) == 18 and src.check_skipped() == 1
    strict = StreamSource.open(str(root), schema(), opts(on_error="skip", max_bad_records=0))
    read_all(strict)
    with pytest.raises(DataError, match="1 record"):
        strict.check_skipped()


def test_an_oversized_file_is_refused_or_skipped_before_it_is_read(tmp_path, monkeypatch):
    from tfship.data.stream import pipeline

    write_folder(tmp_path, per_class=4)
    big = tmp_path / "owl" / "big.png"
    big.write_bytes(tf.io.encode_png(np.zeros((64, 64, 3), np.uint8)).numpy() + b"\0" * 4096)
    monkeypatch.setattr(pipeline, "MAX_IMAGE_FILE_BYTES", 4000)
    with pytest.raises(DataError, match=r"big\.png is \d+ bytes; expected at most 4000"):
        StreamSource.open(str(tmp_path), schema(), opts())
    src = StreamSource.open(str(tmp_path), schema(), opts(on_error="skip", max_bad_records=1))
    _, y = read_all(src)
    assert len(y) == 12 and src.check_skipped() == 1


s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)


@pytest.fixture(scope="module")
def s3_images(folder, s3_endpoint: str) -> Any:
    import boto3

    root, rels = folder
    mp = pytest.MonkeyPatch()
    use_test_credentials(mp)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for rel in rels:
        s3.upload_file(str(root / rel), BUCKET, f"images/{rel}")
    yield f"s3://{BUCKET}/images", s3_endpoint
    mp.undo()


def test_an_s3_image_folder_streams_the_same_examples_and_split_as_local(
    folder, s3_images, tmp_path
):
    root, _ = folder
    url, endpoint = s3_images
    hs = HashSplit("path", 0.2, 0.2)
    local = StreamSource.open(str(root), schema(), opts(hash_split=hs))
    remote = StreamSource.open(
        url,
        schema(),
        opts(hash_split=hs, s3_endpoint_url=endpoint, stage_dir=tmp_path / "stage"),
    )
    try:
        assert [s.rel for s in remote.shards] == [s.rel for s in local.shards]
        for split in ("train", "test"):
            lx, ly = read_all(local, split)
            rx, ry = read_all(remote, split)
            np.testing.assert_array_equal(lx, rx)
            np.testing.assert_array_equal(ly, ry)
        assert remote.stager is not None and remote.stager.stats.downloaded_files > 0
        assert remote.stager.stats.evicted_files == remote.stager.stats.downloaded_files
    finally:
        remote.close()


def test_load_splits_counts_from_the_listing_and_a_model_trains_on_the_streamed_folder(
    folder, tmp_path
):
    from tfship.rundir import RunDir
    from tfship.train import run_train

    root, rels = folder
    cfg = make_cfg(root)
    splits = load_splits(cfg)
    assert isinstance(splits, StreamSplits)
    assert splits.label_names == CLASSES
    assert splits.train_size + len(splits.y_val) + len(splits.y_test) == len(rels)
    assert sum(splits.train_label_counts.values()) == splits.train_size
    assert splits.x_val["pixels"].shape == (len(splits.y_val), 8, 8, 3)
    stats = splits.profiles["all"].statistics
    assert stats["label_files"] == {c: PER_CLASS for c in CLASSES}
    assert load_splits(cfg).fingerprint == splits.fingerprint
    result = run_train(cfg, RunDir(tmp_path / "run"), splits=splits)
    assert result.steps == 2 * (splits.train_size // 8)


def test_config_accepts_a_streamed_image_folder_and_refuses_another_hash_key(folder):
    root, _ = folder
    assert make_cfg(root).data.stream is not None
    with pytest.raises(DataError, match="hash_key: path"):
        load_splits(make_cfg(root, stream={"hash_key": "name"}))


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    from tfship.data.stream import pipeline

    write_folder(tmp_path, per_class=4)  # 6-14 pixels a side
    big = np.zeros((20, 20, 3), np.uint8)
    (tmp_path / "dog" / "bomb.png").write_bytes(tf.io.encode_png(big).numpy())
    (tmp_path / "owl" / "bomb.jpg").write_bytes(tf.io.encode_jpeg(big).numpy())
    monkeypatch.setattr(pipeline, "MAX_IMAGE_PIXELS", 15 * 15)
    with pytest.raises(DataError, match=r"bomb\.png cannot be decoded .*more than 225 pixels"):
        read_all(StreamSource.open(str(tmp_path), schema(), opts()))
    src = StreamSource.open(str(tmp_path), schema(), opts(on_error="skip", max_bad_records=2))
    _, y = read_all(src)
    assert len(y) == 12 and src.check_skipped() == 2


def test_an_image_whose_header_size_cannot_be_read_is_refused_before_decoding(tmp_path):
    # decode_image sniffs content, not suffixes, and also decodes WebP, whose header is not
    # read: a WebP named .png could claim any size, so it is refused (fail closed).
    import io

    from PIL import Image, features

    if not features.check("webp"):
        pytest.skip("this Pillow cannot write WebP")
    write_folder(tmp_path, per_class=4)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "WEBP")
    (tmp_path / "dog" / "disguised.png").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"disguised\.png cannot be decoded .*not PNG, JPEG"):
        read_all(StreamSource.open(str(tmp_path), schema(), opts()))
    src = StreamSource.open(str(tmp_path), schema(), opts(on_error="skip", max_bad_records=1))
    _, y = read_all(src)
    assert len(y) == 12 and src.check_skipped() == 1


def test_tfship_run_trains_exports_and_evaluates_a_streamed_image_folder(folder, tmp_path):
    import json

    import yaml

    from tfship import cli

    root, rels = folder
    raw = make_cfg(root).model_dump(mode="json", exclude_defaults=True)
    raw["train"]["epochs"] = 1
    raw["gate"] = {"absolute": {"accuracy": {"min": 0.0}}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    argv = ["run", "--config", str(tmp_path / "pipeline.yaml"), "--run-dir", str(run)]
    argv += ["--set", f"serving.model_repository={tmp_path / 'models'}", "--skip", "scan"]
    assert cli.main(argv) == ExitCode.OK
    data = json.loads((run / "data.json").read_text())
    assert data["label_names"] == list(CLASSES) and data["stream"]["all"]["files"] == len(rels)
    assert sum(data["sizes"].values()) == len(rels)
    assert data["schema"]["features"]["pixels"]["shape"] == [8, 8, 3]
    assert (run / "evaluation" / "metrics.json").is_file()


def test_data_snapshot_lists_and_fingerprints_the_image_folder_as_training_does(folder):
    from tfship.datachange import scan_stream

    root, rels = folder
    cfg = make_cfg(root)
    splits = load_splits(cfg)
    assert scan_stream(cfg).fingerprint == splits.fingerprint
    quick = scan_stream(cfg, with_fingerprint=False)  # README.txt, notes.txt left out
    assert quick.files == splits.files and len(quick.files) == len(rels)
