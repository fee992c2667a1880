from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfship.config import load_config
from tfship.data import Splits, load_splits, make_dataset, run_data, take
from tfship.data.schema import Feature, Kind
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
    assert s.class_names == s.label_names == tuple(str(i) for i in range(10))
    assert s.input_shape == (8, 8, 1)
    assert s.schema.features == (Feature("pixels", Kind.IMAGE, "float32", (8, 8, 1)),)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    x = s.x_train["pixels"]
    assert x.min() >= 0.0 and x.max() == 255.0
    assert x.dtype == np.float32 and s.y_train.dtype == np.int64


def splits_digest(s: Splits) -> str:
    h = hashlib.sha256()
    for part in (s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test):
        h.update(np.ascontiguousarray(part["pixels"] if isinstance(part, dict) else part).tobytes())
    return h.hexdigest()


# Computed with the loader before schemas (git HEAD at the time: every split array's bytes).
DIGITS_DIGESTS = {
    (): "df6b9c3095d9fe3d581ef84c17525d466ebe4e5f481889816ceb5656f7332b44",
    ("run.seed=7",): "991e0da7de78dd03cd532d420362941eb3d3e5dbae3552f8e13b8fe3a8e69fcd",
    ("data.limit=200",): "4cd0bc3d86a69a633ccdef1f825d66f2233c9c25ed8b8d0e5ef5ccb1e12635c9",
}
DIGITS_FINGERPRINT = "6b08e36c4724f6b524c90277ca845a4885afb34373007e75c35117e80318e2fd"


@pytest.mark.parametrize("sets", list(DIGITS_DIGESTS))
def test_the_digits_demo_splits_are_those_of_the_loader_before_schemas(sets) -> None:
    s = load_splits(load_config(None, env={}, overrides=list(sets)))
    assert splits_digest(s) == DIGITS_DIGESTS[sets]
    assert s.fingerprint == DIGITS_FINGERPRINT
    if not sets:
        assert s.y_train[:8].tolist() == [0, 7, 1, 3, 0, 5, 6, 0]


def test_image_folder_uses_subfolders_as_classes(tmp_path: Path) -> None:
    s = load_splits(cfg_for("image_folder", make_image_folder(tmp_path / "imgs")))
    assert s.class_names == ("cat", "dog", "owl")
    assert len(s.files) == 3 * N_PER_CLASS
    assert sum(map(len, (s.y_train, s.y_val, s.y_test))) == 3 * N_PER_CLASS


def test_image_folder_resizes_to_the_configured_size(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    s = load_splits(cfg_for("image_folder", root, **{"data.image_size": "[4, 6]"}))
    assert s.input_shape == (4, 6, 1)


def test_npz_and_csv_with_the_same_content_give_the_same_values(tmp_path: Path) -> None:
    x, y = make_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with (tmp_path / "d.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", *[f"p{i}" for i in range(64)]])
        for xi, yi in zip(x, y, strict=True):
            w.writerow([yi, *xi.ravel().tolist()])
    a = load_splits(cfg_for("npz", tmp_path / "d.npz"))
    b = load_splits(cfg_for("csv", tmp_path / "d.csv"))
    # The npz holds images (one feature), the csv a table (one numeric feature per column).
    assert a.schema.names == ("pixels",) and len(b.schema.names) == 64
    table = np.stack([b.x_train[f"p{i}"] for i in range(64)], axis=1)
    np.testing.assert_array_equal(a.x_train["pixels"].reshape(-1, 64), table)
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
    all_x = np.concatenate([s.x_train["pixels"], s.x_val["pixels"], s.x_test["pixels"]])
    assert sorted(all_x.sum(axis=(1, 2, 3)).tolist()) == sorted(x.sum(axis=(1, 2)).tolist())


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    a = load_splits(cfg_for("demo", None))
    b = load_splits(cfg_for("demo", None))
    c = load_splits(cfg_for("demo", None, **{"run.seed": 7}))
    np.testing.assert_array_equal(a.x_train["pixels"], b.x_train["pixels"])
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
    with pytest.raises(DataError, match=r"data\.label"):
        load_splits(cfg_for("csv", tmp_path / "d.csv"))


def test_limit_takes_a_seeded_subset() -> None:
    s = load_splits(cfg_for("demo", None, **{"data.limit": 200}))
    assert sum(map(len, (s.y_train, s.y_val, s.y_test))) == 200


def test_run_data_writes_data_json_with_sizes_and_fingerprint(tmp_path: Path) -> None:
    res = run_data(cfg_for("demo", None), RunDir(tmp_path / "run"))
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["sizes"] == res.sizes == {"train": 1257, "validation": 270, "test": 270}
    assert data["fingerprint"] == res.fingerprint
    assert sum(data["per_class"]["test"].values()) == 270
    assert data["task"] == "classification" and data["label_names"] == data["class_names"]
    assert data["input_shape"] == [8, 8, 1]
    assert data["schema"]["features"] == {
        "pixels": {"kind": "image", "dtype": "float32", "shape": [8, 8, 1]}
    }
    pinned = json.loads((tmp_path / "run" / "schema.json").read_text())
    assert pinned == data["schema"]
    text = res.render_text()
    assert "task classification" in text and "features: pixels:image" in text
    assert "labels (10): 0, 1, 2" in text


