"""Is this config file the one committed to the checked-out repository?

In CI, what decides whether a model ships must come from the committed repository. A
`--config` / TFSHIP_CONFIG naming a file in /tmp, a GitLab "File" variable, an artifact in
runs/, or a pipeline.yaml changed after checkout is not that, and the file's bytes are compared
with the committed blob to tell (the bytes tfship parsed, so nothing changes in between):

* the file must lie inside the checkout (CI_PROJECT_DIR / GITHUB_WORKSPACE when set) and inside
  a git work tree;
* in a CI job no person started, it must also be *the project's* config, pipeline.yaml at the
  root of the checkout: another committed YAML (an example project's, a test fixture's, a
  submodule's pipeline.yaml) was reviewed for another purpose, and TFSHIP_CONFIG picking it
  would let a variable choose the rules the model is judged by;
* its blob id must equal the one git records for that path: `git rev-parse HEAD:<path>` when
  git is installed, else the entry in `.git/index` (TensorFlow's images ship no git; right
  after a CI checkout the index is HEAD's tree).

git runs with every GIT_* variable removed: GIT_DIR, GIT_INDEX_FILE and friends come from the
same CI/CD settings this check distrusts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tfship import env

WORKSPACE_VARIABLES = ("CI_PROJECT_DIR", "GITHUB_WORKSPACE")
PROJECT_CONFIG = "pipeline.yaml"  # the project's config: at the root of the checkout


@dataclass(frozen=True)
class FileOrigin:
    """Where a config file came from, as far as git can tell."""

    path: str  # as given
    repo_path: str | None  # inside the repository, posix
    commit: str | None  # HEAD of the checkout
    blob: str | None  # the committed blob id of repo_path
    committed: bool  # the bytes read are exactly that blob
    problem: str | None  # why it is not known to be the committed file
    # pipeline.yaml at the root of the checkout (CI_PROJECT_DIR / GITHUB_WORKSPACE when set):
    # the project's own config, not another committed YAML (an example's, a test fixture's, a
    # submodule's) that a variable could pick to judge the model by.
    project_file: bool = False

    @property
    def label(self) -> str:
        if self.committed and self.commit:
            return f"{self.repo_path}@{self.commit[:12]}"
        return f"{self.path} ({self.problem})"

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "repo_path": self.repo_path,
            "commit": self.commit,
            "blob": self.blob,
            "committed": self.committed,
            "problem": self.problem,
            "project_file": self.project_file,
        }


class _Unknown(Exception):
    """git cannot say (no git, unreadable index): the file is not known to be committed."""


def blob_id(data: bytes, algorithm: str = "sha1") -> str:
    """git's object id of a blob with these bytes (`git hash-object`)."""
    return hashlib.new(algorithm, b"blob %d\0" % len(data) + data).hexdigest()


def _work_tree(start: Path) -> Path | None:
    for parent in (start, *start.parents):
        if (parent / ".git").exists():
            return parent
    return None


def _git_dir(root: Path) -> Path:
    dotgit = root / ".git"
    if dotgit.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            raise _Unknown(f"{dotgit} is not a gitdir link")
        return (root / text.removeprefix("gitdir:").strip()).resolve()
    return dotgit


def _git(root: Path, *args: str) -> str | None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        proc = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=clean,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _Unknown(f"git failed: {exc}") from None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _from_git(root: Path, rel: str) -> tuple[str | None, str | None]:
    commit = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    blob = _git(root, "rev-parse", "--verify", "-q", f"HEAD:{rel}") if commit else None
    return commit, blob


def _common_dir(git_dir: Path) -> Path:
    link = git_dir / "commondir"
    if link.is_file():
        return (git_dir / link.read_text(encoding="utf-8").strip()).resolve()
    return git_dir


