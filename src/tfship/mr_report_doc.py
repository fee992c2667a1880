"""The merge-request report as data: written by the MR pipeline, read back by a trusted job.

A merge-request pipeline runs the branch's own code, so it holds no API token (docs/ci.md,
"The MR report without a token in MR pipelines"). Its `smoke-report` job writes
`mr-report/report.json` (this module's `write_bundle`): the gate's verdict, its checks and the
candidate's metrics, plus the pipeline it claims to come from; next to it the human report.md and
plots, which the MR widget links (`artifacts:expose_as`) but nothing ever posts.

A scheduled job on the protected default branch (tfship.mr_reports) downloads that one file and
treats it as hostile: `parse_bundle` accepts only the exact shape below (size, depth, types,
lengths, counts; unknown keys are an error), checks that it names the merge request, pipeline and
commit GitLab itself reports for the job, and `render_comment` writes the note with the default
branch's code, every string through tfship.mdescape and every number formatted from a float. No
Markdown, HTML, link or image produced by the branch reaches the comment.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship import mdescape as md
from tfship.errors import DataError
from tfship.fsutil import atomic_write_text, read_json
from tfship.report import HEADLINES, MARKER
from tfship.rundir import RunDir

SCHEMA = "tfship-mr-report/2"  # /2 adds `data`; /1 (without it) is still read
SCHEMAS = ("tfship-mr-report/1", SCHEMA)
BUNDLE_FILE = "report.json"
MAX_BYTES = 256 * 1024  # the whole file; a real one is a few KiB
MAX_CHECKS = 100
MAX_METRICS = 100
MAX_STR = 500
MAX_WHY = 2000
MAX_DRIFTED = 100
DATA_MODES = ("report", "fail")  # gate.data.drift (tfship.config)
RUN_MODES = ("enabled", "dry_run", "disabled")  # gate.run_mode (tfship.config)
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# The per-pipeline marker: the note for this pipeline's report job is already posted.
_POSTED = "<!-- tfship-mr-report pipeline={pipeline} job={job} -->"
POSTED_RE = re.compile(r"<!-- tfship-mr-report pipeline=(\d+) job=(\d+) -->")


class BundleRejected(ValueError):
    """The artifact is not a report this job will render; the message says why (no content)."""


@dataclass(frozen=True)
class Check:
    metric: str
    kind: str
    feature: str | None
    candidate: float | None
    baseline: float | None
    threshold: str
    delta: float | None
    passed: bool
    why: str


@dataclass(frozen=True)
class Drifted:
    feature: str
    check: str
    value: float | None
    bound: float | None


@dataclass(frozen=True)
class DataDrift:
    """The training data against the champion's statistics (gate.json's `data`)."""

    mode: str
    has_reference: bool
    note: str
    drifted: tuple[Drifted, ...]


@dataclass(frozen=True)
class Bundle:
    """A report.json that passed every check of `parse_bundle`."""

    merge_request_iid: int
    pipeline_id: int
    commit_sha: str
    verdict: str
    run_mode: str
    model_name: str
    candidate_version: str
    champion_version: str | None
    first_run: bool
    checks: tuple[Check, ...]
    metrics: tuple[tuple[str, float | None], ...]
    test_examples: int
    data: DataDrift | None = None


# ---- the MR pipeline's side -------------------------------------------------------------------


def _num_or_none(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def write_bundle(run_dir: RunDir, out: Path, environ: Any) -> Path:
    """mr-report/: report.json (the data the trusted job reads) + report.md and plots (for
    people, through the exposed artifact). Reads gate.json/metrics.json of the run."""
    ev = run_dir.evaluation
    for needed in ("gate.json", "metrics.json"):
        if not (ev / needed).is_file():
            raise DataError(f"{ev / needed} does not exist", hint="run `tfship evaluate` first")
    gate, metrics = read_json(ev / "gate.json"), read_json(ev / "metrics.json")
    cand = (metrics.get("candidate") or {}).get("metrics") or {}
    champ = gate.get("champion") or {}

    # Within the poster's limits (parse_bundle), or a report with many checks (gate.data adds
    # one per drifted feature and check) would be refused exactly when it matters: failed
    # checks first, long strings cut.
    checks = sorted(gate.get("checks", []), key=lambda c: bool(c.get("passed")))[:MAX_CHECKS]

    def ident(name: str) -> int | None:
        value = (environ or {}).get(name) or ""
        return int(value) if value.isdigit() else None

    doc = {
        "schema": SCHEMA,
        "merge_request_iid": ident("CI_MERGE_REQUEST_IID"),
        "pipeline_id": ident("CI_PIPELINE_ID"),
        "commit_sha": (environ or {}).get("CI_COMMIT_SHA") or "",
        "verdict": gate["verdict"],
        "run_mode": gate["run_mode"],
        "model_name": str(gate["model_name"])[:MAX_STR],
        "candidate_version": str((gate.get("candidate") or {}).get("version", "?"))[:100],
        "champion_version": None if not champ else str(champ.get("version"))[:100],
        "first_run": bool(gate.get("first_run")),
        "checks": [
            {
                "metric": str(c["metric"])[:MAX_STR],
                "kind": str(c["kind"])[:MAX_STR],
                "feature": None if c.get("feature") is None else str(c["feature"])[:MAX_STR],
                "candidate": _num_or_none(c.get("candidate")),
                "baseline": _num_or_none(c.get("baseline")),
                "threshold": str(c.get("threshold", ""))[:MAX_STR],
                "delta": _num_or_none(c.get("delta")),
                "passed": bool(c["passed"]),
                "why": str(c.get("why") or "")[:MAX_WHY],
            }
            for c in checks
        ],
        "metrics": dict(
            list(
                {
                    str(k)[:200]: _num_or_none(v) for k, v in cand.items() if "latency" not in k
                }.items()
            )[:MAX_METRICS]
        ),
        "test_examples": int(metrics.get("test_examples") or 0),
        "data": _data_doc(gate.get("data")),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / BUNDLE_FILE, _within_size(doc))
    for extra in (ev / "report.md", *sorted(ev.glob("*.png"))):
        if extra.is_file():
            shutil.copyfile(extra, out / extra.name)
    return out / BUNDLE_FILE


def _within_size(doc: dict[str, Any]) -> str:
    """The bundle as JSON of at most MAX_BYTES: long explanations cut first, then the checks
    halved (failed ones are first) until it fits."""

    def dump() -> str:
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    text = dump()
    if len(text.encode()) > MAX_BYTES:
        for c in doc["checks"]:
            c.update(why=c["why"][:200], metric=c["metric"][:100], threshold=c["threshold"][:100])
            c["feature"] = None if c["feature"] is None else c["feature"][:100]
        text = dump()
    while len(text.encode()) > MAX_BYTES and doc["checks"]:
        doc["checks"] = doc["checks"][: len(doc["checks"]) // 2]
        text = dump()
    return text


def _data_doc(data: Any) -> dict[str, Any] | None:
    """gate.json's `data` (tfship.evaluation.data_gate), reduced to what the note shows."""
    if not isinstance(data, dict) or not data.get("measured"):
        return None
    return {
        "mode": str(data.get("mode", "report")),
        "has_reference": bool(data.get("has_reference")) and not data.get("reference_error"),
        "note": str(data.get("note") or "")[:MAX_STR],
        "drifted": [
            {
                "feature": str(d.get("feature"))[:200],
                "check": str(d.get("check"))[:60],
                "value": _num_or_none(d.get("value")),
                "bound": _num_or_none(d.get("bound")),
            }
            for d in (data.get("drifted") or [])[:MAX_DRIFTED]
        ],
    }


