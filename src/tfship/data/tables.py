"""Tables: CSV (stdlib csv) and Parquet (pyarrow), one feature per column, the label in
`data.label`.

CSV has no types, so each column is typed by its cells: a column whose non-empty cells all
parse as numbers is numeric (an empty cell, "NA", "nan", "null" ... is missing, NaN); any other
column holds strings ("" = missing). A header row is required. Parquet keeps its own types:
int/float/bool columns are numeric, string/binary columns strings, null = missing, and a list
column of numbers is a numeric vector feature (every row the same length).
The fingerprint is computed over the file's manifest entry (its bytes' sha256), as for every
file-based source, so the same file gives the same fingerprint.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfship.config import DataConfig
from tfship.data import loaders
from tfship.data.files import file_manifest, manifest_bytes, open_regular, require_path
from tfship.data.infer import is_missing_text
from tfship.data.loaders import LoadedData, check_total
from tfship.errors import DataError

_CELL_OVERHEAD = 56  # bytes of a small Python str / float object, for the memory bound


def _label_column(header: list[str], label: str, path: Path) -> int:
    if header.count(label) != 1:
        raise DataError(
            f"{path}: header has {header.count(label)} column(s) named '{label}'; expected "
            f"exactly one. Received: {header[:8]}...",
            hint="set data.label to the name of the label column",
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(
            f"{path}: column name(s) {dupes[:5]} appear more than once in the header; expected "
            "unique names (they name the model's inputs)"
        )
    return header.index(label)


def _manifest(path: Path) -> tuple[list, bytes]:
    manifest = file_manifest(path, [path])
    return manifest, manifest_bytes(manifest)


def load_csv(cfg: DataConfig) -> LoadedData:
    path = require_path(cfg)
    with open_regular(path, loaders.MAX_DATA_BYTES) as fh:
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
        header, cells = _read_cells(text, path)
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV file: {exc}") from None
    li = _label_column(header, cfg.label, path)
    labels = [None if is_missing_text(v) else v for v in cells[li]]
    # Columns declared as strings keep their text as written ("00501" stays "00501").
    as_text = {n for n, d in (cfg.features or {}).items() if _declared_string(d)}
    columns = {
        name: _strings(col) if name in as_text else _typed(col)
        for i, (name, col) in enumerate(zip(header, cells, strict=True))
        if i != li
    }
    manifest, content = _manifest(path)
    return LoadedData(columns, labels, None, manifest, content)


def _read_cells(text: str, path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the cells column by column; every row must have the header's width."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise DataError(f"{path} is empty; expected a header row and one row per example")
    cells: list[list[str]] = [[] for _ in header]
    approx = 0
    for n, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {n}: {len(row)} fields; expected {len(header)}")
        for col, value in zip(cells, row, strict=True):
            col.append(value)
        approx += _CELL_OVERHEAD * len(row) + sum(map(len, row))
        if n % 1024 == 0:
            check_total(approx, path, f"the {n - 1} rows read so far")
    if not cells[0]:
        raise DataError(f"{path} has a header but no examples")
    return header, cells


def _declared_string(decl: Any) -> bool:
    kind = str(getattr(decl, "kind", decl))
    return kind in ("categorical", "text") and getattr(decl, "dtype", None) != "int64"


def _strings(cells: list[str]) -> np.ndarray:
    out = np.empty(len(cells), dtype=object)
    out[:] = cells
    return out


def _typed(cells: list[str]) -> np.ndarray:
    """float32 (missing = NaN) when every non-empty cell is a number, else str (object)."""
    numbers = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        if is_missing_text(cell):
            numbers[i] = math.nan
            continue
        try:
            numbers[i] = float(cell)
        except ValueError:
            return _strings(cells)
    return numbers.astype(np.float32)


def load_parquet(cfg: DataConfig) -> LoadedData:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = require_path(cfg)
    with open_regular(path) as fh:
        try:
            pf = pq.ParquetFile(fh)
            meta = pf.metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            check_total(size, path, f"{meta.num_rows} rows (uncompressed)")
            table = pf.read()
        except DataError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(
                f"cannot read {path} as Parquet: {type(exc).__name__}: {str(exc)[:200]}",
                hint="write it with pyarrow.parquet.write_table or pandas.DataFrame.to_parquet",
            ) from None
    names = table.column_names
    if cfg.label not in names:
        raise DataError(
            f"{path}: no column '{cfg.label}' (data.label); found columns {names[:30]}",
            hint="set data.label to the name of the label column",
        )
    labels = table.column(cfg.label).to_pylist()
    columns = {n: _arrow_column(table.column(n), n, path) for n in names if n != cfg.label}
    manifest, content = _manifest(path)
    return LoadedData(columns, labels, None, manifest, content)


def _arrow_column(col: Any, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.types as pt

    kind = col.type
    if pt.is_dictionary(kind):
        col, kind = col.cast(kind.value_type), kind.value_type
    if pt.is_integer(kind) and col.null_count == 0:
        return col.to_numpy()
    if pt.is_integer(kind) or pt.is_floating(kind) or pt.is_boolean(kind):
        # null -> NaN, the numeric missing value
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
    if pt.is_string(kind) or pt.is_large_string(kind) or pt.is_binary(kind):
        out = np.empty(len(col), dtype=object)
        out[:] = col.to_pylist()
        return out
    if (pt.is_list(kind) or pt.is_large_list(kind) or pt.is_fixed_size_list(kind)) and (
        pt.is_integer(kind.value_type) or pt.is_floating(kind.value_type)
    ):
        return _vectors(col.to_pylist(), name, path)
    raise DataError(
        f"{path}: column '{name}' has Parquet type {kind}; expected numbers, strings or lists of "
        "numbers",
        hint=f"convert '{name}' (e.g. timestamps to numbers), or drop it from the file",
    )


def _vectors(rows: list[Any], name: str, path: Path) -> np.ndarray:
    widths = {len(r) for r in rows if r is not None}
    if len(widths) > 1:
        raise DataError(
            f"{path}: list column '{name}' has rows of lengths {sorted(widths)[:5]}; expected "
            "the same length in every row (a numeric vector feature)"
        )
    width = widths.pop() if widths else 1
    filled = [
        [math.nan] * width if r is None else [math.nan if v is None else v for v in r] for r in rows
    ]
    return np.asarray(filled, dtype=np.float64).astype(np.float32).reshape(len(rows), width)
