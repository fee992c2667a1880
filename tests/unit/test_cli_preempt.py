"""A SIGTERM before the training loop's own handler is installed (TensorFlow still importing,
data loading) exits 75 like a preemption inside the loop, so CI's `retry: exit_codes: [75]`
retries it; other commands keep the default (a deploy is never retried automatically)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tfship import cli
from tfship.errors import ExitCode


@pytest.fixture(autouse=True)
def _restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def _sigterm_inside(args) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises before this ends
    raise AssertionError("SIGTERM did not interrupt the command")


@pytest.mark.parametrize("command", ["train", "run"])
def test_sigterm_before_the_loop_exits_with_the_resumable_code(command, monkeypatch, capsys):
    parser = cli.build_parser()
    args = parser.parse_args([command])
    monkeypatch.setattr(args, "handler", _sigterm_inside)
    assert cli._run(args) == ExitCode.PREEMPTED == 75
    assert "rerun the same command" in capsys.readouterr().err


def test_the_previous_handler_is_back_after_the_command(monkeypatch):
    args = cli.build_parser().parse_args(["train"])
    monkeypatch.setattr(args, "handler", lambda a: None)
    before = signal.getsignal(signal.SIGTERM)
    cli._run(args)
    assert signal.getsignal(signal.SIGTERM) is before


def test_other_commands_keep_the_default_sigterm(monkeypatch):
    args = cli.build_parser().parse_args(["deploy"])
    seen = []
    monkeypatch.setattr(args, "handler", lambda a: seen.append(signal.getsignal(signal.SIGTERM)))
    cli._run(args)
    assert seen and seen[0] is not cli._preempted_early
