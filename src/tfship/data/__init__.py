"""Data stage: load a data set, fit it to a schema, split it deterministically, feed tf.data.

Every source (tfship.data.loaders) returns named feature columns and raw labels; the schema
(`data.features`, or inferred and logged so it can be pinned) fixes each feature's kind, dtype
and shape (tfship.data.schema); the task (`cfg.task_obj`) encodes the labels and says whether
the split is stratified. Images are float32 [n, H, W, C] of raw pixel values in [0, 255]:
preprocessing lives in the model, so the serving signature takes raw values.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import PipelineConfig
from tfship.data.files import IMAGE_SUFFIXES, TFRECORD_SUFFIXES, FileEntry
from tfship.data.infer import conform, infer_schema, resolve_schema
from tfship.data.labels import (
    check_class_sizes,
    check_label_names,
    check_labels_present,
    check_pixels,
)
from tfship.data.loaders import LoadedData, load
from tfship.data.schema import Kind, LabelledSplits, Schema
from tfship.errors import DataError
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "TFRECORD_SUFFIXES",
    "DataResult",
    "FileEntry",
    "LoadedData",
    "Schema",
    "Splits",
    "infer_schema",
    "load_splits",
    "make_dataset",
    "resolve_schema",
    "run_data",
    "take",
]

SCHEMA_FILE = "schema.json"


def take(x: Any, idx: Any) -> dict[str, np.ndarray]:
    """Rows `idx` of every feature (a bare array is the one image feature `pixels`)."""
    features = x if isinstance(x, dict) else {"pixels": np.asarray(x)}
    return {name: values[idx] for name, values in features.items()}


@dataclass(frozen=True)
class Splits(LabelledSplits):
    """Train/validation/test features and encoded labels, plus what identifies the data.

    `x_*` map feature name -> array (rows = examples); `y_*` are encoded by the task. Bare
    arrays (the form before schemas) are taken as the one image feature `pixels`, and a
    missing `schema` is inferred from `x_train`.
    """

    x_train: dict[str, np.ndarray]
    y_train: np.ndarray
    x_val: dict[str, np.ndarray]
    y_val: np.ndarray
    x_test: dict[str, np.ndarray]
    y_test: np.ndarray
    label_names: tuple[str, ...]
    fingerprint: str
    files: tuple[FileEntry, ...] = field(default=(), repr=False)
    schema: Schema = None  # type: ignore[assignment]  # filled in by __post_init__

    take = staticmethod(take)

    def __post_init__(self) -> None:
        for name in ("x_train", "x_val", "x_test"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                object.__setattr__(self, name, {"pixels": np.asarray(value)})
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.schema is None:
            object.__setattr__(self, "schema", infer_schema(self.x_train, "label"))

    @property
    def train_size(self) -> int:
        """Training examples (a StreamSplits counts them without holding them)."""
        return len(self.y_train)

    def class_weight_labels(self) -> np.ndarray:
        """The training labels `task.class_weights` weighs classes by."""
        return self.y_train

    def training_statistics(self) -> dict[str, Any]:
        """statistics.json's content without the fingerprint: every training example."""
        from tfship.data.statistics import in_memory_statistics

        doc = in_memory_statistics(self.schema, self.x_train, self.y_train)
        return {**doc, "split": "train", "scope": "all"}


@dataclass(frozen=True)
class DataResult:
    """What `tfship data` found and wrote to data.json."""

    source: str
    path: str | None
    task: str
    features: dict[str, str]  # name -> kind
    label_names: tuple[str, ...]
    sizes: dict[str, int]
    fingerprint: str
    files: int
    data_json: Path
    schema_json: Path

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.label_names

    def render_text(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.sizes.items())
        feats = ", ".join(f"{n}:{k}" for n, k in list(self.features.items())[:20])
        more = f" (+{len(self.features) - 20} more)" if len(self.features) > 20 else ""
        names = ", ".join(self.label_names[:20]) + (" ..." if len(self.label_names) > 20 else "")
        return (
            f"data: {self.source} ({self.path or 'built-in'}), task {self.task}\n"
            f"  features: {feats}{more}\n  labels ({len(self.label_names)}): {names}\n"
            f"  splits: {sizes}\n  fingerprint: {self.fingerprint}\n"
            f"  wrote {self.data_json} and {self.schema_json}"
        )


