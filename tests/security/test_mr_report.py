"""The merge-request report (issue 13 §6): what comes from data is inert Markdown, and the bot
edits only its own comment.

A class name is whatever a folder was called and a metric name whatever the task reported;
both end up in a comment GitLab/GitHub render for everyone on the merge request. The report is
rendered with a CommonMark + tables renderer (markdown-it-py) and the HTML checked: no tag,
link, image, mention or extra table cell may come from a value. Every row failed before
tfship.mdescape; every author row failed before mr_comment checked the comment's author.
"""

from __future__ import annotations

import json
import re
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tfship.mr_comment import post_report
from tfship.report import MARKER, render_markdown, run_report
from tfship.rundir import RunDir

markdown_it = pytest.importorskip("markdown_it")

HOSTILE = [
    pytest.param("<img src=x onerror=alert(document.cookie)>", id="HTML image with onerror"),
    pytest.param("<script>alert(1)</script>", id="script tag"),
    pytest.param("</td></tr></table><h1>Gate passed</h1>", id="closing the table in HTML"),
    pytest.param("</details><details open>", id="closing the details block"),
    pytest.param("[approve](https://evil.example) [x](javascript:alert(1))", id="links"),
    pytest.param("![pixel](https://evil.example/track.png)", id="tracking image"),
    pytest.param("<https://evil.example/phish>", id="autolink"),
    pytest.param("@all @alice please merge", id="mentions that would ping"),
    pytest.param("&#64;alice", id="mention hidden in an entity"),
    pytest.param(
        "cat\n\n## :white_check_mark: **Gate passed**\n| x | y |", id="newlines + heading"
    ),
    pytest.param(MARKER, id="the report's own hidden marker"),
    pytest.param("`x` ``y`` <b>bold</b>", id="backticks breaking out of code"),
    pytest.param("$\\frac{1}{0}$ ~~struck~~ **bold** _em_", id="math, strike, emphasis"),
    pytest.param("safe\u202eevil\u200b\x00", id="bidi override and control characters"),
    pytest.param("x" * 5000, id="very long"),
]
IMAGES = ["confusion.png"]
ALLOWED_TAGS = {
    "h2", "h3", "p", "strong", "em", "code", "table", "thead", "tbody", "tr", "th", "td",
    "details", "summary", "ul", "li", "img",
}  # fmt: skip
_MENTION = re.compile(r"(?<![\w`/])@[A-Za-z0-9_][\w.-]*")


def gate_doc(value: str, *, source: str | None = None) -> dict[str, Any]:
    check = {
        "kind": "absolute", "metric": value, "candidate": 0.5, "baseline": None,
        "threshold": ">= 0.9", "bound": 0.9, "delta": None, "passed": False,
        "why": f"{value} is below the minimum 0.9",
    }  # fmt: skip
    if source is not None:
        check["source"] = source
    return {
        "verdict": "failed", "run_mode": "enabled", "model_name": value,
        "candidate": {"path": "/runs/x/export/3", "version": 3},
        "champion": {"path": "/m/2", "version": 2, "label": value},
        "champion_note": f"champion: version 2 labelled {value}", "no_repository": False,
        "checks": [check],
        "override": {"applied": True, "approver": value, "approver_source": value,
                     "at": "2025-01-01T00:00:00+00:00", "reason": value},
    }  # fmt: skip


def metrics_doc(class_names: list[str]) -> dict[str, Any]:
    scores = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3}
    return {
        "test_examples": 6,
        "data_fingerprint": "ab" * 32,
        "class_names": class_names,
        "candidate": {
            "per_class": {name: scores for name in class_names},
            "latency_ms": {"1": {"p50": 1.0, "p95": 2.0}},
            "confusion": [[3, 0], [0, 3]],
        },
        "machine": {"cpus": 2},
    }


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[int] = []
        self.text: list[str] = []
        self.comments = 0
        self._code = 0

    def handle_comment(self, data: str) -> None:
        self.comments += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            self.rows[-1] += 1
        elif tag == "code":
            self._code += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._code -= 1

    def handle_data(self, data: str) -> None:
        if not self._code:  # GitLab/GitHub never look for mentions inside code
            self.text.append(data)


def render_html(markdown: str) -> _Html:
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    parsed = _Html()
    parsed.feed(md.render(markdown))
    return parsed


@pytest.mark.parametrize("value", HOSTILE)
def test_values_from_data_render_as_inert_text(value: str) -> None:
    report = render_markdown(gate_doc(value, source=value), metrics_doc([value, "ok"]), IMAGES)
    page = render_html(report)
    tags = [tag for tag, _ in page.tags]
    assert set(tags) <= ALLOWED_TAGS and tags.count("h2") == 1 and tags.count("h3") == 2
    assert [a for tag, a in page.tags if tag == "img"] == [
        {"src": "confusion.png", "alt": "confusion"}
    ]
    assert not any(a for tag, a in page.tags if tag != "img"), "no attribute may come from data"
    assert report.startswith(MARKER) and page.comments == 1  # no second marker to find
    assert not _MENTION.search(" ".join(page.text).replace("\u200b", " "))
    assert max(len(line) for line in report.splitlines()) < 1500
    assert "\u202e" not in report and "\x00" not in report


