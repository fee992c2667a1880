"""Readers for each data source, all returning the same normal form, `LoadedData`.

A loader returns named feature columns (tfship.data.schema's in-memory forms, or close to them:
tfship.data.infer converts and checks), the raw labels (the task encodes them), the schema it
knows (None: infer, or data.features), the file manifest and the bytes the fingerprint is
computed over. The loaders check what only they can see: which files are read
(tfship.data.files), how large they decode, and that each record has the expected structure.
Tables (csv, parquet) live in tfship.data.tables, TFRecords in tfship.data.tfrecords and
`data.loader` functions in tfship.data.user_loader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig, DataSource
from tfship.data.files import (
    IMAGE_SUFFIXES,
    TEXT_SUFFIXES,
    TFRECORD_SUFFIXES,
    FileEntry,
    class_folders,
    data_files,
    file_manifest,
    manifest_bytes,
    open_regular,
    require_path,
)
from tfship.data.images import MAX_IMAGE_FILE_BYTES, decode_image, resize_gray_or_rgb
from tfship.data.schema import Schema
from tfship.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "LOADERS",
    "TFRECORD_SUFFIXES",
    "FileEntry",
    "LoadedData",
    "decode_image",
    "load",
]

# Bounds on what one input may make tfship decode (decompression bombs, zip bombs, a wrong
# folder): data is held in memory, so these are about what one runner can hold.
MAX_DATA_BYTES = 16 * 2**30  # the decoded data set in memory (and any one file)
MAX_TEXT_FILE_BYTES = 16 * 2**20  # one document of a text_folder


@dataclass(frozen=True)
class LoadedData:
    """What every source returns. `schema` None: infer it (or apply data.features)."""

    columns: dict[str, np.ndarray]
    labels: Any  # np.ndarray | list: raw, encoded later by the task
    schema: Schema | None
    files: list[FileEntry] = field(repr=False)
    content: bytes = field(repr=False)


def check_total(nbytes: int, where: Any, what: str) -> None:
    """DataError when the data would take more than MAX_DATA_BYTES in memory."""
    if nbytes > MAX_DATA_BYTES:
        raise DataError(
            f"{where}: {what} take about {nbytes} bytes in memory; expected at most "
            f"{MAX_DATA_BYTES} (data is held in memory)",
            hint="set data.limit, drop columns or files, or train on a subset",
        )


def _example_bytes(cfg: DataConfig) -> int:
    h, w = cfg.image_size
    return h * w * cfg.channels * 4


def _check_total(n: int, cfg: DataConfig, where: Path) -> None:
    check_total(n * _example_bytes(cfg), where, f"{n} examples' decoded float32 pixels")


def load_demo(cfg: DataConfig) -> LoadedData:
    """scikit-learn's digits: one image feature `pixels`, labels 0..9."""
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
    return LoadedData({"pixels": x}, digits.target.astype(np.int64), None, [], content)


def _class_members(cfg: DataConfig, suffixes: set[str], what: str) -> tuple[Path, dict]:
    root = require_path(cfg)
    class_dirs = class_folders(root, cfg.source.value)
    if len(class_dirs) < 2:
        raise DataError(
            f"{root} has {len(class_dirs)} class sub-folder(s); expected at least 2 "
            "(one sub-folder per class, e.g. cats/, dogs/)"
        )
    members = {d: data_files(d, root, suffixes) for d in class_dirs}
    for d, found in members.items():
        if not found:
            raise DataError(
                f"class folder {d} has no {what} ({', '.join(sorted(suffixes))}); "
                "remove it or add some"
            )
    return root, members


def load_image_folder(cfg: DataConfig) -> LoadedData:
    """One sub-folder per class of image files: feature `pixels`, label = folder name."""
    root, members = _class_members(cfg, IMAGE_SUFFIXES, "images")
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
    return LoadedData(
        {"pixels": np.stack(images)}, labels, None, manifest, manifest_bytes(manifest)
    )


