"""Data stage: load a data set, split it deterministically, fingerprint it, feed tf.data.

Every source is normalised to the same form: float32 images [n, H, W, C] holding raw pixel
values in [0, 255] (preprocessing lives in the model, so the serving signature takes raw pixels)
and int64 labels indexing `class_names`.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig, DataSource, PipelineConfig
from tfship.errors import DataError
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
TFRECORD_SUFFIXES = {".tfrecord", ".tfrecords", ".tfr"}


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the data root, '/'-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays plus what identifies the data they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str
    files: tuple[FileEntry, ...] = field(default=(), repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DataResult:
    """What `tfship data` found and wrote to data.json."""

    source: str
    path: str | None
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    sizes: dict[str, int]
    fingerprint: str
    files: int
    data_json: Path

    def render_text(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.sizes.items())
        return (
            f"data: {self.source} ({self.path or 'built-in'}), {len(self.class_names)} classes, "
            f"input {self.input_shape}\n  splits: {sizes}\n  fingerprint: {self.fingerprint}\n"
            f"  wrote {self.data_json}"
        )


# --- loading -------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(root: Path, files: list[Path]) -> list[FileEntry]:
    base = root if root.is_dir() else root.parent
    return [
        FileEntry(p.relative_to(base).as_posix(), p.stat().st_size, _sha256_file(p))
        for p in sorted(files)
    ]


def _require_path(cfg: DataConfig) -> Path:
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


def _load_demo(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
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


def _load_image_folder(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    from PIL import Image, UnidentifiedImageError

    root = _require_path(cfg)
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
    manifest = _manifest(root, files)
    return np.stack(images), labels, manifest, _manifest_bytes(manifest)


def _load_tfrecord(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    import tensorflow as tf

    root = _require_path(cfg)
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
    manifest = _manifest(root, paths)
    return np.stack(images), labels, manifest, _manifest_bytes(manifest)


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


def _load_csv(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    path = _require_path(cfg)
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
    manifest = _manifest(path, [path])
    x = np.asarray(rows, dtype=np.float32).reshape(-1, h, w, cfg.channels)
    return x, labels, manifest, _manifest_bytes(manifest)


def _load_npz(cfg: DataConfig) -> tuple[np.ndarray, list[Any], list[FileEntry], bytes]:
    path = _require_path(cfg)
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
    manifest = _manifest(path, [path])
    return x, list(y.tolist()), manifest, _manifest_bytes(manifest)


def _manifest_bytes(manifest: list[FileEntry]) -> bytes:
    return "\n".join(f"{e.path}\t{e.size}\t{e.sha256}" for e in manifest).encode()


_LOADERS = {
    DataSource.DEMO: _load_demo,
    DataSource.IMAGE_FOLDER: _load_image_folder,
    DataSource.TFRECORD: _load_tfrecord,
    DataSource.CSV: _load_csv,
    DataSource.NPZ: _load_npz,
}


def _index_labels(raw: list[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    uniq = set(raw)
    # Integer labels sort numerically ("2" before "10"); anything else sorts as text.
    try:
        ordered = sorted(
            uniq, key=lambda v: (0, int(v)) if str(v).lstrip("-").isdigit() else (1, str(v))
        )
    except ValueError:
        ordered = sorted(uniq, key=str)
    names = tuple(str(v) for v in ordered)
    index = {v: i for i, v in enumerate(ordered)}
    return np.asarray([index[v] for v in raw], dtype=np.int64), names


def load_splits(cfg: PipelineConfig) -> Splits:
    """Load `cfg.data`, shuffle with `cfg.run.seed` and split train/validation/test."""
    from sklearn.model_selection import train_test_split

    dcfg = cfg.data
    x, raw_labels, manifest, content = _LOADERS[dcfg.source](dcfg)
    y, class_names = _index_labels(raw_labels)
    if len(class_names) < 2:
        raise DataError(f"data has {len(class_names)} class(es); a classifier needs at least 2")
    fingerprint = hashlib.sha256(content).hexdigest()
    seed = cfg.run.seed
    if dcfg.limit is not None and dcfg.limit < len(x):
        keep = np.random.default_rng(seed).permutation(len(x))[: dcfg.limit]
        keep.sort()
        x, y = x[keep], y[keep]
    counts = Counter(y.tolist())
    n_eval = dcfg.validation_fraction + dcfg.test_fraction
    # Stratify when every class can appear in each split; tiny classes make sklearn refuse.
    stratify = (
        y
        if min(counts.values()) >= 3
        and len(x) * min(dcfg.validation_fraction, dcfg.test_fraction) >= len(counts)
        else None
    )
    try:
        x_tr, x_rest, y_tr, y_rest = train_test_split(
            x, y, test_size=n_eval, random_state=seed, stratify=stratify
        )
        x_val, x_te, y_val, y_te = train_test_split(
            x_rest,
            y_rest,
            test_size=dcfg.test_fraction / n_eval,
            random_state=seed,
            stratify=y_rest if stratify is not None else None,
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(x)} examples: {exc}",
            hint="add data, or lower data.validation_fraction/test_fraction",
        ) from None
    for name, part in (("train", x_tr), ("validation", x_val), ("test", x_te)):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty ({len(x)} examples in all)")
    return Splits(x_tr, y_tr, x_val, y_val, x_te, y_te, class_names, fingerprint, tuple(manifest))


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    global_batch_size: int,
    shuffle: bool,
    seed: int,
    cache: bool = True,
    shuffle_buffer: int = 2048,
    input_context: Any = None,
    repeat: bool = False,
    drop_remainder: bool = False,
) -> Any:
    """A tf.data pipeline; with an `InputContext` it shards per worker and batches per replica."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    batch = global_batch_size
    if input_context is not None:
        if input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch = input_context.get_per_replica_batch_size(global_batch_size)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(x)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def run_data(cfg: PipelineConfig, run_dir: RunDir) -> DataResult:
    """Load and split the data, write data.json (summary) and data.manifest.json (file list)."""
    splits = load_splits(cfg)
    run_dir.ensure()
    sizes = {
        "train": len(splits.y_train),
        "validation": len(splits.y_val),
        "test": len(splits.y_test),
    }
    per_class = {
        name: {
            c: int(n)
            for c, n in zip(
                splits.class_names, np.bincount(ys, minlength=splits.num_classes), strict=True
            )
        }
        for name, ys in (
            ("train", splits.y_train),
            ("validation", splits.y_val),
            ("test", splits.y_test),
        )
    }
    atomic_write_json(
        run_dir.data_json,
        {
            "source": cfg.data.source.value,
            "path": str(cfg.data.path) if cfg.data.path else None,
            "class_names": list(splits.class_names),
            "input_shape": list(splits.input_shape),
            "sizes": sizes,
            "per_class": per_class,
            "seed": cfg.run.seed,
            "fingerprint": splits.fingerprint,
            "files": len(splits.files),
        },
    )
    atomic_write_json(
        run_dir.root / "data.manifest.json",
        {"fingerprint": splits.fingerprint, "files": [e.__dict__ for e in splits.files]},
    )
    return DataResult(
        cfg.data.source.value,
        str(cfg.data.path) if cfg.data.path else None,
        splits.class_names,
        splits.input_shape,
        sizes,
        splits.fingerprint,
        len(splits.files),
        run_dir.data_json,
    )