def _cell_separators(line: str) -> int:
    # A '|' splits a GFM table cell unless a backslash escapes it (a '\\' before it does not).
    count, backslashes = 0, 0
    for char in line:
        if char == "|" and backslashes % 2 == 0:
            count += 1
        backslashes = backslashes + 1 if char == "\\" else 0
    return count


TABLE_BREAKERS = [
    pytest.param("a | b | c", id="pipes"),
    pytest.param("cat\n| x | y | z |", id="a newline and a row of its own"),
    pytest.param("a\\\\|b", id="a backslash that would escape the escape"),
    pytest.param("`|` ``|``", id="pipes in backticks"),
]


@pytest.mark.parametrize("value", TABLE_BREAKERS)
def test_every_table_row_keeps_its_column_count(value: str) -> None:
    # Renderers drop cells beyond the header's count: compare the Markdown itself.
    report = render_markdown(gate_doc(value, source=value), metrics_doc([value, "ok"]), IMAGES)
    tables = [t.splitlines() for t in report.split("\n\n") if t.startswith("| ")]
    assert len(tables) == 3  # checks, per-class scores, latency
    for table in tables:
        assert len({_cell_separators(line) for line in table}) == 1, table


@pytest.mark.parametrize(
    ("source", "column"),
    [
        pytest.param("pipeline.yaml@3f2a9c1", True, id="from the committed pipeline.yaml"),
        pytest.param(
            "environment variable TFSHIP_GATE_ABSOLUTE (job started by alice)",
            True,
            id="from a variable, with who started the job",
        ),
        pytest.param(None, False, id="gate.json without provenance"),
    ],
)
def test_the_gate_table_shows_where_each_threshold_came_from(source, column) -> None:
    report = render_markdown(gate_doc("accuracy", source=source), metrics_doc(["a", "b"]), [])
    header = next(line for line in report.splitlines() if line.startswith("| check |"))
    assert ("threshold from" in header) is column
    row = next(line for line in report.splitlines() if line.startswith("| accuracy"))
    if column:
        assert row.endswith(f" {source} |")
    else:
        assert row.count("|") == header.count("|") == 7


def test_report_md_holds_no_credentials_from_notes_or_the_override(tmp_path) -> None:
    run_dir = RunDir(tmp_path / "run").ensure()
    run_dir.evaluation.mkdir()
    doc = gate_doc("accuracy")
    doc["champion"] = None  # the note is shown on a first run
    doc["champion_note"] = "champion: version 2 labelled stable in s3://u:Pa55-w0rd-xyzzy@m/repo"
    doc["override"]["reason"] = "ok, see https://ci.example/job?private_token=Pa55-w0rd-xyzzy"
    (run_dir.evaluation / "gate.json").write_text(json.dumps(doc))
    (run_dir.evaluation / "metrics.json").write_text(json.dumps(metrics_doc(["a", "b"])))
    (run_dir.root / "scan").mkdir()
    (run_dir.root / "scan" / "summary.md").write_text(
        "## Security scan\n\nhttps://u:Pa55-w0rd-xyzzy@r\n"
    )
    text = run_report(run_dir).report_md.read_text()
    assert "Pa55-w0rd-xyzzy" not in text and text.count("***") == 3


@pytest.mark.parametrize("value", HOSTILE)
def test_the_security_scan_section_renders_file_names_and_titles_inert(value: str) -> None:
    from tfship.scan.summary import render_summary

    finding = {"severity": "HIGH", "id": value, "title": value, "target": value, "start_line": 2}
    record = {
        "name": value, "kind": "fs", "target": value, "passed": False, "blocking": 1,
        "fail_on": "HIGH", "report_level": "LOW", "trivy_version": "0.6", "seconds": 1.0,
        "counts": {"HIGH": 1}, "findings": [finding],
        "suppressed": [{"finding": finding, "expires": "2030-01-01", "reason": value}],
    }  # fmt: skip
    summary = render_summary([record])
    assert "\u202e" not in summary and max(len(line) for line in summary.splitlines()) < 1000
    page = render_html(summary)
    attrs = [a for _, a in page.tags if a != {"style": "text-align:right"}]  # the `---:` cells
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS and not any(attrs)
    assert [tag for tag, _ in page.tags].count("h2") == 1 and page.comments == 0
    assert not _MENTION.search(" ".join(page.text).replace("\u200b", " "))