def load_text_folder(cfg: DataConfig) -> LoadedData:
    """One sub-folder per class of UTF-8 `.txt` files (like keras.utils.text_dataset_from_
    directory): feature `text`, label = folder name."""
    root, members = _class_members(cfg, TEXT_SUFFIXES, "text files")
    texts: list[str] = []
    labels: list[str] = []
    files: list[Path] = []
    total = 0
    for d, found in members.items():
        for p in found:
            with open_regular(p, MAX_TEXT_FILE_BYTES) as fh:
                raw = fh.read()
            total += len(raw) + 64  # + the str object's own overhead
            check_total(total, root, "the documents read so far")
            try:
                texts.append(raw.decode("utf-8-sig"))
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"text file {p} is not UTF-8: byte 0x{raw[exc.start]:02x} at offset "
                    f"{exc.start} cannot be decoded",
                    hint=f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {p.name}`",
                ) from None
            labels.append(d.name)
            files.append(p)
    manifest = file_manifest(root, files)
    column = np.empty(len(texts), dtype=object)  # 1-D of str, whatever the lengths
    column[:] = texts
    return LoadedData({"text": column}, labels, None, manifest, manifest_bytes(manifest))


def load_npz(cfg: DataConfig) -> LoadedData:
    """`x` (or `images`) + `y` (or `labels`, or data.label): images as feature `pixels`.
    Otherwise every array but data.label is a feature of that name."""
    path = require_path(cfg)
    arrays = _read_npz(path, cfg.label)
    xk = next((k for k in ("x", "images") if k in arrays), None)
    yk = next((k for k in (cfg.label, "y", "labels") if k in arrays), None)
    if yk is None:
        raise DataError(
            f"{path}: no label array '{cfg.label}' (data.label), 'y' or 'labels'; found "
            f"{sorted(arrays)[:10]}",
            hint="set data.label to the name of the label array",
        )
    y = arrays.pop(yk)
    if xk is not None:  # the image form: x [n, H, W, C] (or [n, H, W], [n, H*W*C])
        x = arrays[xk]
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
        columns = {"pixels": _as_images(x, cfg, f"{path}: '{xk}'")}
    else:
        columns = {}
        for name, arr in arrays.items():
            if arr.ndim == 0 or y.ndim == 0 or len(arr) != len(y):
                raise DataError(
                    f"{path}: '{name}' has shape {arr.shape} and '{yk}' shape {y.shape}; "
                    "expected one value per example (the same first dimension)"
                )
            if arr.dtype.kind not in "biufUS":
                raise DataError(
                    f"{path}: '{name}' has dtype {arr.dtype}; expected numbers or strings"
                )
            columns[name] = arr
        if not columns:
            raise DataError(f"{path} holds only the label array '{yk}'; expected features too")
    manifest = file_manifest(path, [path])
    return LoadedData(columns, y, None, manifest, manifest_bytes(manifest))


def _read_npz(path: Path, label: str) -> dict[str, np.ndarray]:
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
                keys = list(z.files)
                for key in keys:
                    _check_member(z.zip, key, path)
                return {key: z[key] for key in keys}
        except DataError:
            raise
        # Untrusted bytes: OSError, ValueError, BadZipFile, EOFError, zlib.error, ...
        except Exception as exc:
            raise DataError(
                f"cannot read {path} as .npz: {type(exc).__name__}: {str(exc)[:200]}",
                hint="save it with np.savez(path, x=images, y=labels) using numeric arrays",
            ) from None


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


# Sources that import TensorFlow or pyarrow, or user code, load their module when used.
def _tfrecord(cfg: DataConfig) -> LoadedData:
    from tfship.data.tfrecords import load_tfrecord

    return load_tfrecord(cfg)


def _csv(cfg: DataConfig) -> LoadedData:
    from tfship.data.tables import load_csv

    return load_csv(cfg)


def _parquet(cfg: DataConfig) -> LoadedData:
    from tfship.data.tables import load_parquet

    return load_parquet(cfg)


def _loader(cfg: DataConfig) -> LoadedData:
    from tfship.data.user_loader import load_user

    return load_user(cfg)


LOADERS = {
    DataSource.DEMO: load_demo,
    DataSource.IMAGE_FOLDER: load_image_folder,
    DataSource.TEXT_FOLDER: load_text_folder,
    DataSource.TFRECORD: _tfrecord,
    DataSource.CSV: _csv,
    DataSource.PARQUET: _parquet,
    DataSource.NPZ: load_npz,
    DataSource.LOADER: _loader,
}


def load(cfg: DataConfig) -> LoadedData:
    """Load `cfg.source` into the normal form."""
    return LOADERS[cfg.source](cfg)
