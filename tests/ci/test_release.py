"""Releases and how a project that adopted the template installs tfship (ci/release,
ci/install-deps): a tag X.Y.Z equal to pyproject's version, a reproducible wheel pinned by its
sha256, installed from a package index into a project that is not a tfship checkout."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]


def _release(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    ci_vars = ("CI_COMMIT_TAG", "GITHUB_REF_NAME", "GITHUB_REPOSITORY")
    base = {k: v for k, v in os.environ.items() if k not in ci_vars}
    return subprocess.run(
        [str(cwd / "ci" / "release"), *args],
        env={**base, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("tag", "error"),
    [
        (VERSION, None),
        (f"v{VERSION}", "is not X.Y.Z"),
        ("1.0", "is not X.Y.Z"),
        ("01.2.3", "is not X.Y.Z"),
        ("99.0.0", 'pyproject.toml says version "' + VERSION),
        ("", "no tag"),
    ],
)
def test_a_release_tag_is_the_package_version(tag: str, error: str | None) -> None:
    proc = _release("check", tag)
    if error is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 3 and error in proc.stderr, proc.stderr


def test_a_tag_whose_version_has_no_changelog_section_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    shutil.copy(ROOT / "ci" / "release", tmp_path / "ci" / "release")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## 0.0.1\n")
    proc = _release("check", VERSION, cwd=tmp_path)
    assert proc.returncode == 3 and f"no '## {VERSION}' section" in proc.stderr


def test_the_tag_comes_from_the_ci_platform_when_not_given() -> None:
    assert _release("check", CI_COMMIT_TAG=VERSION).returncode == 0
    proc = _release("check", GITHUB_REF_NAME=f"v{VERSION}")
    assert proc.returncode == 3 and "is not X.Y.Z" in proc.stderr


def test_the_docs_pin_the_current_release_and_its_tag_form() -> None:
    """Every `ref:` / component version the docs tell a project to pin is this version."""
    text = (ROOT / "docs" / "ci.md").read_text()
    pins = re.findall(r"^ +ref: (\S+)$|/pipeline@(\S+)$|^ +tfship_ref: (\S+)$", text, re.M)
    found = {v for group in pins for v in group if v}
    assert found == {VERSION}, found


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tfship's wheel as `ci/release build` makes it, from a copy of the committed tree."""
    src = tmp_path_factory.mktemp("tree")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    # the working tree's ci/release and CHANGELOG.md (a release commit has them committed)
    for name in ("ci/release", "CHANGELOG.md", "pyproject.toml"):
        shutil.copy(ROOT / name, src / name)
    first = _release("build", cwd=src, SOURCE_DATE_EPOCH="1700000000")
    assert first.returncode == 0, first.stderr
    wheel = src / "dist" / f"tfship-{VERSION}-py3-none-any.whl"
    digest = wheel.read_bytes()
    again = _release("build", cwd=src, SOURCE_DATE_EPOCH="1700000000")
    assert again.returncode == 0 and wheel.read_bytes() == digest, "the wheel is not reproducible"
    return src / "dist"


def test_the_release_pins_its_wheel_by_sha256_and_says_so_in_its_notes(wheelhouse: Path) -> None:
    wheel = wheelhouse / f"tfship-{VERSION}-py3-none-any.whl"
    line = (wheelhouse / "requirements-tfship.txt").read_text().splitlines()[-1]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert line == f"tfship=={VERSION} --hash=sha256:{digest}"
    notes = (wheelhouse / "release-notes.md").read_text()
    assert line in notes and f"tfship {VERSION}" in notes
    assert "## " not in notes  # the changelog's section body, not the next section


def test_on_github_the_pin_is_the_release_asset_url(tmp_path: Path, wheelhouse: Path) -> None:
    src = wheelhouse.parent
    proc = _release("build", cwd=src, SOURCE_DATE_EPOCH="1700000000", GITHUB_REPOSITORY="acme/t")
    assert proc.returncode == 0, proc.stderr
    line = (wheelhouse / "requirements-tfship.txt").read_text().splitlines()[-1]
    url = f"https://github.com/acme/t/releases/download/{VERSION}/tfship-{VERSION}-py3-none-any.whl"
    assert line.startswith(f"tfship @ {url} --hash=sha256:")
    # put the index form back for the other tests of the module
    assert _release("build", cwd=src, SOURCE_DATE_EPOCH="1700000000").returncode == 0


