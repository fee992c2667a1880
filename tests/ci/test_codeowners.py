"""CODEOWNERS covers every path that decides whether a model ships or what the pipelines run,
in the one place both GitHub and GitLab read it (the repository root)."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "@tfship-example/ml-release-owners"

# (why it decides, path) - a file, or a directory: every tracked file under it
DECISION_PATHS = [
    ("the committed thresholds and gate settings", "pipeline.yaml"),
    ("the gate", "src/tfship/gate.py"),
    ("the champion the change thresholds compare with", "src/tfship/champion.py"),
    ("the metrics the gate judges", "src/tfship/evaluate.py"),
    ("how pipeline.yaml is parsed", "src/tfship/safe_yaml.py"),
    ("which config fields may come from where", "src/tfship/config"),
    ("what is deployed and rolled back", "src/tfship/serving"),
    ("what a scan reports", "src/tfship/scan"),
    ("accepted vulnerabilities", ".trivyignore.yaml"),
    ("runtime dependencies", "requirements.txt"),
    ("CPU dependencies", "requirements-cpu.txt"),
    ("dev dependencies, the CI tools", "requirements-dev.txt"),
    ("the images", "docker"),
    ("the pipeline scripts", "ci"),
    ("the GitLab pipeline", ".gitlab-ci.yml"),
    ("the GitHub workflows", ".github"),
    ("the GitLab CI/CD component", "templates"),
    ("dependency update rules", "renovate.json"),
    ("the security tests", "tests/security"),
    ("the owners themselves", "CODEOWNERS"),
]


def _rules() -> list[tuple[str, list[str]]]:
    rules = []
    for line in (ROOT / "CODEOWNERS").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("["):  # comments, GitLab sections
            continue
        pattern, *owners = line.split()
        rules.append((pattern, owners))
    return rules


def _matches(pattern: str, path: str) -> bool:
    """.gitignore-style, for the subset CODEOWNERS here uses (anchored, dir/, *)."""
    anchored = pattern.startswith("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) if anchored else f"/{pattern}" in f"/{path}"
    if anchored:
        return fnmatch.fnmatchcase(path, pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def _owners(path: str) -> list[str]:
    """Owners of `path`: the last matching rule wins (GitHub and GitLab alike)."""
    owners: list[str] = []
    for pattern, rule_owners in _rules():
        if _matches(pattern, path):
            owners = rule_owners
    return owners


def _tracked(under: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", under],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


@pytest.mark.parametrize("path", [p for _, p in DECISION_PATHS], ids=[w for w, _ in DECISION_PATHS])
def test_every_file_of_a_decision_path_has_a_code_owner(path: str) -> None:
    assert (ROOT / path).exists(), f"{path} no longer exists: update DECISION_PATHS"
    files = _tracked(path) if (ROOT / path).is_dir() else [path]
    assert files, path
    for file in files:
        assert _owners(file), f"{file} has no code owner"


def test_only_the_root_codeowners_exists_so_both_platforms_read_the_same_file() -> None:
    # GitHub prefers .github/CODEOWNERS, GitLab docs/ then .gitlab/: any of them would shadow
    # the root file on one platform only
    for shadow in (".github/CODEOWNERS", "docs/CODEOWNERS", ".gitlab/CODEOWNERS"):
        assert not (ROOT / shadow).exists(), shadow


def test_owners_are_one_placeholder_team_the_adopter_replaces_in_one_place() -> None:
    owners = {o for _, rule_owners in _rules() for o in rule_owners}
    assert owners == {PLACEHOLDER}
    assert PLACEHOLDER in (ROOT / "docs/ci.md").read_text()


def test_a_file_outside_the_decision_paths_needs_no_code_owner() -> None:
    # the rule is about what ships, not every file: docs and models stay reviewable as usual
    assert not _owners("docs/ci.md")
    assert not _owners("src/tfship/model.py")