def _schema_of(cfg: PipelineConfig, loaded: LoadedData) -> Schema:
    dcfg = cfg.data
    if dcfg.features or loaded.schema is None:
        schema = resolve_schema(dcfg.features, loaded.columns, dcfg.label)
    else:
        schema = loaded.schema
    if not dcfg.features and loaded.schema is None:
        log.info("inferred schema (pin it in data.features):\n%s", schema.describe())
    return schema


def load_splits(cfg: PipelineConfig) -> Any:
    """Load `cfg.data`, fit it to the schema, encode the labels with the task, shuffle with
    `cfg.run.seed` and split train/validation/test (stratified when the task allows).

    With `data.stream`: a `tfship.data.streamed.StreamSplits` (validation/test in memory, the
    training split streamed; see that module)."""
    from sklearn.model_selection import train_test_split

    dcfg = cfg.data
    if dcfg.stream is not None:
        from tfship.data.streamed import load_stream_splits

        return load_stream_splits(cfg)
    if isinstance(dcfg.path, str) and dcfg.source.value not in ("demo", "loader"):
        raise DataError(
            f"data.path {dcfg.path} is a URL; the in-memory loaders read local files only",
            hint="add a data.stream block (docs/data-at-scale.md) to stream shards from object "
            "storage, or copy the data to local disk",
        )
    task = cfg.task_obj
    where = f"data ({dcfg.source.value}{f' {dcfg.path}' if dcfg.path else ''})"
    loaded = load(dcfg)
    schema = _schema_of(cfg, loaded)
    columns = conform(schema, loaded.columns)
    for feature in schema.of_kind(Kind.IMAGE):  # before check(): it names the exact pixel
        if columns[feature.name].dtype.kind in "biuf":
            check_pixels(columns[feature.name])
    schema.check(columns, where)
    n = len(columns[schema.names[0]])
    raw = loaded.labels
    if len(raw) != n:
        raise DataError(f"{n} examples but {len(raw)} labels; they must match")
    check_labels_present(raw, empty_ok=task.empty_label_is_a_value())
    y, label_names = task.encode(raw)
    check_label_names(label_names)
    fingerprint = hashlib.sha256(loaded.content).hexdigest()
    seed = cfg.run.seed
    idx = np.arange(n)
    if dcfg.limit is not None and dcfg.limit < n:
        idx = np.sort(np.random.default_rng(seed).permutation(n)[: dcfg.limit])
    key = task.stratify_key(y[idx])
    stratify = None
    if key is not None:
        check_class_sizes(key, label_names)
        counts = Counter(np.asarray(key).tolist())
        # Stratify when every class can appear in each split; tiny classes make sklearn refuse.
        small = len(idx) * min(dcfg.validation_fraction, dcfg.test_fraction) < len(counts)
        stratify = None if min(counts.values()) < 3 or small else np.asarray(key)
    n_eval = dcfg.validation_fraction + dcfg.test_fraction
    # Splitting the row indices shuffles exactly as splitting the arrays did (sklearn draws
    # the permutation from n, the seed and the stratify key only), so old splits are kept.
    try:
        i_tr, i_rest, _, k_rest = train_test_split(
            idx,
            stratify if stratify is not None else idx,
            test_size=n_eval,
            random_state=seed,
            stratify=stratify,
        )
        i_val, i_te = train_test_split(
            i_rest,
            test_size=dcfg.test_fraction / n_eval,
            random_state=seed,
            stratify=k_rest if stratify is not None else None,
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(idx)} examples: {exc}",
            hint="add data, or lower data.validation_fraction/test_fraction",
        ) from None
    for name, part in (("train", i_tr), ("validation", i_val), ("test", i_te)):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty ({len(idx)} examples in all)")
    return Splits(
        take(columns, i_tr),
        y[i_tr],
        take(columns, i_val),
        y[i_val],
        take(columns, i_te),
        y[i_te],
        label_names,
        fingerprint,
        tuple(loaded.files),
        schema,
    )


def _tensor_ready(values: np.ndarray) -> np.ndarray:
    """String features as UTF-8 bytes, which tf.data takes as tf.string. An object array of
    bytes keeps each value's own length (a fixed-width unicode array would pad every text to
    the longest one, at 4 bytes a character)."""
    if values.dtype.kind == "U" or (values.dtype == object and values.ndim == 1):
        if not len(values):
            return np.asarray([], dtype=np.bytes_)
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values.tolist()]
        return out
    return values


