"""The evaluation report: `evaluation/report.md` plus `confusion.png` and `training.png`.

The markdown leads with the verdict and one table (check, candidate, champion, threshold,
delta, result) so a reviewer knows in ten seconds whether the model may go on and why not;
details (per-class scores, plots) follow. The same text is the merge-request comment
(tfship.mr_comment), so it starts with a hidden marker that finds that comment again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import DataError
from tfship.fsutil import atomic_write_bytes, atomic_write_text, read_json
from tfship.rundir import RunDir

MARKER = "<!-- tfship-evaluation-report -->"
CONFUSION_PNG = "confusion.png"
TRAINING_PNG = "training.png"
CONFUSION_SIZE_PX = (640, 560)  # width, height: fixed so the comment layout is stable
TRAINING_SIZE_PX = (800, 320)
_DPI = 80

HEADLINES = {
    "passed": ":white_check_mark: **Gate passed**",
    "failed": ":x: **Gate FAILED**: this model may not be deployed",
    "passed_with_override": ":warning: **Gate failed, passed by override**",
    "dry_run_failed": ":test_tube: **Gate would FAIL** (dry run: the pipeline goes on)",
    "disabled": ":pause_button: **Gate disabled**: no verdict, checks shown for reading",
}


@dataclass(frozen=True)
class ReportResult:
    """Where the report and its plots were written."""

    report_md: Path
    images: tuple[Path, ...]
    verdict: str

    def render_text(self) -> str:
        files = ", ".join(p.name for p in (self.report_md, *self.images))
        return f"report ({self.verdict}): {files} in {self.report_md.parent}"


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _version(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "?"
    return f"v{entry['version']}" if entry.get("version") is not None else Path(entry["path"]).name


def render_markdown(gate: dict[str, Any], metrics: dict[str, Any], images: list[str]) -> str:
    """report.md from gate.json and metrics.json. Deterministic: same input, same text."""
    cand, champ = gate["candidate"], gate.get("champion")
    lines = [MARKER, f"## {gate['model_name']} {_version(cand)}: evaluation", ""]
    lines.append(HEADLINES[gate["verdict"]] + f" (run mode `{gate['run_mode']}`)")
    lines.append("")
    if champ:
        label = f" labelled `{champ['label']}`" if champ.get("label") else ""
        lines.append(f"Compared with the champion {_version(champ)}{label} on the same test split.")
    elif gate.get("no_repository"):
        lines.append(
            "**Warning: no model repository configured: change thresholds skipped.** "
            f"({gate['champion_note']})"
        )
    else:
        lines.append(
            f"**First run: no champion.** Only absolute thresholds apply. ({gate['champion_note']})"
        )
    lines += [
        "",
        "| check | candidate | champion | threshold | Δ | result |",
        "|---|---|---|---|---|---|",
    ]
    for c in gate["checks"]:
        mark = ":white_check_mark:" if c["passed"] else ":x:"
        lines.append(
            f"| {c['metric']} ({c['kind']}) | {_num(c['candidate'])} | {_num(c['baseline'])} "
            f"| {c['threshold']} | {_num(c['delta'], signed=True)} | {mark} |"
        )
    if not gate["checks"]:
        lines.append("| (no checks: gate disabled without thresholds) | | | | | |")
    failed = [c for c in gate["checks"] if not c["passed"]]
    if failed:
        lines += ["", "### Failed checks", ""]
        lines += [f"- **{c['metric']}** ({c['kind']}): {c['why']}." for c in failed]
    ov = gate.get("override")
    if ov:
        state = "applied" if ov["applied"] else "recorded, not needed"
        lines += [
            "",
            "### Override",
            "",
            f"{state}: by **{ov['approver']}** ({ov['approver_source']}) at {ov['at']}: "
            f'"{ov["reason"]}"',
        ]
    lines += ["", "<details><summary>Per-class scores and latency</summary>", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, s in metrics["candidate"]["per_class"].items():
        lines.append(
            f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
            f"| {s['support']} |"
        )
    lines += ["", "| batch size | p50 ms | p95 ms |", "|---|---|---|"]
    for bs, lat in metrics["candidate"]["latency_ms"].items():
        lines.append(f"| {bs} | {lat['p50']:.2f} | {lat['p95']:.2f} |")
    lines += [
        "",
        f"Test examples: {metrics['test_examples']}; data fingerprint "
        f"`{metrics['data_fingerprint'][:12]}`; latency measured on {metrics['machine']['cpus']} "
        "CPU(s) of the CI machine.",
        "",
        "</details>",
    ]
    if images:
        lines.append("")
        lines += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: list[list[int]], class_names: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion)
    w, h = CONFUSION_SIZE_PX
    fig, ax = plt.subplots(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    try:
        im = ax.imshow(cm, cmap="Blues")
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45 if len(class_names) > 10 else 0)
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix (test split)")
        if len(class_names) <= 20:
            limit = cm.max() / 2 if cm.size else 0
            for (i, j), v in np.ndenumerate(cm):
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > limit else "black",
                )
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        atomic_write_bytes(out, _png(fig))
    finally:
        plt.close(fig)
    return out


def _history_series(train: dict[str, Any]) -> dict[str, list[float]]:
    # train.json "history": a list of per-epoch dicts, or Keras-style {metric: [per epoch]}.
    hist = train.get("history") or {}
    if isinstance(hist, list):
        keys = [k for k in hist[0] if k != "epoch"] if hist else []
        return {k: [float(e[k]) for e in hist if e.get(k) is not None] for k in keys}
    return {k: [float(v) for v in vals] for k, vals in hist.items() if isinstance(vals, list)}


def plot_training(train: dict[str, Any], out: Path) -> Path | None:
    series = {k: v for k, v in _history_series(train).items() if v and "time" not in k}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = TRAINING_SIZE_PX
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    try:
        for name, values in sorted(series.items()):
            ax = ax_loss if "loss" in name else ax_acc
            ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
        for ax, title in ((ax_loss, "loss"), (ax_acc, "metrics")):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write_bytes(out, _png(fig))
    finally:
        plt.close(fig)
    return out


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # no bbox_inches="tight": keep the pixel size
    return buf.getvalue()


def run_report(run_dir: RunDir) -> ReportResult:
    """Write report.md, confusion.png and (when train.json exists) training.png."""
    ev = run_dir.evaluation
    for needed in ("gate.json", "metrics.json"):
        if not (ev / needed).is_file():
            raise DataError(
                f"{ev / needed} does not exist; the report is built from the gate's outputs",
                hint="run `tfship evaluate` first",
            )
    gate, metrics = read_json(ev / "gate.json"), read_json(ev / "metrics.json")
    images = [
        plot_confusion(
            metrics["candidate"]["confusion"], metrics["class_names"], ev / CONFUSION_PNG
        )
    ]
    if run_dir.train_json.is_file():
        curve = plot_training(read_json(run_dir.train_json), ev / TRAINING_PNG)
        if curve is not None:
            images.append(curve)
    md = render_markdown(gate, metrics, [p.name for p in images])
    # The scan stage runs before evaluate and leaves its own section; one MR comment holds both.
    from tfship.scan import summary_path

    scan_summary = summary_path(run_dir)
    if scan_summary.is_file():
        md = md.rstrip("\n") + "\n\n" + scan_summary.read_text(encoding="utf-8").strip() + "\n"
    atomic_write_text(ev / "report.md", md)
    return ReportResult(ev / "report.md", tuple(images), gate["verdict"])
