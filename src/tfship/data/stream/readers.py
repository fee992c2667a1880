"""Shard readers in the graph: raw records per file, parsed per batch against the Schema.

Each format is two functions: `raw(path)` — a `tf.data.Dataset` of one shard's raw records
(serialized `tf.train.Example`s, or CSV lines) — and `parse(raw_batch)` — features dict + label
for a batch, in the graph (`tf.io.parse_example`, `tf.io.decode_csv`). Parsing a batch at a
time is what makes the pipeline fast; the raw records are also what the fingerprint's content
sample hashes and the statistics pass parses (one read). Parquet has no raw record form: a
bounded Python generator (pyarrow, one record batch at a time) yields parsed batches.

Feature specs from the Schema (the same in-memory form as tfship.data.tfrecords, NaN/""/-1 for
missing):

| kind / dtype | TFRecord Example list | spec |
|---|---|---|
| numeric, shape S | float_list of prod(S) values | FixedLen(S, float32, default NaN) |
| categorical string | bytes_list, one value | FixedLen([], string, default "") |
| categorical int64 | int64_list, one value | FixedLen([], int64, default -1) |
| text | bytes_list, one value | FixedLen([], string, default "") |
| image (encoded) | bytes_list, one PNG/JPEG/GIF/BMP | FixedLen([], string) + decode_image |
| image (raw) | float_list of H*W*C | FixedLen([H*W*C], float32), reshape |

Unlike the in-memory loader, a numeric feature stored as int64_list is a parse error here
(parse_example does not convert list types). CSV: one header line per shard, scalar features
only, an empty field is missing; quoted fields must not contain newlines (records are lines).

Image folders (`image_folder`): one sub-folder per class, each file one record. The raw record
of a file is `<6-digit byte length of rel><rel><file bytes>` (rel: the file's path relative to
the location, whose first component is the class), built in the graph by `tf.io.read_file`, so
the hash-split key, the label and the bytes travel together and the fingerprint's content
sample hashes both name and content. `image_parse` decodes a batch with `tf.io.decode_image`
(see its docstring for how it matches the in-memory PIL path).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import DataError

FORMATS = ("tfrecord", "csv", "parquet", "image_folder")
_SUFFIX_FORMAT = {
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfr": "tfrecord",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True)
class LabelSpec:
    """The label's dtype ("int64", "float32", "string") and per-example shape."""

    key: str
    dtype: str = "int64"
    shape: tuple[int, ...] = ()

    def missing(self) -> Any:
        return {"string": "", "int64": -1}.get(self.dtype, math.nan)


def detect_format(paths: list[str], declared: str | None = None) -> tuple[str, str | None]:
    """(format, compression) from `declared` or the shards' suffixes (`.gz` = GZIP)."""
    formats: set[str] = set()
    gz = set()
    for p in paths:
        name = p.rsplit("/", 1)[-1].lower()
        gz.add(name.endswith(".gz"))
        if name.endswith(".gz"):
            name = name[:-3]
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        formats.add(_SUFFIX_FORMAT.get(suffix, "?"))
    compression = "GZIP" if gz == {True} else None
    if declared:
        if declared not in FORMATS:
            raise DataError(f"stream format {declared!r} is not one of {list(FORMATS)}")
        return declared, compression
    if len(formats) != 1 or "?" in formats:
        raise DataError(
            f"cannot tell the shards' format from their names (found suffixes for "
            f"{sorted(formats)}); expected one of .tfrecord/.tfr/.csv/.parquet (optionally .gz)",
            hint="name the shards by format, or set the stream format explicitly",
        )
    return formats.pop(), compression


def _tf() -> Any:
    import tensorflow as tf

    return tf


def example_spec(schema: Schema, label: LabelSpec, image_encoding: str = "encoded") -> dict:
    """`tf.io.parse_example` features for the schema and the label (see the module table)."""
    tf = _tf()
    spec: dict[str, Any] = {}
    for f in schema.features:
        if f.kind is Kind.IMAGE:
            spec[f.name] = (
                tf.io.FixedLenFeature([], tf.string)
                if image_encoding == "encoded"
                else tf.io.FixedLenFeature([math.prod(f.shape)], tf.float32)
            )
        elif f.kind is Kind.NUMERIC:
            default = [math.nan] * math.prod(f.shape) if f.shape else math.nan
            spec[f.name] = tf.io.FixedLenFeature(list(f.shape), tf.float32, default)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], f.tf_dtype(), f.missing_value())
    ldt = tf.as_dtype(label.dtype) if label.dtype != "string" else tf.string
    default = label.missing()
    if label.shape:
        default = [default] * math.prod(label.shape)
    spec[label.key] = tf.io.FixedLenFeature(list(label.shape), ldt, default)
    return spec