def _head_commit(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return head or None
    ref = head.removeprefix("ref:").strip()
    common = _common_dir(git_dir)
    for base in (git_dir, common):
        if (base / ref).is_file():
            return (base / ref).read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            oid, _, name = line.partition(" ")
            if name == ref:
                return oid
    return None  # an unborn branch: nothing committed yet


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    # git's offset varint (index v4 path compression)
    byte = data[pos]
    pos += 1
    value = byte & 0x7F
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, pos


def _index_blob(git_dir: Path, rel: str, oid_len: int) -> str | None:
    """The stage-0 blob id of `rel` in git's index (format versions 2, 3 and 4)."""
    try:
        data = (git_dir / "index").read_bytes()
    except OSError as exc:
        raise _Unknown(f"no readable git index ({exc.strerror})") from None
    if data[:4] != b"DIRC" or len(data) < 12:
        raise _Unknown("the git index is not in a format tfship reads")
    version, count = struct.unpack(">II", data[4:12])
    if version not in (2, 3, 4):
        raise _Unknown(f"git index version {version} is not supported")
    target, previous, pos = rel.encode(), b"", 12
    try:
        for _ in range(count):
            start = pos
            oid = data[pos + 40 : pos + 40 + oid_len]
            (flags,) = struct.unpack(">H", data[pos + 40 + oid_len : pos + 42 + oid_len])
            pos += 42 + oid_len + (2 if version >= 3 and flags & 0x4000 else 0)
            if version == 4:
                strip, pos = _varint(data, pos)
                end = data.index(b"\0", pos)
                name = previous[: len(previous) - strip] + data[pos:end]
                pos = end + 1
            else:
                end = data.index(b"\0", pos)
                name = data[pos:end]
                pos = start + ((end - start + 8) & ~7)  # NUL padding to a multiple of 8
            previous = name
            if name == target and (flags >> 12) & 3 == 0:
                return oid.hex()
        while pos + 8 <= len(data) - oid_len:  # extensions
            signature, (size,) = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])
            if signature in (b"link", b"sdir"):
                raise _Unknown("a split or sparse git index is not supported")
            pos += 8 + size
    except (ValueError, struct.error, IndexError):
        raise _Unknown("the git index is truncated or corrupt") from None
    return None


def _from_index(root: Path, rel: str) -> tuple[str | None, str | None]:
    git_dir = _git_dir(root)
    config = _common_dir(git_dir) / "config"
    sha256 = config.is_file() and "objectformat = sha256" in config.read_text(errors="replace")
    try:
        commit = _head_commit(git_dir)
    except OSError as exc:
        raise _Unknown(f"HEAD unreadable ({exc.strerror})") from None
    return commit, _index_blob(git_dir, rel, 32 if sha256 else 20) if commit else None


def origin_of(path: Path, data: bytes, environ: Mapping[str, str] | None = None) -> FileOrigin:
    """Where `path` (whose bytes are `data`) stands against the committed repository."""
    environ = os.environ if environ is None else environ

    def unknown(problem: str, root: Path | None = None, commit: str | None = None) -> FileOrigin:
        rel = real.relative_to(root).as_posix() if root else None
        return FileOrigin(str(path), rel, commit, None, False, problem)

    real = path.resolve()
    workspaces = []
    for name in WORKSPACE_VARIABLES:
        workspace = env.get(name, environ=environ)
        if workspace and not real.is_relative_to(Path(workspace).resolve()):
            return unknown(f"outside the checked-out repository {workspace} ({name})")
        if workspace:
            workspaces.append(Path(workspace).resolve())
    root = _work_tree(real.parent)
    if root is None:
        return unknown("not in a git checkout")
    rel = real.relative_to(root).as_posix()
    project_file = rel == PROJECT_CONFIG and all(root == w for w in workspaces)
    try:
        commit, blob = _from_git(root, rel) if shutil.which("git") else _from_index(root, rel)
    except _Unknown as exc:
        return unknown(f"cannot be checked against git: {exc}", root)
    if commit is None:
        return unknown("no commit checked out", root)
    if blob is None:
        return unknown(f"not tracked by git at {commit[:12]}", root, commit)
    algorithm = "sha256" if len(blob) == 64 else "sha1"
    # A checkout with autocrlf turns the committed LF into CRLF on disk: the same content.
    if blob in (blob_id(data, algorithm), blob_id(data.replace(b"\r\n", b"\n"), algorithm)):
        return FileOrigin(str(path), rel, commit, blob, True, None, project_file)
    return FileOrigin(
        str(path), rel, commit, blob, False, f"differs from the file committed at {commit[:12]}"
    )