# ---- ci/install-deps in a project that adopted the template -----------------------------------

STAND_IN_PYTHON = """#!/usr/bin/env bash
# stand-in python3: records pip calls; no TensorFlow
if [[ "$1" == -c ]]; then exit 1; fi
echo "$*" >> "$PIP_LOG"
"""


def _adopted(tmp_path: Path, *files: str) -> Path:
    project = tmp_path / "team"
    (project / "ci").mkdir(parents=True)
    shutil.copy(ROOT / "ci" / "install-deps", project / "ci" / "install-deps")
    for name in files:
        (project / name).write_text("# the project's\n")
    return project


def _install_deps(project: Path, python: Path, *args: str, **env: str):
    base = {k: v for k, v in os.environ.items() if k not in ("TFSHIP_SKIP_INSTALL", "PIP_LOG")}
    return subprocess.run(
        [str(project / "ci" / "install-deps"), *args],
        env={**base, "PYTHON": str(python), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("files", "index", "code", "tfship_call"),
    [
        (["requirements-tfship.txt"], "folder", 0,
         "--require-hashes -r requirements-tfship.txt --no-index --find-links {index}"),
        (["requirements-tfship.txt"], "https://gitlab.example/api/v4/projects/7/packages/pypi/simple",
         0, "--require-hashes -r requirements-tfship.txt --index-url {index}"),
        (["requirements-tfship.txt"], "", 0, "--require-hashes -r requirements-tfship.txt"),
        (["requirements-tfship.txt", "requirements-project.lock"], "", 0,
         "--require-hashes -r requirements-tfship.txt"),
        ([], "", 3, None),
    ],
)  # fmt: skip
def test_an_adopted_project_installs_the_pinned_wheel_never_an_editable_checkout(
    tmp_path: Path, files: list[str], index: str, code: int, tfship_call: str | None
) -> None:
    project = _adopted(tmp_path, *files)
    if index == "folder":
        index = str(tmp_path / "wheels")
        Path(index).mkdir()
    python = tmp_path / "python3"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "pip.log"
    proc = _install_deps(project, python, PIP_LOG=str(log), TFSHIP_PACKAGE_INDEX=index)
    calls = log.read_text().splitlines() if log.exists() else []
    assert proc.returncode == code, proc.stderr
    if tfship_call is None:
        # nothing installed, and the message says what to create and where the wheel is
        assert calls == []
        assert "requirements-tfship.txt" in proc.stderr and "TFSHIP_PACKAGE_INDEX" in proc.stderr
        return
    assert calls[0] == "-m pip install -q --require-hashes -r requirements-cpu.lock"
    assert calls[2] == "-m pip install -q --no-deps " + tfship_call.format(index=index)
    assert not any("-e ." in c for c in calls)
    project_lock = "-m pip install -q --require-hashes -r requirements-project.lock"
    assert (project_lock in calls) == ("requirements-project.lock" in files)


@pytest.mark.e2e
@pytest.mark.slow
def test_an_adopted_project_installs_the_released_wheel_and_refuses_a_tampered_one(
    tmp_path: Path, wheelhouse: Path
) -> None:
    """The real thing: a fresh virtualenv, the runtime lock, the wheel from a folder index."""
    project = _adopted(tmp_path)
    # what docs/ci.md says to copy: with TensorFlow installed the runtime profile switches locks
    for name in ("requirements.lock", "requirements-cpu.lock", "requirements-dev.lock",
                 "requirements-runtime-cpu.lock", "requirements-serving-api.txt"):  # fmt: skip
        shutil.copy(ROOT / name, project / name)
    shutil.copy(wheelhouse / "requirements-tfship.txt", project / "requirements-tfship.txt")
    index = tmp_path / "index"
    shutil.copytree(wheelhouse, index)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"

    proc = _install_deps(project, python, "--runtime", TFSHIP_PACKAGE_INDEX=str(index))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run(
        [str(python), "-c", "import tfship, sys; print(tfship.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert where.startswith(str(env_dir)), where  # installed, not the template's src/
    version = subprocess.run(
        [str(env_dir / "bin" / "tfship"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.strip() == f"tfship {VERSION}"

    # A wheel of the same name with other bytes (a poisoned index): pip refuses it by hash.
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "tfship"], check=True)
    wheel = index / f"tfship-{VERSION}-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    proc = _install_deps(project, python, "--runtime", TFSHIP_PACKAGE_INDEX=str(index))
    assert proc.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in proc.stderr
