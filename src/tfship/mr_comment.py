"""Post report.md as ONE merge-request comment, updated in place on later pipelines.

GitLab (REST v4): `GET/POST /projects/:id/merge_requests/:iid/notes`,
`PUT .../notes/:note_id`, images via `POST /projects/:id/uploads`; auth `PRIVATE-TOKEN` with a
project access token (TFSHIP_GITLAB_TOKEN; CI_JOB_TOKEN cannot write notes).
GitHub (REST): `GET/POST /repos/{owner}/{repo}/issues/{pr}/comments`,
`PATCH /repos/{owner}/{repo}/issues/comments/{id}`; auth `Bearer $GITHUB_TOKEN`
(`pull-requests: write`). GitHub has no image-upload API and strips data: URIs, so the plots go
to the run's artifacts and the report to `$GITHUB_STEP_SUMMARY`.

The comment is found again by report.MARKER, and only among the comments of the token's own
user (GitLab: `GET /user`; GitHub: `GET /user`, or github-actions[bot] for the workflow's
GITHUB_TOKEN, which `GET /user` refuses): a note someone else wrote is never edited, marker or
not. Posting never changes the gate's verdict or exit code: a missing token or an API error
becomes a warning. The token is never logged.

The GitLab template does not call this from merge-request pipelines any more (a token there is
readable by every branch's code): tfship.mr_reports posts from a protected scheduled job, with
this module's API calls and author check, a note rendered from the MR pipeline's data.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tfship import env
from tfship.redact import MASK, redact_text, redact_url
from tfship.report import MARKER

log = logging.getLogger(__name__)
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
MAX_PAGES = 20  # 2,000 comments: enough for any merge request; bounds a misbehaving server
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")
GITHUB_ACTIONS_BOT = "github-actions[bot]"  # the author of GITHUB_TOKEN's comments


@dataclass(frozen=True)
class PostResult:
    """What happened to the merge-request comment. `posted` False comes with a warning."""

    platform: str | None
    posted: bool
    action: str | None = None  # "created" | "updated"
    comment_id: int | None = None
    warnings: tuple[str, ...] = field(default=())

    def render_text(self) -> str:
        if self.posted:
            return f"{self.platform} comment {self.comment_id} {self.action}"
        return "report not posted: " + "; ".join(self.warnings)


class _ApiError(Exception):
    pass


def _call(session: requests.Session, method: str, url: str, token: str, **kw: Any) -> Any:
    try:
        resp = session.request(method, url, timeout=TIMEOUT, **kw)
    except requests.RequestException as exc:
        raise _ApiError(f"{method} {redact_url(url)} failed: {type(exc).__name__}") from None
    if resp.status_code >= 400:
        body = resp.text[:200].replace(token, MASK) if token else resp.text[:200]
        raise _ApiError(
            f"{method} {redact_url(url)} returned HTTP {resp.status_code}: {redact_text(body)}"
        )
    return resp


def _paged(session: requests.Session, url: str, token: str, params: dict[str, Any]):
    page = 1
    for _ in range(MAX_PAGES):
        resp = _call(session, "GET", url, token, params={**params, "page": page})
        yield from resp.json()
        # GitLab sends X-Next-Page (empty on the last page); GitHub sends Link rel="next".
        nxt = resp.headers.get("X-Next-Page")
        if nxt:
            page = int(nxt)
        elif "next" in resp.links:
            page += 1
        else:
            return


def _upsert(session, token, list_url, create_url, update_url_for, method, body, platform, ours):
    # Only a note this token's own user wrote, and that starts with the marker: anyone can
    # paste the marker into a comment of theirs, and editing it would put our text under
    # their name (or let them steer which note we overwrite).
    existing = next(
        (
            c
            for c in _paged(session, list_url, token, {"per_page": 100})
            if ours(c) and (c.get("body") or "").lstrip().startswith(MARKER)
        ),
        None,
    )
    if existing is None:
        created = _call(session, "POST", create_url, token, json={"body": body}).json()
        return PostResult(platform, True, "created", created.get("id"))
    _call(session, method, update_url_for(existing["id"]), token, json={"body": body})
    return PostResult(platform, True, "updated", existing["id"])


def _gitlab_author_check(session: requests.Session, api: str, token: str) -> Any:
    """`GET /user` names the token's user (for a project access token, its bot user)."""
    me = _call(session, "GET", f"{api}/user", token).json()
    if not isinstance(me, dict) or me.get("id") is None:
        raise _ApiError(f"GET {api}/user did not name the token's user")
    own = me["id"]
    return lambda note: (note.get("author") or {}).get("id") == own and not note.get("system")


