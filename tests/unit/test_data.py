from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfship.config import load_config
from tfship.data import load_splits, make_dataset, run_data
from tfship.errors import DataError
from tfship.rundir import RunDir

RNG = np.random.default_rng(0)
N_PER_CLASS = 12


def cfg_for(source: str, path: Path | None, **extra: object):
    sets = [f"data.source={source}", "data.image_size=[8, 8]"]
    if path is not None:
        sets.append(f"data.path={path}")
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, env={}, overrides=sets)


def make_image_folder(root: Path, classes=("cat", "dog", "owl")) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(N_PER_CLASS):
            arr = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(arr, mode="L").save(root / c / f"{i}.png")
    return root


def make_arrays(n: int = 36) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, size=(n, 8, 8)).astype(np.float32)
    y = np.arange(n) % 3
    return x, y


def test_demo_data_is_digits_scaled_to_pixel_range() -> None:
    s = load_splits(cfg_for("demo", None))
    assert s.class_names == tuple(str(i) for i in range(10))
    assert s.input_shape == (8, 8, 1)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    assert s.x_train.min() >= 0.0 and s.x_train.max() == 255.0
    assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int64


def test_image_folder_uses_subfolders_as_classes(tmp_path: Path) -> None:
    s = load_splits(cfg_for("image_folder", make_image_folder(tmp_path / "imgs")))
    assert s.class_names == ("cat", "dog", "owl")
    assert len(s.files) == 3 * N_PER_CLASS
    assert sum(map(len, (s.y_train, s.y_val, s.y_test))) == 3 * N_PER_CLASS


def test_image_folder_resizes_to_the_configured_size(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    s = load_splits(cfg_for("image_folder", root, **{"data.image_size": "[4, 6]"}))
    assert s.input_shape == (4, 6, 1)


def test_npz_and_csv_with_the_same_content_give_the_same_arrays(tmp_path: Path) -> None:
    x, y = make_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with (tmp_path / "d.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", *[f"p{i}" for i in range(64)]])
        for xi, yi in zip(x, y, strict=True):
            w.writerow([yi, *xi.ravel().tolist()])
    a = load_splits(cfg_for("npz", tmp_path / "d.npz"))
    b = load_splits(cfg_for("csv", tmp_path / "d.csv"))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.class_names == b.class_names == ("0", "1", "2")


def test_tfrecord_examples_with_encoded_images_load(tmp_path: Path) -> None:
    import io

    import tensorflow as tf

    x, y = make_arrays(30)
    with tf.io.TFRecordWriter(str(tmp_path / "part-0.tfrecord")) as w:
        for xi, yi in zip(x, y, strict=True):
            buf = io.BytesIO()
            Image.fromarray(xi.astype(np.uint8), mode="L").save(buf, format="PNG")
            ex = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[buf.getvalue()])
                        ),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(yi)])),
                    }
                )
            )
            w.write(ex.SerializeToString())
    s = load_splits(cfg_for("tfrecord", tmp_path))
    assert s.input_shape == (8, 8, 1)
    assert sum(map(len, (s.y_train, s.y_val, s.y_test))) == 30
    all_x = np.concatenate([s.x_train, s.x_val, s.x_test])
    assert sorted(all_x.sum(axis=(1, 2, 3)).tolist()) == sorted(x.sum(axis=(1, 2)).tolist())


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    a = load_splits(cfg_for("demo", None))
    b = load_splits(cfg_for("demo", None))
    c = load_splits(cfg_for("demo", None, **{"run.seed": 7}))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)
    # Stratified: every class in every split.
    assert set(a.y_test.tolist()) == set(range(10))


def test_fingerprint_is_stable_and_changes_when_content_changes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    first = load_splits(cfg_for("image_folder", root)).fingerprint
    assert load_splits(cfg_for("image_folder", root)).fingerprint == first
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(root / "cat" / "0.png")
    assert load_splits(cfg_for("image_folder", root)).fingerprint != first


def test_missing_path_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)does not exist.*TFSHIP_DATA_PATH"):
        load_splits(cfg_for("npz", tmp_path / "missing.npz"))


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    (root / "zebra").mkdir()
    with pytest.raises(DataError, match=r"zebra has no images"):
        load_splits(cfg_for("image_folder", root))


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_splits(cfg_for("image_folder", root))


def test_label_and_image_count_mismatch_is_rejected(tmp_path: Path) -> None:
    x, y = make_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y[:-1])
    with pytest.raises(DataError, match=r"'y' shape \(35,\); expected one label per image"):
        load_splits(cfg_for("npz", tmp_path / "d.npz"))


def test_image_shape_mismatch_names_the_expected_shape(tmp_path: Path) -> None:
    x, y = make_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"expected \(n, 5, 5, 1\)"):
        load_splits(cfg_for("npz", tmp_path / "d.npz", **{"data.image_size": "[5, 5]"}))


def test_csv_without_label_column_says_which_setting_to_change(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"data\.csv_label_column"):
        load_splits(cfg_for("csv", tmp_path / "d.csv"))


def test_limit_takes_a_seeded_subset() -> None:
    s = load_splits(cfg_for("demo", None, **{"data.limit": 200}))
    assert sum(map(len, (s.y_train, s.y_val, s.y_test))) == 200


def test_run_data_writes_data_json_with_sizes_and_fingerprint(tmp_path: Path) -> None:
    import json

    res = run_data(cfg_for("demo", None), RunDir(tmp_path / "run"))
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["sizes"] == res.sizes == {"train": 1257, "validation": 270, "test": 270}
    assert data["fingerprint"] == res.fingerprint
    assert sum(data["per_class"]["test"].values()) == 270


def test_make_dataset_shards_per_worker_and_batches_per_replica() -> None:
    import tensorflow as tf

    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    y = np.arange(40, dtype=np.int64)
    ctx = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )
    ds = make_dataset(x, y, global_batch_size=8, shuffle=False, seed=0, input_context=ctx)
    batches = [b[1].numpy().tolist() for b in ds]
    assert batches[0] == [1, 3]  # per-replica batch 8/4 = 2, second of two shards
    assert sum(len(b) for b in batches) == 20
