"""Every environment variable tfship reads, in one place.

Two kinds:
* config overrides, TFSHIP_<SECTION>_<FIELD> for every field of pipeline.yaml (generated from
  the schema in tfship.config; `tfship env` prints the full list);
* the variables below, which are not part of pipeline.yaml (secrets, tool paths, CI context).

Secrets are read here and nowhere else, and are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# name -> what it is for. Keep alphabetical.
VARIABLES: dict[str, str] = {
    "TFSHIP_CONFIG": "path of pipeline.yaml (default: ./pipeline.yaml when present)",
    "TFSHIP_MODEL_SERVER": "tensorflow_model_server binary for `validate` and the test suite",
    "TFSHIP_OUTPUT": "default output format of every command: text | json",
    "TFSHIP_RUN_DIR": "run directory; overrides run.runs_dir/run.run_id",
    "TFSHIP_TEST_SERVING_URL": "opt-in: a real TF Serving REST URL for the real_server tests",
}

# CI context read for provenance (manifests, deploy log); never required.
CI_CONTEXT: tuple[str, ...] = (
    "CI",
    "CI_COMMIT_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_PROJECT_PATH",
    "GITLAB_USER_LOGIN",
    "GITHUB_ACTIONS",
    "GITHUB_SHA",
    "GITHUB_REF_NAME",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_REPOSITORY",
    "GITHUB_SERVER_URL",
    "GITHUB_ACTOR",
    "GITHUB_JOB",
)


def get(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    if name not in VARIABLES:
        raise KeyError(f"{name} is not listed in tfship.env.VARIABLES")
    value = (os.environ if environ is None else environ).get(name)
    return value if value not in (None, "") else default


def ci_context(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CI variables that are set, for provenance records."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in CI_CONTEXT if environ.get(k)}


def default_run_id(environ: Mapping[str, str] | None = None) -> str:
    """Stable across a retry of the same pipeline, so a retried job resumes its checkpoints."""
    environ = os.environ if environ is None else environ
    if environ.get("CI_PIPELINE_ID"):
        return f"ci-{environ['CI_PIPELINE_ID']}"
    if environ.get("GITHUB_RUN_ID"):
        return f"gh-{environ['GITHUB_RUN_ID']}"
    return "local"


def all_variables() -> dict[str, str]:
    """Every TFSHIP_* variable with its meaning (config overrides included)."""
    from tfship.config import override_variables

    out = dict(VARIABLES)
    for var, (section, field) in override_variables().items():
        out[var] = f"overrides {section}.{field} in pipeline.yaml"
    return dict(sorted(out.items()))
