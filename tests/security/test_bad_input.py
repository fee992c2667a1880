"""Bad inputs are refused at the edge: (what a user or attacker supplies) -> (message, exit code).

Every row crashed (exit 1), hung, or passed on the code before issue 13 §5; each asserts a
fragment of the actionable message and the exit code the CI YAML branches on. A few rows per
class go through `tfship.cli.main` so the exit code is proven end to end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.schemas import pixels_schema
from tfship import cli
from tfship.config import ModelConfig, load_config
from tfship.data import load_splits
from tfship.errors import ConfigError, DataError, ModelError
from tfship.model import ModelSpec, build_model, resolve_builder

UM = "tests.unit.user_models"
RNG = np.random.default_rng(0)

# -- model.builder: module:function -----------------------------------------------------------

BROKEN_MODULES = [  # (case, source of the builder's module, fragment)
    ("syntax error", "def build(:\n", "has a syntax error at"),
    ("missing dependency", "import tfship_no_such_dep\n", "imports a missing module"),
    ("ImportError", "from keras import no_such_name\n", "importing module"),
    ("sys.exit at import", "import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("exception at import", "raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ("recursion at import", "def f():\n    return f()\nf()\n", "RecursionError"),
    ("not callable", "build = 42\n", "is not callable"),
    ("no such function", "def other(a, b):\n    pass\n", "has no function 'build'"),
]


@pytest.mark.parametrize(("case", "source", "fragment"), BROKEN_MODULES)
def test_a_builder_module_that_cannot_give_a_function_is_a_model_error(
    case, source, fragment, tmp_path, monkeypatch
):
    name = "tfship_bad_builder_" + "".join(ch if ch.isalnum() else "_" for ch in case)
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError) as err:
        build_model(ModelConfig(builder=f"{name}:build"), ModelSpec.image((8, 8, 1), 10))
    assert fragment in str(err.value) and f"{name}:build" in str(err.value)
    assert err.value.exit_code == 6


BAD_BUILDERS = [  # (builder, model.options, fragment)
    ("tfship_no_such_module:build", {}, "module 'tfship_no_such_module' not found"),
    (f"{UM}:missing", {}, "has no function 'missing'"),
    (f"{UM}:NOT_CALLABLE", {}, "is not callable"),
    (f"{UM}:takes_no_arguments", {}, "does not accept these arguments"),
    (f"{UM}:tiny_mlp", {"widht": 3}, "does not accept these arguments"),
    (f"{UM}:raises", {}, "RuntimeError: builder exploded (at "),
    (f"{UM}:recurses", {}, "RecursionError"),
    (f"{UM}:calls_exit", {}, "SystemExit"),
    (f"{UM}:returns_none", {}, "returned NoneType; expected a keras.Model"),
    (f"{UM}:not_a_model", {}, "returned dict; expected a keras.Model"),
    (f"{UM}:returns_layer", {}, "returned Dense; expected a keras.Model"),
    (f"{UM}:generator", {}, "returned generator; expected a keras.Model"),
    (f"{UM}:wrong_class_count", {}, "outputs shape (None, 11); expected (None, 10)"),
    (f"{UM}:image_logits", {}, "outputs shape (None, 8, 8, 10); expected (None, 10)"),
    (f"{UM}:fixed_input_shape", {}, "does not match the data's (None, 8, 8, 1)"),
    (f"{UM}:two_outputs", {}, "the model has 2 outputs"),
    (f"{UM}:two_inputs", {}, "the model has 2 inputs"),
    (f"{UM}:fails_on_call", {}, "the model fails on a batch of two rows {'pixels': [2, 8, 8, 1]}"),
    (f"{UM}:nan_logits", {}, "NaN/Inf logit(s)"),
    (f"{UM}:int_logits", {}, "outputs dtype int32; expected floating-point logits"),
]


@pytest.mark.parametrize(("builder", "options", "fragment"), BAD_BUILDERS)
def test_a_broken_builder_is_a_model_error_naming_it(builder, options, fragment):
    with pytest.raises(ModelError) as err:
        build_model(ModelConfig(builder=builder, options=options), ModelSpec.image((8, 8, 1), 10))
    assert fragment in str(err.value) and builder in str(err.value)
    assert err.value.exit_code == 6


@pytest.mark.parametrize("spec", [":f", ""])  # the rest already failed at the config schema
def test_a_malformed_builder_reference_is_a_config_error(spec):
    with pytest.raises(ConfigError) as err:
        resolve_builder(spec)
    assert "'package.module:function'" in str(err.value) and err.value.exit_code == 3


def test_a_compiled_model_is_accepted_with_a_warning_that_compile_is_ignored(caplog):
    model = build_model(ModelConfig(builder=f"{UM}:compiled"), ModelSpec.image((8, 8, 1), 10))
    assert model(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 10)
    assert "its loss, optimizer and metrics are ignored" in caplog.text


@pytest.mark.parametrize(
    ("builder", "code", "fragment"),
    [
        (f"{UM}:calls_exit", 6, "SystemExit"),
        (f"{UM}:recurses", 6, "RecursionError"),
        (f"{UM}:wrong_class_count", 6, "expected (None, 10)"),
    ],
)
def test_tfship_train_exits_with_the_builders_code_not_a_traceback(
    builder, code, fragment, tmp_path, capsys
):
    args = ["train", "--run-dir", str(tmp_path / "run"), "--set", "train.progress=none"]
    assert cli.main([*args, "--set", f"model.builder={builder}"]) == code
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


# -- data: every source, refused with the file (and row/column/index) named -------------------


def data_cfg(source: str, path: Path | str, *sets: str):
    return load_config(
        None, env={}, overrides=[f"data.source={source}", f"data.path={path}", *sets]
    )


def image_folder(root: Path) -> Path:
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


def unix_socket(root: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "dog" / "sock.png"))
    sock.close()


def link_outside(root: Path) -> None:
    Image.new("L", (8, 8)).save(root.parent / "secret.png")
    (root / "dog" / "link.png").symlink_to(root.parent / "secret.png")


def class_link_outside(root: Path) -> None:
    image_folder(root.parent / "elsewhere")
    (root / "eel").symlink_to(root.parent / "elsewhere" / "cat")


IMAGE_FOLDER_CASES = [  # (breakage, fragment)
    (lambda r: os.mkfifo(r / "dog" / "pipe.png"), "pipe.png is a FIFO; expected a regular file"),
    (unix_socket, "sock.png is a socket; expected a regular file"),
    (lambda r: (r / "dog" / "dev.png").symlink_to("/dev/zero"), "dev.png is a symbolic link to"),
    (link_outside, "link.png is a symbolic link to"),
    (class_link_outside, "class folder"),
    (lambda r: Image.new("1", (20000, 20000)).save(r / "dog" / "b.png"), "is a decompression bomb"),
    (lambda r: Image.new("L", (5000, 5000)).save(r / "dog" / "b.png"), "5000x5000 pixels"),
    (
        lambda r: Image.new("L", (8, 8)).save(os.fsdecode(bytes(r / "dog") + b"/caf\xe9.png")),
        "is not valid UTF-8",
    ),
    (lambda r: (r / "cat").rename(os.fsdecode(bytes(r) + b"/ch\xe2t")), "is not valid UTF-8"),
    (lambda r: (r / "cat").rename(r / "c\nat"), "is not a printable class name"),
    (lambda r: (r / "cat").rename(r / ("c" * 201)), "is not a printable class name of at most"),
    (lambda r: [(r / "dog" / f"{i}.png").unlink() for i in range(4)], "'dog' (2)"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("breakage", "fragment"), IMAGE_FOLDER_CASES)
def test_a_bad_file_in_an_image_folder_is_a_data_error(breakage, fragment, tmp_path):
    root = image_folder(tmp_path / "imgs")
    breakage(root)
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("image_folder", root))
    assert fragment in str(err.value) and err.value.exit_code == 4


HEADER = ["label"] + [f"p{i}" for i in range(64)]


def good_rows(n: int = 18) -> list[list[str]]:
    return [[str(i % 3)] + [str((i * 7 + j) % 256) for j in range(64)] for i in range(n)]


def with_cell(row: int, col: int, value: str) -> list[list[str]]:
    rows = good_rows()
    rows[row][col] = value
    return rows


def csv_bytes(rows=None, header=HEADER) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerows([header, *(rows or good_rows())])
    return out.getvalue().encode()


P2_NUMERIC = ("data.features={p2: numeric}",)
CSV_CASES = [  # (case, file content, extra --set, fragment)
    ("latin-1 bytes", csv_bytes() + "café,1\n".encode("latin-1"), (), "line 20 is not UTF-8 text"),
    ("NUL byte", csv_bytes(with_cell(2, 0, "1\x00")), (), "is not a printable class name"),
    ("oversized field", csv_bytes() + b'1,"' + b"9" * 200_000 + b'"\n', (), "field larger than"),
    ("short row", csv_bytes() + b"1,2\n", (), "line 20: 2 fields; expected 65"),
    (
        "non-numeric cell in a numeric column",
        csv_bytes(with_cell(4, 3, "abc")),
        P2_NUMERIC,
        "column 'p2' row 4: found 'abc'; expected a number",
    ),
    ("declared column absent", csv_bytes(), ("data.features={age: numeric}",), "['age'] declared"),
    ("duplicate feature column", csv_bytes(header=["label", *["p"] * 64]), (), "more than once"),
    # A stray label value (an "unlabelled" -1, a regression target) is a class of one.
    ("negative label", csv_bytes(with_cell(0, 0, "-1")), (), "'-1' (1)"),
    ("fractional label", csv_bytes(with_cell(0, 0, "2.5")), (), "'2.5' (1)"),
    ("NaN label", csv_bytes(with_cell(3, 0, "nan")), (), "1 of 18 examples have no label"),
    ("empty label", csv_bytes(with_cell(0, 0, "")), (), "have no label (missing, NaN or empty)"),
    ("Inf cell", csv_bytes(with_cell(2, 5, "-inf")), (), "column 'p4': found 1 infinite value"),
    ("duplicate label column", csv_bytes(header=[*HEADER[:-1], "label"]), (), "2 column(s) named"),
    ("scarce class", csv_bytes([*good_rows(), ["7"] + ["1"] * 64]), (), "'7' (1)"),
    (
        "an ID column as label",
        csv_bytes([[str(i), *r[1:]] for i, r in enumerate(good_rows())]),
        (),
        "18 class(es) have fewer than 3 examples",
    ),
]


@pytest.mark.parametrize(("case", "content", "sets", "fragment"), CSV_CASES)
def test_a_bad_csv_is_a_data_error_naming_what_and_where(case, content, sets, fragment, tmp_path):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("csv", tmp_path / "d.csv", *sets))
    assert fragment in str(err.value) and err.value.exit_code == 4


def test_a_csv_with_a_byte_order_mark_loads(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbf" + csv_bytes())
    assert load_splits(data_cfg("csv", tmp_path / "d.csv")).class_names == ("0", "1", "2")


def arrays(n: int = 18):
    return RNG.integers(0, 256, size=(n, 8, 8)).astype(np.float32), np.arange(n) % 3


def x_with(index, value):
    x, y = arrays()
    x[index] = value
    return {"x": x, "y": y}


def y_as(y):
    return {"x": arrays()[0], "y": y}


NPZ_CASES = [  # (case, arrays, extra --set, fragment)
    ("object array", y_as(np.array([None] * 18, dtype=object)), (), "holds Python objects"),
    ("multi-hot labels", y_as(np.ones((18, 3))), (), "takes one label per example"),
    ("soft labels", y_as(np.eye(3)[arrays()[1]] * 0.9), (), "takes one label per example"),
    ("labels (n, 3, 1)", y_as(np.zeros((18, 3, 1))), (), "array of shape [18, 3, 1]"),
    ("NaN labels", y_as(np.where(arrays()[1] == 2, np.nan, 1.0)), (), "6 of 18 examples have no"),
    ("no label array", {"x": arrays()[0], "z": arrays()[1]}, (), "no label array 'label'"),
    ("non-UTF-8 byte labels", y_as(np.array([b"\xff", b"a", b"b"] * 6)), (), "is not UTF-8"),
    ("text pixels", {"x": np.array(["a"] * 18), "y": arrays()[1]}, (), "expected numeric pixels"),
    (
        "complex pixels",
        {"x": np.ones((18, 8, 8), np.complex64), "y": arrays()[1]},
        (),
        "expected numeric pixels",
    ),
    ("scalar x", {"x": np.float32(3), "y": arrays()[1]}, (), "one label per image"),
    ("length mismatch", {"x": arrays()[0], "y": arrays(17)[1]}, (), "one label per image"),
    (
        "channels-first",
        {"x": np.zeros((18, 3, 8, 8)), "y": arrays()[1]},
        ("data.channels=3",),
        "looks channels-first",
    ),
    (
        "wrong image size",
        {"x": np.zeros((18, 5, 5)), "y": arrays()[1]},
        (),
        "has shape (18, 5, 5); expected (n, 8, 8, 1)",
    ),
    ("NaN pixels", x_with((4, 2, 3), np.nan), (), "first at index (4, 2, 3, 0) (example 4)"),
    ("Inf pixels", x_with((5, 0, 0), -np.inf), (), "1 pixel value(s) are NaN or Inf"),
    ("standardised pixels", x_with((1, 1, 1), -0.5), (), "outside [0, 255]"),
    (
        "int64 pixels beyond float32",
        {"x": np.full((18, 8, 8), 2**62), "y": arrays()[1]},
        (),
        "outside [0, 255]",
    ),
]


@pytest.mark.parametrize(("case", "arrays_", "sets", "fragment"), NPZ_CASES)
def test_a_bad_npz_is_a_data_error(case, arrays_, sets, fragment, tmp_path):
    np.savez(tmp_path / "d.npz", **arrays_)
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("npz", tmp_path / "d.npz", *sets))
    assert fragment in str(err.value) and err.value.exit_code == 4


def npy_header(shape) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return out.getvalue()  # magic string included


def lying_header(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy_header((10**11, 8, 8)) + b"\0" * 64)  # claims 25 TB
        z.writestr("y.npy", npy_header((18,)) + b"\0" * 72)


def plain_npy(path: Path) -> None:
    with path.open("wb") as fh:
        np.save(fh, np.zeros((18, 8, 8)))


NPZ_FILE_CASES = [  # (case, write the file, fragment)
    ("a pickle", lambda p: p.write_bytes(b"\x80\x04\x95..."), "is not an .npz archive"),
    ("a bare .npy", plain_npy, "is not an .npz archive"),
    ("an empty file", lambda p: p.write_bytes(b""), "is not an .npz archive"),
    ("a broken zip", lambda p: p.write_bytes(b"PK\x03\x04 not really"), "cannot read"),
    ("a header claiming 10**11 images", lying_header, "the archive holds"),
    ("a FIFO", os.mkfifo, "is a FIFO"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "write", "fragment"), NPZ_FILE_CASES)
def test_a_file_that_is_no_numeric_npz_is_a_data_error(case, write, fragment, tmp_path):
    write(tmp_path / "d.npz")
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("npz", tmp_path / "d.npz"))
    assert fragment in str(err.value) and err.value.exit_code == 4


def test_a_zip_bomb_npz_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    import tfship.data.loaders as loaders

    monkeypatch.setattr(loaders, "MAX_DATA_BYTES", 2**20)
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((10_000, 8, 8)), y=np.arange(10_000) % 3)
    assert (tmp_path / "d.npz").stat().st_size < 50_000  # 5 MB of pixels inside
    with pytest.raises(DataError, match="needs 5120000 bytes"):
        load_splits(data_cfg("npz", tmp_path / "d.npz"))


def test_column_labels_are_read_as_class_indices(tmp_path):
    x = arrays()[0]
    np.savez(tmp_path / "d.npz", x=x, y=(np.arange(18) % 3)[:, None])
    s = load_splits(data_cfg("npz", tmp_path / "d.npz"))
    assert s.class_names == ("0", "1", "2")
    pairs = {(xi.tobytes(), int(yi)) for xi, yi in zip(s.x_train["pixels"], s.y_train, strict=True)}
    assert pairs <= {(xi[..., None].tobytes(), i % 3) for i, xi in enumerate(x)}


def test_one_hot_labels_are_multi_hot_for_multilabel_and_refused_for_classification(tmp_path):
    np.savez(tmp_path / "d.npz", x=arrays()[0], y=np.eye(3)[np.arange(18) % 3])
    multi = load_splits(data_cfg("npz", tmp_path / "d.npz", "task.type=multilabel"))
    assert multi.label_names == ("0", "1", "2") and multi.y_train.shape == (12, 3)
    with pytest.raises(DataError, match="for one-hot labels pass their argmax"):
        load_splits(data_cfg("npz", tmp_path / "d.npz"))


def example(image=None, floats=None, label=(1,)) -> bytes:
    import tensorflow as tf

    feats = {}
    if image is not None:
        feats["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=image))
    if floats is not None:
        feats["image"] = tf.train.Feature(float_list=tf.train.FloatList(value=floats))
    if label is not None:
        feats["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(label)))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def png(size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, size[::-1], dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def tfrecords(folder: Path, extra: list[bytes], label=lambda i: (i % 3,)) -> Path:
    import tensorflow as tf

    folder.mkdir()
    with tf.io.TFRecordWriter(str(folder / "part-0.tfrecord")) as w:
        for record in [example([png()], label=label(i)) for i in range(18)] + extra:
            w.write(record)
    return folder


TFRECORD_CASES = [  # (case, extra record, fragment)
    ("a record that is no Example", b"\xff\xffjunk", "record 18: not a tf.train.Example"),
    (
        "NaN float pixels",
        example(floats=[float("nan")] * 64),
        "are NaN or Inf; first at index (18,",
    ),
    ("pixels above 255", example(floats=[1000.0] * 64), "64 pixel value(s) are outside [0, 255]"),
    ("several labels", example([png()], label=(1, 1, 0)), "takes one label per example; row 18"),
    ("a stray negative label", example([png()], label=(-4,)), "'-4' (1)"),
    ("no label value", example([png()], label=()), "1 of 19 examples have no label"),
    ("no label", example([png()], label=None), "missing feature(s) ['label']"),
    ("two encoded images", example([png(), png()]), "holds 2 encoded images; expected one"),
    ("a decompression bomb", example([png((5000, 5000))]), "5000x5000 pixels"),
    ("undecodable bytes", example([b"GIF89a..."]), "cannot read"),
]


@pytest.mark.parametrize(("case", "record", "fragment"), TFRECORD_CASES)
def test_a_bad_tfrecord_is_a_data_error(case, record, fragment, tmp_path):
    folder = tfrecords(tmp_path / "tfr", [record])
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("tfrecord", folder))
    assert fragment in str(err.value) and err.value.exit_code == 4


def test_several_tfrecord_label_ids_are_a_label_set_for_multilabel(tmp_path):
    folder = tfrecords(tmp_path / "tfr", [], label=lambda i: [i % 3, (i + 1) % 3])
    s = load_splits(data_cfg("tfrecord", folder, "task.type=multilabel"))
    assert s.label_names == ("0", "1", "2")
    assert (s.y_train.sum(axis=1) == 2).all()


# TF opens a TFRecord FIFO in C++, where the signal method cannot interrupt a hang.
@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize(
    ("source", "name"),
    [("tfrecord", "part-1.tfrecord"), ("csv", "d.csv"), ("image_folder", "dog/pipe.png")],
)
def test_tfship_data_snapshot_and_load_never_open_a_fifo(source, name, tmp_path):
    root = tfrecords(tmp_path / "d", []) if source == "tfrecord" else image_folder(tmp_path / "d")
    os.mkfifo(root / name)
    path = root / name if source == "csv" else root
    base = ["--run-dir", str(tmp_path / "run"), "--set", f"data.source={source}"]
    for command in (["data"], ["data", "snapshot"]):
        assert cli.main([*command, *base, "--set", f"data.path={path}"]) == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("source", "make", "fragment"),
    [
        ("image_folder", lambda p: os.mkfifo(image_folder(p) / "dog" / "p.png"), "is a FIFO"),
        ("npz", lambda p: np.savez(p, x=arrays()[0], y=np.ones((18, 3))), "one label per"),
        ("csv", lambda p: p.write_bytes(csv_bytes(with_cell(1, 2, "inf"))), "infinite value"),
        ("csv", lambda p: None, "/dev/null is a device"),
    ],
)
def test_tfship_data_exits_4_with_the_reason(source, make, fragment, tmp_path, capsys):
    path = tmp_path / ("d" if source == "image_folder" else f"d.{source}")
    make(path)
    path = path if path.exists() or source != "csv" else "/dev/null"
    args = ["data", "--run-dir", str(tmp_path / "run"), "--set", f"data.source={source}"]
    assert cli.main([*args, "--set", f"data.path={path}"]) == 4
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ([{"path": "a.png"}], "files[0] is not a file entry"),
        ([{"path": "a.png", "size": "12", "sha256": "x"}], "files[0] is not a file entry"),
        ([None], "files[0] is not a file entry"),
    ],
)
def test_a_malformed_baseline_for_data_changed_is_a_config_error(files, fragment, tmp_path):
    from tfship.datachange import run_changed

    base = tmp_path / "data.manifest.json"
    base.write_text(json.dumps({"fingerprint": "f" * 64, "files": files}))
    root = image_folder(tmp_path / "imgs")
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        run_changed(data_cfg("image_folder", root), str(base))


def test_nan_pixels_handed_to_run_train_are_a_data_error_not_a_divergence(tmp_path):
    from dataclasses import replace

    from tests.unit.test_checkpoints import make_cfg, make_splits
    from tfship.rundir import RunDir
    from tfship.train import run_train

    splits = make_splits()
    x = {"pixels": splits.x_train["pixels"].copy()}
    x["pixels"][7, 1, 2, 0] = np.nan
    with pytest.raises(DataError, match=r"first at index \(7, 1, 2, 0\)"):
        run_train(make_cfg(), RunDir(tmp_path / "run"), splits=replace(splits, x_train=x))


# -- export: versions TF Serving can load, golden requests that check something ---------------


@pytest.fixture
def exporter(monkeypatch, tmp_path):
    from tests.unit import test_export as helpers
    from tfship import verify
    from tfship.rundir import RunDir

    monkeypatch.setattr(verify, "run_cpp_loader", helpers.session_loader)
    run_dir = RunDir(tmp_path / "run").ensure()

    def export(model=None, **kw):
        return helpers.export(model or helpers.tiny_model(), run_dir, **kw)

    export.run_dir = run_dir
    export.helpers = helpers
    return export


def nan_at(index) -> np.ndarray:
    from tests.unit.test_export import pixels

    x = pixels(4)
    x[index] = np.nan
    return x


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"version": 0}, ConfigError, "Received: 0"),
        ({"version": -5}, ConfigError, "integer in [1, 2**63 - 1]"),
        ({"version": 2**63}, ConfigError, "Received: 9223372036854775808"),
        ({"version": True}, ConfigError, "Received: True"),
        ({"version": "7"}, ConfigError, "Received: 7"),
        ({"golden_x": nan_at((1, 0, 0, 0))}, DataError, "golden_x holds 1 NaN/Inf pixel"),
        ({"warmup_x": nan_at((0, 1, 1, 0))}, DataError, "warmup_x holds 1 NaN/Inf pixel"),
    ],
)
def test_an_export_request_outside_what_tf_serving_loads_is_refused(
    kwargs, error, fragment, exporter
):
    from tests.unit.test_export import pixels

    h = exporter.helpers
    call = {"golden_x": pixels(4), "warmup_x": pixels(2), **kwargs}
    call["golden_x"], call["warmup_x"] = {"pixels": call["golden_x"]}, {"pixels": call["warmup_x"]}
    cfg = h.PipelineConfig.model_validate({"export": {"version_scheme": "sequential"}})
    with pytest.raises(error) as err:
        h.export_mod.export_savedmodel(
            h.tiny_model(),
            cfg=cfg,
            run_dir=exporter.run_dir,
            schema=pixels_schema(),
            label_names=["a", "b", "c"],
            training_summary={},
            data_fingerprint="f" * 64,
            **call,
        )
    assert fragment in str(err.value)
    assert h.entries(exporter.run_dir) == []


@pytest.mark.parametrize("scheme", ["sequential", "timestamp"])
def test_no_version_beyond_int64_is_ever_taken(scheme, exporter):
    (exporter.run_dir.export / str(2**63 - 1)).mkdir(parents=True)
    cfg = exporter.helpers.PipelineConfig.model_validate({"export": {"version_scheme": scheme}})
    with pytest.raises(ModelError, match="there is no next version"):
        exporter(cfg=cfg)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: m.update(version=2), "published as 1"),
        (lambda m: m["golden"]["inputs"].update(pixels=[[1.0], [2.0, 3.0]]), "rectangular"),
        (lambda m: m["golden"]["outputs"].update(class_id=[1]), "disagree on the number"),
        (lambda m: m["golden"]["inputs"].update(other=[[1.0]] * 4), "do not fit"),
    ],
)
def test_tfship_export_verify_only_exits_6_on_a_tampered_manifest(
    mutate, fragment, exporter, capsys
):
    good = exporter()
    path = good.export_dir / "assets.extra" / "tfship-manifest.json"
    manifest = json.loads(path.read_text())
    mutate(manifest)
    path.write_text(json.dumps(manifest))
    assert cli.main(["export", "--verify-only", str(good.export_dir)]) == 6
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_tfship_export_verify_only_refuses_a_nan_tolerance(exporter, capsys):
    good = exporter()
    args = ["export", "--verify-only", str(good.export_dir), "--tolerance", "nan"]
    assert cli.main(args) == 6
    assert "golden tolerance must be a number in (0, 1]" in capsys.readouterr().err


def test_a_directory_named_with_non_ascii_digits_is_not_an_export_version(tmp_path) -> None:
    # "²".isdigit() is True but int("²") raises: such a name must be ignored, as TF Serving does.
    from tfship.artifacts import numeric_versions

    for name in ("²", "٣", "7"):
        (tmp_path / name).mkdir()
    assert numeric_versions(tmp_path) == [7]
