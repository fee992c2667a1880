"""TFRecord files of `tf.train.Example`s: the legacy image form, or parsed per data.features.

Without `data.features` each Example holds one image under `data.tfrecord_image_key` (encoded
bytes, or H*W*C numbers) and its label under `data.label`; the image becomes feature `pixels`.
With `data.features` each declared feature is read by its kind:

| kind          | Example list                          | missing (absent or empty list) |
|---------------|---------------------------------------|--------------------------------|
| `numeric`     | float_list (int64_list accepted)      | NaN                            |
| `categorical` | int64_list or bytes_list, one value   | "" / -1                        |
| `text`        | bytes_list, one UTF-8 value           | ""                             |
| `image`       | bytes_list (one encoded image) or float_list / int64_list of H*W*C | refused |

A list of the wrong type is a DataError naming the file, record index, feature, what was found
and what was expected.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig
from tfship.data.files import (
    TFRECORD_SUFFIXES,
    check_regular,
    data_files,
    file_manifest,
    manifest_bytes,
    require_path,
)
from tfship.data.images import MAX_IMAGE_FILE_BYTES, decode_image
from tfship.data.loaders import LoadedData, check_total
from tfship.data.schema import Kind
from tfship.errors import DataError

_LISTS = ("float_list", "int64_list", "bytes_list")
#: Which Example lists each kind reads (the others are a type mismatch).
_ACCEPTS = {
    Kind.NUMERIC: ("float_list", "int64_list"),
    Kind.CATEGORICAL: ("int64_list", "bytes_list"),
    Kind.TEXT: ("bytes_list",),
    Kind.IMAGE: ("bytes_list", "float_list", "int64_list"),
}


def _paths(cfg: DataConfig) -> tuple[Path, list[Path]]:
    root = require_path(cfg)
    if root.is_dir():
        paths = data_files(root, root, TFRECORD_SUFFIXES)
    else:
        check_regular(root, root)
        paths = [root]
    if not paths:
        raise DataError(f"no TFRecord files ({', '.join(sorted(TFRECORD_SUFFIXES))}) under {root}")
    return root, paths


def _records(paths: list[Path]) -> Any:
    """(path, index, serialized Example) for every record, unreadable files as DataError."""
    import tensorflow as tf

    for path in paths:
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                yield path, i, raw
        except tf.errors.OpError as exc:
            raise DataError(
                f"{path} is not a valid (uncompressed) TFRecord file: {exc.message[:300]}",
                hint="write plain TFRecord files (no GZIP/ZLIB), or remove the file",
            ) from None


def _parse(raw: bytes, where: str) -> Any:
    import tensorflow as tf

    try:
        return tf.train.Example.FromString(raw).features.feature
    except Exception as exc:  # protobuf's DecodeError: the record is not an Example
        raise DataError(f"{where}: not a tf.train.Example ({type(exc).__name__})") from None


def _present(feature: Any) -> tuple[str | None, list[Any]]:
    """(the list kind holding values, the values); (None, []) when empty."""
    for kind in _LISTS:
        values = list(getattr(feature, kind).value)
        if values:
            return kind, values
    return None, []


def _label(feats: Any, key: str) -> Any:
    """One value as a scalar, several as a list (multilabel ids / names), none as None."""
    if key not in feats:
        return None
    _, values = _present(feats[key])
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def load_tfrecord(cfg: DataConfig) -> LoadedData:
    root, paths = _paths(cfg)
    if cfg.features:
        columns, labels = _load_declared(cfg, paths)
    else:
        columns, labels = _load_images(cfg, paths)
    if not labels:
        raise DataError(f"TFRecord files under {root} hold no records")
    manifest = file_manifest(root, paths)
    return LoadedData(columns, labels, None, manifest, manifest_bytes(manifest))


def _load_images(cfg: DataConfig, paths: list[Path]) -> tuple[dict, list]:
    h, w = cfg.image_size
    per_image = h * w * cfg.channels * 4
    images: list[np.ndarray] = []
    labels: list[Any] = []
    ikey, lkey = cfg.tfrecord_image_key, cfg.label
    for path, i, raw in _records(paths):
        check_total((len(images) + 1) * per_image, path, "the decoded float32 pixels")
        where = f"{path} record {i}"
        feats = _parse(raw, where)
        missing = [k for k in (ikey, lkey) if k not in feats]
        if missing:
            raise DataError(
                f"{where}: missing feature(s) {missing}; present: {sorted(feats)[:10]}",
                hint="set data.tfrecord_image_key / data.label (or declare data.features)",
            )
        images.append(_image(feats[ikey], (h, w, cfg.channels), cfg, where))
        labels.append(_label(feats, lkey))
    columns = {"pixels": np.stack(images)} if images else {}
    return columns, labels


def _image(feature: Any, shape: tuple[int, ...], cfg: DataConfig, where: str) -> np.ndarray:
    h, w, c = shape
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
        if (h, w) != tuple(cfg.image_size) or c != cfg.channels:
            cfg = cfg.model_copy(update={"image_size": (h, w), "channels": c})
        return decode_image(io.BytesIO(encoded[0]), cfg, f"{where}: image")
    values = feature.float_list.value or feature.int64_list.value
    if len(values) != h * w * c:
        raise DataError(
            f"{where}: image has {len(values)} values; expected {h * w * c} (= {h}x{w}x{c} "
            "from data.image_size and data.channels, or the feature's declared shape)"
        )
    return np.asarray(values, dtype=np.float64).astype(np.float32).reshape(h, w, c)


def _declared_kinds(cfg: DataConfig) -> dict[str, tuple[Kind, tuple[int, ...] | None]]:
    out = {}
    for name, decl in (cfg.features or {}).items():
        kind = Kind(str(getattr(decl, "kind", decl)))
        shape = getattr(decl, "shape", None)
        if kind is Kind.IMAGE and not shape:
            shape = (*cfg.image_size, cfg.channels)
        out[name] = (kind, tuple(shape) if shape else None)
    return out


def _load_declared(cfg: DataConfig, paths: list[Path]) -> tuple[dict, list]:
    kinds = _declared_kinds(cfg)
    values: dict[str, list[Any]] = {name: [] for name in kinds}
    labels: list[Any] = []
    approx = 0
    for path, i, raw in _records(paths):
        where = f"{path} record {i}"
        feats = _parse(raw, where)
        for name, (kind, shape) in kinds.items():
            values[name].append(_value(feats, name, kind, shape, cfg, where))
        labels.append(_label(feats, cfg.label))
        approx += len(raw) * 4 + sum(
            4 * math.prod(s) for k, s in kinds.values() if k is Kind.IMAGE and s
        )
        check_total(approx, path, "the parsed examples")
    return {
        name: _column(name, kind, shape, values[name]) for name, (kind, shape) in kinds.items()
    }, labels


def _value(
    feats: Any, name: str, kind: Kind, shape: tuple[int, ...] | None, cfg: DataConfig, where: str
) -> Any:
    found, vals = _present(feats[name]) if name in feats else (None, [])
    if found is not None and found not in _ACCEPTS[kind]:
        raise DataError(
            f"{where}: feature {name!r} holds a {found}; expected "
            f"{' or '.join(_ACCEPTS[kind])} for a {kind} feature",
            hint=f"fix data.features[{name!r}] (kind), or the data",
        )
    if kind is Kind.IMAGE:
        if found is None:
            raise DataError(f"{where}: image feature {name!r} is missing; images cannot be")
        assert shape is not None
        return _image(feats[name], shape, cfg, f"{where}: feature {name!r}")
    if kind is Kind.NUMERIC:
        if found is None:
            return None  # NaN of the column's width, filled in by _column
        return [float(v) for v in vals]
    if len(vals) > 1:
        raise DataError(
            f"{where}: feature {name!r} holds {len(vals)} values; expected one per example "
            f"for a {kind} feature"
        )
    if found is None:
        return None
    value = vals[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{where}: feature {name!r} holds bytes {value[:40]!r} that are not UTF-8; "
                f"expected UTF-8 text for a {kind} feature"
            ) from None
    return int(value)


def _column(name: str, kind: Kind, shape: tuple[int, ...] | None, values: list[Any]) -> np.ndarray:
    if kind is Kind.IMAGE:
        return np.stack(values)
    if kind is Kind.NUMERIC:
        widths = {len(v) for v in values if v is not None}
        if len(widths) > 1:
            raise DataError(
                f"feature {name!r} holds {sorted(widths)[:5]} values in different records; "
                "expected the same number in every record (declare its shape)"
            )
        width = widths.pop() if widths else math.prod(shape or ())
        if shape is not None and width != math.prod(shape):
            raise DataError(
                f"feature {name!r} holds {width} values per record; expected "
                f"{math.prod(shape)} (its declared shape {list(shape)})"
            )
        rows = [v if v is not None else [math.nan] * width for v in values]
        arr = np.asarray(rows, dtype=np.float64).astype(np.float32)
        return arr.reshape(len(rows), *shape) if shape else arr[:, 0] if width == 1 else arr
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