def test_a_class_name_with_mathtext_still_plots(tmp_path) -> None:
    from tfship.report import plot_confusion

    out = plot_confusion([[1, 0], [0, 1]], ["$\\undefinedmacro$", "x" * 500], tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- whose comment may be edited ---------------------------------------------------------------


class FakeForge:
    """GitLab/GitHub on 127.0.0.1: `GET /user`, the MR's comments, create and update."""

    def __init__(self, user: tuple[int, Any], comments: list[dict[str, Any]]) -> None:
        self.user, self.comments, self.writes = user, {c["id"]: c for c in comments}, []
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0].endswith("/user"):
                    return self._reply(*forge.user)
                return self._reply(200, list(forge.comments.values()))

            def _write(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
                target = self.path.rsplit("/", 1)[1]
                forge.writes.append((self.command, int(target) if target.isdigit() else None))
                self._reply(201, {"id": 900, "body": body})

            do_POST = do_PUT = do_PATCH = _write

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


OURS, THEIRS = {"id": 10, "login": "tfship-bot", "type": "User"}, {"id": 99, "login": "mallory"}
BOT = {"id": 41898282, "login": "github-actions[bot]", "type": "Bot"}
MARKED = MARKER + "\nold report"
INTEGRATION = {"message": "Resource not accessible by integration"}  # GITHUB_TOKEN on GET /user
GITLAB = {"CI_PROJECT_ID": "1", "CI_MERGE_REQUEST_IID": "3", "TFSHIP_GITLAB_TOKEN": "glpat-x"}
GITHUB = {"GITHUB_REPOSITORY": "acme/m", "GITHUB_TOKEN": "ghs_0123456789abcdefghij"}


def note(cid: int, who: dict[str, Any], body: str = MARKED) -> dict[str, Any]:
    return {"id": cid, "author": who, "user": who, "body": body, "system": False}


AUTHORS = [
    # (platform, GET /user answer, existing comments, the one write expected)
    ("gitlab", (200, OURS), [note(1, OURS)], ("PUT", 1)),
    ("gitlab", (200, OURS), [note(1, THEIRS)], ("POST", None)),
    ("gitlab", (200, OURS), [note(1, THEIRS), note(2, OURS)], ("PUT", 2)),
    ("gitlab", (200, OURS), [note(1, OURS, "hello")], ("POST", None)),
    ("gitlab", (200, OURS), [note(1, OURS, "> quoting\n" + MARKER)], ("POST", None)),
    ("gitlab", (200, OURS), [{**note(1, OURS), "system": True}], ("POST", None)),
    ("gitlab", (401, {"message": "401 Unauthorized"}), [note(1, THEIRS)], None),
    ("github", (200, {"id": 5, "login": "ci-user"}), [note(7, {"id": 5})], ("PATCH", 7)),
    ("github", (200, {"id": 5, "login": "ci-user"}), [note(7, {"id": 6})], ("POST", None)),
    ("github", (403, INTEGRATION), [note(7, BOT)], ("PATCH", 7)),
    ("github", (403, INTEGRATION), [note(7, {**BOT, "type": "User"})], ("POST", None)),
    ("github", (403, INTEGRATION), [note(7, {**BOT, "login": "github-actions"})], ("POST", None)),
    ("github", (403, INTEGRATION), [note(7, {**BOT, "login": "evil[bot]"})], ("POST", None)),
]
AUTHOR_IDS = [
    "gitlab: our own marked note is updated",
    "gitlab: another user's marked note is never edited",
    "gitlab: ours is found behind another user's marked note",
    "gitlab: our note without the marker is left alone",
    "gitlab: our note that only quotes the marker is left alone",
    "gitlab: a system note is never edited",
    "gitlab: token user unknown: nothing is written",
    "github token user: its own comment is patched",
    "github token user: another user's comment is never edited",
    "github GITHUB_TOKEN: github-actions[bot]'s comment is patched",
    "github GITHUB_TOKEN: a user (not a bot) with the bot's login is not ours",
    "github GITHUB_TOKEN: a person named github-actions is not the bot",
    "github GITHUB_TOKEN: another app's bot is not ours",
]


@pytest.mark.parametrize(("platform", "user", "comments", "write"), AUTHORS, ids=AUTHOR_IDS)
def test_the_report_updates_only_a_comment_its_own_user_wrote(
    tmp_path: Path, platform: str, user, comments, write
) -> None:
    report = tmp_path / "report.md"
    report.write_text(MARKER + "\nnew report\n")
    forge = FakeForge(user, comments)
    try:
        event = tmp_path / "event.json"
        event.write_text('{"pull_request": {"number": 3}}')
        environ = (
            {**GITLAB, "CI_API_V4_URL": f"{forge.url}/api/v4"}
            if platform == "gitlab"
            else {**GITHUB, "GITHUB_API_URL": forge.url, "GITHUB_EVENT_PATH": str(event)}
        )
        result = post_report(report, environ=environ)
    finally:
        forge.close()
    assert forge.writes == ([write] if write else [])
    assert result.posted is (write is not None)