def _finish_images(schema: Schema, feats: dict, image_encoding: str) -> dict:
    tf = _tf()
    for f in schema.of_kind(Kind.IMAGE):
        shape = f.shape
        if image_encoding == "encoded":

            def decode(b: Any, shape: tuple[int, ...] = shape) -> Any:
                img = tf.io.decode_image(b, channels=shape[2], expand_animations=False)
                img.set_shape([None, None, shape[2]])
                return tf.cast(
                    tf.image.resize_with_crop_or_pad(img, shape[0], shape[1]), tf.float32
                )

            feats[f.name] = tf.map_fn(
                decode, feats[f.name], fn_output_signature=tf.TensorSpec(shape, tf.float32)
            )
        else:
            feats[f.name] = tf.reshape(feats[f.name], [-1, *shape])
    return feats


# --- TFRecord ---------------------------------------------------------------------------


def tfrecord_raw(compression: str | None) -> Callable[[Any], Any]:
    tf = _tf()

    @tf.autograph.experimental.do_not_convert
    def raw(path: Any) -> Any:
        return tf.data.TFRecordDataset(path, compression_type=compression or "")

    return raw


def tfrecord_parse(
    schema: Schema, label: LabelSpec, image_encoding: str = "encoded"
) -> Callable[[Any], tuple[dict, Any]]:
    tf = _tf()
    spec = example_spec(schema, label, image_encoding)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow
    def parse(raw: Any) -> tuple[dict, Any]:
        parsed = tf.io.parse_example(raw, spec)
        y = parsed.pop(label.key)
        return _finish_images(schema, parsed, image_encoding), y

    return parse


# --- CSV ----------------------------------------------------------------------------------


def read_header(path: str, compression: str | None) -> list[str]:
    """The first line of a CSV shard (read through tf.io.gfile: local, gs://, staged)."""
    tf = _tf()
    try:
        ds = tf.data.TextLineDataset(path, compression_type=compression or "").take(1)
        first = next(iter(ds.as_numpy_iterator()), b"")
    except tf.errors.OpError as exc:
        raise DataError(f"CSV shard {path}: cannot read its header ({exc.message[:200]})") from None
    line = first.decode("utf-8-sig")
    if not line.strip():
        raise DataError(f"CSV shard {path} is empty; expected a header line")
    return [c.strip() for c in line.split(",")]


@dataclass(frozen=True)
class CsvLayout:
    header: tuple[str, ...]
    columns: tuple[int, ...]  # selected column indices, increasing
    names: tuple[str, ...]  # the selected columns' names, same order


def csv_layout(header: list[str], schema: Schema, label: LabelSpec, where: str) -> CsvLayout:
    wanted = [*schema.names, label.key]
    missing = [n for n in wanted if n not in header]
    if missing:
        raise DataError(
            f"CSV shard {where}: column(s) {missing} are not in its header {header[:20]}",
            hint="fix data.features / data.label, or the shards' header",
        )
    for f in schema.features:
        if f.shape or f.kind is Kind.IMAGE:
            raise DataError(
                f"CSV streaming reads scalar features only; {f.name!r} has shape {f.shape}"
            )
    idx = sorted(header.index(n) for n in wanted)
    return CsvLayout(tuple(header), tuple(idx), tuple(header[i] for i in idx))


def csv_raw(compression: str | None) -> Callable[[Any], Any]:
    tf = _tf()

    @tf.autograph.experimental.do_not_convert
    def raw(path: Any) -> Any:
        return tf.data.TextLineDataset(path, compression_type=compression or "").skip(1)

    return raw


def csv_parse(
    layout: CsvLayout, schema: Schema, label: LabelSpec
) -> Callable[[Any], tuple[dict, Any]]:
    tf = _tf()
    by_name = {f.name: f for f in schema.features}
    defaults = []
    for name in layout.names:
        f = by_name.get(name)
        if f is None:
            defaults.append(tf.constant([label.missing()], tf.as_dtype(label.dtype)))
        elif f.kind is Kind.NUMERIC:
            defaults.append(tf.constant([math.nan], tf.float32))
        else:
            defaults.append(tf.constant([f.missing_value()], f.tf_dtype()))

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow
    def parse(raw: Any) -> tuple[dict, Any]:
        cols = tf.io.decode_csv(raw, defaults, select_cols=list(layout.columns))
        out = dict(zip(layout.names, cols, strict=True))
        y = out.pop(label.key)
        return {n: out[n] for n in schema.names}, y

    return parse


