"""Static properties of the GitLab pipeline files that need no gitlab-ci-local."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    pass


# GitLab's `!reference [job, key]` tag: keep it as a marker list.
_Loader.add_constructor(
    "!reference", lambda loader, node: ["!reference", *loader.construct_sequence(node)]
)


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader subclass


def test_header_of_gitlab_ci_yml_documents_every_pipeline_variable() -> None:
    header = "".join(
        line for line in (ROOT / ".gitlab-ci.yml").read_text().splitlines(keepends=True)
        if line.startswith("#")
    )  # fmt: skip
    variables = _load(ROOT / "ci/gitlab/variables.yml")["variables"]
    for name in variables:
        documented = name in header or (
            name.endswith("_DISABLED") and name.removesuffix("_DISABLED") in header
        )
        assert documented, f"{name} is not documented in the header of .gitlab-ci.yml"


def test_jobs_use_rules_the_default_branch_variable_and_one_image_variable() -> None:
    """Images are variables Renovate keeps pinned (ci/gitlab/variables.yml), except the deploy
    jobs': they hold environment credentials, so their image is literal (a project, pipeline or
    trigger variable cannot swap it) and the same as TFSHIP_CI_IMAGE's default."""
    ci_image = _load(ROOT / "ci/gitlab/variables.yml")["variables"]["TFSHIP_CI_IMAGE"]
    for path in sorted((ROOT / "ci/gitlab").glob("*.yml")):
        text = path.read_text()
        assert not re.search(r"^\s+(only|except):", text, flags=re.MULTILINE), path.name
        assert not re.search(r"""==\s*["']?(main|master)\b""", text), (
            f"{path.name}: use $CI_DEFAULT_BRANCH"
        )
        for name, job in _load(path).items():
            if isinstance(job, dict) and "image" in job:
                image = job["image"]["name"] if isinstance(job["image"], dict) else job["image"]
                if (path.name, name) == ("jobs-deploy.yml", ".tfship-deploy-job"):
                    assert image == ci_image, f"deploy image {image} is not {ci_image}"
                    continue
                assert image.startswith("$"), f"{path.name}:{name}: image {image} is not a variable"


def test_component_exposes_typed_inputs_and_includes_the_same_job_files() -> None:
    header, body = (ROOT / "templates/pipeline.yml").read_text().split("\n---\n", 1)
    inputs = yaml.safe_load(header)["spec"]["inputs"]
    assert {"image", "gpu_runner_tag", "artifacts_expire_in", "tfship_ref"} <= set(inputs)
    files = yaml.load(body, Loader=_Loader)["include"][0]["file"]
    local = [i["local"] for i in _load(ROOT / ".gitlab-ci.yml")["include"]]
    assert files == local


def test_rollback_needs_nothing_from_its_pipeline_so_a_failed_gate_cannot_block_it() -> None:
    jobs = _load(ROOT / "ci/gitlab/jobs-deploy.yml")
    assert jobs["rollback-production"]["needs"] == []
    # a deploy still needs the gate: staging waits for evaluate's verdict
    staging_needs = {n["job"] for n in jobs["deploy-staging"]["needs"]}
    assert {"train", "evaluate"} <= staging_needs
