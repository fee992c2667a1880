"""Data stage: load a data set, split it deterministically, fingerprint it, feed tf.data.

Every source is normalised to the same form: float32 images [n, H, W, C] holding raw pixel
values in [0, 255] (preprocessing lives in the model, so the serving signature takes raw pixels)
and int64 labels indexing `class_names`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import PipelineConfig
from tfship.data.files import IMAGE_SUFFIXES, TFRECORD_SUFFIXES, FileEntry
from tfship.data.labels import check_class_sizes, check_pixels, index_labels
from tfship.data.loaders import LOADERS
from tfship.errors import DataError
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

__all__ = [
    "IMAGE_SUFFIXES",
    "TFRECORD_SUFFIXES",
    "DataResult",
    "FileEntry",
    "Splits",
    "load_splits",
    "make_dataset",
    "run_data",
]


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


def load_splits(cfg: PipelineConfig) -> Splits:
    """Load `cfg.data`, shuffle with `cfg.run.seed` and split train/validation/test."""
    from sklearn.model_selection import train_test_split

    dcfg = cfg.data
    x, raw_labels, manifest, content = LOADERS[dcfg.source](dcfg)
    if len(x) != len(raw_labels):
        raise DataError(f"{len(x)} images but {len(raw_labels)} labels; they must match")
    check_pixels(x)
    y, class_names = index_labels(raw_labels)
    if len(class_names) < 2:
        raise DataError(f"data has {len(class_names)} class(es); a classifier needs at least 2")
    fingerprint = hashlib.sha256(content).hexdigest()
    seed = cfg.run.seed
    if dcfg.limit is not None and dcfg.limit < len(x):
        keep = np.random.default_rng(seed).permutation(len(x))[: dcfg.limit]
        keep.sort()
        x, y = x[keep], y[keep]
    check_class_sizes(y, class_names)
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
    # The data is already in memory, so tf.data's autotuner has nothing to tune, and its
    # background thread made deleting a finished iterator block for ~5 s in one run of three
    # (measured: benchmarks/checkpoint_overhead.py wall times). A fixed prefetch keeps the
    # next batch ready while a step runs.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(batch, drop_remainder=drop_remainder).prefetch(2).with_options(options)


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
