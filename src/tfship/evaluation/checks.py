"""The gate's checks: thresholds applied to metrics, pure functions (no I/O).

`evaluate_checks` turns `gate.absolute`, `gate.change` and `gate.slices` plus the candidate's
(and champion's) metrics into `Check`s; `tfship.gate` turns those into a verdict and gate.json.
A NaN metric fails with the task's reason; an incomparable champion fails every change
threshold; a sliced feature with no gated slice fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfship.config import GateConfig
from tfship.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """One threshold applied to one metric."""

    kind: str  # "absolute" | "change" | "slice" | "data"
    metric: str
    candidate: float
    baseline: float | None  # the champion's value, when there is a champion
    threshold: str  # human-readable rule, e.g. ">= 0.95" or "<= champion + 20%"
    bound: float  # the number the candidate was compared with
    delta: float | None  # candidate - baseline
    passed: bool
    why: str  # one sentence a reviewer can act on
    source: str = ""  # where the threshold came from (tfship.config.provenance); run_gate sets it
    feature: str | None = None  # slice checks: the sliced feature
    # slice checks: (slice value, metric value or None for NaN, why) of every failing slice
    failing: tuple[tuple[str, float | None, str], ...] = ()

    @property
    def config_key(self) -> str:
        """The dotted config key of this threshold: gate.absolute.accuracy.min, gate.change.loss."""
        if self.kind == "slice":
            return "gate.slices"
        if self.kind == "data":
            return "gate.data"
        if self.kind == "absolute":
            return f"gate.absolute.{self.metric}.{'min' if self.threshold[:2] == '>=' else 'max'}"
        return f"gate.change.{self.metric}"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _nan_why(metric: str, notes: Mapping[str, str]) -> str:
    return f"{metric} is undefined (NaN): {notes.get(metric, 'not measured')}"


def _absolute_checks(
    gate: GateConfig,
    cand: Mapping[str, float],
    champ: Mapping[str, float] | None,
    notes: Mapping[str, str],
):
    for metric, rule in gate.absolute.items():
        value = cand.get(metric, math.nan)
        base = champ.get(metric) if champ else None
        delta = None if base is None else value - base
        for op, bound in ((">=", rule.min), ("<=", rule.max)):
            if bound is None:
                continue
            ok = (value >= bound) if op == ">=" else (value <= bound)
            ok = ok and not math.isnan(value)
            word = "minimum" if op == ">=" else "maximum"
            why = (
                f"{_fmt(value)} meets the {word} {_fmt(bound)}"
                if ok
                else _nan_why(metric, notes)
                if math.isnan(value)
                else f"{_fmt(value)} is {'below' if op == '>=' else 'above'} the {word} "
                f"{_fmt(bound)} by {_fmt(abs(value - bound))}"
            )
            yield Check(
                "absolute", metric, value, base, f"{op} {_fmt(bound)}", bound, delta, ok, why
            )


def _direction(metric: str, rule: Any, directions: Mapping[str, str]) -> bool:
    """True when higher is better for `metric` (the rule's `better` wins over the task's)."""
    better = rule.better or directions.get(metric)
    if better is None:
        raise ConfigError(
            f"gate.change.{metric}: the task has no metric {metric!r}; "
            f"expected one of {sorted(directions)}"
        )
    return better == "higher"


def _change_checks(
    gate: GateConfig,
    cand: Mapping[str, float],
    champ: Mapping[str, float],
    directions: Mapping[str, str],
    notes: Mapping[str, str],
):
    for metric, rule in gate.change.items():
        value, base = cand.get(metric, math.nan), champ.get(metric, math.nan)
        higher = _direction(metric, rule, directions)
        allowed = abs(base) * rule.max_regression if rule.relative else rule.max_regression
        bound = base - allowed if higher else base + allowed
        ok = (value >= bound if higher else value <= bound) and not math.isnan(value)
        amount = f"{rule.max_regression:.0%}" if rule.relative else _fmt(rule.max_regression)
        sign = "-" if higher else "+"
        rule_text = f"{'>=' if higher else '<='} champion {sign} {amount}"
        if rule.max_regression == 0:
            rule_text = f"{'>=' if higher else '<='} champion"
        delta = value - base
        if ok:
            why = f"{_fmt(value)} vs champion {_fmt(base)} is within {rule_text}"
        elif math.isnan(value):
            why = _nan_why(metric, notes)
        elif math.isnan(base):
            why = f"the champion's {metric} is undefined (NaN): nothing to compare with"
        else:
            why = (
                f"{_fmt(value)} is worse than the champion's {_fmt(base)} by "
                f"{_fmt(abs(delta))}; allowed: {rule_text} = {_fmt(bound)}"
            )
        yield Check("change", metric, value, base, rule_text, bound, delta, ok, why)


def _incomparable_checks(gate: GateConfig, cand: Mapping[str, float], reason: str):
    # Never skipped: a champion with another input contract or task must not let any
    # regression through unseen.
    for metric in gate.change:
        why = f"the champion could not be scored on this test split: {reason}"
        yield Check(
            "change",
            metric,
            cand.get(metric, math.nan),
            None,
            "comparable champion",
            math.nan,
            None,
            False,
            why,
        )


def _sliced(doc: Mapping[str, Any], min_size: int) -> Any:
    """SlicedMetrics from metrics.json, gated by the gate's own `min_examples`."""
    from tfship.task import Slice, SlicedMetrics

    slices = tuple(
        Slice(
            str(s["value"]),
            int(s["count"]),
            int(s["count"]) >= min_size,
            {k: math.nan if v is None else float(v) for k, v in s["metrics"].items()},
            dict(s.get("notes") or {}),
        )
        for s in doc.get("slices", [])
    )
    return SlicedMetrics(str(doc.get("feature", "")), min_size, slices)


