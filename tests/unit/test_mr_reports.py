"""`tfship mr-reports` (issue 15): MR pipelines hold no token; a protected scheduled job posts one
note per open merge request, rendered by its own code from the MR pipeline's report.json, which
it treats as hostile. Against the GitLab notes stand-in (tests/helpers/gitlab_notes_standin.py).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from tests.helpers.gitlab_notes_standin import BOT_USER, running_notes_standin
from tfship import cli
from tfship.errors import ExitCode
from tfship.mr_report_doc import MAX_BYTES, SCHEMA, write_bundle
from tfship.mr_reports import post_mr_reports
from tfship.report import MARKER
from tfship.rundir import RunDir

TOKEN = "glpat-protected-report-token"
SHA = "3f2a9c1" + "0" * 33
PATH = "mr-report/report.json"


def bundle(**over: Any) -> dict[str, Any]:
    doc = {
        "schema": SCHEMA, "merge_request_iid": 1, "pipeline_id": 500, "commit_sha": SHA,
        "verdict": "passed", "run_mode": "dry_run", "model_name": "shapes",
        "candidate_version": "3", "champion_version": None, "first_run": True,
        "checks": [{
            "metric": "accuracy", "kind": "absolute", "feature": None, "candidate": 0.91,
            "baseline": None, "threshold": ">= 0.5", "delta": None, "passed": True, "why": "",
        }],
        "metrics": {"accuracy": 0.91, "loss": 0.3},
        "test_examples": 60,
        "data": None,
    }  # fmt: skip
    doc.update(over)
    return doc


DRIFT = {
    "mode": "report", "has_reference": True, "note": "champion statistics: v2",
    "drifted": [{"feature": "amount", "check": "mean_shift", "value": 4.1, "bound": 0.5}],
}  # fmt: skip


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def environ(url: str, **over: str) -> dict[str, str]:
    e = {
        "CI_API_V4_URL": url,
        "CI_PROJECT_ID": "1000",
        "CI_PROJECT_URL": "https://gitlab.example.com/team/shapes",
        "CI_PIPELINE_SOURCE": "schedule",
        "CI_COMMIT_REF_PROTECTED": "true",
        "TFSHIP_GITLAB_TOKEN": TOKEN,
    }
    e.update(over)
    return {k: v for k, v in e.items() if v}


@pytest.fixture
def notes():
    with running_notes_standin({TOKEN}) as state:
        yield state


def _add(notes, iid: int = 1, pipeline_id: int = 500, job_id: int = 77, data: bytes | None = None,
         **kw: Any) -> None:  # fmt: skip
    files = {PATH: raw(bundle(merge_request_iid=iid, pipeline_id=pipeline_id))}
    if data is not None:
        files = {PATH: data}
    notes.add_merge_request(iid, pipeline_id=pipeline_id, sha=SHA, job_id=job_id, files=files, **kw)


# ---- the happy path and idempotence ------------------------------------------------------------


def test_posts_one_note_per_open_mr_rendered_from_the_data_and_links_the_artifacts(notes) -> None:
    _add(notes, 1)
    _add(notes, 2, pipeline_id=501, job_id=78)
    res = post_mr_reports(environ=environ(notes.url))
    assert res.exit_code == ExitCode.OK and len(res.posted) == 2, res.render_text()
    (one,), (two,) = notes.notes_on("1000", 1), notes.notes_on("1000", 2)
    assert one.body.startswith(MARKER) and "pipeline=500 job=77" in one.body
    assert "Gate passed" in one.body and "| accuracy (absolute) | 0.9100 |" in one.body
    assert "/-/jobs/77/artifacts/browse/mr-report/" in one.body
    assert "pipeline=501 job=78" in two.body
    assert all(auth == "private" for *_, auth in notes.requests)


def test_a_second_tick_posts_nothing_and_a_new_pipeline_edits_the_same_note(notes) -> None:
    _add(notes, 1)
    post_mr_reports(environ=environ(notes.url))
    writes = [r for r in notes.requests if r[0] in ("POST", "PUT")]
    again = post_mr_reports(environ=environ(notes.url))
    assert not again.posted and "already reported" in again.skipped[0]
    assert [r for r in notes.requests if r[0] in ("POST", "PUT")] == writes
    _add(notes, 1, pipeline_id=600, job_id=90)  # a new push: a newer pipeline
    third = post_mr_reports(environ=environ(notes.url))
    assert len(third.posted) == 1
    (note,) = notes.notes_on("1000", 1)
    assert "pipeline=600 job=90" in note.body and notes.requests[-1][0] == "PUT"


def test_dry_run_reads_but_writes_nothing(notes) -> None:
    _add(notes, 1)
    res = post_mr_reports(post=False, environ=environ(notes.url))
    assert res.posted and not notes.notes and "would post" in res.render_text()


def test_never_edits_a_note_someone_else_wrote_with_the_marker(notes) -> None:
    from tests.helpers.gitlab_notes_standin import Note

    notes.notes.append(Note(1, "1000", 1, MARKER + "\nmine", {"id": 7, "username": "mallory"}))
    _add(notes, 1)
    post_mr_reports(environ=environ(notes.url))
    bodies = [n.body for n in notes.notes_on("1000", 1)]
    assert bodies[0] == MARKER + "\nmine" and len(bodies) == 2
    assert notes.notes[1].author["id"] == BOT_USER["id"]


# ---- what is skipped ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"job_status": "running"}, "no report yet"),
        ({"job_status": "failed"}, "no report yet"),
        ({"job_name": "something-else"}, "no report yet"),
        ({"data": None, "files_missing": True}, "has no mr-report/report.json"),
        ({"pipeline_project": 2000}, "no pipeline in this project"),  # a fork's own pipeline
    ],
    ids=["job running", "job failed", "no report job", "no artifact file", "fork pipeline"],
)
def test_skips_mrs_without_a_report_and_posts_nothing(notes, kw: dict, expected: str) -> None:
    if kw.pop("files_missing", False):
        notes.add_merge_request(1, pipeline_id=500, sha=SHA, job_id=77, files={})
    else:
        _add(notes, 1, **kw)
    res = post_mr_reports(environ=environ(notes.url))
    assert res.exit_code == ExitCode.OK and expected in res.skipped[0], res.render_text()
    assert not notes.notes


# ---- hostile artifacts: refused with a reason, never shown -----------------------------------

HOSTILE_VALUES = [
    "<img src=x onerror=alert(1)>",
    "[approve](https://evil.example) ![t](https://evil.example/t.png)",
    "@all please merge",
    "x\n\n## :white_check_mark: **Gate passed**\n| a | b |",
    MARKER,
    "</details><details open>",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_strings_from_the_artifact_render_inert(notes, value: str) -> None:
    doc = bundle(model_name=value, candidate_version=value[:100])
    doc["checks"][0].update(metric=value, threshold=value, why=value, passed=False)
    doc["metrics"] = {value: 0.5}
    _add(notes, 1, data=raw(doc))
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    body = notes.notes_on("1000", 1)[0].body
    html = _html(body)
    # the renderer's own link to the artifacts is the only link; no image, no tag from a value
    assert re.findall(r"<a [^>]*>", html) == [
        '<a href="https://gitlab.example.com/team/shapes/-/jobs/77/artifacts/browse/mr-report/">'
    ]
    assert "<img" not in html and "<script" not in html and "<details open>" not in html
    assert html.count("<h2>") == 1 and html.count("<details>") == 1
    assert "@all" not in body and body.count(MARKER) == 1


def _html(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return md.render(markdown)


def _refused(doc_or_bytes: Any) -> bytes:
    return doc_or_bytes if isinstance(doc_or_bytes, bytes) else raw(doc_or_bytes)


def _with_check(**over: Any) -> dict[str, Any]:
    doc = bundle()
    doc["checks"][0].update(over)
    return doc


REFUSED = [
    ("huge file", b'{"x": "' + b"a" * (MAX_BYTES + 10) + b'"}', "larger than"),
    ("not JSON", b"## Gate passed <img src=x>", "not UTF-8 JSON"),
    ("not UTF-8", b"\xff\xfe{}", "not UTF-8 JSON"),
    ("deep nesting", b"[" * 100000 + b"]" * 100000, "not UTF-8 JSON"),
    ("a list", [], "not an object"),
    ("unknown key (report_md)", {**bundle(), "report_md": "## anything"}, "keys differ"),
    ("missing key", {k: v for k, v in bundle().items() if k != "checks"}, "keys differ"),
    ("another schema", bundle(schema="tfship-mr-report/99"), "schema"),
    ("data in a /1 report", bundle(schema="tfship-mr-report/1"), "keys differ"),
    ("data mode not the gate's", bundle(data={**DRIFT, "mode": "ignore"}), "data.mode"),
    ("data with an extra key", bundle(data={**DRIFT, "html": "<b>"}), "keys differ"),
    (
        "drift value a string",
        bundle(data={**DRIFT, "drifted": [{**DRIFT["drifted"][0], "value": "4.1"}]}),
        "value",
    ),
    ("too many drifted", bundle(data={**DRIFT, "drifted": DRIFT["drifted"] * 101}), "drifted"),
    ("a report for another MR", bundle(merge_request_iid=2), "another merge request"),
    ("another pipeline", bundle(pipeline_id=499), "another pipeline"),
    ("another commit", bundle(commit_sha="f" * 40), "another commit"),
    ("verdict not the gate's", bundle(verdict="approved"), "verdict"),
    ("verdict of a wrong type", bundle(verdict=["passed"]), "verdict"),
    ("run mode not the gate's", bundle(run_mode="<img src=x>"), "run_mode"),
    ("number as a string", _with_check(candidate="0.99"), "candidate"),
    ("NaN", b'{"x": NaN}', "keys differ"),
    ("passed as a string", _with_check(passed="true"), "passed"),
    ("iid as a bool", bundle(merge_request_iid=True), "merge_request_iid"),
    ("too many checks", bundle(checks=[bundle()["checks"][0]] * 101), "checks"),
    ("too many metrics", bundle(metrics={f"m{i}": 0.1 for i in range(101)}), "metrics"),
    ("metric value an object", bundle(metrics={"a": {"b": 1}}), "metrics"),
    ("a very long string", bundle(model_name="x" * 501), "model_name"),
    ("test_examples negative", bundle(test_examples=-1), "test_examples"),
]


@pytest.mark.parametrize(
    ("data", "why"), [pytest.param(d, w, id=i) for i, d, w in REFUSED]
)  # fmt: skip
def test_a_hostile_artifact_is_refused_on_its_mr_and_the_others_still_post(
    notes, data: Any, why: str
) -> None:
    _add(notes, 1, data=_refused(data))
    _add(notes, 2, pipeline_id=501, job_id=78)
    res = post_mr_reports(environ=environ(notes.url))
    assert res.exit_code == ExitCode.OK, res.render_text()  # the branch's problem, not the job's
    assert len(res.refused) == 1 and why in res.refused[0], res.render_text()
    assert len(res.posted) == 1 and "!2" in res.posted[0]
    (note,) = notes.notes_on("1000", 1)
    assert "was refused" in note.body and "Gate passed" not in note.body
    assert "<img" not in note.body and "## anything" not in note.body and len(note.body) < 2000


def test_a_redirect_to_object_storage_never_carries_the_token(notes) -> None:
    notes.redirect_artifacts = True
    _add(notes, 1)
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    assert notes.storage_headers and all(
        TOKEN not in json.dumps(h) and "PRIVATE-TOKEN" not in {k.upper() for k in h}
        for h in notes.storage_headers
    )


# ---- failures: exit codes, no traceback --------------------------------------------------------


def test_one_mr_whose_api_calls_fail_is_counted_and_the_job_exits_8(notes) -> None:
    _add(notes, 1)
    _add(notes, 2, pipeline_id=501, job_id=78)
    notes.fail[r"/api/v4/projects/1000/merge_requests/1/pipelines"] = 500
    res = post_mr_reports(environ=environ(notes.url))
    assert res.exit_code == ExitCode.INFRA and len(res.errors) == 1 and "!1" in res.errors[0]
    assert len(res.posted) == 1 and notes.notes_on("1000", 2)
    assert "HTTP 500" in res.render_text() and TOKEN not in res.render_text()


def _cli(env: dict[str, str], monkeypatch, capsys, *args: str) -> tuple[int, str]:
    for k in ("CI_MERGE_REQUEST_IID", "TFSHIP_GITLAB_TOKEN", "CI_COMMIT_REF_PROTECTED"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(cli, "COMMANDS", ("mr-reports",))
    code = cli.main(["mr-reports", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("over", "fail", "code", "says"),
    [
        ({"TFSHIP_GITLAB_TOKEN": ""}, {}, 3, "TFSHIP_GITLAB_TOKEN is not set"),
        ({"TFSHIP_GITLAB_TOKEN": "glpat-wrong"}, {}, 8, "HTTP 401"),
        ({"CI_COMMIT_REF_PROTECTED": "false"}, {}, 3, "protected"),
        (
            {"CI_MERGE_REQUEST_IID": "1", "CI_PIPELINE_SOURCE": "merge_request_event"},
            {},
            3,
            "merge-request pipeline",
        ),
        ({}, {r"/api/v4/projects/1000/merge_requests": 404}, 8, "HTTP 404"),
        ({"CI_API_V4_URL": "http://127.0.0.1:9/api/v4"}, {}, 8, "ConnectionError"),
    ],
    ids=["no token", "401", "unprotected ref", "in an MR pipeline", "404", "API down"],
)
def test_cli_exit_codes_are_the_documented_ones_without_a_traceback(
    notes, monkeypatch, capsys, over: dict, fail: dict, code: int, says: str
) -> None:
    _add(notes, 1)
    notes.fail.update(fail)
    rc, out = _cli(environ(notes.url, **over), monkeypatch, capsys, "--post")
    assert rc == code and says in out, out
    assert "Traceback" not in out and "glpat-" not in out
    assert not notes.notes


def test_cli_posts_and_prints_a_summary(notes, monkeypatch, capsys) -> None:
    _add(notes, 1)
    rc, out = _cli(environ(notes.url), monkeypatch, capsys, "--post")
    assert rc == 0 and "1 posted" in out, out


# ---- the MR pipeline's side ------------------------------------------------------------------


def test_write_bundle_round_trips_through_the_strict_parser(tmp_path) -> None:
    from tfship.mr_report_doc import parse_bundle

    run = RunDir(tmp_path / "run")
    run.evaluation.mkdir(parents=True)
    gate = {
        "verdict": "dry_run_failed", "run_mode": "dry_run", "model_name": "shapes",
        "candidate": {"version": 4, "path": "/x"}, "champion": None, "first_run": True,
        "checks": [{"metric": "accuracy", "kind": "absolute", "feature": None,
                    "candidate": 0.2, "baseline": None, "threshold": ">= 0.5", "bound": 0.5,
                    "delta": None, "passed": False, "why": "below"}],
        "data": {"mode": "report", "measured": True, "has_reference": True,
                 "reference_error": False, "note": "champion statistics: v3",
                 "drifted": [{"feature": "amount", "check": "mean_shift", "value": 4.0,
                              "bound": 0.5, "message": "moved"}]},
    }  # fmt: skip
    metrics = {
        "test_examples": 60,
        "candidate": {"metrics": {"accuracy": 0.2, "p95_latency_ms": 3.0, "auc": float("nan")}},
    }
    (run.evaluation / "gate.json").write_text(json.dumps(gate))
    (run.evaluation / "metrics.json").write_text(json.dumps(metrics))
    (run.evaluation / "report.md").write_text("# report")
    (run.evaluation / "confusion.png").write_bytes(b"\x89PNG")
    env = {"CI_MERGE_REQUEST_IID": "3", "CI_PIPELINE_ID": "812", "CI_COMMIT_SHA": SHA}
    path = write_bundle(run, tmp_path / "mr-report", env)
    assert {p.name for p in path.parent.iterdir()} == {"report.json", "report.md", "confusion.png"}
    b = parse_bundle(path.read_bytes(), iid=3, pipeline_id=812, sha=SHA)
    assert b.verdict == "dry_run_failed" and b.checks[0].candidate == 0.2
    assert dict(b.metrics) == {"accuracy": 0.2, "auc": None}  # latency out; NaN is null
    assert b.data is not None and b.data.has_reference and b.data.mode == "report"
    assert [(r.feature, r.check, r.value) for r in b.data.drifted] == [
        ("amount", "mean_shift", 4.0)
    ]
    assert copy.deepcopy(b) == b


def test_a_version_1_report_without_data_still_posts(notes) -> None:
    # The default branch's parser reads what an MR branch on the previous tfship writes.
    doc = bundle(schema="tfship-mr-report/1")
    del doc["data"]
    _add(notes, 1, data=raw(doc))
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    assert "### Data" not in notes.notes_on("1000", 1)[0].body


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DRIFT, "| amount | mean_shift | 4.1000 | 0.5000 |"),
        ({**DRIFT, "mode": "fail"}, "fails the gate"),
        ({**DRIFT, "drifted": []}, "No drift beyond gate.data.bounds"),
        ({**DRIFT, "has_reference": False, "note": "no champion"}, "No champion statistics"),
    ],
)
def test_data_drift_reaches_the_note(notes, data: dict, expected: str) -> None:
    _add(notes, 1, data=raw(bundle(data=data)))
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    body = notes.notes_on("1000", 1)[0].body
    assert "### Data" in body and expected in body, body


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_drifted_feature_names_render_inert(notes, value: str) -> None:
    row = {"feature": value[:200], "check": value[:60], "value": 1.0, "bound": 0.5}
    _add(notes, 1, data=raw(bundle(data={**DRIFT, "note": value, "drifted": [row]})))
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    body = notes.notes_on("1000", 1)[0].body
    html = _html(body)
    assert len(re.findall(r"<a [^>]*>", html)) == 1 and "<img" not in html
    assert "@all" not in body and body.count(MARKER) == 1


def test_the_writer_keeps_within_the_posters_limits_failed_checks_first(tmp_path) -> None:
    # gate.data adds a check per drifted feature and check: a large drift event must not make
    # the report refused exactly when it matters.
    from tfship.mr_report_doc import MAX_CHECKS, parse_bundle

    run = RunDir(tmp_path / "run")
    run.evaluation.mkdir(parents=True)
    long = "f" * 300

    def check(i: int, passed: bool) -> dict[str, Any]:
        return {"metric": f"m{i}" + "x" * 600, "kind": "data", "feature": long,
                "candidate": 1.0, "baseline": None, "threshold": "<= 0.5" * 200,
                "delta": None, "passed": passed, "why": "w" * 3000}  # fmt: skip

    checks = [check(i, True) for i in range(60)] + [check(i, False) for i in range(60, 150)]
    gate = {
        "verdict": "failed", "run_mode": "enabled", "model_name": "m" * 600,
        "candidate": {"version": 4}, "champion": {"version": 3}, "first_run": False,
        "checks": checks,
        "data": {"mode": "fail", "measured": True, "has_reference": True, "note": "n" * 900,
                 "drifted": [{"feature": long, "check": "mean_shift" * 10, "value": 2.0,
                              "bound": 0.5} for _ in range(150)]},
    }  # fmt: skip
    metrics = {"test_examples": 9, "candidate": {"metrics": {f"m{i}": 0.5 for i in range(150)}}}
    (run.evaluation / "gate.json").write_text(json.dumps(gate))
    (run.evaluation / "metrics.json").write_text(json.dumps(metrics))
    env = {"CI_MERGE_REQUEST_IID": "3", "CI_PIPELINE_ID": "812", "CI_COMMIT_SHA": SHA}
    path = write_bundle(run, tmp_path / "mr-report", env)
    b = parse_bundle(path.read_bytes(), iid=3, pipeline_id=812, sha=SHA)
    assert len(b.checks) == MAX_CHECKS and sum(not c.passed for c in b.checks) == 90
    assert len(path.read_bytes()) <= MAX_BYTES
    assert b.data is not None and len(b.data.drifted) == 100


def test_a_data_check_is_named_as_one_not_as_a_slice(notes) -> None:
    doc = _with_check(metric="mean_shift", kind="data", feature="amount", passed=False)
    _add(notes, 1, data=raw(doc))
    res = post_mr_reports(environ=environ(notes.url))
    assert len(res.posted) == 1, res.render_text()
    body = notes.notes_on("1000", 1)[0].body
    assert "mean_shift of amount (data)" in body and "(slice)" not in body
