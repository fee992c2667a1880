"""Who may decide: is this a CI job, did a person start it, and who.

One answer for the whole package: config overrides of verdict fields (tfship.config) and the
gate override (tfship.gate) both ask `context()`.

* Not in CI: the person at the keyboard decides; recorded with the local account.
* A CI job a person started: GitLab manual job (CI_JOB_MANUAL=true), GitHub workflow_dispatch;
  recorded with GITLAB_USER_LOGIN / GITHUB_ACTOR. Without a login there is nobody to record,
  so it does not count.
* A merge-request / pull-request pipeline: its verdict never reaches a deploy (untrusted
  pipelines get no deploy job and nothing later trusts them), and its author can change the
  committed pipeline.yaml anyway, so a CI variable there changes nothing that ships. Recorded.
  Not for the gate override: an override only ever comes from a person.
* Any other CI job: verdict fields only from the committed repository.

"In CI" is any CI marker being set (not only `CI`), so clearing one variable does not turn a
job into a "local run".
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass

from tfship import env

CI_MARKERS = ("CI", "GITLAB_CI", "GITHUB_ACTIONS", "CI_JOB_ID", "GITHUB_RUN_ID")
LOGIN_VARIABLES = ("GITLAB_USER_LOGIN", "GITHUB_ACTOR")
MR_EVENTS = {("CI_PIPELINE_SOURCE", "merge_request_event"), ("GITHUB_EVENT_NAME", "pull_request")}


@dataclass(frozen=True)
class Context:
    """The job this process runs in, as far as deciding a verdict goes."""

    in_ci: bool
    person: str | None  # who decided, when a person did
    person_source: str  # where `person` came from (a variable, or the local account)
    started_by_person: bool  # local run, manual job, workflow_dispatch
    merge_request: bool  # an untrusted MR/PR pipeline: nothing it decides is deployed

    @property
    def may_set_verdict(self) -> bool:
        """May a verdict field come from outside the committed repository here?"""
        return self.started_by_person or self.merge_request

    def describe(self) -> str:
        """Who and why, as recorded next to an override: 'job started by alice'."""
        if not self.in_ci:
            return f"local run by {self.person}"
        if self.started_by_person:
            return f"job started by {self.person}"
        if self.merge_request:
            by = f" by {self.person}" if self.person else ""
            return f"merge-request pipeline{by}; its verdict is never deployed"
        return "CI job no person started"


def _get(name: str, environ: Mapping[str, str]) -> str | None:
    return env.get(name, environ=environ)


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(_get(name, environ) for name in CI_MARKERS)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return "an unknown local user"


def context(environ: Mapping[str, str] | None = None) -> Context:
    environ = os.environ if environ is None else environ
    login = next(((v, name) for name in LOGIN_VARIABLES if (v := _get(name, environ))), (None, ""))
    if not in_ci(environ):
        person, source = login if login[0] else (_local_user(), "local account")
        return Context(False, person, source, True, False)
    manual = (
        _get("CI_JOB_MANUAL", environ) == "true"
        or _get("GITHUB_EVENT_NAME", environ) == "workflow_dispatch"
    )
    merge_request = any(_get(name, environ) == value for name, value in MR_EVENTS)
    if merge_request and _get("CI_PIPELINE_SOURCE", environ):
        # A project variable can shadow GitLab's predefined CI_PIPELINE_SOURCE; a real MR
        # pipeline also has an MR iid and never runs on a protected ref (GitHub's GITHUB_*
        # defaults cannot be overwritten, so they need no such cross-check).
        merge_request = bool(_get("CI_MERGE_REQUEST_IID", environ)) and (
            environ.get("CI_COMMIT_REF_PROTECTED") != "true"
        )
    return Context(True, login[0], login[1], manual and login[0] is not None, merge_request)
