"""`data.stream`: the data stage over sharded files read with tf.data (tfship.data.stream).

`load_stream_splits(cfg)` returns a `StreamSplits`, which the stages take where they take a
`tfship.data.Splits`:

- validation and test are read once and held in memory in the same NumPy form as the in-memory
  path (evaluate, export's golden/warmup rows and the gate use them unchanged); more than
  `data.stream.max_eval_examples` in either is a DataError (exit 4);
- the training split is never held: `train_dataset(ctx, ...)` builds one input pipeline's
  training batches (global batch semantics unchanged), epoch `e`'s order a stateless function
  of (run.seed, e) so a resumed run replays the interrupted epoch and skips what it trained;
- one counting pass over the training split gives `train_size` and the label counts (class
  weights, data.json's per-class sizes). The listing holds sizes, not record counts, and a
  hash split decides per record, so no listing gives an exact count;
- `x_train` / `y_train` are a deterministic training sample (the first `SAMPLE_ROWS` examples
  of epoch 0's file order, without the example shuffle), what ModelSpec fits `adapt()` on, so
  export rebuilds the same model;
- `fingerprint` / `files` come from `tfship.data.stream.profile` (listing + bounded content
  sample; statistics of the same sample in `profile`).

Image folders (`data.source: image_folder`): the schema is one image feature (`pixels` unless
data.features names another) of data.image_size x data.channels, the label the class folder's
name; the training count and its label counts come from the listing (one file, one example;
a corrupt file that `on_error: skip` drops later is still counted), with no file read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfship.data.files import FileEntry
from tfship.data.infer import conform
from tfship.data.schema import DTYPES, Feature, Kind, LabelledSplits, Schema
from tfship.errors import DataError

if TYPE_CHECKING:
    from tfship.config import PipelineConfig
    from tfship.data.stream import Profile, StreamSource

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
#: Distinct label values counted in the counting pass; more (a regression target) stops it.
MAX_LABEL_VALUES = 100_000
READ_BATCH = 1024


def stream_schema(cfg: PipelineConfig) -> Schema:
    """The declared schema (data.features): the stream never infers one from all the data."""
    dcfg = cfg.data
    if not dcfg.features and dcfg.source.value == "image_folder":
        shape = (*dcfg.image_size, dcfg.channels)
        return Schema((Feature("pixels", Kind.IMAGE, "float32", shape),), dcfg.label)
    if not dcfg.features:
        raise DataError(
            "data.stream needs data.features and data.label declared: the schema cannot be "
            "inferred without reading all the data"
        )
    feats = []
    for name, decl in dcfg.features.items():
        if hasattr(decl, "kind"):
            kind, dtype, shape = decl.kind, decl.dtype, decl.shape
        else:
            kind, dtype, shape = decl, None, None
        kind = Kind(str(kind))
        if shape is None and kind == Kind.IMAGE:
            shape = (*dcfg.image_size, dcfg.channels)
        feats.append(Feature(name, kind, str(dtype or DTYPES[kind][0]), tuple(shape or ())))
    return Schema(tuple(feats), dcfg.label)


def stream_options(cfg: PipelineConfig) -> Any:
    from tfship.data.stream import HashSplit, LabelSpec, SplitLocations, StreamOptions

    dcfg, scfg = cfg.data, cfg.data.stream
    assert scfg is not None
    hash_split = split_locations = None
    if scfg.hash_key is not None:
        hash_split = HashSplit(
            scfg.hash_key,
            dcfg.validation_fraction,
            dcfg.test_fraction,
            scfg.hash_buckets,
            scfg.hash_key_dtype,
        )
    if scfg.locations is not None:
        loc = scfg.locations
        split_locations = SplitLocations(loc.train, loc.validation, loc.test)
    return StreamOptions(
        format=dcfg.source.value,
        compression=None if scfg.compression == "none" else scfg.compression,
        label=LabelSpec(
            dcfg.label, "string" if dcfg.source.value == "image_folder" else scfg.label_dtype
        ),
        seed=cfg.run.seed,
        shuffle_buffer=dcfg.shuffle_buffer,
        cycle_length=scfg.cycle_length,
        on_error=scfg.on_error,
        max_bad_records=scfg.max_bad_records,
        hash_split=hash_split,
        split_locations=split_locations,
        s3_endpoint_url=scfg.s3_endpoint_url,
        stage_dir=Path(scfg.stage_dir) if scfg.stage_dir else None,
        stage_max_bytes=scfg.stage_max_bytes,
    )


def _plain(src: StreamSource) -> StreamSource:
    """The same shards read in listing order without the example shuffle (a deterministic read
    that does not depend on TF's global seed)."""
    return replace(src, options=replace(src.options, shuffle_files=False, shuffle_buffer=0))


def _as_str_labels(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == object:
        return np.asarray([v.decode("utf-8") if isinstance(v, bytes) else v for v in raw], object)
    return raw


def _read(src: StreamSource, split: str | None, limit: int | None, what: str, hint: str) -> Any:
    """(columns dict, raw labels) of a split, at most `limit` examples (None: all; more than
    the limit raises DataError)."""
    xs: dict[str, list[np.ndarray]] = {}
    ys: list[np.ndarray] = []
    n = 0
    ds = src.dataset(READ_BATCH, epoch=0, split=split)
    with src.named_errors():
        for x, y in ds.as_numpy_iterator():
            n += len(y)
            if limit is not None and n > limit:
                raise DataError(f"{what} has more than {limit} examples", hint=hint)
            for k, v in x.items():
                xs.setdefault(k, []).append(v)
            ys.append(y)
    cols = {k: np.concatenate(v) for k, v in xs.items()}
    return cols, (np.concatenate(ys) if ys else np.zeros(0))


def _decode_strings(schema: Schema, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(cols)
    for f in schema.features:
        if f.is_string and f.name in out:
            v = out[f.name]
            out[f.name] = np.asarray(
                [b.decode("utf-8", "replace") if isinstance(b, bytes) else b for b in v.tolist()],
                dtype=object,
            )
    return conform(schema, out)


@dataclass(frozen=True)
class TrainCount:
    examples: int
    label_counts: dict[Any, int] | None  # raw label value -> count; None: not scalar/too many


def _labels_only(src: StreamSource, split: str | None) -> Any:
    """TFRecord shards, `on_error: fail`: batches of the split's labels, parsing only the label
    (and the hash key), read in listing order; None where the full pipeline is needed."""
    import tensorflow as tf

    opts, label = src.options, src.label
    if src.format != "tfrecord" or opts.on_error != "fail" or label.shape:
        return None
    dtype = {"int64": tf.int64, "string": tf.string}.get(label.dtype, tf.float32)
    spec = {label.key: tf.io.FixedLenFeature([], dtype, default_value=label.missing())}
    raw = src._streamed_raw()
    ds = tf.data.Dataset.from_tensor_slices([s.path for s in src.shards])
    if src.stager is not None:
        ds = src._epoch_files(list(src.shards), 0)
    ds = ds.interleave(
        raw,
        cycle_length=opts.cycle_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,  # a count: the order does not matter
    ).batch(4 * READ_BATCH)
    if opts.hash_split is not None and split is not None:
        key, hs = src.key_fn(), opts.hash_split
        ds = ds.map(lambda r: tf.boolean_mask(r, hs.mask(key(r), split)))
    ds = ds.map(lambda r: tf.io.parse_example(r, spec)[label.key])
    return ds.prefetch(2)


def count_train(src: StreamSource, split: str | None) -> TrainCount:
    """One pass over the training split: examples and raw label counts (image folders: from
    the listing, one example a file)."""
    if src.format == "image_folder":
        files = src.split_shards(split) if split and src.options.hash_split else src.shards
        counts = Counter(s.rel.split("/", 1)[0] for s in files)
        return TrainCount(len(files), dict(counts))
    n = 0
    counts: Counter[Any] | None = Counter()
    ds = _labels_only(src, split)
    if ds is None:
        ds = src.dataset(4 * READ_BATCH, epoch=0, split=split).map(lambda x, y: y)
    with src.named_errors():
        for y in ds.as_numpy_iterator():
            n += len(y)
            if counts is not None:
                if y.ndim != 1 or y.dtype.kind == "f":
                    counts = None
                else:
                    counts.update(_as_str_labels(y).tolist())
                    if len(counts) > MAX_LABEL_VALUES:
                        counts = None
    return TrainCount(n, dict(counts) if counts is not None else None)


@dataclass(frozen=True)
class StreamSplits(LabelledSplits):
    """What the stages read of a streamed data set (see the module docstring)."""

    x_train: dict[str, np.ndarray]  # the training *sample* (ModelSpec), not the split
    y_train: np.ndarray
    x_val: dict[str, np.ndarray]
    y_val: np.ndarray
    x_test: dict[str, np.ndarray]
    y_test: np.ndarray
    label_names: tuple[str, ...]
    fingerprint: str
    files: tuple[FileEntry, ...]
    schema: Schema
    train_size: int
    train_label_counts: dict[Any, int] | None
    train_source: Any = field(repr=False)
    train_split: str | None
    task: Any = field(repr=False)
    profiles: dict[str, Profile] = field(default_factory=dict, repr=False)

    streamed = True

    def train_label_ids(self) -> dict[int, int] | None:
        """Encoded class id -> training examples (classification-like tasks), else None."""
        if self.train_label_counts is None or self.task.stratify_key(self.y_val) is None:
            return None
        raw = np.asarray(list(self.train_label_counts), dtype=object)
        ids = self.task.encode_labels(raw, self.label_names)
        out: dict[int, int] = {}
        for i, c in zip(np.asarray(ids).tolist(), self.train_label_counts.values(), strict=True):
            out[int(i)] = out.get(int(i), 0) + int(c)
        return out

    def class_weight_labels(self) -> np.ndarray:
        """Labels `task.class_weights` computes "balanced" weights from: the training split's
        ids rebuilt from the counts (8 bytes an example, only when class weights are on)."""
        if getattr(self.task, "class_weight", None) is None:
            return self.y_train
        ids = self.train_label_ids()
        if ids is None:
            return self.y_train
        keys = np.asarray(sorted(ids), dtype=np.int64)
        return np.repeat(keys, [ids[k] for k in keys.tolist()])

    def _encode_fn(self) -> Any:
        """(x, raw label) -> (x, the task's encoded label). Scalar labels whose values the
        counting pass saw are looked up in a table built from the task's own encoding of each
        value (in the graph); anything else calls `task.encode_labels` per batch."""
        import tensorflow as tf

        task, names = self.task, self.label_names
        y_dtype = self.y_val.dtype
        shape = [None, *self.y_val.shape[1:]]
        table = self._label_table()
        if table is not None:

            def lookup(x: Any, y: Any) -> Any:
                out = tf.cast(table.lookup(y), y_dtype)
                out.set_shape(shape)
                return x, out

            return lookup

        def enc(raw: np.ndarray) -> np.ndarray:
            return np.asarray(task.encode_labels(_as_str_labels(raw), names), dtype=y_dtype)

        def apply(x: Any, y: Any) -> Any:
            out = tf.numpy_function(enc, [y], tf.as_dtype(y_dtype), stateful=False)
            out.set_shape(shape)
            return x, out

        return apply

    def _label_table(self) -> Any:
        import tensorflow as tf

        if self.train_label_counts is None or self.y_val.ndim != 1:
            return None
        keys = list(self.train_label_counts)
        if not keys or self.y_val.dtype.kind not in "iuf":
            return None
        encoded = np.asarray(self.task.encode_labels(np.asarray(keys, object), self.label_names))
        if encoded.shape != (len(keys),):
            return None
        if all(isinstance(k, str) for k in keys):
            tf_keys = tf.constant([k.encode("utf-8") for k in keys], tf.string)
        elif all(isinstance(k, int) for k in keys):
            tf_keys = tf.constant(keys, tf.int64)
        else:
            return None
        if encoded.dtype.kind in "iu":
            values, default = tf.constant(encoded.astype(np.int64)), tf.constant(-1, tf.int64)
        else:
            values = tf.constant(encoded.astype(np.float32))
            default = tf.constant(np.nan, tf.float32)
        init = tf.lookup.KeyValueTensorInitializer(tf_keys, values)
        return tf.lookup.StaticHashTable(init, default)

    def train_dataset(
        self,
        input_context: Any,
        *,
        global_batch: int,
        steps_per_epoch: int,
        start_step: int = 0,
    ) -> Any:
        """This input pipeline's training batches, from step `start_step` on, forever.

        Epoch e (steps e*E .. (e+1)*E - 1) is the split read in the file order and shuffle of
        (run.seed, e); each pipeline yields exactly E x (its replicas) per-replica batches an
        epoch (the remainder of an epoch is dropped; a pipeline with fewer examples than that
        starts its epoch over). A run resumed at step s rebuilds epoch s // E and skips the
        s % E steps already trained, so it sees the batches an uninterrupted run would have.
        """
        import tensorflow as tf

        from tfship.data.stream.sharding import set_policy

        src, split = self.train_source, self.train_split
        if self.train_size < global_batch:
            # Every epoch would hold no full batch, and the epochs would repeat forever.
            raise DataError(
                f"the training split has {self.train_size} examples, fewer than one global "
                f"batch ({global_batch})",
                hint="add data, or lower train.per_replica_batch_size",
            )
        local, batch = 1, global_batch
        if input_context is not None:
            local = max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)
            batch = input_context.get_per_replica_batch_size(global_batch)
            if input_context.num_input_pipelines > 1:
                self._check_pipeline_has_examples(input_context, global_batch)
        per_epoch = steps_per_epoch * local
        first_epoch, done = divmod(start_step, steps_per_epoch)

        @tf.autograph.experimental.do_not_convert
        def epoch_ds(e: Any) -> Any:
            ds = src.dataset(global_batch, input_context=input_context, split=split, epoch=e)
            # Full batches only; a pipeline short of E x local of them (uneven FILE shards)
            # reads its epoch again, joining the partial batch at the end to the next pass.
            return ds.repeat().rebatch(batch, drop_remainder=True).take(per_epoch)

        first = epoch_ds(first_epoch).skip(done * local)
        rest = tf.data.Dataset.range(first_epoch + 1, 1 << 62).flat_map(epoch_ds)
        ds = first.concatenate(rest).map(self._encode_fn()).prefetch(tf.data.AUTOTUNE)
        return set_policy(ds, "OFF")

    def _check_pipeline_has_examples(self, ctx: Any, global_batch: int) -> None:
        """DataError, before any step, when this input pipeline's share of the training split
        holds no example. Every worker must run the same steps: a pipeline without data would
        end its dataset while the others wait for it in the first all-reduce (a hang). Falling
        back to another sharding on this worker alone is not an option: the workers cannot
        agree on it without communicating, and the split between them would no longer be a
        partition. The probe reads up to the first example of the pipeline's epoch 0."""
        src, split = self.train_source, self.train_split
        probe = src.dataset(global_batch, input_context=ctx, split=split, epoch=0)
        with src.named_errors():
            found = any(True for _ in probe.unbatch().take(1))
        if found:
            return
        decision = src.last_decision
        raise DataError(
            f"input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines} (worker "
            f"{ctx.input_pipeline_id}) has no training examples: its {src.last_files} of "
            f"{len(src.shards)} file(s), {decision.policy if decision else '?'} sharding, "
            f"hold none{f' of the {split} split' if split else ''}; training would hang at "
            "the first all-reduce",
            hint="write the data as more, evenly filled shards (at least one with training "
            "examples per worker, ideally many), or train on fewer workers",
        )

    def training_statistics(self) -> dict[str, Any]:
        """statistics.json's content without the fingerprint: the profile's bounded sample,
        read with the fingerprint (no second read); `split` says whether it is the training
        split's own profile or the whole location's, taken before the hash split."""
        split = "train" if "train" in self.profiles else next(iter(self.profiles))
        return {**self.profiles[split].statistics, "split": split, "scope": "sample"}

    def stream_summary(self) -> dict[str, Any]:
        """What data.json records about the stream (the listing is in data.manifest.json)."""
        out: dict[str, Any] = {
            "train_examples": self.train_size,
            "train_count": "one counting pass over the training split",
        }
        for name, prof in self.profiles.items():
            out[name] = {
                "fingerprint": prof.fingerprint,
                "files": len(prof.shards),
                "sampled_files": list(prof.sampled),
                "sampled_records": prof.records,
            }
        return out


def _entries(prof: Profile, prefix: str) -> list[FileEntry]:
    return [FileEntry(f"{prefix}{s.rel}", int(s.size), str(s.checksum or "")) for s in prof.shards]


def _profile(src: StreamSource) -> Profile:
    """The source's profile (the fingerprint `tfship data changed` computes too); for an image
    folder, plus the label distribution of the whole listing (`label_files`: files per class),
    as the sample holds one record a sampled file."""
    from tfship.data.stream import profile

    prof = profile(src)
    if src.format != "image_folder":
        return prof
    per_class = Counter(s.rel.split("/", 1)[0] for s in src.shards)
    stats = {**prof.statistics, "label_files": dict(sorted(per_class.items()))}
    return replace(prof, statistics=stats)


def load_stream_splits(cfg: PipelineConfig) -> StreamSplits:
    from tfship.data.stream import StreamSource
    from tfship.model.spec import SAMPLE_ROWS

    dcfg, scfg = cfg.data, cfg.data.stream
    assert scfg is not None
    task = cfg.task_obj
    schema = stream_schema(cfg)
    opts = stream_options(cfg)
    if scfg.hash_key is not None:
        declared = scfg.hash_key in schema.names
        if dcfg.source.value == "image_folder":
            if scfg.hash_key != "path":
                raise DataError(
                    f"data.stream.hash_key is {scfg.hash_key!r}; an image folder is split on "
                    "each file's relative path: set hash_key: path"
                )
        elif not declared and (scfg.on_error == "skip" or opts.format == "parquet"):
            raise DataError(
                f"data.stream.hash_key {scfg.hash_key!r} must be a declared feature with "
                "parquet shards or on_error: skip (the split is taken after parsing)"
            )
        if dcfg.path is None:
            raise DataError("data.stream with hash_key reads data.path; it is not set")
        one = StreamSource.open(str(dcfg.path), schema, opts)
        sources = {s: one for s in SPLIT_NAMES}
        split_arg: dict[str, str | None] = {s: s for s in SPLIT_NAMES}
        profiles = {"all": _profile(one)}
        entries = _entries(profiles["all"], "")
    else:
        sources = {s: StreamSource.open("", schema, opts, split=s) for s in SPLIT_NAMES}
        split_arg = {s: None for s in SPLIT_NAMES}
        profiles = {s: _profile(src) for s, src in sources.items()}
        entries = [e for s in SPLIT_NAMES for e in _entries(profiles[s], f"{s}/")]
    if len(profiles) == 1:
        fingerprint = profiles["all"].fingerprint
    else:
        doc = {s: p.fingerprint for s, p in profiles.items()}
        fingerprint = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    hint = (
        "raise data.stream.max_eval_examples (validation and test are held in memory), or "
        "lower data.validation_fraction / data.test_fraction"
    )
    evals = {}
    for name in ("validation", "test"):
        cols, raw = _read(
            _plain(sources[name]),
            split_arg[name],
            scfg.max_eval_examples,
            f"the {name} split",
            hint,
        )
        if len(raw) == 0:
            raise DataError(f"the {name} split is empty")
        evals[name] = (_decode_strings(schema, cols), _as_str_labels(raw))
    plain_train = _plain(sources["train"])
    count = count_train(plain_train, split_arg["train"])
    if count.examples == 0:
        raise DataError("the train split is empty")
    sample_src = plain_train
    cols, raw_sample = _read_head(sample_src, split_arg["train"], SAMPLE_ROWS)
    # Label names from every label value seen (training counts + validation + test).
    if count.label_counts is not None:
        seen = np.asarray(
            [*count.label_counts, *evals["validation"][1].tolist(), *evals["test"][1].tolist()],
            dtype=object,
        )
    else:
        seen = np.concatenate([evals["validation"][1], evals["test"][1], raw_sample])
    label_names = task.infer_label_names(seen)
    y_val = np.asarray(task.encode_labels(evals["validation"][1], label_names))
    y_test = np.asarray(task.encode_labels(evals["test"][1], label_names))
    y_sample = np.asarray(task.encode_labels(_as_str_labels(raw_sample), label_names))
    log.info(
        "data.stream: %d training examples (counted), %d validation, %d test held in memory",
        count.examples,
        len(y_val),
        len(y_test),
    )
    return StreamSplits(
        _decode_strings(schema, cols),
        y_sample,
        evals["validation"][0],
        y_val,
        evals["test"][0],
        y_test,
        tuple(label_names),
        fingerprint,
        tuple(entries),
        schema,
        count.examples,
        count.label_counts,
        sources["train"],
        split_arg["train"],
        task,
        profiles,
    )


def _read_head(src: StreamSource, split: str | None, rows: int) -> Any:
    """The first `rows` examples of epoch 0's order (deterministic: the training sample)."""
    xs: dict[str, list[np.ndarray]] = {}
    ys: list[np.ndarray] = []
    n = 0
    ds = src.dataset(min(rows, READ_BATCH), epoch=0, split=split)
    with src.named_errors():
        for x, y in ds.as_numpy_iterator():
            take = min(len(y), rows - n)
            for k, v in x.items():
                xs.setdefault(k, []).append(v[:take])
            ys.append(y[:take])
            n += take
            if n >= rows:
                break
    return {k: np.concatenate(v) for k, v in xs.items()}, np.concatenate(ys)