def _github_author_check(session: requests.Session, api: str, token: str) -> Any:
    """The token's identity: `GET /user` for a personal token; the workflow's GITHUB_TOKEN is an
    app installation token, which `GET /user` refuses (403), and comments as github-actions[bot]
    (a `[bot]` login no person can register)."""
    try:
        resp = session.request("GET", f"{api}/user", timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise _ApiError(f"GET {api}/user failed: {type(exc).__name__}") from None
    if resp.status_code == 403:
        return lambda c: (
            (c.get("user") or {}).get("login") == GITHUB_ACTIONS_BOT
            and (c.get("user") or {}).get("type") == "Bot"
        )
    if resp.status_code >= 400:
        raise _ApiError(f"GET {api}/user returned HTTP {resp.status_code}")
    own = resp.json().get("id")
    if own is None:
        raise _ApiError(f"GET {api}/user did not name the token's user")
    return lambda c: (c.get("user") or {}).get("id") == own


def _post_gitlab(report_md: str, images: dict[str, Path], e: Any) -> PostResult:
    token = env.get("TFSHIP_GITLAB_TOKEN", environ=e)
    if not token:
        return PostResult(
            "gitlab",
            False,
            warnings=(
                "TFSHIP_GITLAB_TOKEN is not set; add a project access token (api scope, Reporter "
                "role) as a masked CI/CD variable (CI_JOB_TOKEN cannot write merge-request notes)",
            ),
        )
    api = env.get("CI_API_V4_URL", environ=e).rstrip("/")
    project, iid = env.get("CI_PROJECT_ID", environ=e), env.get("CI_MERGE_REQUEST_IID", environ=e)
    if not project:
        return PostResult("gitlab", False, warnings=("CI_PROJECT_ID is not set; run in GitLab CI",))
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = token
    warnings: list[str] = []

    def upload(match: re.Match[str]) -> str:
        path = images.get(match.group(2))
        if path is None or not path.is_file():
            return ""
        try:
            with path.open("rb") as fh:
                resp = _call(
                    session,
                    "POST",
                    f"{api}/projects/{project}/uploads",
                    token,
                    files={"file": (path.name, fh, "image/png")},
                )
            return resp.json()["markdown"]
        except (_ApiError, KeyError, ValueError) as exc:
            warnings.append(f"image {path.name} not uploaded: {exc}")
            return f"_{path.name}: see the job artifacts_"

    body = _IMAGE.sub(upload, report_md)
    notes = f"{api}/projects/{project}/merge_requests/{iid}/notes"
    try:
        ours = _gitlab_author_check(session, api, token)
        result = _upsert(
            session, token, notes, notes, lambda i: f"{notes}/{i}", "PUT", body, "gitlab", ours
        )
    except (_ApiError, ValueError) as exc:
        return PostResult("gitlab", False, warnings=(*warnings, f"GitLab API: {exc}"))
    return PostResult(result.platform, True, result.action, result.comment_id, tuple(warnings))


def _github_pr_number(e: Any) -> int | None:
    event_path = env.get("GITHUB_EVENT_PATH", environ=e)
    if event_path and Path(event_path).is_file():
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8"))
            number = (event.get("pull_request") or {}).get("number")
            if number:
                return int(number)
        except (OSError, ValueError):
            pass
    m = re.fullmatch(r"refs/pull/(\d+)/(merge|head)", env.get("GITHUB_REF", "", environ=e) or "")
    return int(m.group(1)) if m else None


def _post_github(report_md: str, images: dict[str, Path], e: Any) -> PostResult:
    server = env.get("GITHUB_SERVER_URL", "https://github.com", environ=e)
    repo, run_id = env.get("GITHUB_REPOSITORY", environ=e), env.get("GITHUB_RUN_ID", environ=e)
    where = (
        f"[the run's artifacts]({server}/{repo}/actions/runs/{run_id})" if run_id else "artifacts"
    )
    body = _IMAGE.sub(lambda m: f"_{m.group(2)}: see {where}_", report_md)
    summary = env.get("GITHUB_STEP_SUMMARY", environ=e)
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(body + "\n")
    token = env.get("GITHUB_TOKEN", environ=e)
    number = _github_pr_number(e)
    if not token:
        return PostResult(
            "github",
            False,
            warnings=(
                "GITHUB_TOKEN is not set; pass it to the step (env: GITHUB_TOKEN: "
                "${{ secrets.GITHUB_TOKEN }}) with permissions pull-requests: write",
            ),
        )
    if number is None:
        return PostResult(
            "github",
            False,
            warnings=(
                "no pull request number in GITHUB_EVENT_PATH or GITHUB_REF; run on pull_request",
            ),
        )
    api = env.get("GITHUB_API_URL", "https://api.github.com", environ=e).rstrip("/")
    session = requests.Session()
    session.headers.update(
        {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    )
    comments = f"{api}/repos/{repo}/issues/{number}/comments"
    try:
        return _upsert(
            session,
            token,
            comments,
            comments,
            lambda i: f"{api}/repos/{repo}/issues/comments/{i}",
            "PATCH",
            body,
            "github",
            _github_author_check(session, api, token),
        )
    except (_ApiError, ValueError) as exc:
        return PostResult("github", False, warnings=(f"GitHub API: {exc}",))


def post_report(report_md: Path, environ: Any = None) -> PostResult:
    """Create or update the merge-request comment from report.md; never raises for API trouble."""
    text = report_md.read_text(encoding="utf-8")
    images = {p.name: p for p in report_md.parent.glob("*.png")}
    gitlab = env.get("CI_API_V4_URL", environ=environ) and env.get(
        "CI_MERGE_REQUEST_IID", environ=environ
    )
    github = env.get("GITHUB_REPOSITORY", environ=environ)
    if gitlab:
        result = _post_gitlab(text, images, environ)
    elif github:
        result = _post_github(text, images, environ)
    else:
        result = PostResult(
            None,
            False,
            warnings=(
                "not in a merge-request pipeline (no CI_MERGE_REQUEST_IID or GITHUB_REPOSITORY); "
                "report.md is in the run directory",
            ),
        )
    for w in result.warnings:
        log.warning("report comment: %s", w)
    return result
