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
    "CI": "any CI marker (also GITLAB_CI, GITHUB_ACTIONS, CI_JOB_ID, GITHUB_RUN_ID) makes "
    "verdict fields come only from the committed pipeline.yaml",
    "CI_API_V4_URL": "GitLab CI: API root used by `tfship mr-reports` and `tfship report --post`",
    "CI_COMMIT_REF_PROTECTED": "GitLab CI: 'true' on a protected ref; `tfship mr-reports` "
    "refuses to run otherwise",
    "CI_COMMIT_REF_SLUG": "GitLab CI: branch part of the checkpoint backup prefix",
    "CI_JOB_ID": "GitLab CI: a CI marker (see CI)",
    "CI_JOB_MANUAL": "GitLab CI: 'true' in a manual job, which a person started (config "
    "overrides of verdict fields and gate overrides are allowed there, and recorded)",
    "CI_JOB_NAME": "GitLab CI: with CI_PIPELINE_ID, the backup run key (same on a job retry)",
    "CI_MERGE_REQUEST_IID": "GitLab CI: merge request the report comment goes to",
    "CI_PIPELINE_SOURCE": "GitLab CI: merge_request_event marks a pipeline that never deploys",
    "CI_PROJECT_DIR": "GitLab CI: the checkout; in CI pipeline.yaml must be committed there",
    "CI_PROJECT_ID": "GitLab CI: project of that merge request",
    "CI_PROJECT_URL": "GitLab CI: links from `tfship mr-reports` notes to the job's artifacts",
    "GITHUB_ACTIONS": "GitHub Actions: a CI marker (see CI)",
    "GITHUB_ACTOR": "GitHub Actions: recorded as the approver of a gate override",
    "GITHUB_API_URL": "GitHub Actions: API root used by `tfship report --post`",
    "GITHUB_EVENT_NAME": "GitHub Actions: workflow_dispatch = a person started the run; "
    "pull_request = a run that never deploys",
    "GITHUB_EVENT_PATH": "GitHub Actions: event payload; gives the pull request number",
    "GITHUB_JOB": "GitHub Actions: with GITHUB_RUN_ID, the backup run key (same on a re-run)",
    "GITHUB_REF": "GitHub Actions: refs/pull/<n>/merge when the event payload has no PR",
    "GITHUB_REF_NAME": "GitHub Actions: branch part of the checkpoint backup prefix",
    "GITHUB_REPOSITORY": "GitHub Actions: owner/repo the report comment goes to",
    "GITHUB_RUN_ID": "GitHub Actions: run whose artifacts hold the report plots",
    "GITHUB_SERVER_URL": "GitHub Actions: links to the run's artifacts",
    "GITHUB_STEP_SUMMARY": "GitHub Actions: job summary file the report is appended to",
    "GITHUB_TOKEN": "secret: GitHub token (pull-requests: write) for the PR report comment",
    "GITHUB_WORKSPACE": "GitHub Actions: the checkout; in CI pipeline.yaml must be committed there",
    "GITLAB_CI": "GitLab CI: a CI marker (see CI)",
    "GITLAB_USER_LOGIN": "GitLab CI: recorded as the approver of a gate override",
    "TFSHIP_CONFIG": "path of pipeline.yaml (default: ./pipeline.yaml when present)",
    "TFSHIP_GATE_OVERRIDE_REASON": "same as `--override-reason`: let a failed gate pass, recorded",
    "TFSHIP_GITLAB_TOKEN": "secret: GitLab project access token (api scope, Reporter), a "
    "PROTECTED variable, for `tfship mr-reports --post` (MR notes from a scheduled job); "
    "CI_JOB_TOKEN cannot write notes",
    "TFSHIP_MODEL_SERVER": "tensorflow_model_server binary for `validate` and the test suite",
    "TFSHIP_MR_REPORT_JOB": "the MR pipeline's job whose mr-report/ artifact `tfship "
    "mr-reports` reads (default smoke-report)",
    "TFSHIP_OUTPUT": "default output format of every command: text | json",
    "TFSHIP_RUN_DIR": "run directory; overrides run.runs_dir/run.run_id",
    "TFSHIP_TEST_MODEL_REPOSITORY": "opt-in real_server tests: a model repository directory "
    "that the real TF Serving reads",
    "TFSHIP_TEST_SERVER_MODEL_REPOSITORY": "opt-in real_server tests: that directory as the "
    "server sees it (e.g. /models in a container); default: the same path",
    "TFSHIP_TEST_SERVING_GRPC": "opt-in: the real TF Serving's gRPC host:port (real_server tests)",
    "TFSHIP_TEST_SERVING_URL": "opt-in: a real TF Serving REST URL for the real_server tests",
    "TFSHIP_TRIVY": "trivy binary for `tfship scan` (default: `trivy` on PATH or beside python)",
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


def get(
    name: str, default: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    if name not in VARIABLES:
        raise KeyError(f"{name} is not listed in tfship.env.VARIABLES")
    value = (os.environ if environ is None else environ).get(name)
    return value if value not in (None, "") else default


def ci_context(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CI variables that are set, for provenance records."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in CI_CONTEXT if environ.get(k)}


def default_run_id(environ: Mapping[str, str] | None = None) -> str:
    """ci-<CI_PIPELINE_ID> (GitLab), gh-<GITHUB_RUN_ID> (GitHub), else 'local'.

    Stable across a retry of the same pipeline (a GitLab job retry keeps CI_PIPELINE_ID, a
    GitHub re-run keeps GITHUB_RUN_ID), so a retried job resumes its own checkpoints; different
    for every new pipeline, so it never resumes another's (tfship.checkpoint_guard). The id
    names directories (runs/<id>, <checkpoint.dir>/<id>), so a value that is not a plain name
    is refused rather than let point elsewhere.
    """
    environ = os.environ if environ is None else environ
    for name, prefix in (("CI_PIPELINE_ID", "ci"), ("GITHUB_RUN_ID", "gh")):
        value = environ.get(name)
        if not value:
            continue
        plain = all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
        if not plain or len(value) > 64:
            from tfship.errors import ConfigError

            raise ConfigError(
                f"{name}={value!r} is not a pipeline id: expected letters, digits, '-' or '_' "
                "(CI sets a number)",
                hint=f"do not override {name}; set run.run_id to name a run yourself",
            )
        return f"{prefix}-{value}"
    return "local"


def all_variables() -> dict[str, str]:
    """Every TFSHIP_* variable with its meaning (config overrides included)."""
    from tfship.config import override_variables

    out = dict(VARIABLES)
    for var, (section, field) in override_variables().items():
        out[var] = f"overrides {section}.{field} in pipeline.yaml"
    return dict(sorted(out.items()))
