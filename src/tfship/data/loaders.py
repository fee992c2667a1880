"""Readers for each data source, all returning the same normal form.

A loader returns (images float32 [n, H, W, C], raw labels, file manifest, the bytes the
fingerprint is computed over). The caller checks pixels and labels (tfship.data.labels); the
loaders check what only they can see: which files are read (tfship.data.files), how large
they decode, and that each record has the expected structure.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig, DataSource
from tfship.data.files import (
    IMAGE_SUFFIXES,
    TFRECORD_SUFFIXES,
    FileEntry,
    check_regular,
    class_folders,
    data_files,
    file_manifest,
    manifest_bytes,
    open_regular,
    require_path,
)
from tfship.data.images import MAX_IMAGE_FILE_BYTES, decode_image, resize_gray_or_rgb
from tfship.data.labels import from_vector, labels_from_array
from tfship.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "LOADERS", "TFRECORD_SUFFIXES", "FileEntry", "decode_image"]

# Bounds on what one input may make tfship decode (decompression bombs, zip bombs, a wrong
# folder): data is held in memory, so these are about what one runner can hold.
MAX_DATA_BYTES = 16 * 2**30  # the decoded float32 pixels of the whole data set (and any file)

Loaded = tuple[np.ndarray, list[Any], list[FileEntry], bytes]


def _example_bytes(cfg: DataConfig) -> int:
    h, w = cfg.image_size
    return h * w * cfg.channels * 4


def _check_total(n: int, cfg: DataConfig, where: Path) -> None:
    total = n * _example_bytes(cfg)
    if total > MAX_DATA_BYTES:
        raise DataError(
            f"{where}: {n} examples decode to {total} bytes of float32 pixels; expected at most "
            f"{MAX_DATA_BYTES} (data is held in memory)",
            hint="lower data.image_size, set data.limit, or train on a subset",
        )


def load_demo(cfg: DataConfig) -> Loaded:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # load_digits pixels are counts 0..16; scale to the 0..255 range every other source uses.
    x = (digits.images.astype(np.float32) * (255.0 / 16.0)).round()
    if tuple(cfg.image_size) != (8, 8) or cfg.channels != 1:
        _check_total(len(x), cfg, Path("sklearn.load_digits"))
        x = np.stack([resize_gray_or_rgb(Image.fromarray(im.astype(np.uint8)), cfg) for im in x])
    else:
        x = x[..., None]
    content = b"sklearn.load_digits" + x.tobytes() + digits.target.astype(np.int64).tobytes()
    return x, list(digits.target.astype(int)), [], content


def load_image_folder(cfg: DataConfig) -> Loaded:
    root = require_path(cfg)
    class_dirs = class_folders(root)
    if len(class_dirs) < 2:
        raise DataError(
            f"{root} has {len(class_dirs)} class sub-folder(s); expected at least 2 "
            "(one sub-folder per class, e.g. cats/, dogs/)"
        )
    members = {d: data_files(d, root, IMAGE_SUFFIXES) for d in class_dirs}
    for d, found in members.items():
        if not found:
            raise DataError(
                f"class folder {d} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "remove it or add images"
            )
    _check_total(sum(map(len, members.values())), cfg, root)
    images: list[np.ndarray] = []
    labels: list[str] = []
    files: list[Path] = []
    for d, found in members.items():
        for p in found:
            with open_regular(p, MAX_IMAGE_FILE_BYTES) as fh:
                images.append(decode_image(fh, cfg, f"image {p}"))
            labels.append(d.name)
            files.append(p)
    manifest = file_manifest(root, files)
    return np.stack(images), labels, manifest, manifest_bytes(manifest)


def load_tfrecord(cfg: DataConfig) -> Loaded:
    import tensorflow as tf

    root = require_path(cfg)
    if root.is_dir():
        paths = data_files(root, root, TFRECORD_SUFFIXES)
    else:
        check_regular(root, root)
        paths = [root]
    if not paths:
        raise DataError(f"no TFRecord files ({', '.join(sorted(TFRECORD_SUFFIXES))}) under {root}")
    h, w = cfg.image_size
    images: list[np.ndarray] = []
    labels: list[Any] = []
    for path in paths:
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                if len(images) % 10_000 == 0:
                    _check_total(len(images) + 1, cfg, path)
                image, lab = _read_example(raw, cfg, f"{path} record {i}")
                images.append(image)
                labels.append(lab)
        except tf.errors.OpError as exc:
            raise DataError(
                f"{path} is not a valid (uncompressed) TFRecord file: {exc.message[:300]}",
                hint="write plain TFRecord files (no GZIP/ZLIB), or remove the file",
            ) from None
    if not images:
        raise DataError(f"TFRecord files under {root} hold no records")
    _check_total(len(images), cfg, root)
    if any(im.shape != (h, w, cfg.channels) for im in images):
        raise DataError(
            f"TFRecord images under {root} do not all have shape {(h, w, cfg.channels)}"
        )
    manifest = file_manifest(root, paths)
    return np.stack(images), labels, manifest, manifest_bytes(manifest)


def _read_example(raw: bytes, cfg: DataConfig, where: str) -> tuple[np.ndarray, Any]:
    import tensorflow as tf

    try:
        ex = tf.train.Example.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError: the record is not an Example
        raise DataError(f"{where}: not a tf.train.Example ({type(exc).__name__})") from None
    feats = ex.features.feature
    ikey, lkey = cfg.tfrecord_image_key, cfg.tfrecord_label_key
    missing = [k for k in (ikey, lkey) if k not in feats]
    if missing:
        raise DataError(
            f"{where}: missing feature(s) {missing}; present: {sorted(feats)[:10]}",
            hint="set data.tfrecord_image_key / data.tfrecord_label_key",
        )
    lab = feats[lkey]
    values = lab.int64_list.value or lab.float_list.value or lab.bytes_list.value
    if not values:
        raise DataError(f"{where}: '{lkey}' holds no value; expected one class per example")
    return _decode_example_image(feats[ikey], cfg, where), from_vector(list(values), where)


def _decode_example_image(feature: Any, cfg: DataConfig, where: str) -> np.ndarray:
    h, w = cfg.image_size
    want = h * w * cfg.channels
    encoded = feature.bytes_list.value
    if encoded:
        if len(encoded) != 1:
            raise DataError(
                f"{where}: image feature holds {len(encoded)} encoded images; expected one"
            )
        if len(encoded[0]) > MAX_IMAGE_FILE_BYTES:
            raise DataError(
                f"{where}: encoded image is {len(encoded[0])} bytes; expected at most "
                f"{MAX_IMAGE_FILE_BYTES}"
            )
        return decode_image(io.BytesIO(encoded[0]), cfg, f"{where}: image")
    values = feature.float_list.value or feature.int64_list.value
    if len(values) != want:
        raise DataError(
            f"{where}: image has {len(values)} values; expected {want} (= {h}x{w}x{cfg.channels} "
            "from data.image_size and data.channels)"
        )
    return np.asarray(values, dtype=np.float64).astype(np.float32).reshape(h, w, cfg.channels)


def load_csv(cfg: DataConfig) -> Loaded:
    path = require_path(cfg)
    with open_regular(path, MAX_DATA_BYTES) as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")  # a BOM (Excel's "CSV UTF-8") is not part of the header
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded",
            hint="re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`",
        ) from None
    try:
        x, labels = _parse_csv(text, path, cfg)
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV file: {exc}") from None
    manifest = file_manifest(path, [path])
    return x, labels, manifest, manifest_bytes(manifest)


def _parse_csv(text: str, path: Path, cfg: DataConfig) -> tuple[np.ndarray, list[str]]:
    h, w = cfg.image_size
    want = h * w * cfg.channels
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise DataError(f"{path} is empty; expected a header row and one row per example")
    column = cfg.csv_label_column
    if header.count(column) != 1:
        raise DataError(
            f"{path}: header has {header.count(column)} column(s) named '{column}'; expected "
            f"exactly one. Received: {header[:8]}...",
            hint="set data.csv_label_column to the name of the label column",
        )
    li = header.index(column)
    if len(header) - 1 != want:
        raise DataError(
            f"{path}: {len(header) - 1} pixel columns; expected {want} "
            f"(= {h}x{w}x{cfg.channels} from data.image_size and data.channels)"
        )
    rows, labels = [], []
    for n, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {n}: {len(row)} fields; expected {len(header)}")
        labels.append(row[li])
        try:
            rows.append([float(v) for i, v in enumerate(row) if i != li])
        except ValueError:
            col = next(i for i, v in enumerate(row) if i != li and not _is_float(v))
            raise DataError(
                f"{path} line {n}, column '{header[col][:40]}': non-numeric pixel value. "
                f"Received: {row[col][:40]!r}",
                hint="every column except the label must hold a number in [0, 255]",
            ) from None
    if not rows:
        raise DataError(f"{path} has a header but no examples")
    return np.asarray(rows, dtype=np.float32).reshape(-1, h, w, cfg.channels), labels


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_npz(cfg: DataConfig) -> Loaded:
    path = require_path(cfg)
    with open_regular(path) as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic != b"PK\x03\x04":  # np.load would also take a bare .npy or a pickle
            raise DataError(
                f"{path} is not an .npz archive (it starts with {magic!r}); expected one written "
                "by np.savez",
                hint="save it with np.savez(path, x=images, y=labels)",
            )
        try:
            # allow_pickle=False: an .npz from a merge request must not run code when loaded.
            with np.load(fh, allow_pickle=False) as z:
                keys = set(z.files)
                xk = next((k for k in ("x", "images") if k in keys), None)
                yk = next((k for k in ("y", "labels") if k in keys), None)
                if xk is None or yk is None:
                    raise DataError(
                        f"{path}: expected arrays 'x' (or 'images') and 'y' (or 'labels'); "
                        f"found {sorted(keys)[:10]}"
                    )
                for key in (xk, yk):
                    _check_member(z.zip, key, path)
                x, y = z[xk], z[yk]
        except DataError:
            raise
        # Untrusted bytes: OSError, ValueError, BadZipFile, EOFError, zlib.error, ...
        except Exception as exc:
            raise DataError(
                f"cannot read {path} as .npz: {type(exc).__name__}: {str(exc)[:200]}",
                hint="save it with np.savez(path, x=images, y=labels) using numeric arrays",
            ) from None
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: '{xk}' has dtype {x.dtype}; expected numeric pixels (uint8 or float)"
        )
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise DataError(
            f"{path}: '{xk}' has shape {x.shape} and '{yk}' shape {y.shape}; expected one "
            "label per image (the same first dimension)"
        )
    _check_total(len(x), cfg, path)
    x = _as_images(x, cfg, f"{path}: '{xk}'")
    labels = labels_from_array(y, f"{path}: '{yk}'")
    manifest = file_manifest(path, [path])
    return x, labels, manifest, manifest_bytes(manifest)


def _as_images(x: np.ndarray, cfg: DataConfig, where: str) -> np.ndarray:
    """x as [n, H, W, C]: only shapes that mean exactly that are accepted (no blind reshape,
    which would scramble channels-first arrays)."""
    h, w = cfg.image_size
    c = cfg.channels
    ok = (
        (x.ndim == 4 and x.shape[1:] == (h, w, c))
        or (x.ndim == 3 and c == 1 and x.shape[1:] == (h, w))
        or (x.ndim == 2 and x.shape[1] == h * w * c)
    )
    if not ok:
        hint = "set data.image_size and data.channels to the images' size"
        if x.ndim == 4 and x.shape[1:] == (c, h, w):
            hint = "the array looks channels-first: store it as x.transpose(0, 2, 3, 1)"
        raise DataError(
            f"{where} has shape {x.shape}; expected (n, {h}, {w}, {c})"
            + (f", (n, {h}, {w})" if c == 1 else "")
            + f" or (n, {h * w * c}) from data.image_size and data.channels",
            hint=hint,
        )
    # Through float64 so that int64 pixels beyond float32's range are reported, not rounded.
    return x.astype(np.float64).astype(np.float32).reshape(len(x), h, w, c)


def _check_member(zf: Any, key: str, path: Path) -> None:
    """The .npy header of `key`: no pickled objects, and a size the archive really holds."""
    info = zf.getinfo(f"{key}.npy")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise DataError(f"{path}: array '{key}' uses .npy format {version}; expected 1.0/2.0")
    if dtype.hasobject:
        raise DataError(
            f"{path}: array '{key}' holds Python objects (pickled data); pickles are never "
            "loaded because loading one can run code",
            hint="store numeric arrays, or strings as a fixed-width dtype (np.str_)",
        )
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > min(info.file_size, MAX_DATA_BYTES):
        raise DataError(
            f"{path}: array '{key}' of shape {shape} needs {nbytes} bytes; the archive holds "
            f"{info.file_size} and at most {MAX_DATA_BYTES} are read",
            hint="re-save the file with np.savez (it is truncated, or far too large)",
        )


LOADERS = {
    DataSource.DEMO: load_demo,
    DataSource.IMAGE_FOLDER: load_image_folder,
    DataSource.TFRECORD: load_tfrecord,
    DataSource.CSV: load_csv,
    DataSource.NPZ: load_npz,
}
