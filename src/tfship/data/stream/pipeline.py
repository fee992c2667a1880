"""The streaming input pipeline: listing -> (shard) -> seeded file order -> parallel interleave
-> (hash split) -> batch -> parse in the graph -> prefetch.

    src = StreamSource.open("s3://bucket/train-*.tfrecord.gz", schema, StreamOptions(...))
    ds = src.dataset(global_batch=256, input_context=ctx, epochs=None, split="train")
    with src.named_errors():
        for x, y in ds: ...

Peak memory is the pipeline's buffers (interleave cycle, shuffle buffer, prefetch) plus, for
S3, the staging cache's `stage_max_bytes` on local disk — not the data set's size.

Bad input (`on_error`):
- `fail` (default): the first corrupt shard (DataLossError: truncated/corrupted record) or
  record that does not parse against the schema stops the pipeline. TF's message does not name
  the shard; `named_errors()` / `explain()` re-reads shard by shard (only on that failure path)
  and raises DataError (exit 4) naming the shard and what was wrong.
- `skip`: records that do not parse are dropped and counted (`skipped()`), each shard read with
  per-record parsing (slower than the batch parse of `fail`); more than `max_bad_records`
  raises. A corrupt shard's remaining records after the corruption cannot be read and are lost
  without being counted (TF logs the error).

Image folders (`format="image_folder"`): every file under a class sub-folder with an image
suffix is one record (label: the folder's name); each file is read and decoded in the graph
(readers.image_parse). A file over MAX_IMAGE_FILE_BYTES in the listing is refused (`fail`) or
left out and counted as skipped (`skip`) before any byte is read; one that does not decode is
a bad record like any other. The hash split's key is the file's relative path, and as it is
known from the listing the split is taken on the file list (`split_shards`): a pipeline opens
only its split's files, and FILE sharding divides those.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tfship.data.images import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS
from tfship.data.schema import Kind, Schema
from tfship.data.stream import readers
from tfship.data.stream.badinput import BadInput, _short
from tfship.data.stream.locations import Shard, list_location, parse_location
from tfship.data.stream.sharding import (
    ShardDecision,
    decide,
    non_empty,
    set_policy,
    shard_files,
)
from tfship.data.stream.split import HashSplit, SplitLocations
from tfship.data.stream.staging import Stager
from tfship.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions:
    """Typed options of the streaming path (config can map `data.*` onto these later)."""

    format: str | None = None  # tfrecord|csv|parquet|image_folder; None: from the suffixes
    compression: str | None = "auto"  # "auto" (.gz = GZIP), None, "GZIP", "ZLIB"
    label: readers.LabelSpec | None = None  # default: LabelSpec(schema.label, "int64")
    image_encoding: Literal["encoded", "raw"] = "encoded"
    seed: int = 0
    shuffle_files: bool = True
    shuffle_buffer: int = 0  # examples shuffled after interleave; 0: file order + interleave only
    cycle_length: int = 16  # shards read at once
    block_length: int = 1
    drop_remainder: bool = False
    on_error: Literal["fail", "skip"] = "fail"
    max_bad_records: int = 0
    hash_split: HashSplit | None = None
    split_locations: SplitLocations | None = None
    s3_endpoint_url: str | None = None
    stage_dir: Path | None = None
    stage_max_bytes: int = 2 << 30
    stage_workers: int = 8


@dataclass
class StreamSource(BadInput):
    location: str
    schema: Schema
    options: StreamOptions
    shards: tuple[Shard, ...]
    format: str
    compression: str | None
    label: readers.LabelSpec
    csv: readers.CsvLayout | None = None
    stager: Stager | None = None
    last_decision: ShardDecision | None = None
    oversized: tuple[Shard, ...] = ()  # image files left out by size (on_error: skip)
    last_files: int = 0  # files of the last dataset()'s pipeline
    _counters: Any = field(default=None, repr=False)
    _split_cache: dict[str, list[Shard]] = field(default_factory=dict, repr=False)

    # --- construction ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str,
        schema: Schema,
        options: StreamOptions | None = None,
        *,
        split: str | None = None,
    ) -> StreamSource:
        opts = options or StreamOptions()
        if opts.split_locations is not None and split is not None:
            location = opts.split_locations.location(split)
        shards = list_location(location, s3_endpoint_url=opts.s3_endpoint_url)
        fmt, comp = readers.detect_format([s.rel for s in shards], opts.format)
        if opts.compression != "auto":
            comp = opts.compression
        label = opts.label or readers.LabelSpec(schema.label)
        oversized: tuple[Shard, ...] = ()
        if fmt == "image_folder":
            comp = None
            label = readers.LabelSpec(schema.label, "string")
            shards, oversized = _image_files(location, shards, schema, opts)
        src = cls(location, schema, opts, shards, fmt, comp, label, oversized=oversized)
        if parse_location(location).needs_staging:
            floor = (3 * opts.cycle_length + 2) * max(s.size for s in shards)
            if opts.stage_max_bytes < floor:
                log.warning(
                    "stage_max_bytes %d is below (3 x cycle_length + 2) x the largest shard; "
                    "using %d so the interleave can always get its next shard",
                    opts.stage_max_bytes,
                    floor,
                )
            src.stager = Stager(
                opts.stage_dir,
                max(opts.stage_max_bytes, floor),
                opts.stage_workers,
                endpoint_url=opts.s3_endpoint_url,
            )
        if fmt == "csv":
            first = src.local_copy(shards[0])
            src.csv = readers.csv_layout(
                readers.read_header(first, comp), schema, label, shards[0].path
            )
        return src

    def local_copy(self, shard: Shard) -> str:
        """A path TF can open: the shard itself, or (S3) a staged copy."""
        if self.stager is None:
            return shard.path
        return str(self.stager.fetch(shard))

    # --- per-format pieces ---------------------------------------------------------------

    def raw_fn(self) -> Any:
        if self.format == "tfrecord":
            return readers.tfrecord_raw(self.compression)
        if self.format == "csv":
            return readers.csv_raw(self.compression)
        if self.format == "image_folder":
            return readers.image_raw(self._rel_of())
        raise DataError("Parquet shards have no raw record form")

    def _streamed_raw(self) -> Any:
        """raw_fn, plus (S3) an empty tail that releases the staged shard once it is read."""
        import tensorflow as tf

        raw = self.raw_fn()
        if self.stager is None:
            return raw
        stager = self.stager

        def release(path: Any) -> Any:
            stager.release(path.numpy())
            return path

        def per_file(path: Any) -> Any:
            tail = (
                tf.data.Dataset.from_tensors(path)
                # py_function's output has no static shape; the records' is [] (a hash split
                # masks batches of them, which needs a known rank).
                .map(lambda p: tf.ensure_shape(tf.py_function(release, [p], tf.string), []))
                .filter(lambda _: False)
            )
            return raw(path).concatenate(tail)

        return per_file

    def parse_fn(self) -> Any:
        if self.format == "tfrecord":
            return readers.tfrecord_parse(self.schema, self.label, self.options.image_encoding)
        if self.format == "image_folder":
            return readers.image_parse(self.schema, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS)
        assert self.csv is not None
        return readers.csv_parse(self.csv, self.schema, self.label)

    def key_fn(self) -> Any:
        """Raw batch -> the hash-split key of each record (parses only the key)."""
        import tensorflow as tf

        split = self.options.hash_split
        assert split is not None
        if self.format == "image_folder":
            return readers.image_key
        dtype = tf.string
        f = next((f for f in self.schema.features if f.name == split.key), None)
        if (split.key_dtype or (f.dtype if f is not None else "string")) == "int64":
            dtype = tf.int64
        if self.format == "tfrecord":
            spec = {split.key: tf.io.FixedLenFeature([], dtype)}
            return lambda raw: tf.io.parse_example(raw, spec)[split.key]
        assert self.csv is not None
        if split.key not in self.csv.header:
            raise DataError(f"hash split key {split.key!r} is not a CSV column")
        col = self.csv.header.index(split.key)
        default = [tf.constant([-1 if dtype == tf.int64 else ""], dtype)]
        return lambda raw: tf.io.decode_csv(raw, default, select_cols=[col])[0]

    # --- the dataset ------------------------------------------------------------------------

    def file_order(self, shards: Sequence[Shard], epoch: int) -> list[Shard]:
        """The epoch's shard order: a seeded permutation (the same on every run)."""
        import numpy as np

        if not self.options.shuffle_files:
            return list(shards)
        perm = np.random.default_rng([self.options.seed, epoch]).permutation(len(shards))
        return [shards[i] for i in perm]

    def dataset(
        self,
        global_batch: int,
        *,
        input_context: Any = None,
        epochs: int | None = 1,
        split: str | None = None,
        epoch: Any = None,
        drop_remainder: bool | None = None,
    ) -> Any:
        """Batches of (features dict, label). `input_context` (tf.distribute.InputContext):
        this pipeline's FILE or DATA shard, and the per-replica batch.

        `epoch` (an int or an int64 scalar tensor, e.g. inside `flat_map`): exactly that one
        epoch, its file order and shuffle a stateless function of (seed, epoch) — the same
        order whenever it is rebuilt (what exact resume replays); `epochs` is then ignored."""
        import tensorflow as tf

        opts = self.options
        if drop_remainder is not None:
            opts = replace(opts, drop_remainder=drop_remainder)
        autotune = tf.data.AUTOTUNE
        pipelines, index, batch = 1, 0, global_batch
        if input_context is not None:
            pipelines = input_context.num_input_pipelines
            index = input_context.input_pipeline_id
            batch = input_context.get_per_replica_batch_size(global_batch)
        # Image folders: the split is taken on the file list (the key is in the listing).
        masked = bool(opts.hash_split) and self.format != "image_folder"
        hs_split = split if masked else None
        listed = list(self.shards)
        if opts.hash_split and split and not masked:
            listed = self.split_shards(split)
        decision = decide(non_empty(listed), pipelines)
        self.last_decision = decision
        shards = shard_files(listed, decision, index)
        self.last_files = len(shards)

        files = self._files_dataset(shards, epochs, epoch)
        if self.format == "parquet":
            ds = self._parquet(files, batch, opts.drop_remainder)
            if decision.policy == "DATA":
                ds = ds.unbatch().shard(pipelines, index).batch(batch)
        else:
            per_file = self._per_file_skip() if opts.on_error == "skip" else self._streamed_raw()
            ds = files.interleave(
                per_file,
                cycle_length=opts.cycle_length,
                block_length=opts.block_length,
                num_parallel_calls=autotune,
                deterministic=True,
            )
            if opts.on_error == "skip":
                ds = ds.map(self._check_skipped)
            if decision.policy == "DATA":
                ds = ds.shard(pipelines, index)
        if opts.shuffle_buffer:
            if self.format == "parquet":
                ds = ds.unbatch()
            seed: Any = opts.seed
            if epoch is not None:
                seed = tf.constant(opts.seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
            ds = ds.shuffle(opts.shuffle_buffer, seed=seed)
            if self.format == "parquet":
                ds = ds.batch(batch)
        if self.format != "parquet":
            if opts.on_error == "skip":
                split_here = bool(hs_split)
                ds = ds.batch(batch, drop_remainder=opts.drop_remainder and not split_here)
                if split_here:
                    assert split is not None
                    ds = ds.map(
                        self._split_parsed(split), num_parallel_calls=autotune, deterministic=True
                    )
                    ds = ds.rebatch(batch, drop_remainder=opts.drop_remainder)
            else:
                ds = ds.batch(batch, drop_remainder=opts.drop_remainder and not masked)
                if hs_split:
                    key = self.key_fn()
                    hs = opts.hash_split
                    ds = ds.map(
                        lambda raw: tf.boolean_mask(raw, hs.mask(key(raw), hs_split)),
                        num_parallel_calls=autotune,
                        deterministic=True,
                    )
                    ds = ds.rebatch(batch, drop_remainder=opts.drop_remainder)
                ds = ds.map(self.parse_fn(), num_parallel_calls=autotune, deterministic=True)
        elif opts.hash_split and split:
            ds = ds.map(self._split_parsed(split), num_parallel_calls=autotune, deterministic=True)
            ds = ds.rebatch(batch, drop_remainder=opts.drop_remainder)
        ds = ds.prefetch(autotune)
        # Sharded by hand above; TF must not shard again.
        return set_policy(ds, "OFF" if input_context is not None else decision.policy)

    def split_shards(self, split: str) -> list[Shard]:
        """Image folders: the files of `split` under the hash split (key: relative path)."""
        import tensorflow as tf

        if split not in self._split_cache:
            hs = self.options.hash_split
            assert hs is not None
            with tf.init_scope():  # eager even when a tf.data function (an epoch) is traced
                keep = hs.mask([s.rel for s in self.shards], split).numpy().tolist()
            self._split_cache[split] = [s for s, k in zip(self.shards, keep, strict=True) if k]
        return self._split_cache[split]

    def _rel_of(self) -> Any:
        """Image folders: the path TF opens -> the file's relative path (a lookup table; a
        staged copy is found by the digest of its S3 path in its name)."""
        import tensorflow as tf

        if self.stager is None:
            keys = [s.path for s in self.shards]

            def key(p: Any) -> Any:
                return p

        else:
            keys = [Stager.digest(s) for s in self.shards]

            def key(p: Any) -> Any:
                return tf.strings.regex_replace(p, Stager.DIGEST_RE, r"\1")

        rels = [s.rel for s in self.shards]
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, rels), "")
        return lambda p: table.lookup(key(p))

    def skipped(self) -> int:
        return super().skipped() + len(self.oversized)

    def unparsable(self, shard: Any, first: int, last: int, err: BaseException) -> DataError:
        if self.format != "image_folder":
            return super().unparsable(shard, first, last, err)
        return DataError(  # one file, one record
            f"image {shard.path} cannot be decoded ({_short(err)}); expected a PNG, JPEG, GIF "
            f"or BMP file of at most {MAX_IMAGE_FILE_BYTES} bytes",
            hint="delete or re-encode the file; or set data.stream.on_error: skip with "
            "max_bad_records",
        )

    def _split_parsed(self, split: str) -> Any:
        import tensorflow as tf

        hs = self.options.hash_split
        assert hs is not None

        def keep(x: dict, y: Any) -> Any:
            m = hs.mask(x[hs.key], split)
            return {k: tf.boolean_mask(v, m) for k, v in x.items()}, tf.boolean_mask(y, m)

        return keep

    def _files_dataset(self, shards: list[Shard], epochs: int | None, epoch: Any = None) -> Any:
        import tensorflow as tf

        if not shards:
            return tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
        if epoch is not None:
            return self._epoch_files(shards, epoch)
        if self.stager is None:
            ds = tf.data.Dataset.from_tensor_slices([s.path for s in shards])
            if self.options.shuffle_files:
                ds = ds.shuffle(len(shards), seed=self.options.seed, reshuffle_each_iteration=True)
            return ds.repeat(epochs) if epochs != 1 else ds
        stager = self.stager

        def staged() -> Iterator[str]:
            epoch = 0
            while epochs is None or epoch < epochs:
                yield from stager.paths(self.file_order(shards, epoch))
                epoch += 1

        return tf.data.Dataset.from_generator(staged, output_signature=tf.TensorSpec([], tf.string))

    def _epoch_files(self, shards: list[Shard], epoch: Any) -> Any:
        """One epoch's shards in a stateless seeded order (independent of TF's global seed)."""
        import tensorflow as tf

        if self.stager is not None:
            stager, order = self.stager, self.file_order

            def staged(e: Any) -> Iterator[str]:
                yield from stager.paths(order(shards, int(e)))

            return tf.data.Dataset.from_generator(
                staged,
                args=(tf.cast(epoch, tf.int64),),
                output_signature=tf.TensorSpec([], tf.string),
            )
        paths = tf.constant([s.path for s in shards])
        if self.options.shuffle_files:
            seed = tf.stack([tf.constant(self.options.seed, tf.int64), tf.cast(epoch, tf.int64)])
            paths = tf.random.experimental.stateless_shuffle(paths, seed=seed)
        return tf.data.Dataset.from_tensor_slices(paths)

    def _parquet(self, files: Any, batch: int, drop_remainder: bool = False) -> Any:
        import tensorflow as tf

        sig = readers.parquet_signature(self.schema, self.label)
        schema, label, stager = self.schema, self.label, self.stager

        def one(path: Any) -> Any:
            @tf.autograph.experimental.do_not_convert
            def gen(p: bytes) -> Iterator[Any]:
                yield from readers.parquet_batches(p.decode(), schema, label, batch)
                if stager is not None:
                    stager.release(p)

            return tf.data.Dataset.from_generator(gen, args=(path,), output_signature=sig)

        ds = files.interleave(
            one,
            cycle_length=self.options.cycle_length,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return ds.rebatch(batch, drop_remainder=drop_remainder)

    def close(self) -> None:
        if self.stager is not None:
            self.stager.cleanup()
            self.stager.close()

    def with_options(self, **changes: Any) -> StreamSource:
        return StreamSource.open(self.location, self.schema, replace(self.options, **changes))


def image_files(shards: tuple[Shard, ...]) -> tuple[Shard, ...]:
    """The files of a listing an image folder reads: an image suffix, inside a sub-folder (the
    class), as the in-memory image_folder reads (other files are left out)."""
    from tfship.data.files import IMAGE_SUFFIXES

    return tuple(
        s
        for s in shards
        if "/" in s.rel and ("." + s.rel.rsplit(".", 1)[-1]).lower() in IMAGE_SUFFIXES
    )


def _image_files(
    location: str, shards: tuple[Shard, ...], schema: Schema, opts: StreamOptions
) -> tuple[tuple[Shard, ...], tuple[Shard, ...]]:
    """(image files, oversized ones left out) of a class-per-sub-folder location."""
    from tfship.data.files import IMAGE_SUFFIXES

    if len(schema.of_kind(Kind.IMAGE)) != 1 or len(schema.features) != 1:
        raise DataError(
            f"image_folder streaming yields one image feature; the schema has {schema.names}"
        )
    images = image_files(shards)
    if not images:
        raise DataError(
            f"data location {location}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "in class sub-folders",
            hint="lay the images out one sub-folder per class (cats/1.png, dogs/2.jpg)",
        )
    big = tuple(s for s in images if s.size > MAX_IMAGE_FILE_BYTES)
    if big and (opts.on_error == "fail" or len(big) > opts.max_bad_records):
        raise DataError(
            f"image {big[0].path} is {big[0].size} bytes; expected at most "
            f"{MAX_IMAGE_FILE_BYTES} ({len(big)} file(s) over the bound)",
            hint="downscale or remove it; or set data.stream.on_error: skip with max_bad_records",
        )
    return tuple(s for s in images if s.size <= MAX_IMAGE_FILE_BYTES), big