# ---- the trusted side: parse strictly ---------------------------------------------------------


def _reject(why: str) -> BundleRejected:
    return BundleRejected(why)


def _obj(v: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _reject(f"{where} is not an object")
    if set(v) != keys:
        extra, missing = sorted(set(v) - keys)[:3], sorted(keys - set(v))[:3]
        raise _reject(f"{where} keys differ (unexpected {extra}, missing {missing})")
    return v


def _str(v: Any, where: str, limit: int = MAX_STR) -> str:
    if not isinstance(v, str):
        raise _reject(f"{where} is not a string")
    if len(v) > limit:
        raise _reject(f"{where} is longer than {limit} characters")
    return v


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53:
        raise _reject(f"{where} is not a non-negative integer")
    return v


def _number(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _reject(f"{where} is not a finite number or null")
    return float(v)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _reject(f"{where} is not true/false")
    return v


_TOP = {
    "schema", "merge_request_iid", "pipeline_id", "commit_sha", "verdict", "run_mode",
    "model_name", "candidate_version", "champion_version", "first_run", "checks", "metrics",
    "test_examples",
}  # fmt: skip
_CHECK = {
    "metric", "kind", "feature", "candidate", "baseline", "threshold", "delta", "passed", "why"
}  # fmt: skip
_DATA = {"mode", "has_reference", "note", "drifted"}
_DRIFTED = {"feature", "check", "value", "bound"}


def _data(v: Any) -> DataDrift | None:
    if v is None:
        return None
    d = _obj(v, _DATA, "data")
    if d["mode"] not in DATA_MODES:
        raise _reject(f"data.mode is not one of {', '.join(DATA_MODES)}")
    drifted = d["drifted"]
    if not isinstance(drifted, list) or len(drifted) > MAX_DRIFTED:
        raise _reject(f"data.drifted is not a list of at most {MAX_DRIFTED}")
    rows = []
    for i, row in enumerate(drifted):
        w = f"data.drifted[{i}]"
        row = _obj(row, _DRIFTED, w)
        rows.append(
            Drifted(
                feature=_str(row["feature"], f"{w}.feature", 200),
                check=_str(row["check"], f"{w}.check", 60),
                value=_number(row["value"], f"{w}.value"),
                bound=_number(row["bound"], f"{w}.bound"),
            )
        )
    return DataDrift(
        mode=str(d["mode"]),
        has_reference=_bool(d["has_reference"], "data.has_reference"),
        note=_str(d["note"], "data.note"),
        drifted=tuple(rows),
    )


def _run_mode(v: Any) -> str:
    if v not in RUN_MODES:
        raise _reject(f"run_mode is not one of {', '.join(RUN_MODES)}")
    return str(v)


def parse_bundle(raw: bytes, *, iid: int, pipeline_id: int, sha: str) -> Bundle:
    """The report for merge request `iid`, pipeline `pipeline_id` at commit `sha` (what GitLab
    says about the job), or BundleRejected. `raw` is the artifact's bytes, never trusted."""
    if len(raw) > MAX_BYTES:
        raise _reject(f"the file is larger than {MAX_BYTES // 1024} KiB")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _reject("the file is not UTF-8 JSON") from None
    version_1 = isinstance(doc, dict) and doc.get("schema") == SCHEMAS[0]
    d = _obj(doc, _TOP if version_1 else _TOP | {"data"}, "the report")
    if d["schema"] not in SCHEMAS:
        raise _reject(f"schema is not one of {', '.join(SCHEMAS)}")
    if _int(d["merge_request_iid"], "merge_request_iid") != iid:
        raise _reject(f"the report names another merge request, not !{iid}")
    if _int(d["pipeline_id"], "pipeline_id") != pipeline_id:
        raise _reject(f"the report names another pipeline, not #{pipeline_id}")
    if not _SHA.fullmatch(_str(d["commit_sha"], "commit_sha", 64)) or d["commit_sha"] != sha:
        raise _reject("the report names another commit than its pipeline's")
    verdict = _str(d["verdict"], "verdict", 40)
    if verdict not in HEADLINES:
        raise _reject("verdict is not one of the gate's verdicts")
    checks_raw = d["checks"]
    if not isinstance(checks_raw, list) or len(checks_raw) > MAX_CHECKS:
        raise _reject(f"checks is not a list of at most {MAX_CHECKS}")
    checks = []
    for i, c in enumerate(checks_raw):
        w = f"checks[{i}]"
        c = _obj(c, _CHECK, w)
        feature = c["feature"]
        checks.append(
            Check(
                metric=_str(c["metric"], f"{w}.metric"),
                kind=_str(c["kind"], f"{w}.kind"),
                feature=None if feature is None else _str(feature, f"{w}.feature"),
                candidate=_number(c["candidate"], f"{w}.candidate"),
                baseline=_number(c["baseline"], f"{w}.baseline"),
                threshold=_str(c["threshold"], f"{w}.threshold"),
                delta=_number(c["delta"], f"{w}.delta"),
                passed=_bool(c["passed"], f"{w}.passed"),
                why=_str(c["why"], f"{w}.why", MAX_WHY),
            )
        )
    metrics = d["metrics"]
    if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
        raise _reject(f"metrics is not an object of at most {MAX_METRICS} numbers")
    champion = d["champion_version"]
    return Bundle(
        merge_request_iid=iid,
        pipeline_id=pipeline_id,
        commit_sha=sha,
        verdict=verdict,
        run_mode=_run_mode(d["run_mode"]),
        model_name=_str(d["model_name"], "model_name"),
        candidate_version=_str(d["candidate_version"], "candidate_version", 100),
        champion_version=None if champion is None else _str(champion, "champion_version", 100),
        first_run=_bool(d["first_run"], "first_run"),
        checks=tuple(checks),
        metrics=tuple(
            (_str(k, "a metric name", 200), _number(v, f"metrics[{i}]"))
            for i, (k, v) in enumerate(metrics.items())
        ),
        test_examples=_int(d["test_examples"], "test_examples"),
        data=_data(d.get("data")),
    )


# ---- the trusted side: render -----------------------------------------------------------------


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def posted_marker(pipeline_id: int, job_id: int) -> str:
    return _POSTED.format(pipeline=int(pipeline_id), job=int(job_id))


def _head(pipeline_id: int, job_id: int) -> list[str]:
    return [MARKER, posted_marker(pipeline_id, job_id)]


def render_comment(b: Bundle, job_id: int, artifacts_url: str) -> str:
    """The note for a parsed bundle. Only this code's own Markdown; values are escaped."""
    title = f"{md.text(b.model_name, 80)} v{md.text(b.candidate_version, 40)}"
    lines = [*_head(b.pipeline_id, job_id)]
    lines += [f"## {title}: evaluation of !{int(b.merge_request_iid)}", ""]
    lines.append(f"{HEADLINES[b.verdict]} (run mode {md.code(b.run_mode, 20)})")
    lines.append("")
    if b.champion_version is not None:
        lines.append(f"Compared with the champion v{md.text(b.champion_version, 40)}.")
    elif b.first_run:
        lines.append("**First run: no champion.** Only absolute thresholds apply.")
    else:
        lines.append("No champion to compare with: only absolute thresholds were checked.")
    lines.append("")
    lines += [
        "| check | candidate | champion | threshold | Δ | result |",
        "|---|---|---|---|---|---|",
    ]
    for c in b.checks:
        name = md.text(c.metric, 60)
        if c.feature and c.kind == "data":  # gate.data: a drift check of one feature
            name += f" of {md.text(c.feature, 60)} (data)"
        elif c.feature:
            name += f" by {md.text(c.feature, 60)} (slice)"
        else:
            name += f" ({md.text(c.kind, 20)})"
        mark = ":white_check_mark:" if c.passed else ":x:"
        lines.append(
            f"| {name} | {_num(c.candidate)} | {_num(c.baseline)} | {md.text(c.threshold, 60)} "
            f"| {_num(c.delta, signed=True)} | {mark} |"
        )
    if not b.checks:
        lines.append("| (no checks) | | | | | |")
    lines += _data_lines(b.data)
    failed = [c for c in b.checks if not c.passed]
    if failed:
        lines += ["", "### Failed checks", ""]
        lines += [f"- **{md.text(c.metric, 60)}**: {md.text(c.why, 300)}." for c in failed]
    if b.metrics:
        lines += ["", "<details><summary>Metrics</summary>", ""]
        lines += ["| metric | candidate |", "|---|---|"]
        lines += [f"| {md.text(k, 60)} | {_num(v)} |" for k, v in b.metrics]
        lines += ["", "</details>"]
    lines += [
        "",
        f"Test examples: {int(b.test_examples)}. Pipeline #{int(b.pipeline_id)} at "
        f"{md.code(b.commit_sha[:12])}, reported by the merge request's own code: the protected "
        "pipeline evaluates again after the merge and enforces the gate.",
        "",
        f"Plots and the full report: [the job's artifacts]({artifacts_url}).",
    ]
    return "\n".join(lines) + "\n"


def _data_lines(data: DataDrift | None) -> list[str]:
    """The "Data" part of the note: drift of the training data against the champion's."""
    if data is None:
        return []
    lines = ["", "### Data", ""]
    if not data.has_reference:
        return [*lines, f"No champion statistics to compare with ({md.text(data.note, 300)})."]
    if not data.drifted:
        return [*lines, "No drift beyond gate.data.bounds against the champion's statistics."]
    effect = (
        "fails the gate" if data.mode == "fail" else "reported only (`gate.data.drift: report`)"
    )
    lines += [f"Drift beyond gate.data.bounds, {effect}:", ""]
    lines += ["| feature | check | value | bound |", "|---|---|---|---|"]
    lines += [
        f"| {md.text(r.feature, 60)} | {md.text(r.check, 30)} | {_num(r.value)} | {_num(r.bound)} |"
        for r in data.drifted
    ]
    return lines


def render_rejected(iid: int, pipeline_id: int, job_id: int, why: str, artifacts_url: str) -> str:
    """The note when the artifact was refused: the reason (escaped), never the content."""
    return (
        "\n".join(
            [
                *_head(pipeline_id, job_id),
                f"## Evaluation report of !{int(iid)}: not shown",
                "",
                f":warning: The report of pipeline #{int(pipeline_id)} was refused: "
                f"{md.text(why, 300)}. See [the job's artifacts]({artifacts_url}).",
            ]
        )
        + "\n"
    )