def make_dataset(
    x: Any,
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
    """A tf.data pipeline of (features dict, labels); with an `InputContext` it shards per
    worker and batches per replica. A bare array `x` is passed through as it is."""
    import tensorflow as tf

    if isinstance(x, dict):
        x = {name: _tensor_ready(np.asarray(v)) for name, v in x.items()}
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    batch = global_batch_size
    if input_context is not None:
        if input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch = input_context.get_per_replica_batch_size(global_batch_size)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(y)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # The data is already in memory, so tf.data's autotuner has nothing to tune, and its
    # background thread made deleting a finished iterator block for ~5 s in one run of three
    # (measured: benchmarks/checkpoint_overhead.py wall times). A fixed prefetch keeps the
    # next batch ready while a step runs.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(batch, drop_remainder=drop_remainder).prefetch(2).with_options(options)


def _per_class(cfg: PipelineConfig, splits: Splits) -> dict[str, dict[str, int]] | None:
    task = cfg.task_obj
    parts = (("train", splits.y_train), ("validation", splits.y_val), ("test", splits.y_test))
    keys = {name: task.stratify_key(ys) for name, ys in parts}
    if any(k is None for k in keys.values()):
        return None
    names = splits.label_names
    train_ids = splits.train_label_ids() if getattr(splits, "streamed", False) else None
    if getattr(splits, "streamed", False) and train_ids is None:
        return None

    def label(c: Any) -> str:
        return names[int(c)] if 0 <= int(c) < len(names) else str(c)

    out = {}
    for name, key in keys.items():
        if name == "train" and train_ids is not None:
            counts = Counter(train_ids)
        else:
            counts = Counter(np.asarray(key).tolist())
        out[name] = {
            label(c): int(counts.get(c, 0)) for c in sorted(set(range(len(names))) | set(counts))
        }
    return out


def run_data(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    splits: Splits | None = None,
    champion: str | Path | None = None,
) -> DataResult:
    """Load and split the data; write data.json (summary), schema.json (the schema, to pin),
    data.manifest.json (file list), statistics.json (the training split's statistics) and
    data.drift.json (them against the champion's: `champion`, an export directory, or the
    labelled version in the model repository). A schema violation against the champion's
    statistics raises DataError (exit 4) before training."""
    from tfship.data.statistics import check_drift, statistics_of, write_statistics

    splits = load_splits(cfg) if splits is None else splits
    run_dir.ensure()
    sizes = {
        "train": splits.train_size,
        "validation": len(splits.y_val),
        "test": len(splits.y_test),
    }
    path = str(cfg.data.path) if cfg.data.path else None
    summary: dict[str, Any] = {
        "source": cfg.data.source.value,
        "path": path,
        "task": cfg.task.type,
        "schema": splits.schema.to_json(),
        "label_names": list(splits.label_names),
        # For readers from before schemas and tasks.
        "class_names": list(splits.label_names),
        "input_shape": list(splits.input_shape) if splits.input_shape else None,
        "sizes": sizes,
        "seed": cfg.run.seed,
        "fingerprint": splits.fingerprint,
        "files": len(splits.files),
    }
    per_class = _per_class(cfg, splits)
    if per_class is not None:
        summary["per_class"] = per_class
    if getattr(splits, "streamed", False):
        summary["stream"] = splits.stream_summary()
        for name, prof in splits.profiles.items():  # fingerprint, listing, sample statistics
            prof.write(run_dir.root / f"data.stream.{name}.json")
    atomic_write_json(run_dir.data_json, summary)
    schema_json = run_dir.root / SCHEMA_FILE
    atomic_write_json(schema_json, splits.schema.to_json())
    atomic_write_json(
        run_dir.root / "data.manifest.json",
        {"fingerprint": splits.fingerprint, "files": [e.__dict__ for e in splits.files]},
    )
    # Streamed: the profile's sample statistics, read with the fingerprint (no second read).
    statistics = statistics_of(splits)
    write_statistics(run_dir.root, statistics)
    check_drift(cfg, run_dir.root, statistics, champion=champion)
    return DataResult(
        cfg.data.source.value,
        path,
        cfg.task.type,
        {f.name: f.kind.value for f in splits.schema.features},
        splits.label_names,
        sizes,
        splits.fingerprint,
        len(splits.files),
        run_dir.data_json,
        schema_json,
    )
