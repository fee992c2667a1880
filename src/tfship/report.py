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

from tfship import mdescape as md
from tfship.errors import DataError
from tfship.fsutil import atomic_write_bytes, atomic_write_text, read_json
from tfship.redact import redact_text
from tfship.rundir import RunDir

MARKER = "<!-- tfship-evaluation-report -->"
CONFUSION_PNG = "confusion.png"
TRAINING_PNG = "training.png"
CONFUSION_SIZE_PX = (640, 560)  # width, height: fixed so the comment layout is stable
TRAINING_SIZE_PX = (800, 320)
_DPI = 80
MAX_CLASS_ROWS = 200  # a comment has a size limit (GitHub: 65,536 characters)
_TICK_LABEL_CHARS = 24

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


def _checks_table(checks: list[dict[str, Any]]) -> list[str]:
    # `source`: where each threshold came from (pipeline.yaml@<commit>, a variable and who
    # started the job, ...); gate.json files written before it existed have none.
    sourced = any(c.get("source") for c in checks)
    head = "| check | candidate | champion | threshold | Δ | result |"
    lines = [head + (" threshold from |" if sourced else ""), "|---|---|---|---|---|---|"]
    lines[1] += "---|" if sourced else ""
    for c in checks:
        mark = ":white_check_mark:" if c["passed"] else ":x:"
        row = (
            f"| {md.text(c['metric'], 60)} ({md.text(c['kind'], 20)}) | {_num(c['candidate'])} "
            f"| {_num(c['baseline'])} | {md.text(c['threshold'], 60)} "
            f"| {_num(c['delta'], signed=True)} | {mark} |"
        )
        lines.append(row + (f" {md.text(c.get('source') or '–', 120)} |" if sourced else ""))
    if not checks:
        lines.append("| (no checks: gate disabled without thresholds) | | | | | |")
    return lines


def render_markdown(gate: dict[str, Any], metrics: dict[str, Any], images: list[str]) -> str:
    """report.md from gate.json and metrics.json. Deterministic: same input, same text.

    Every value that comes from data or configuration (model, class and metric names, labels,
    notes, the override's reason) is escaped with tfship.mdescape: the text is a comment that
    GitLab/GitHub render, and a class name is whatever a folder was called.
    """
    cand, champ = gate["candidate"], gate.get("champion")
    title = f"{md.text(gate['model_name'], 80)} {md.text(_version(cand), 40)}"
    lines = [MARKER, f"## {title}: evaluation", ""]
    lines.append(HEADLINES[gate["verdict"]] + f" (run mode {md.code(gate['run_mode'], 20)})")
    lines.append("")
    note = md.text(gate.get("champion_note") or "", 300)
    if champ:
        label = f" labelled {md.code(champ['label'], 60)}" if champ.get("label") else ""
        lines.append(
            f"Compared with the champion {md.text(_version(champ), 40)}{label} on the same "
            "test split."
        )
    elif gate.get("no_repository"):
        lines.append(
            f"**Warning: no model repository configured: change thresholds skipped.** ({note})"
        )
    else:
        lines.append(f"**First run: no champion.** Only absolute thresholds apply. ({note})")
    lines += ["", *_checks_table(gate["checks"])]
    failed = [c for c in gate["checks"] if not c["passed"]]
    if failed:
        lines += ["", "### Failed checks", ""]
        lines += [
            f"- **{md.text(c['metric'], 60)}** ({md.text(c['kind'], 20)}): "
            f"{md.text(c['why'], 300)}."
            for c in failed
        ]
    ov = gate.get("override")
    if ov:
        state = "applied" if ov["applied"] else "recorded, not needed"
        lines += [
            "",
            "### Override",
            "",
            f"{state}: by **{md.text(ov['approver'], 60)}** ({md.text(ov['approver_source'], 80)})"
            f' at {md.text(ov["at"], 40)}: "{md.text(ov["reason"], 500)}"',
        ]
    lines += ["", "<details><summary>Per-class scores and latency</summary>", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    per_class = metrics["candidate"]["per_class"]
    for name, s in list(per_class.items())[:MAX_CLASS_ROWS]:
        lines.append(
            f"| {md.text(name, 60)} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
            f"| {s['support']} |"
        )
    if len(per_class) > MAX_CLASS_ROWS:
        lines.append(f"| …and {len(per_class) - MAX_CLASS_ROWS} more in metrics.json | | | | |")
    lines += ["", "| batch size | p50 ms | p95 ms |", "|---|---|---|"]
    for bs, lat in metrics["candidate"]["latency_ms"].items():
        lines.append(f"| {md.text(bs, 20)} | {lat['p50']:.2f} | {lat['p95']:.2f} |")
    lines += [
        "",
        f"Test examples: {metrics['test_examples']}; data fingerprint "
        f"{md.code(str(metrics['data_fingerprint'])[:12])}; latency measured on "
        f"{metrics['machine']['cpus']} CPU(s) of the CI machine.",
        "",
        "</details>",
    ]
    if images:
        lines.append("")
        lines += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def _tick_label(name: str) -> str:
    # Matplotlib reads "$...$" as mathtext (a malformed one raises and loses the report) and
    # a long name squeezes the matrix out of its fixed-size image.
    short = name if len(name) <= _TICK_LABEL_CHARS else name[: _TICK_LABEL_CHARS - 1] + "…"
    return " ".join(short.split()).replace("$", r"\$")


def plot_confusion(confusion: list[list[int]], class_names: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion)
    class_names = [_tick_label(n) for n in class_names]
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
    report = render_markdown(gate, metrics, [p.name for p in images])
    # The scan stage runs before evaluate and leaves its own section; one MR comment holds both.
    from tfship.scan import summary_path

    scan_summary = summary_path(run_dir)
    if scan_summary.is_file():
        summary = scan_summary.read_text(encoding="utf-8").strip()
        report = report.rstrip("\n") + "\n\n" + summary + "\n"
    # The comment is public to everyone who can see the merge request: no credentials in it.
    atomic_write_text(ev / "report.md", redact_text(report))
    return ReportResult(ev / "report.md", tuple(images), gate["verdict"])