def _slice_checks(gate: GateConfig, slices: Mapping[str, Any] | None):
    for sl in gate.slices:
        doc = (slices or {}).get(sl.feature)
        for metric, rule in sl.absolute.items():
            bounds = [
                f"{op} {_fmt(b)}" for op, b in ((">=", rule.min), ("<=", rule.max)) if b is not None
            ]
            text = " and ".join(bounds) + " on every slice"
            bound = rule.min if rule.min is not None else rule.max
            if doc is None:
                why = (
                    f"metrics.json has no slices of {sl.feature!r}: nothing to check "
                    f"{metric} on; run `tfship evaluate` with this gate.slices"
                )
                yield Check(
                    "slice",
                    metric,
                    math.nan,
                    None,
                    text,
                    bound,
                    None,
                    False,
                    why,
                    feature=sl.feature,
                )
                continue
            res = _sliced(doc, sl.min_examples).check(metric, minimum=rule.min, maximum=rule.max)
            values = [
                s.metrics.get(metric, math.nan) for s in _sliced(doc, sl.min_examples).gated()
            ]
            # The candidate column shows the worst gated slice (the first failing one if any).
            worst = (
                res.failing[0][1]
                if res.failing
                else (min(values) if rule.min is not None else max(values))
                if values
                else math.nan
            )
            failing = tuple((v, None if math.isnan(m) else m, why) for v, m, why in res.failing)
            yield Check(
                "slice",
                metric,
                worst,
                None,
                text,
                bound,
                None,
                res.ok,
                res.reason,
                feature=sl.feature,
                failing=failing,
            )


def evaluate_checks(
    gate: GateConfig,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    directions: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
    slices: Mapping[str, Any] | None = None,
    incomparable: str | None = None,
) -> list[Check]:
    """Apply every threshold. Pure: no I/O, so the verdict table is easy to test.

    Args:
        directions: metric -> "higher" | "lower" (the task's `metric_directions()`; default:
            the default task's).
        notes: metric -> why it is NaN (metrics.json `notes`), given as the failure reason.
        slices: feature -> sliced metrics as metrics.json holds them (`SlicedMetrics.to_json`).
        incomparable: why the champion could not be scored; every change threshold fails.
    """
    if directions is None:
        from tfship.task import DEFAULT_TASK, load_task

        directions = load_task(DEFAULT_TASK, {}).metric_directions()
    notes = notes or {}
    checks = list(_absolute_checks(gate, candidate, champion, notes))
    if incomparable is not None:
        checks.extend(_incomparable_checks(gate, candidate, incomparable))
    elif champion is not None:
        checks.extend(_change_checks(gate, candidate, champion, directions, notes))
    checks.extend(_slice_checks(gate, slices))
    return checks
