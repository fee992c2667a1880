"""Latency the gate reads: enough calls for a percentile, and candidate and champion timed
call by call in turn, so the load of a shared runner cannot decide a latency change."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfship import evaluate
from tfship.config import load_config
from tfship.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["gate.latency_runs=5", "gate.absolute={p95_latency_ms: {max: 50}}"], True),
        (["gate.latency_runs=19", "gate.change={p95_latency_ms: {max_regression: 0.2}}"], True),
        (
            ["gate.latency_runs=10", "gate.absolute={p95_latency_ms_batch32: {max: 50}}"],
            True,
        ),
        (["gate.latency_runs=20", "gate.change={p95_latency_ms: {max_regression: 0.2}}"], False),
        (["gate.latency_runs=5", "gate.absolute={p50_latency_ms: {max: 50}}"], False),
        (["gate.latency_runs=5", "gate.absolute={accuracy: {min: 0.5}}"], False),
    ],
)
def test_a_p95_gate_needs_twenty_timed_calls(overrides: list[str], refused: bool) -> None:
    if not refused:
        assert load_config(overrides=overrides).gate.latency_runs >= 5
        return
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert "at least 20 timed calls" in str(err.value)


class _Clock:
    """perf_counter whose calls get slower as time goes on (a runner filling up with jobs)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += 0.001 * (1 + self.calls / 50)  # 1 ms, growing 2 % per call


def _model(clock: _Clock, name: str, order: list[str]):
    def fn(**batch: tf.Tensor) -> dict[str, tf.Tensor]:
        order.append(name)
        clock.work()
        return {"y": tf.zeros([1])}

    return fn


def test_candidate_and_champion_are_timed_in_turn_so_drift_falls_on_both(monkeypatch) -> None:
    clock, order = _Clock(), []
    monkeypatch.setattr(evaluate.time, "perf_counter", clock.perf_counter)
    x = {"f": np.zeros((4, 1), np.float32)}
    cand, champ = _model(clock, "cand", order), _model(clock, "champ", order)

    got = evaluate._latency([(cand, x), (champ, x)], n=4, runs=40)

    # per batch size: 3 warm-up calls each, then the 40 timed rounds alternate
    for start in (6, 6 + 80 + 6):
        assert order[start : start + 80] == ["cand", "champ"] * 40
    assert [lat["1"]["runs"] for lat in got] == [40, 40]
    for bs in ("1", "32"):
        ratio = got[1][bs]["p95"] / got[0][bs]["p95"]
        # timed one after the other, the second model would look ~1.6x slower on this clock
        assert ratio == pytest.approx(1.0, abs=0.02), ratio


def test_one_model_alone_is_timed_as_before(monkeypatch) -> None:
    clock, order = _Clock(), []
    monkeypatch.setattr(evaluate.time, "perf_counter", clock.perf_counter)
    x = {"f": np.zeros((2, 1), np.float32)}
    [lat] = evaluate._latency([(_model(clock, "m", order), x)], n=2, runs=25)
    assert set(lat) == {"1", "32"} and lat["1"]["runs"] == 25
    assert len(order) == 2 * (3 + 25)
    assert all(k in lat["32"] for k in ("p50", "p95", "mean"))
