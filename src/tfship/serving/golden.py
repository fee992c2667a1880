"""The export's manifest and its golden requests: what any server must answer for them.

Deploy trusts a manifest only after `check_manifest`: it must match
`schemas/serving-manifest.schema.json` (a positive int64 version, a non-empty golden set with
finite numbers) and name the version it is published under, so a tampered manifest can neither
publish version -5 nor pass a NaN model with an empty golden set.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Re-exported: export.py, verify.py and the tests import these names from here.
from tfship.artifacts import MANIFEST as MANIFEST
from tfship.artifacts import WARMUP as WARMUP
from tfship.artifacts import latest_export as latest_export
from tfship.artifacts import read_manifest as read_manifest
from tfship.errors import ModelError
from tfship.serving import schema


@dataclass(frozen=True)
class GoldenCheck:
    """Served outputs compared with the manifest's expected outputs."""

    ok: bool
    max_abs_diff: float
    tolerance: float
    problems: tuple[str, ...]


def compare(
    manifest: Mapping[str, Any], outputs: Mapping[str, Any], tolerance: float | None = None
) -> GoldenCheck:
    """Outputs must be finite, have the manifest's names and shapes, and match within tolerance.

    Every served output must be finite, also those the golden set does not list, and an empty
    golden set is a problem, never a pass.
    """
    golden = manifest["golden"]
    tol = float(tolerance if tolerance is not None else golden.get("tolerance", 1e-4))
    problems: list[str] = []
    worst = 0.0
    if not golden.get("outputs"):
        problems.append("the manifest lists no golden outputs: nothing to compare")
    for name, value in outputs.items():
        got = np.asarray(value)
        if got.dtype.kind in "fc" and not np.all(np.isfinite(got)):
            problems.append(f"output '{name}' contains NaN/Inf")
    for name, expected in golden.get("outputs", {}).items():
        if name not in outputs:
            problems.append(f"output '{name}' missing (got {sorted(outputs)})")
            continue
        if _is_text(expected):
            problem = _compare_text(name, expected, outputs[name])
            if problem:
                problems.append(problem)
            continue
        exp = np.asarray(expected, dtype=np.float64)
        try:
            got = np.asarray(outputs[name], dtype=np.float64)
        except (TypeError, ValueError):
            problems.append(f"output '{name}' is not numeric, expected numbers")
            continue
        if got.shape != exp.shape:
            problems.append(
                f"output '{name}' has shape {list(got.shape)}, expected {list(exp.shape)}"
            )
            continue
        if not np.all(np.isfinite(got)):
            continue  # reported above
        if not np.all(np.isfinite(exp)):
            problems.append(f"the manifest's golden output '{name}' contains NaN/Inf")
            continue
        if got.size == 0:
            problems.append(f"output '{name}' is empty")
            continue
        diff = float(np.max(np.abs(got - exp)))
        worst = max(worst, diff)
        if diff > tol:
            problems.append(f"output '{name}' differs by {diff:.3g} (tolerance {tol:g})")
    return GoldenCheck(not problems, worst, tol, tuple(problems))


