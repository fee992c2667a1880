"""`tfship mr-reports --post`: one note per open merge request, from a trusted scheduled job.

GitLab gives a merge-request pipeline no protected variable, and `CI_JOB_TOKEN` cannot write
notes; an unprotected `api` token would be readable by every branch's code. So MR pipelines hold
no token: `smoke-report` leaves `mr-report/report.json` as an artifact (tfship.mr_report_doc),
and this job, in a pipeline of the protected default branch started by a schedule, holds the
protected `TFSHIP_GITLAB_TOKEN` and for every open merge request:

1. `GET /projects/:id/merge_requests?state=opened` (paged) and
   `GET /projects/:id/merge_requests/:iid/pipelines`: the latest pipeline that ran in this project
   (a fork's own pipelines run in the fork and are skipped);
2. `GET /projects/:id/pipelines/:pipeline_id/jobs`: its report job (`TFSHIP_MR_REPORT_JOB`,
   default `smoke-report`), only once it succeeded;
3. skips the merge request when this token's own note already carries that pipeline's and job's
   marker (idempotent: a tick with nothing new posts nothing);
4. `GET /projects/:id/jobs/:job_id/artifacts/mr-report/report.json` (at most 256 KiB read; a
   redirect to object storage is followed without the token), parsed strictly and rendered by
   this checkout's code; a refused artifact gets a short note saying why, never its content;
5. creates or edits its one note (tfship.mr_comment's marker and author check).

Exit codes: 3 without the token or outside a protected non-MR pipeline; 8 when the API refuses or
is unreachable for the listing, or for any one merge request (the others are still handled, and
the summary names them). A refused artifact is the branch's problem: reported on its merge
request, not a job failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from tfship import env
from tfship.errors import ConfigError, ExitCode, InfraError
from tfship.mr_comment import (
    TIMEOUT,
    _ApiError,
    _call,
    _gitlab_author_check,
    _paged,
)
from tfship.mr_report_doc import (
    BUNDLE_FILE,
    MAX_BYTES,
    POSTED_RE,
    BundleRejected,
    parse_bundle,
    render_comment,
    render_rejected,
)
from tfship.redact import redact_url
from tfship.report import MARKER

log = logging.getLogger(__name__)
REPORT_DIR = "mr-report"
DEFAULT_JOB = "smoke-report"


@dataclass
class MrReportsResult:
    """What one tick did, per merge request: posted / updated / refused / skipped / error."""

    posted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INFRA if self.errors else ExitCode.OK

    def render_text(self) -> str:
        verb = "would post" if self.dry_run else "posted"
        lines = [
            f"merge-request reports: {len(self.posted)} {verb}, {len(self.refused)} refused, "
            f"{len(self.skipped)} skipped, {len(self.errors)} failed"
        ]
        for kind, items in (
            (verb, self.posted),
            ("refused", self.refused),
            ("skipped", self.skipped),
            ("FAILED", self.errors),
        ):
            lines += [f"  {kind}: {item}" for item in items]
        if self.errors:
            lines.append("(exit code 8: the GitLab API failed for the merge requests above)")
        return "\n".join(lines)


class _Gitlab:
    def __init__(self, api: str, project: str, token: str) -> None:
        self.api, self.project, self.token = api.rstrip("/"), project, token
        self.session = requests.Session()
        self.session.headers["PRIVATE-TOKEN"] = token
        self.base = f"{self.api}/projects/{project}"

    def get(self, path: str, **params: Any) -> Any:
        return _call(self.session, "GET", f"{self.base}{path}", self.token, params=params).json()

    def paged(self, path: str, **params: Any):
        return _paged(self.session, f"{self.base}{path}", self.token, {"per_page": 100, **params})

    def artifact(self, job_id: int, path: str) -> bytes | None:
        """The file's bytes (at most MAX_BYTES + 1), None when the job has no such file."""
        url = f"{self.base}/jobs/{int(job_id)}/artifacts/{path}"
        try:
            resp = self.session.get(url, timeout=TIMEOUT, stream=True, allow_redirects=False)
            if resp.is_redirect and resp.headers.get("Location"):
                # GitLab may redirect to object storage (a pre-signed URL): never send it the token.
                target = resp.headers["Location"]
                resp.close()
                if urlsplit(target).scheme not in ("http", "https"):
                    raise _ApiError(f"GET {redact_url(url)} redirected to a non-HTTP location")
                resp = requests.get(target, timeout=TIMEOUT, stream=True, allow_redirects=False)
        except requests.RequestException as exc:
            raise _ApiError(f"GET {redact_url(url)} failed: {type(exc).__name__}") from None
        with resp:
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise _ApiError(f"GET {redact_url(url)} returned HTTP {resp.status_code}")
            data = bytearray()
            try:
                for chunk in resp.iter_content(65536):
                    data += chunk
                    if len(data) > MAX_BYTES:
                        break
            except requests.RequestException as exc:
                raise _ApiError(f"GET {redact_url(url)} failed: {type(exc).__name__}") from None
            return bytes(data[: MAX_BYTES + 1])


