"""A stand-in for GitLab's merge-request notes API (REST v4) on 127.0.0.1, for tests only.

It is not GitLab: it implements exactly the calls `tfship report --post` makes
(tfship.mr_comment), with GitLab's paths, headers and JSON shapes:

* `GET  /api/v4/user` -> the token's user (`{"id", "username"}`)
* `GET  /api/v4/projects/:id/merge_requests/:iid/notes` -> the notes (paged: `X-Next-Page`)
* `POST /api/v4/projects/:id/merge_requests/:iid/notes` `{"body"}` -> 201, the new note
* `PUT  /api/v4/projects/:id/merge_requests/:iid/notes/:note_id` `{"body"}` -> the note
* `POST /api/v4/projects/:id/uploads` (multipart `file`) -> `{"markdown": "![name](/uploads/..)"}`

and what `tfship mr-reports --post` reads (tfship.mr_reports), from `add_merge_request`:

* `GET  /api/v4/projects/:id/merge_requests?state=opened` -> the open merge requests (paged)
* `GET  /api/v4/projects/:id/merge_requests/:iid/pipelines` -> its pipelines, newest first
* `GET  /api/v4/projects/:id/pipelines/:pipeline_id/jobs` -> the pipeline's jobs (paged)
* `GET  /api/v4/projects/:id/jobs/:job_id/artifacts/*path` -> the file's bytes, 404 when absent;
  with `redirect_artifacts`, a 302 to `/storage/...` on this server, which (like a pre-signed
  object-store URL) takes no token and records the headers it got in `.storage_headers`

Every call must carry `PRIVATE-TOKEN` (or `JOB-TOKEN`) equal to one of the tokens it was
started with, else 401 `{"message": "401 Unauthorized"}` as GitLab answers; a `JOB-TOKEN` may
read but not write notes (GitLab's job token has no notes permission: 403). What was posted
is recorded in `.notes` and `.requests` for the test to assert on.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOTES = re.compile(r"/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes(?:/(\d+))?")
UPLOADS = re.compile(r"/api/v4/projects/([^/]+)/uploads")
MRS = re.compile(r"/api/v4/projects/([^/]+)/merge_requests")
MR_PIPELINES = re.compile(r"/api/v4/projects/([^/]+)/merge_requests/(\d+)/pipelines")
PIPELINE_JOBS = re.compile(r"/api/v4/projects/([^/]+)/pipelines/(\d+)/jobs")
ARTIFACT = re.compile(r"/api/v4/projects/([^/]+)/jobs/(\d+)/artifacts/(.+)")
STORAGE = re.compile(r"/storage/(\d+)/(.+)")
BOT_USER = {"id": 4242, "username": "project_1000_bot_report", "bot": True}


@dataclass
class Note:
    id: int
    project: str
    iid: int
    body: str
    author: dict[str, Any]
    system: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "body": self.body, "author": self.author, "system": self.system}


@dataclass
class NotesStandin:
    """State of the stand-in: accepted tokens, notes by (project, iid), every request seen."""

    private_tokens: frozenset[str]
    job_tokens: frozenset[str] = frozenset()
    notes: list[Note] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth kind
    uploads: list[str] = field(default_factory=list)
    url: str = ""  # http://127.0.0.1:<port>/api/v4, set once started
    # tfship mr-reports: open MRs, their pipelines (newest first), jobs, artifact files
    merge_requests: list[dict[str, Any]] = field(default_factory=list)
    pipelines: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by MR iid
    jobs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by pipeline id
    artifacts: dict[tuple[int, str], bytes] = field(default_factory=dict)  # (job id, path)
    redirect_artifacts: bool = False
    storage_headers: list[dict[str, str]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # path regex -> HTTP status to answer
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_merge_request(
        self,
        iid: int,
        *,
        project: int = 1000,
        pipeline_id: int,
        sha: str,
        job_id: int,
        files: dict[str, bytes] | None = None,
        job_name: str = "smoke-report",
        job_status: str = "success",
        pipeline_project: int | None = None,
    ) -> None:
        """An open MR whose latest pipeline has one report job with these artifact files."""
        with self._lock:
            if not any(m["iid"] == iid for m in self.merge_requests):
                self.merge_requests.append({"iid": iid, "project_id": project, "state": "opened"})
            pipeline = {
                "id": pipeline_id, "iid": pipeline_id, "project_id": pipeline_project or project,
                "sha": sha, "ref": f"refs/merge-requests/{iid}/head", "status": "success",
                "source": "merge_request_event",
            }  # fmt: skip
            self.pipelines.setdefault(iid, []).insert(0, pipeline)
            job = {"id": job_id, "name": job_name, "status": job_status, "stage": "evaluate"}
            self.jobs.setdefault(pipeline_id, []).append(job)
            for path, data in (files or {}).items():
                self.artifacts[(job_id, path)] = data

    def notes_on(self, project: str, iid: int) -> list[Note]:
        with self._lock:
            return [n for n in self.notes if n.project == project and n.iid == iid]


class _Handler(BaseHTTPRequestHandler):
    state: NotesStandin  # set on the subclass per server

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _auth(self) -> str | None:
        """'private' / 'job' for a known token, None otherwise (GitLab: 401)."""
        if self.headers.get("PRIVATE-TOKEN") in self.state.private_tokens:
            return "private"
        if self.headers.get("JOB-TOKEN") in self.state.job_tokens:
            return "job"
        return None

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _reports_api(self, path: str) -> bool:
        """The read-only endpoints of `tfship mr-reports`; True when answered."""
        st = self.state
        if m := ARTIFACT.fullmatch(path):
            data = st.artifacts.get((int(m.group(2)), m.group(3)))
            if data is None:
                self._reply(404, {"message": "404 Not Found"})
            elif st.redirect_artifacts:
                self._raw(
                    302,
                    b"",
                    {"Location": f"{st.url[: -len('/api/v4')]}/storage/{m.group(2)}/{m.group(3)}"},
                )
            else:
                self._raw(200, data)
            return True
        if m := MR_PIPELINES.fullmatch(path):
            self._reply(200, st.pipelines.get(int(m.group(2)), []), {"X-Next-Page": ""})
            return True
        if m := PIPELINE_JOBS.fullmatch(path):
            self._reply(200, st.jobs.get(int(m.group(2)), []), {"X-Next-Page": ""})
            return True
        if MRS.fullmatch(path):
            query = self.path.split("?", 1)[1] if "?" in self.path else ""
            opened = [m for m in st.merge_requests if "state=opened" not in query
                      or m["state"] == "opened"]  # fmt: skip
            self._reply(200, opened, {"X-Next-Page": ""})
            return True
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        auth = self._auth()
        with self.state._lock:
            self.state.requests.append((self.command, path, auth or "none"))
        body = self._body() if self.command in ("POST", "PUT") else b""
        if m := STORAGE.fullmatch(path):  # pre-signed object storage: no token, none wanted
            with self.state._lock:
                self.state.storage_headers.append(dict(self.headers.items()))
            data = self.state.artifacts.get((int(m.group(1)), m.group(2)))
            return self._raw(200, data) if data is not None else self._reply(404, {})
        for pattern, status in self.state.fail.items():
            if re.fullmatch(pattern, path):
                return self._reply(status, {"message": f"{status} injected"})
        if auth is None:
            return self._reply(401, {"message": "401 Unauthorized"})
        if self.command == "GET" and path == "/api/v4/user":
            if auth == "job":  # GitLab: a job token cannot call /user
                return self._reply(401, {"message": "401 Unauthorized"})
            return self._reply(200, BOT_USER)
        if self.command == "POST" and UPLOADS.fullmatch(path):
            name = re.search(rb'filename="([^"]+)"', body)
            alt = name.group(1).decode() if name else "file"
            with self.state._lock:
                self.state.uploads.append(alt)
                n = len(self.state.uploads)
            return self._reply(201, {"markdown": f"![{alt}](/uploads/{n:032x}/{alt})"})
        if self.command == "GET" and self._reports_api(path):
            return None
        match = NOTES.fullmatch(path)
        if not match:
            return self._reply(404, {"message": "404 Not Found"})
        project, iid, note_id = match.group(1), int(match.group(2)), match.group(3)
        if self.command == "GET" and note_id is None:
            return self._reply(
                200, [n.to_json() for n in self.state.notes_on(project, iid)], {"X-Next-Page": ""}
            )
        if auth == "job":
            return self._reply(403, {"message": "403 Forbidden"})
        try:
            text = json.loads(body or b"{}")["body"]
        except (ValueError, KeyError):
            return self._reply(400, {"error": "body is missing"})
        with self.state._lock:
            if self.command == "POST" and note_id is None:
                note = Note(len(self.state.notes) + 1, project, iid, text, dict(BOT_USER))
                self.state.notes.append(note)
                return self._reply(201, note.to_json())
            if self.command == "PUT" and note_id is not None:
                for note in self.state.notes:
                    if note.id == int(note_id) and (note.project, note.iid) == (project, iid):
                        note.body = text
                        return self._reply(200, note.to_json())
                return self._reply(404, {"message": "404 Note Not Found"})
        return self._reply(405, {"message": "405 Method Not Allowed"})

    do_GET = do_POST = do_PUT = _handle


class running_notes_standin:
    """`with running_notes_standin({"token"}) as notes:` serves on a free port until the end."""

    def __init__(self, private_tokens: set[str], job_tokens: set[str] = frozenset()) -> None:
        self.state = NotesStandin(frozenset(private_tokens), frozenset(job_tokens))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.state.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v4"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> NotesStandin:
        self._thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