def _is_text(value: Any) -> bool:
    """True for a (nested) list whose first leaf is a string, or an array of strings/bytes: a
    class name / label output."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "OSU"
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, str)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _compare_text(name: str, expected: Any, served: Any) -> str | None:
    """String outputs (class names, labels) must be equal, not close."""
    got = np.vectorize(_text, otypes=[object])(np.asarray(served, dtype=object))
    exp = np.vectorize(_text, otypes=[object])(np.asarray(expected, dtype=object))
    if got.shape != exp.shape:
        return f"output '{name}' has shape {list(got.shape)}, expected {list(exp.shape)}"
    unequal = np.argwhere(got != exp)
    if len(unequal):
        at = tuple(int(i) for i in unequal[0])
        return (
            f"output '{name}' differs at {list(at)}: {str(got[at])[:40]!r}, expected "
            f"{str(exp[at])[:40]!r} ({len(unequal)} value(s) differ)"
        )
    return None


def served_examples(method: str, results: list) -> dict[str, Any]:
    """A classify/regress answer as the endpoint's outputs (`classes`/`scores`, `outputs`),
    the form `golden.examples[method].outputs` records."""
    if method == "classify":
        return {
            "classes": [[label for label, _ in row] for row in results],
            "scores": [[score for _, score in row] for row in results],
        }
    return {"outputs": list(results)}


def compare_examples(
    method: str,
    expected_outputs: Mapping[str, Any],
    served: list,
    tolerance: float | None = None,
) -> GoldenCheck:
    """A served classify/regress answer (the client's `results`: per example (label, score)
    pairs, or values) against `golden.examples[method].outputs`: labels exactly, scores and
    regression values within `tolerance` (default 1e-4)."""
    if method not in ("classify", "regress"):
        raise ModelError(
            f"golden.examples has method {method!r}; expected 'classify' or 'regress'",
            hint="re-export the model (`tfship export`)",
        )
    check = compare(
        {"golden": {"outputs": dict(expected_outputs), "tolerance": tolerance or 1e-4}},
        served_examples(method, served),
        tolerance,
    )
    problems = tuple(f":{method} {p}" for p in check.problems)
    return GoldenCheck(not problems, check.max_abs_diff, check.tolerance, problems)


def replay(
    client: Any, manifest: Mapping[str, Any], tolerance: float | None, **where: Any
) -> GoldenCheck:
    """Every golden request of the manifest against a server: predict on `serving_default`,
    then each tf.Example API (`:classify`, `:regress`) the export has; one combined check."""
    outputs = client.predict(golden_inputs(manifest), **where)
    names = list((manifest.get("signature") or {}).get("outputs") or manifest["golden"]["outputs"])
    if set(outputs) == {"output_0"} and len(names) == 1:
        # TF Serving answers a one-output signature with the bare tensor, without its name.
        outputs = {names[0]: outputs["output_0"]}
    checks = [compare(manifest, outputs, tolerance)]
    for method, block in (manifest["golden"].get("examples") or {}).items():
        call = client.classify if method == "classify" else client.regress
        results = call(block["examples"], signature=method, **where)
        tol = tolerance if tolerance is not None else manifest["golden"].get("tolerance")
        checks.append(compare_examples(method, block["outputs"], results, tol))
    problems = tuple(p for c in checks for p in c.problems)
    return GoldenCheck(
        not problems, max(c.max_abs_diff for c in checks), checks[0].tolerance, problems
    )


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{type(value).__name__} {value!r}")


def golden_inputs(manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The golden requests' inputs in the dtypes the signature takes (manifest `signature`):
    strings as bytes (`{"b64": ...}` decoded), int64 and float32 numbers (null: NaN, missing).
    An input the signature does not list is float32 (the digits `pixels` manifests)."""
    specs = (manifest.get("signature") or {}).get("inputs") or {}
    out = {}
    for name, values in manifest["golden"]["inputs"].items():
        dtype = (specs.get(name) or {}).get("dtype", "float32")
        try:
            if dtype == "string":
                raw = np.asarray(values, dtype=object)
                out[name] = np.vectorize(_as_bytes, otypes=[object])(raw) if raw.size else raw
            elif dtype in ("float32", "int64"):
                out[name] = np.asarray(values, dtype=dtype)
            else:
                raise TypeError(f"dtype {dtype!r}")
        except (TypeError, ValueError, binascii.Error) as exc:
            raise ModelError(
                f"golden input '{name}': found {str(exc)[:80]}; expected {dtype} values "
                '(signature.inputs) - strings as text or {"b64": ...}, numbers as numbers',
                hint="re-export the model (`tfship export`); a manifest is never edited by hand",
            ) from exc
    return out


def check_manifest(manifest: Any, *, version: int | None, where: str) -> dict[str, Any]:
    """The manifest, if deploy may trust it for `version`; ModelError (exit 6) otherwise."""
    bad = schema.problems("manifest", manifest)
    if not bad and version is not None and manifest["version"] != version:
        bad = [f"it says version {manifest['version']}, but it is published as {version}"]
    if bad:
        raise ModelError(
            f"{where}: the tfship manifest is not one deploy can trust: {'; '.join(bad)}",
            hint="re-export the model (`tfship export`); a manifest is never edited by hand",
        )
    return dict(manifest)
