"""Readers for each data source, all returning the same normal form.

A loader returns (images float32 [n, H, W, C] in [0, 255], raw labels, file manifest, the bytes
the fingerprint is computed over). Labels are indexed into class names by the caller.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig, DataSource
from tfship.errors import DataError
from tfship.fsutil import sha256_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
TFRECORD_SUFFIXES = {".tfrecord", ".tfrecords", ".tfr"}


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the data root, '/'-separated
    size: int
    sha256: str


def file_manifest(root: Path, files: list[Path]) -> list[FileEntry]:
    base = root if root.is_dir() else root.parent
    return [
        FileEntry(p.relative_to(base).as_posix(), p.stat().st_size, sha256_file(p))
        for p in sorted(files)
    ]


def require_path(cfg: DataConfig) -> Path:
    assert cfg.path is not None  # guaranteed by DataConfig validation
    if not cfg.path.exists():
        raise DataError(
            f"data.path {cfg.path} does not exist (data.source={cfg.source.value})",
            hint="point data.path (or TFSHIP_DATA_PATH) at your data, relative to the working "
            "directory or absolute",
        )
    return cfg.path


def _resize_gray_or_rgb(img: Any, cfg: DataConfig) -> np.ndarray:
    from PIL import Image

    img = img.convert("L" if cfg.channels == 1 else "RGB")
    h, w = cfg.image_size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    return arr.reshape(h, w, cfg.channels)


def load_demo(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # load_digits pixels are counts 0..16; scale to the 0..255 range every other source uses.
    x = (digits.images.astype(np.float32) * (255.0 / 16.0)).round()
    if tuple(cfg.image_size) != (8, 8) or cfg.channels != 1:
        x = np.stack([_resize_gray_or_rgb(Image.fromarray(im.astype(np.uint8)), cfg) for im in x])
    else:
        x = x[..., None]
    content = b"sklearn.load_digits" + x.tobytes() + digits.target.astype(np.int64).tobytes()
    return x, list(digits.target.astype(int)), [], content


def load_image_folder(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    from PIL import Image, UnidentifiedImageError

    root = require_path(cfg)
    if not root.is_dir():
        raise DataError(
            f"data.path {root} is not a directory; image_folder expects one sub-folder per class"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"{root} has {len(class_dirs)} class sub-folder(s); expected at least 2 "
            "(one sub-folder per class, e.g. cats/, dogs/)"
        )
    images: list[np.ndarray] = []
    labels: list[str] = []
    files: list[Path] = []
    for d in class_dirs:
        members = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise DataError(
                f"class folder {d} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "remove it or add images"
            )
        for p in members:
            try:
                with Image.open(p) as img:
                    images.append(_resize_gray_or_rgb(img, cfg))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(
                    f"cannot read image {p}: {exc}", hint="delete or re-encode the file"
                ) from None
            labels.append(d.name)
            files.append(p)
    manifest = file_manifest(root, files)
    return np.stack(images), labels, manifest, manifest_bytes(manifest)


def load_tfrecord(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    import tensorflow as tf

    root = require_path(cfg)
    paths = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in TFRECORD_SUFFIXES)
        if root.is_dir()
        else [root]
    )
    if not paths:
        raise DataError(f"no TFRecord files ({', '.join(sorted(TFRECORD_SUFFIXES))}) under {root}")
    h, w = cfg.image_size
    images: list[np.ndarray] = []
    labels: list[int] = []
    ikey, lkey = cfg.tfrecord_image_key, cfg.tfrecord_label_key
    for path in paths:
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                ex = tf.train.Example.FromString(raw)
                feats = ex.features.feature
                missing = [k for k in (ikey, lkey) if k not in feats]
                if missing:
                    raise DataError(
                        f"{path} record {i}: missing feature(s) {missing}; "
                        f"present: {sorted(feats)}",
                        hint="set data.tfrecord_image_key / data.tfrecord_label_key",
                    )
                images.append(_decode_example_image(feats[ikey], cfg, f"{path} record {i}"))
                lab = feats[lkey].int64_list.value
                if len(lab) != 1:
                    raise DataError(
                        f"{path} record {i}: '{lkey}' must be one int64, got {list(lab)}"
                    )
                labels.append(int(lab[0]))
        except tf.errors.DataLossError as exc:
            raise DataError(f"{path} is not a valid TFRecord file: {exc.message}") from None
    if not images:
        raise DataError(f"TFRecord files under {root} hold no records")
    if any(im.shape != (h, w, cfg.channels) for im in images):
        raise DataError(
            f"TFRecord images under {root} do not all have shape {(h, w, cfg.channels)}"
        )
    manifest = file_manifest(root, paths)
    return np.stack(images), labels, manifest, manifest_bytes(manifest)


def _decode_example_image(feature: Any, cfg: DataConfig, where: str) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    h, w = cfg.image_size
    want = h * w * cfg.channels
    if feature.bytes_list.value:
        try:
            with Image.open(io.BytesIO(feature.bytes_list.value[0])) as img:
                return _resize_gray_or_rgb(img, cfg)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{where}: image bytes cannot be decoded ({exc})") from None
    values = feature.float_list.value or feature.int64_list.value
    if len(values) != want:
        raise DataError(
            f"{where}: image has {len(values)} values; expected {want} (= {h}x{w}x{cfg.channels} "
            "from data.image_size and data.channels)"
        )
    return np.asarray(values, dtype=np.float32).reshape(h, w, cfg.channels)


def load_csv(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    path = require_path(cfg)
    h, w = cfg.image_size
    want = h * w * cfg.channels
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path} is empty; expected a header row and one row per example")
        if cfg.csv_label_column not in header:
            raise DataError(
                f"{path}: no column '{cfg.csv_label_column}' in header {header[:8]}...",
                hint="set data.csv_label_column to the name of the label column",
            )
        li = header.index(cfg.csv_label_column)
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
                raise DataError(f"{path} line {n}: non-numeric pixel value") from None
    if not rows:
        raise DataError(f"{path} has a header but no examples")
    manifest = file_manifest(path, [path])
    x = np.asarray(rows, dtype=np.float32).reshape(-1, h, w, cfg.channels)
    return x, labels, manifest, manifest_bytes(manifest)


def load_npz(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    path = require_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = next((k for k in ("x", "images") if k in keys), None)
            yk = next((k for k in ("y", "labels") if k in keys), None)
            if xk is None or yk is None:
                raise DataError(
                    f"{path}: expected arrays 'x' (or 'images') and 'y' (or 'labels'); "
                    f"found {sorted(keys)}"
                )
            x, y = z[xk].astype(np.float32), z[yk]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    h, w = cfg.image_size
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels; they must match")
    try:
        x = x.reshape(len(x), h, w, cfg.channels)
    except ValueError:
        raise DataError(
            f"{path}: images of shape {x.shape[1:]} do not fit {(h, w, cfg.channels)} "
            "(data.image_size, data.channels)"
        ) from None
    manifest = file_manifest(path, [path])
    return x, list(y.tolist()), manifest, manifest_bytes(manifest)


def manifest_bytes(manifest: list[FileEntry]) -> bytes:
    return "\n".join(f"{e.path}\t{e.size}\t{e.sha256}" for e in manifest).encode()


LOADERS = {
    DataSource.DEMO: load_demo,
    DataSource.IMAGE_FOLDER: load_image_folder,
    DataSource.TFRECORD: load_tfrecord,
    DataSource.CSV: load_csv,
    DataSource.NPZ: load_npz,
}
