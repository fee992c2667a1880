"""Which files a data source reads, checked before any is opened.

Only regular files are read: FIFOs, sockets and devices are refused by their `lstat`, never
opened (reading one blocks forever or never ends), and every open uses O_NONBLOCK plus a
`fstat` so a file swapped for a FIFO after the check cannot hang the loader either. Symbolic
links may point only inside the data folder; file and folder names must be UTF-8 (they become
class names and manifest entries). The loaders and `tfship data snapshot|changed` list files
with the same function, so both compute the same fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tfship.config import DataConfig, DataSource
from tfship.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
TFRECORD_SUFFIXES = {".tfrecord", ".tfrecords", ".tfr"}
TEXT_SUFFIXES = {".txt"}
# A data folder with more files than this is almost certainly the wrong folder (a home or root
# directory); walking it would take hours before anything failed.
MAX_FILES = 1_000_000


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the data root, '/'-separated
    size: int
    sha256: str


def require_path(cfg: DataConfig) -> Path:
    assert cfg.path is not None  # guaranteed by DataConfig validation
    if cfg.stream is not None or not isinstance(cfg.path, Path):
        # A data.stream config is read by tfship.data.stream (the stages) and listed by
        # tfship.datachange.scan_stream (`tfship data snapshot` / `data changed`); only the
        # in-memory loaders come here, and they read local files.
        raise DataError(
            f"data.path {cfg.path} is read with data.stream; the in-memory loaders read only "
            "local files without a data.stream block",
            hint="load it with tfship.data.load_splits (it reads data.stream); see "
            "docs/data-at-scale.md",
        )
    if not cfg.path.exists():
        raise DataError(
            f"data.path {cfg.path} does not exist (data.source={cfg.source.value})",
            hint="point data.path (or TFSHIP_DATA_PATH) at your data, relative to the working "
            "directory or absolute",
        )
    return cfg.path


def utf8_name(path: Path, root: Path) -> str:
    """`path` relative to `root` as '/'-separated text, or DataError if it is not UTF-8."""
    rel = path.relative_to(root).as_posix() if path != root else path.name
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"file name {rel.encode('utf-8', 'surrogateescape')!r} under {root} is not valid "
            "UTF-8; expected UTF-8 file and folder names (they become class names and manifest "
            "entries)",
            hint="rename it, e.g. `convmv -f latin1 -t utf8 --notest -r <folder>`",
        ) from None
    return rel


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> DataError:
    return DataError(
        f"{path} is {_kind(mode)}; expected a regular file (special files are never opened: "
        "reading one can hang)",
        hint="remove it from the data folder, or point data.path at a regular file",
    )


def check_regular(path: Path, root: Path) -> None:
    """DataError unless `path` is a regular file inside `root` (a symlink must stay inside).

    `root` is the data folder, or the data file itself for single-file sources (a link named
    by data.path may point anywhere: the config chose it).
    """
    if path != root:
        utf8_name(path, root)
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve(strict=True)
            top = root.resolve()
            if path != root and not target.is_relative_to(top):
                raise DataError(
                    f"{path} is a symbolic link to {target}, outside the data folder {top}; "
                    "links may only point inside it",
                    hint="copy the file into the data folder instead of linking to it",
                )
            st = target.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="fix or remove the file") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)


def open_regular(path: Path, max_bytes: int | None = None) -> BinaryIO:
    """`path` opened for binary reading; DataError unless it is a regular file (of at most
    `max_bytes`). O_NONBLOCK makes opening a FIFO return at once instead of waiting forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="fix or remove the file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if max_bytes is not None and st.st_size > max_bytes:
            raise DataError(
                f"{path} is {st.st_size} bytes; expected at most {max_bytes}",
                hint="downscale or split it (tfship resizes images to data.image_size anyway)",
            )
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def data_files(directory: Path, root: Path, suffixes: set[str]) -> list[Path]:
    """Files under `directory` with one of `suffixes`, each checked by `check_regular`.

    Directories are walked without following symbolic links; hidden directories are skipped.
    """
    found: list[Path] = []
    for top, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            utf8_name(Path(top) / d, root)
        for name in names:
            p = Path(top) / name
            if p.suffix.lower() in suffixes:
                check_regular(p, root)
                found.append(p)
        if len(found) > MAX_FILES:
            raise DataError(
                f"{directory} holds more than {MAX_FILES} data files; expected a data folder",
                hint="point data.path at the folder that holds only this data set",
            )
    return sorted(found)


def class_folders(root: Path, source: str = "image_folder") -> list[Path]:
    """The class sub-folders of an image or text folder (hidden ones skipped), links kept
    inside."""
    if not root.is_dir():
        raise DataError(
            f"data.path {root} is not a directory; {source} expects one sub-folder per class"
        )
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        utf8_name(p, root)
        if p.is_symlink() and not p.resolve().is_relative_to(root.resolve()):
            raise DataError(
                f"class folder {p} is a symbolic link to {p.resolve()}, outside {root}; links "
                "may only point inside the data folder",
                hint="copy the folder into the data folder instead of linking to it",
            )
        out.append(p)
    return out


def source_files(cfg: DataConfig) -> tuple[Path, list[Path]]:
    """The data root and every file a file-based source reads, checked (not opened)."""
    root = require_path(cfg)
    if cfg.source in (DataSource.IMAGE_FOLDER, DataSource.TEXT_FOLDER):
        suffixes = IMAGE_SUFFIXES if cfg.source == DataSource.IMAGE_FOLDER else TEXT_SUFFIXES
        folders = class_folders(root, cfg.source.value)
        return root, [p for d in folders for p in data_files(d, root, suffixes)]
    if cfg.source == DataSource.TFRECORD and root.is_dir():
        return root, data_files(root, root, TFRECORD_SUFFIXES)
    check_regular(root, root)
    return root, [root]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_manifest(root: Path, files: list[Path]) -> list[FileEntry]:
    base = root if root.is_dir() else root.parent
    return [FileEntry(utf8_name(p, base), p.stat().st_size, _sha256(p)) for p in sorted(files)]


def manifest_bytes(manifest: list[FileEntry]) -> bytes:
    return "\n".join(f"{e.path}\t{e.size}\t{e.sha256}" for e in manifest).encode()
