"""ci/test-summary.py: JUnit + Cobertura -> the Markdown GitHub shows as the job summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "test-summary.py"

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="2.25">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_ok_too" time="0.1"/>
<testcase classname="tests.test_a" name="test_pipe[a|b]" time="0.1">
<failure message="assert `x` == 1&#10;second line">traceback</failure></testcase>
<testcase classname="tests.test_b" name="test_setup" time="0.0">
<error message="fixture 'db' not found">...</error></testcase>
<testcase classname="tests.test_b" name="test_skip" time="0.0"><skipped message="no GPU"/>
</testcase></testsuite></testsuites>
"""
COBERTURA = """<?xml version="1.0" ?>
<coverage version="7.6" line-rate="0.8125" branch-rate="0.5" lines-covered="130"
 lines-valid="160" branches-covered="10" branches-valid="20">
<packages><package name="tfship" line-rate="0.8125"><classes>
<class name="a.py" filename="src/tfship/a.py" line-rate="1"/>
<class name="b.py" filename="src/tfship/b.py" line-rate="0.25"/>
<class name="c.py" filename="src/tfship/c.py" line-rate="0.9"/>
</classes></package></packages></coverage>
"""


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True
    )


def test_results_failures_and_coverage_as_markdown_tables(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "coverage.xml").write_text(COBERTURA)
    out = _run(tmp_path / "junit.xml", tmp_path / "coverage.xml")
    assert out.returncode == 0, out.stderr
    md = out.stdout
    assert "**FAILED**: 2 passed, 1 failed, 1 errors, 1 skipped of 5 tests in 2.2 s." in md
    assert "| 5 | 2 | 1 | 1 | 1 | 2.2 s |" in md
    # the test's own text stays inside one cell: pipe escaped, no backtick, first line only
    assert "| failure | `tests.test_a::test_pipe[a\\|b]` | `assert 'x' == 1` |" in md
    assert "| error | `tests.test_b::test_setup` | `fixture 'db' not found` |" in md
    assert "second line" not in md
    assert "| 81.2 % | 130 / 160 | 50.0 % |" in md
    least = md.split("Least covered files:")[1]
    assert least.index("src/tfship/b.py") < least.index("src/tfship/c.py")
    assert "src/tfship/a.py" not in least  # fully covered


def test_missing_reports_are_said_and_never_fail_the_step(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text("<testsuites><testsuite")  # cut off
    out = _run(tmp_path / "junit.xml", tmp_path / "coverage.xml")
    assert out.returncode == 0
    assert "`junit.xml` could not be read (ParseError)" in out.stdout
    assert "`coverage.xml` was not written" in out.stdout