# --- Parquet ------------------------------------------------------------------------------


def parquet_batches(
    path: str, schema: Schema, label: LabelSpec, batch_size: int
) -> Iterator[tuple[dict, Any]]:
    """Parsed batches of one Parquet shard; memory is one record batch, not the file."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = [*schema.names, label.key]
        missing = [n for n in names if n not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"Parquet shard {path}: column(s) {missing} are missing")
        for batch in pf.iter_batches(batch_size=batch_size, columns=names):
            cols = {n: batch.column(n) for n in names}
            feats = {f.name: _arrow_values(cols[f.name], f, path) for f in schema.features}
            y = _arrow_label(cols[label.key], label)
            yield feats, y
    except DataError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError on a corrupt file
        raise DataError(
            f"Parquet shard {path}: cannot read it ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _arrow_values(col: Any, f: Feature, path: str) -> Any:
    import numpy as np

    if f.kind is Kind.NUMERIC:
        if f.shape:
            rows = col.to_pylist()
            width = math.prod(f.shape)
            arr = np.array([r if r is not None else [math.nan] * width for r in rows], np.float32)
            return arr.reshape(len(rows), *f.shape)
        return col.cast("float32").to_numpy(zero_copy_only=False).astype(np.float32)
    if f.dtype == "int64":
        return col.fill_null(-1).cast("int64").to_numpy(zero_copy_only=False)
    return np.array([("" if v is None else str(v)).encode() for v in col.to_pylist()], object)


def _arrow_label(col: Any, label: LabelSpec) -> Any:
    import numpy as np

    if label.dtype == "string":
        return np.array([("" if v is None else str(v)).encode() for v in col.to_pylist()], object)
    if label.dtype == "int64":
        return col.fill_null(-1).cast("int64").to_numpy(zero_copy_only=False)
    return col.cast("float32").to_numpy(zero_copy_only=False)


def parquet_signature(schema: Schema, label: LabelSpec) -> tuple[dict, Any]:
    tf = _tf()
    feats = {
        f.name: tf.TensorSpec(
            [None, *f.shape], tf.float32 if f.kind is Kind.NUMERIC else f.tf_dtype()
        )
        for f in schema.features
    }
    ldt = tf.string if label.dtype == "string" else tf.as_dtype(label.dtype)
    return feats, tf.TensorSpec([None, *label.shape], ldt)


# --- Image folders --------------------------------------------------------------------------

_REL_DIGITS = 6  # a relative path of up to 999,999 bytes


def image_raw(rel_of: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """path -> a one-record dataset: the packed (rel, bytes) record of that image file.
    `rel_of(path)` maps the path TF opens (the file itself, or a staged copy) to its rel."""
    tf = _tf()

    @tf.autograph.experimental.do_not_convert
    def raw(path: Any) -> Any:
        def pack(p: Any) -> Any:
            rel = rel_of(p)
            n = tf.strings.as_string(tf.strings.length(rel), width=_REL_DIGITS, fill="0")
            return tf.strings.join([n, rel, tf.io.read_file(p)])

        return tf.data.Dataset.from_tensors(path).map(pack)

    return raw


def image_unpack(raw: Any) -> tuple[Any, Any]:
    """(rel, file bytes) of a batch of packed image records."""
    tf = _tf()
    n = tf.strings.to_number(tf.strings.substr(raw, 0, _REL_DIGITS), tf.int32)
    start = tf.fill(tf.shape(raw), _REL_DIGITS)
    rel = tf.strings.substr(raw, start, n)
    body = start + n
    return rel, tf.strings.substr(raw, body, tf.strings.length(raw) - body)


def image_key(raw: Any) -> Any:
    """The hash-split key of a batch of packed image records: the relative path."""
    return image_unpack(raw)[0]


def class_of(rel: Any) -> Any:
    """The class of each relative path: its first folder."""
    return _tf().strings.regex_replace(rel, "(?s)/.*$", "")


def _uint(data: Any, pos: int, size: int, big_endian: bool) -> Any:
    """The unsigned integer of `size` bytes at `pos` of a scalar string, as int64."""
    tf = _tf()
    b = tf.cast(tf.io.decode_raw(tf.strings.substr(data, pos, size), tf.uint8), tf.int64)
    weights = [256**i for i in range(size)]
    if big_endian:
        weights.reverse()
    return tf.reduce_sum(b * tf.constant(weights, tf.int64))


def image_pixels(data: Any) -> Any:
    """Width x height an encoded image's header claims (PNG, JPEG, GIF, BMP), read before
    decoding, as the in-memory path's PIL header check; -1 for another format (refused by
    `image_parse`: its size cannot be checked before decoding)."""
    tf = _tf()
    magic = tf.strings.substr(data, 0, 4)
    two = tf.strings.substr(data, 0, 2)

    def png() -> Any:
        return _uint(data, 16, 4, True) * _uint(data, 20, 4, True)

    def jpeg() -> Any:
        hw = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return hw[0] * hw[1]

    def gif() -> Any:
        return _uint(data, 6, 2, False) * _uint(data, 8, 2, False)

    def bmp() -> Any:
        w = _uint(data, 18, 4, False)
        h = _uint(data, 22, 4, False)
        h = tf.where(h >= 2**31, 2**32 - h, h)  # negative height: a top-down bitmap
        return w * h

    branch = tf.case(
        [
            (tf.equal(magic, b"\x89PNG"), lambda: tf.constant(0)),
            (tf.equal(two, b"\xff\xd8"), lambda: tf.constant(1)),
            (tf.equal(magic, b"GIF8"), lambda: tf.constant(2)),
            (tf.equal(two, b"BM"), lambda: tf.constant(3)),
        ],
        default=lambda: tf.constant(4),
    )
    return tf.switch_case(branch, [png, jpeg, gif, bmp, lambda: tf.constant(-1, tf.int64)])


def image_parse(
    schema: Schema, max_bytes: int, max_pixels: int
) -> Callable[[Any], tuple[dict, Any]]:
    """Packed records -> ({image feature: float32 [n, H, W, C]}, class-name labels).

    Matches the in-memory path (tfship.data.images, PIL): every image decoded as RGB (alpha
    dropped, GIF: first frame), converted to gray with ITU-R 601 weights when C is 1 (PIL's
    "L"; libpng's own RGB->gray uses other weights, hence not `channels=1`), resized with
    antialiased bilinear (PIL's BILINEAR filter widens with the downscale factor likewise)
    and rounded to integers 0..255 as float32 (PIL resizes 8-bit images). The two resamplers'
    kernels differ in detail: pixels agree within a few levels on downscales, exactly where no
    resize is needed (docs/data-at-scale.md). A file over `max_bytes`, one whose header claims
    more than `max_pixels` (a decompression bomb: refused before any pixel is allocated), or
    one that does not decode, is an InvalidArgumentError: the bad-input policy's to fail or
    skip."""
    tf = _tf()
    (feature,) = schema.of_kind(Kind.IMAGE)
    h, w, c = feature.shape

    def decode(data: Any) -> Any:
        check = tf.debugging.assert_less_equal(
            tf.strings.length(data),
            tf.constant(max_bytes, tf.int32),
            message=f"image file larger than {max_bytes} bytes",
        )
        with tf.control_dependencies([check]):
            pixels = image_pixels(data)
            # Fail closed: decode_image also decodes WebP / JPEG XL (detected by content, not
            # by suffix), whose headers are not read here, so their size is unknown.
            known = tf.debugging.assert_non_negative(
                pixels,
                message="image is not PNG, JPEG, GIF or BMP by its header (the formats an image "
                "folder holds, whose size is checked before decoding)",
            )
            bomb = tf.debugging.assert_less_equal(
                pixels,
                tf.constant(max_pixels, tf.int64),
                message=f"image header claims more than {max_pixels} pixels (a decompression "
                "bomb, or far larger than data.image_size needs)",
            )
        with tf.control_dependencies([known, bomb]):
            img = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        img = tf.cast(img, tf.float32)
        if c == 1:
            img = tf.tensordot(img, tf.constant([0.299, 0.587, 0.114]), axes=1)[..., None]
            # PIL's "L" rounds the weighted sum to an integer before resizing.
            img = tf.round(img)
        img = tf.image.resize(img, [h, w], method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(img), 0.0, 255.0)

    @tf.autograph.experimental.do_not_convert
    def parse(raw: Any) -> tuple[dict, Any]:
        rel, data = image_unpack(raw)
        pixels = tf.map_fn(decode, data, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        return {feature.name: pixels}, class_of(rel)

    return parse
