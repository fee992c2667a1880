"""renovate.json: valid for Renovate, and every pinned dependency in the repository is one of its
managers' business, so a pin cannot silently go stale.

Renovate itself is not run here (it needs its registries). The custom regex managers are applied
to the real files with Python's `re` (the patterns use only syntax RE2, JavaScript and Python
share; `(?<name>` becomes `(?P<name>`); the built-in managers are checked by their file patterns,
the ones in renovate.json or Renovate's documented defaults.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / "renovate.json").read_text())

# Renovate's default managerFilePatterns (docs.renovatebot.com/modules/manager/<name>/).
DEFAULT_PATTERNS = {
    "docker-compose": [r"(^|/)(?:docker-)?compose[^/]*\.ya?ml$"],
    "github-actions": [
        r"(^|/)(workflow-templates|\.(?:github|gitea|forgejo)/(?:workflows|actions))/.+\.ya?ml$",
        r"(^|/)action\.ya?ml$",
    ],
    "kustomize": [r"(^|/)kustomization\.ya?ml$"],
}


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("(?<", "(?P<"))


def _patterns(manager: str) -> list[re.Pattern[str]]:
    configured = CONFIG.get(manager, {}).get("managerFilePatterns")
    raw = [p[1:-1] for p in configured] if configured else DEFAULT_PATTERNS.get(manager, [])
    return [_regex(p) for p in raw]


def _covers(manager: str, path: str) -> bool:
    return any(p.search(path) for p in _patterns(manager))


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def _custom_deps(path: str) -> list[dict[str, str]]:
    """What the custom regex managers extract from one file, as Renovate would."""
    text = (ROOT / path).read_text()
    deps = []
    for manager in CONFIG["customManagers"]:
        if not any(_regex(p[1:-1]).search(path) for p in manager["managerFilePatterns"]):
            continue
        for match_string in manager["matchStrings"]:
            for match in _regex(match_string).finditer(text):
                groups = {k: v for k, v in match.groupdict().items() if v is not None}
                deps.append(
                    {
                        "depName": manager.get("depNameTemplate", groups.get("depName")),
                        "currentValue": groups["currentValue"],
                        "datasource": manager["datasourceTemplate"],
                        "depType": manager.get("depTypeTemplate", groups.get("depType", "")),
                    }
                )
    return deps


def test_renovate_json_is_valid_against_renovate_s_schema() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.renovate",
            str(ROOT / "renovate.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_patterns_are_re2_compatible() -> None:
    # Renovate matches with RE2: no lookaround, no backreferences.
    patterns = [p for m in CONFIG["customManagers"] for p in m["matchStrings"]]
    patterns += [p for m in CONFIG["customManagers"] for p in m["managerFilePatterns"]]
    for name in ("kubernetes", "pip_requirements", "pip-compile"):
        patterns += CONFIG[name]["managerFilePatterns"]
    for pattern in patterns:
        assert not re.search(r"\(\?[=!]|\(\?<[=!]|\\[1-9]", pattern), pattern


# (file, depName, datasource) → a custom manager extracts it with a pinned version.
CUSTOM = [
    ("docker/train.Dockerfile", "tensorflow/tensorflow", "docker"),
    ("docker/test.Dockerfile", "tensorflow/tensorflow", "docker"),
    ("ci/gitlab/variables.yml", "tensorflow/tensorflow", "docker"),
    ("ci/gitlab/variables.yml", "docker", "docker"),
    ("templates/pipeline.yml", "tensorflow/tensorflow", "docker"),
    (".github/workflows/_train.yml", "tensorflow/tensorflow", "docker"),
    ("src/tfship/serving/launchers.py", "tensorflow/serving", "docker"),
    ("Makefile", "gitlab-ci-local", "npm"),
]


@pytest.mark.parametrize(
    ("path", "dep", "datasource"), CUSTOM, ids=[f"{p} {d}" for p, d, _ in CUSTOM]
)
def test_a_custom_manager_tracks_each_pin_no_built_in_manager_can_read(
    path: str, dep: str, datasource: str
) -> None:
    found = [d for d in _custom_deps(path) if d["depName"] == dep]
    assert found, f"no custom manager extracts {dep} from {path}"
    for d in found:
        assert d["datasource"] == datasource
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", d["currentValue"]), d


def test_every_image_variable_of_the_gitlab_pipeline_is_tracked() -> None:
    text = (ROOT / "ci/gitlab/variables.yml").read_text()
    pinned = {
        name
        for name, value in re.findall(r"^\s+(\w+_IMAGE): \"([^\"$]+)\"$", text, re.M)
        if ":" in value
    }
    assert pinned, "no image variables found"
    tracked = {d["depType"] for d in _custom_deps("ci/gitlab/variables.yml")}
    assert pinned <= tracked


# (file, built-in manager) → the manager reads the file.
BUILT_IN = [
    ("docker/serving/compose.yaml", "docker-compose"),
    ("docker/serving/k8s/deployment.yaml", "kubernetes"),
    ("docker/serving/k8s/kustomization.yaml", "kustomize"),
    *[
        (str(p.relative_to(ROOT)), "github-actions")
        for p in sorted((ROOT / ".github/workflows").glob("*.yml"))
    ],
]


@pytest.mark.parametrize(("path", "manager"), BUILT_IN, ids=[p for p, _ in BUILT_IN])
def test_a_built_in_manager_reads_each_file_that_pins_images_or_actions(
    path: str, manager: str
) -> None:
    assert _covers(manager, path)


def test_every_action_is_pinned_by_sha_with_its_version_comment() -> None:
    # what helpers:pinGitHubActionDigests keeps and Renovate's github-actions manager updates
    for path in sorted((ROOT / ".github/workflows").glob("*.yml")):
        for line in path.read_text().splitlines():
            match = re.search(r"uses: ([\w.-]+/[\w./-]+)@(\S+)(.*)", line)
            if match:
                assert re.fullmatch(r"[0-9a-f]{40}", match.group(2)), line
                assert re.fullmatch(r" # v\d+\.\d+\.\d+", match.group(3)), line


def _disabled(manager: str, path: str) -> bool:
    """A packageRule turns `manager` off for this file (matchFileNames globs)."""
    return any(
        rule.get("enabled") is False
        and manager in rule.get("matchManagers", [])
        and any(fnmatch.fnmatch(path, glob) for glob in rule.get("matchFileNames", []))
        for rule in CONFIG["packageRules"]
    )


def _managers(path: str) -> list[str]:
    return [
        m
        for m in ("pip_requirements", "pip-compile")
        if _covers(m, path) and not _disabled(m, path)
    ]


COMPILED = re.compile(r"autogenerated by pip-compile|uv pip compile")


def test_every_python_requirements_file_has_exactly_one_manager() -> None:
    files = [f for f in _tracked_files() if re.search(r"(^|/)requirements[^/]*\.(txt|in|lock)$", f)]
    assert files
    locks = [f for f in files if "pip-compile" in _managers(f)]
    for f in files:
        text = (ROOT / f).read_text()
        if f.endswith(".in"):
            # a pip-compile source: Renovate finds it through the lock file's header
            assert any(f.rsplit("/", 1)[-1] in (ROOT / lock).read_text() for lock in locks), f
        elif COMPILED.search(text[:1000]):
            assert _managers(f) == ["pip-compile"], f"{f} is a pip-compile output: {_managers(f)}"
        else:
            assert _managers(f) == ["pip_requirements"], f"{f}: {_managers(f)}"


# (file name a lock might get) → the one manager that updates it
LOCK_NAMES = [
    ("requirements.lock", "pip-compile"),
    ("requirements-dev.lock", "pip-compile"),
    ("requirements.lock.txt", "pip-compile"),
    ("requirements-lock.txt", "pip-compile"),
    ("requirements-dev-lock.txt", "pip-compile"),
    ("requirements-cpu.txt", "pip_requirements"),
]


@pytest.mark.parametrize(("name", "manager"), LOCK_NAMES, ids=[n for n, _ in LOCK_NAMES])
def test_a_lock_file_is_updated_by_pip_compile_and_nothing_else(name: str, manager: str) -> None:
    assert _managers(name) == [manager]


def test_the_dockerfile_rule_matches_how_the_dockerfiles_name_their_base() -> None:
    disabled = any(
        rule.get("matchManagers") == ["dockerfile"]
        and "tensorflow/tensorflow" in rule.get("matchDepNames", [])
        and rule.get("enabled") is False
        for rule in CONFIG["packageRules"]
    )
    for name in ("train.Dockerfile", "test.Dockerfile"):
        text = (ROOT / "docker" / name).read_text()
        composed = bool(re.search(r"^FROM tensorflow/tensorflow:\$\{TF_VERSION\}", text, re.M))
        assert composed == disabled, name


def test_one_tensorflow_release_moves_as_one_group() -> None:
    (group,) = [r for r in CONFIG["packageRules"] if r.get("groupName") == "TensorFlow"]
    assert {"tensorflow/tensorflow", "tensorflow/serving", "tensorflow-cpu"} <= set(
        group["matchPackageNames"]
    )
    assert "tensorflow-serving-api" in group["matchPackageNames"]
