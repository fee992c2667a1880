"""Preempt an in-process `run_train` at a known step, as SIGTERM would, without a signal.

The loop reads its SIGTERM flag once before every compiled call and acts on it after that call
(saves, raises Preempted). `preempt_before_call(monkeypatch, n)` makes the flag read true from
the n-th call on (0-based), so the run stops at the end of call n: with the default chunking of
tests.unit.test_checkpoints.make_cfg (6 steps per epoch, a checkpoint every 4, 10 steps per
call) calls end at steps 4, 6, 8, 12, so n = 0, 1, 2 stop at steps 4, 6, 8.
"""

from __future__ import annotations

from typing import Any

import pytest

import tfship.train


def preempt_before_call(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    class Flag(tfship.train._SigtermFlag):
        reads = 0

        @property
        def raised(self) -> bool:
            Flag.reads += 1
            return Flag.reads > n

        @raised.setter
        def raised(self, value: Any) -> None:
            pass

    monkeypatch.setattr(tfship.train, "_SigtermFlag", Flag)