def test_run_data_of_a_regression_table_has_no_per_class_counts(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("size,label\n" + "".join(f"{i},{i * 2.5}\n" for i in range(20)))
    cfg = cfg_for("csv", tmp_path / "d.csv", **{"task.type": "regression"})
    run_data(cfg, RunDir(tmp_path / "run"))
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert "per_class" not in data and data["input_shape"] is None
    assert data["task"] == "regression" and data["label_names"] == ["target"]


def table(tmp_path: Path, labels: list[str]) -> Path:
    rows = "".join(f"{i},{lab}\n" for i, lab in enumerate(labels))
    (tmp_path / "d.csv").write_text("x,label\n" + rows)
    return tmp_path / "d.csv"


def test_binary_labels_are_encoded_by_the_task_and_split_stratified(tmp_path: Path) -> None:
    path = table(tmp_path, ["spam" if i % 4 == 0 else "ham" for i in range(40)])
    s = load_splits(cfg_for("csv", path, **{"task.type": "binary"}))
    assert s.label_names == ("ham", "spam")
    assert s.y_train.shape == (28, 1) and s.y_train.dtype == np.float32
    # Stratified: train has exactly the 1-in-4 share of positives, and every split has some.
    positives = [int(part.sum()) for part in (s.y_train, s.y_val, s.y_test)]
    assert positives[0] == 7 and sum(positives) == 10 and min(positives) >= 1
    x = np.concatenate([s.x_train["x"], s.x_val["x"], s.x_test["x"]]).astype(int)
    y = np.concatenate([s.y_train, s.y_val, s.y_test])[:, 0]
    np.testing.assert_array_equal(y, (x % 4 == 0).astype(np.float32))


def test_multilabel_labels_are_split_on_the_separator(tmp_path: Path) -> None:
    labels = ["a|b", "b", "c|a", "c"] * 5
    s = load_splits(
        cfg_for(
            "csv", table(tmp_path, labels), **{"task.type": "multilabel", "task.separator": "'|'"}
        )
    )
    assert s.label_names == ("a", "b", "c") and s.y_train.shape[1] == 3
    for xi, yi in zip(s.x_train["x"].astype(int), s.y_train, strict=True):
        assert set(np.asarray(s.label_names)[yi > 0]) == set(labels[xi].split("|"))


def test_regression_targets_are_float_and_not_stratified(tmp_path: Path) -> None:
    s = load_splits(
        cfg_for(
            "csv", table(tmp_path, [str(i / 4) for i in range(20)]), **{"task.type": "regression"}
        )
    )
    assert s.label_names == ("target",) and s.y_test.dtype == np.float32
    np.testing.assert_allclose(s.y_train[:, 0], s.x_train["x"] / 4)


@pytest.mark.parametrize("missing", ["", "NA", "nan"])
def test_a_missing_label_is_a_data_error_with_the_count_and_rows(missing, tmp_path) -> None:
    labels = ["a", "b", "c"] * 6
    labels[4] = labels[9] = missing
    with pytest.raises(DataError, match=r"2 of 18 examples have no label .*row\(s\) 4, 9"):
        load_splits(cfg_for("csv", table(tmp_path, labels)))


def test_take_indexes_every_feature_with_one_index_array() -> None:
    x = {"a": np.arange(5), "b": np.arange(10).reshape(5, 2)}
    got = take(x, np.array([4, 0]))
    assert got["a"].tolist() == [4, 0] and got["b"].tolist() == [[8, 9], [0, 1]]
    assert take(np.arange(3), [1])["pixels"].tolist() == [1]  # a bare array is `pixels`


def test_splits_of_bare_arrays_are_one_image_feature() -> None:
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.arange(4)
    s = Splits(x, y, x, y, x, y, ("a", "b"), "f")
    assert s.schema.single_image == Feature("pixels", Kind.IMAGE, "float32", (2, 2, 1))
    assert s.input_shape == (2, 2, 1) and s.num_classes == 2 and s.take is take


def test_make_dataset_takes_a_dict_with_string_features() -> None:
    import tensorflow as tf

    text = np.empty(3, dtype=object)
    text[:] = ["un", "deux", "trois"]
    x = {"text": text, "n": np.arange(3, dtype=np.float32)}
    ds = make_dataset(x, np.arange(3), global_batch_size=2, shuffle=False, seed=0)
    feats, y = next(iter(ds))
    assert feats["text"].dtype == tf.string
    assert feats["text"].numpy().tolist() == [b"un", b"deux"] and y.numpy().tolist() == [0, 1]


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
