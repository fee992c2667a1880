#!/usr/bin/env python3
"""Unit-test results and coverage as Markdown, for the job summary of a GitHub workflow run
(`$GITHUB_STEP_SUMMARY`, shown on the pull request's checks page; no token needed). GitLab
reads the same two files itself (`artifacts:reports:junit` and `coverage_report`).

    ci/test-summary.py [junit.xml] [coverage.xml] >> "$GITHUB_STEP_SUMMARY"

junit.xml     pytest --junitxml (JUnit XML): totals, and the first failing tests with the first
              line of their message
coverage.xml  pytest --cov-report=xml (Cobertura): line (and branch) rate, the least covered files

A missing or unreadable file is said in the summary, and the script still exits 0: the pytest
step carries the verdict, this one only reports it. Test names and messages are the pull
request's own text: they are shortened, kept on one line and written inside code spans.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MAX_FAILURES = 20
MAX_FILES = 5
MAX_CELL = 200


def _code(text: str) -> str:
    """One table cell of untrusted text: one line, no pipe, no backtick, bounded."""
    line = " ".join(str(text).split())
    line = line.replace("|", "\\|").replace("`", "'")
    if len(line) > MAX_CELL:
        line = line[: MAX_CELL - 1] + "…"
    return f"`{line}`" if line else ""


def _load(path: Path, what: str) -> tuple[ET.Element | None, str | None]:
    if not path.is_file():
        return None, f"_{what}: `{path.name}` was not written (the test step stopped before it)._"
    try:
        return ET.parse(path).getroot(), None
    except (ET.ParseError, OSError) as exc:
        return None, f"_{what}: `{path.name}` could not be read ({type(exc).__name__})._"


def _int(el: ET.Element, name: str) -> int:
    try:
        return int(float(el.get(name) or 0))
    except ValueError:
        return 0


def junit_markdown(path: Path) -> str:
    root, problem = _load(path, "Unit tests")
    out = ["## Unit tests", ""]
    if root is None:
        return "\n".join([*out, problem or ""])
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(_int(s, "tests") for s in suites)
    failures = sum(_int(s, "failures") for s in suites)
    errors = sum(_int(s, "errors") for s in suites)
    skipped = sum(_int(s, "skipped") for s in suites)
    seconds = sum(float(s.get("time") or 0) for s in suites)
    passed = tests - failures - errors - skipped
    verdict = "passed" if failures == errors == 0 else "FAILED"
    out += [
        f"**{verdict}**: {passed} passed, {failures} failed, {errors} errors, {skipped} skipped"
        f" of {tests} tests in {seconds:.1f} s.",
        "",
        "| tests | passed | failed | errors | skipped | time |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {tests} | {passed} | {failures} | {errors} | {skipped} | {seconds:.1f} s |",
    ]
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                name = "::".join(filter(None, (case.get("classname"), case.get("name"))))
                message = (el.get("message") or el.text or "").strip().splitlines()
                bad.append((kind, name, message[0] if message else ""))
    if bad:
        out += ["", "| | test | message |", "|---|---|---|"]
        out += [f"| {k} | {_code(n)} | {_code(m)} |" for k, n, m in bad[:MAX_FAILURES]]
        if len(bad) > MAX_FAILURES:
            out.append(f"\n_{len(bad) - MAX_FAILURES} more in the `test-reports` artifact._")
    return "\n".join(out)


def _rate(el: ET.Element, name: str) -> float | None:
    value = el.get(name)
    try:
        return None if value is None else float(value) * 100
    except ValueError:
        return None


def coverage_markdown(path: Path) -> str:
    root, problem = _load(path, "Coverage")
    out = ["## Coverage", ""]
    if root is None:
        return "\n".join([*out, problem or ""])
    lines = _rate(root, "line-rate")
    branches = _rate(root, "branch-rate")
    covered, valid = _int(root, "lines-covered"), _int(root, "lines-valid")
    has_branches = _int(root, "branches-valid") > 0
    out += [
        "| lines | covered / valid | branches |",
        "|---:|---:|---:|",
        f"| {lines or 0:.1f} % | {covered} / {valid} | "
        + (f"{branches:.1f} % |" if has_branches and branches is not None else "— |"),
    ]
    files = []
    for cls in root.iter("class"):
        rate = _rate(cls, "line-rate")
        if rate is not None and cls.get("filename"):
            files.append((rate, cls.get("filename")))
    files.sort()
    low = [f for f in files if f[0] < 100][:MAX_FILES]
    if low:
        out += ["", "Least covered files:", "", "| file | lines |", "|---|---:|"]
        out += [f"| {_code(name)} | {rate:.1f} % |" for rate, name in low]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print("usage: ci/test-summary.py [junit.xml] [coverage.xml]", file=sys.stderr)
        return 2
    junit = Path(argv[0] if argv else "junit.xml")
    coverage = Path(argv[1] if len(argv) > 1 else "coverage.xml")
    print(junit_markdown(junit) + "\n\n" + coverage_markdown(coverage) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
