"""Compare statistics with a reference (the champion's): schema violations and drift.

Violations (DataError, exit 4, from `raise_for_violations`): a feature of the reference is
absent from the current statistics or changed type; a feature that had values in the reference
is entirely missing now.

Drift (reported; fails only when the caller gates on it), per feature, against `DriftBounds`:
- categorical: L-infinity distance between the two normalised value distributions (TFDV's
  measure; the values outside each side's `top` are one bucket "other"), and the unseen-value
  rate: the share of current values not in the reference's `top` (a lower bound when the current
  table was truncated);
- numeric: the mean shift in units of the reference std, |mean - mean_ref| / std_ref, and the
  std ratio max(std/std_ref, std_ref/std);
- every feature: the change in the missing rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tfship.errors import DataError


@dataclass(frozen=True)
class DriftBounds:
    linf: float = 0.2
    unseen_rate: float = 0.1
    mean_shift: float = 0.5
    std_ratio: float = 2.0
    missing_rate_change: float = 0.1


@dataclass(frozen=True)
class Finding:
    feature: str
    check: str
    value: float
    bound: float | None
    message: str


@dataclass(frozen=True)
class StatsComparison:
    violations: tuple[Finding, ...]
    drift: tuple[Finding, ...]  # only the checks beyond their bound
    measured: tuple[Finding, ...]  # every check computed, within bounds or not

    @property
    def drifted(self) -> bool:
        return bool(self.drift)

    def raise_for_violations(self) -> None:
        if self.violations:
            raise DataError(
                "the data does not match the reference statistics' schema: "
                + "; ".join(f.message for f in self.violations),
                hint="fix the data; if the change is intended, name the feature in "
                "gate.data.schema_changes (committed, so the change is reviewed)",
            )

    def raise_for_drift(self) -> None:
        if self.drift:
            raise DataError(
                "data drift beyond the configured bounds: "
                + "; ".join(f.message for f in self.drift)
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "violations": [asdict(f) for f in self.violations],
            "drift": [asdict(f) for f in self.drift],
            "measured": [asdict(f) for f in self.measured],
        }

    def render_text(self) -> str:
        if not self.violations and not self.drift:
            return "statistics: no schema violation, no drift beyond bounds"
        return "\n".join(
            [f"schema violation: {f.message}" for f in self.violations]
            + [f"drift: {f.message}" for f in self.drift]
        )


def _dist(stats: dict[str, Any]) -> dict[str, float]:
    present = stats["count"] - stats["missing"]
    if present <= 0:
        return {}
    out = {str(v): c / present for v, c in stats.get("top", [])}
    if stats.get("other"):
        out["\0other"] = stats["other"] / present
    return out


def _missing_rate(stats: dict[str, Any]) -> float:
    return stats["missing"] / stats["count"] if stats.get("count") else 0.0


def compare_statistics(
    current: dict[str, Any], reference: dict[str, Any], bounds: DriftBounds | None = None
) -> StatsComparison:
    b = bounds or DriftBounds()
    violations: list[Finding] = []
    measured: list[Finding] = []
    cur_feats = current.get("features", {})
    for name, ref in reference.get("features", {}).items():
        cur = cur_feats.get(name)
        if cur is None:
            violations.append(
                Finding(
                    name,
                    "missing_feature",
                    1,
                    None,
                    f"feature {name!r} is in the reference but not in the data",
                )
            )
            continue
        if cur["type"] != ref["type"]:
            violations.append(
                Finding(
                    name,
                    "type",
                    1,
                    None,
                    f"feature {name!r} is {cur['type']}; the reference has {ref['type']}",
                )
            )
            continue
        if cur["count"] and cur["missing"] == cur["count"] and ref["missing"] < ref["count"]:
            violations.append(
                Finding(
                    name,
                    "all_missing",
                    1,
                    None,
                    f"feature {name!r} has no values at all in the data",
                )
            )
            continue
        _compare_one(name, cur, ref, b, measured)
    drift = tuple(f for f in measured if f.bound is not None and f.value > f.bound)
    return StatsComparison(tuple(violations), drift, tuple(measured))


def _compare_one(
    name: str, cur: dict[str, Any], ref: dict[str, Any], b: DriftBounds, out: list[Finding]
) -> None:
    dm = abs(_missing_rate(cur) - _missing_rate(ref))
    out.append(
        Finding(
            name,
            "missing_rate_change",
            dm,
            b.missing_rate_change,
            f"{name!r}: missing rate {_missing_rate(ref):.3f} -> {_missing_rate(cur):.3f}",
        )
    )
    if cur["type"] == "categorical":
        p, q = _dist(cur), _dist(ref)
        linf = max((abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q)), default=0.0)
        out.append(
            Finding(
                name,
                "linf",
                linf,
                b.linf,
                f"{name!r}: L-infinity distance {linf:.3f} (bound {b.linf})",
            )
        )
        known = {str(v) for v, _ in ref.get("top", [])}
        present = cur["count"] - cur["missing"]
        unseen = sum(c for v, c in cur.get("top", []) if str(v) not in known)
        rate = unseen / present if present else 0.0
        out.append(
            Finding(
                name,
                "unseen_rate",
                rate,
                b.unseen_rate,
                f"{name!r}: {rate:.1%} of values unseen in the reference "
                f"(bound {b.unseen_rate:.0%})",
            )
        )
    elif cur["type"] == "numeric" and cur["mean"] is not None and ref["mean"] is not None:
        ref_std = ref["std"] or 0.0
        scale = ref_std if ref_std > 0 else max(abs(ref["mean"]), 1e-12)
        shift = abs(cur["mean"] - ref["mean"]) / scale
        out.append(
            Finding(
                name,
                "mean_shift",
                shift,
                b.mean_shift,
                f"{name!r}: mean {ref['mean']:.4g} -> {cur['mean']:.4g} "
                f"({shift:.2f} reference std, bound {b.mean_shift})",
            )
        )
        cs = cur["std"] or 0.0
        if ref_std > 0 and cs > 0:
            ratio = max(cs / ref_std, ref_std / cs)
        else:
            ratio = 1.0 if ref_std == cs else float("inf")
        out.append(
            Finding(
                name,
                "std_ratio",
                ratio,
                b.std_ratio,
                f"{name!r}: std {ref_std:.4g} -> {cs:.4g} (ratio {ratio:.2f}, bound {b.std_ratio})",
            )
        )