def _require_trusted(e: Any) -> tuple[str, str, str, str]:
    token = env.get("TFSHIP_GITLAB_TOKEN", environ=e)
    api = env.get("CI_API_V4_URL", environ=e)
    project = env.get("CI_PROJECT_ID", environ=e)
    if env.get("CI_MERGE_REQUEST_IID", environ=e) or (
        env.get("CI_PIPELINE_SOURCE", environ=e) == "merge_request_event"
    ):
        raise ConfigError(
            "`tfship mr-reports` runs in a merge-request pipeline; it holds the notes token and "
            "belongs in a scheduled pipeline of the protected default branch",
            hint="see docs/ci.md, 'The MR report without a token in MR pipelines'",
        )
    if env.get("CI_COMMIT_REF_PROTECTED", environ=e) != "true":
        raise ConfigError(
            "`tfship mr-reports` refuses to run off a protected branch "
            "(CI_COMMIT_REF_PROTECTED is not 'true')",
            hint="run it from a schedule on the protected default branch",
        )
    if not token:
        raise ConfigError(
            "TFSHIP_GITLAB_TOKEN is not set",
            hint="add a project access token (Reporter, api scope) as a masked and PROTECTED "
            "CI/CD variable; MR pipelines never need it",
        )
    if not api or not project:
        raise ConfigError("CI_API_V4_URL and CI_PROJECT_ID are not set; run in GitLab CI")
    url = env.get("CI_PROJECT_URL", environ=e) or ""
    return token, api, project, url.rstrip("/")


def _latest_pipeline(gl: _Gitlab, iid: int) -> dict[str, Any] | None:
    own = int(gl.project) if gl.project.isdigit() else None
    for p in gl.get(f"/merge_requests/{iid}/pipelines"):
        if not isinstance(p, dict) or not isinstance(p.get("id"), int):
            continue
        if own is not None and p.get("project_id") not in (None, own):
            continue  # a fork's pipeline, in the fork: not ours to read
        return p
    return None


def _report_job(gl: _Gitlab, pipeline_id: int, name: str) -> dict[str, Any] | None:
    jobs = [
        j
        for j in gl.paged(f"/pipelines/{int(pipeline_id)}/jobs")
        if isinstance(j, dict) and j.get("name") == name and isinstance(j.get("id"), int)
    ]
    return max(jobs, key=lambda j: j["id"]) if jobs else None


def _own_note(gl: _Gitlab, iid: int, ours: Any) -> dict[str, Any] | None:
    return next(
        (
            n
            for n in gl.paged(f"/merge_requests/{iid}/notes")
            if ours(n) and (n.get("body") or "").lstrip().startswith(MARKER)
        ),
        None,
    )


def _one(gl: _Gitlab, mr: dict[str, Any], job_name: str, ours: Any, web: str, res, post: bool):
    iid = mr["iid"]
    label = f"!{iid}"
    pipeline = _latest_pipeline(gl, iid)
    if pipeline is None:
        return res.skipped.append(f"{label}: no pipeline in this project")
    pid, sha = pipeline["id"], str(pipeline.get("sha") or "")
    job = _report_job(gl, pid, job_name)
    if job is None or job.get("status") != "success":
        state = "no job" if job is None else f"job {job.get('status')}"
        return res.skipped.append(
            f"{label}: pipeline #{pid} has no report yet ({job_name}: {state})"
        )
    jid = job["id"]
    note = _own_note(gl, iid, ours)
    if note is not None:
        seen = POSTED_RE.search(note.get("body") or "")
        if seen and (int(seen.group(1)), int(seen.group(2))) == (pid, jid):
            return res.skipped.append(f"{label}: pipeline #{pid} already reported")
    raw = gl.artifact(jid, f"{REPORT_DIR}/{BUNDLE_FILE}")
    if raw is None:
        return res.skipped.append(f"{label}: job {jid} has no {REPORT_DIR}/{BUNDLE_FILE}")
    artifacts = f"{web}/-/jobs/{int(jid)}/artifacts/browse/{REPORT_DIR}/"
    try:
        bundle = parse_bundle(raw, iid=iid, pipeline_id=pid, sha=sha)
        body, bucket, what = render_comment(bundle, jid, artifacts), res.posted, "report"
    except BundleRejected as why:
        body, bucket = render_rejected(iid, pid, jid, str(why), artifacts), res.refused
        what = f"refused ({why})"
    if post:
        notes = f"/merge_requests/{iid}/notes"
        if note is None:
            _call(gl.session, "POST", f"{gl.base}{notes}", gl.token, json={"body": body})
        else:
            url = f"{gl.base}{notes}/{int(note['id'])}"
            _call(gl.session, "PUT", url, gl.token, json={"body": body})
    bucket.append(f"{label}: pipeline #{pid} {what}")


def post_mr_reports(post: bool = True, environ: Any = None) -> MrReportsResult:
    """One tick of the scheduled job; `post=False` reads everything and writes nothing."""
    token, api, project, web = _require_trusted(environ)
    job_name = env.get("TFSHIP_MR_REPORT_JOB", DEFAULT_JOB, environ=environ)
    gl = _Gitlab(api, project, token)
    res = MrReportsResult(dry_run=not post)
    try:
        ours = _gitlab_author_check(gl.session, gl.api, token)
        mrs = [
            m
            for m in gl.paged("/merge_requests", state="opened")
            if isinstance(m, dict) and isinstance(m.get("iid"), int)
        ]
    except (_ApiError, ValueError) as exc:
        raise InfraError(
            f"GitLab API: {exc}",
            hint="check CI_API_V4_URL and that TFSHIP_GITLAB_TOKEN is valid (Reporter, api scope)",
        ) from None
    for mr in mrs:
        try:
            _one(gl, mr, job_name, ours, web, res, post)
        except (_ApiError, ValueError, KeyError, TypeError) as exc:
            res.errors.append(f"!{mr['iid']}: {exc}")
    for item in res.errors:
        log.warning("merge-request report: %s", item)
    return res
