"""The evaluation report: `evaluation/report.md`, the task's plots and `training.png`.

The markdown leads with the verdict and one table (check, candidate, champion, threshold,
delta, result) so a reviewer knows in ten seconds whether the model may go on and why not;
details follow: every metric the task computes (whatever its names), the task's breakdown
(per class, per label, per output), slice tables and the plots the task asks for
(`task.report_plots`, kept as specs in metrics.json and drawn with `tfship.task.render_png`:
ROC, PR and calibration for binary, the confusion matrix for classification, residuals for
regression). The same text is the merge-request comment
(tfship.mr_comment), so it starts with a hidden marker that finds that comment again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tfship import mdescape as md
from tfship.errors import DataError
from tfship.evaluation.data_gate import data_section
from tfship.fsutil import atomic_write_bytes, atomic_write_text, read_json
from tfship.redact import redact_text
from tfship.rundir import RunDir
from tfship.task.plots import PlotSpec, render_png

MARKER = "<!-- tfship-evaluation-report -->"
CONFUSION_PNG = "confusion.png"
TRAINING_PNG = "training.png"
CONFUSION_SIZE_PX = (640, 560)  # width, height: fixed so the comment layout is stable
TRAINING_SIZE_PX = (800, 320)
_DPI = 80
MAX_CLASS_ROWS = 200  # a comment has a size limit (GitHub: 65,536 characters)
_TICK_LABEL_CHARS = 24
_COLUMNS = ("precision", "recall", "f1", "support", "rmse", "mae", "r2")
_PLOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

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


def _check_name(c: dict[str, Any], bold: bool = False) -> str:
    metric = f"**{md.text(c['metric'], 60)}**" if bold else md.text(c["metric"], 60)
    if c.get("feature") and c["kind"] == "data":
        return f"{metric} of {md.text(c['feature'], 60)} (data)"
    if c.get("feature"):
        return f"{metric} by {md.text(c['feature'], 60)} (slice)"
    return f"{metric} ({md.text(c['kind'], 20)})"


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
            f"| {_check_name(c)} | {_num(c['candidate'])} "
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
    if champ and champ.get("incomparable"):
        lines.append(
            f"**The champion {md.text(_version(champ), 40)} could not be scored on this test "
            f"split**, so every change threshold fails: {md.text(champ['incomparable'], 300)}"
        )
    elif champ:
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
        lines += [f"- {_check_name(c, bold=True)}: {md.text(c['why'], 300)}." for c in failed]
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
    lines += data_section(gate.get("data"))
    cand_doc = metrics["candidate"]
    lines += ["", "<details><summary>Metrics, breakdown, slices and latency</summary>", ""]
    lines += _metrics_table(cand_doc, metrics.get("champion"))
    lines += _breakdown_tables(cand_doc)
    for feature, sliced in (cand_doc.get("slices") or {}).items():
        lines += _slice_table(feature, sliced)
    lines += ["| batch size | p50 ms | p95 ms |", "|---|---|---|"]
    for bs, lat in cand_doc["latency_ms"].items():
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


def _cell(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "–" if v is None else md.text(v, 40)
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _metrics_table(cand: dict[str, Any], champ: dict[str, Any] | None) -> list[str]:
    """Every metric the task computes (latency has its own table), with NaN reasons."""
    names = [k for k in cand.get("metrics", {}) if "latency" not in k]
    if not names:
        return []
    champ_metrics = (champ or {}).get("metrics") or {}
    notes = cand.get("notes") or {}
    lines = ["| metric | candidate | champion | note |", "|---|---|---|---|"]
    for k in names:
        note = md.text(notes[k], 200) if k in notes else ""
        lines.append(
            f"| {md.text(k, 60)} | {_cell(cand['metrics'][k])} | "
            f"{_cell(champ_metrics.get(k))} | {note} |"
        )
    return [*lines, ""]


def _score_rows(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    """A table of name -> {column: value} (per class, per label, per output)."""
    if not rows:
        return []
    # metrics.json sorts keys; the report reads best in the usual order.
    first = next(iter(rows.values()))
    columns = sorted(first, key=lambda c: (_COLUMNS.index(c) if c in _COLUMNS else 99, c))
    lines = [
        f"| {md.text(title, 20)} | " + " | ".join(md.text(c, 20) for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, scores in list(rows.items())[:MAX_CLASS_ROWS]:
        cells = " | ".join(_cell(scores.get(c), 3) for c in columns)
        lines.append(f"| {md.text(name, 60)} | {cells} |")
    if len(rows) > MAX_CLASS_ROWS:
        more = f"| …and {len(rows) - MAX_CLASS_ROWS} more in metrics.json |"
        lines.append(more + " |" * len(columns))
    return [*lines, ""]


def _breakdown_tables(cand: dict[str, Any]) -> list[str]:
    lines = _score_rows("class", cand.get("per_class") or {})
    lines += _score_rows("label", cand.get("per_label") or {})
    lines += _score_rows("output", cand.get("per_output") or {})
    confusion = cand.get("confusion")
    if cand.get("positive_label") is not None and confusion and len(confusion) == 2:
        (tn, fp), (fn, tp) = confusion
        lines += [
            f"Positive label {md.text(cand['positive_label'], 60)}, threshold "
            f"{_cell(cand.get('threshold'))}: {tp} true positives, {fp} false positives, "
            f"{fn} false negatives, {tn} true negatives.",
            "",
        ]
    return lines


def _slice_table(feature: str, sliced: dict[str, Any]) -> list[str]:
    """One row per value of `feature` (slice values are data: escaped like class names)."""
    slices = sliced.get("slices") or []
    names = list(slices[0]["metrics"]) if slices else []
    lines = [
        f"Slices of {md.code(feature, 60)} (gated from {sliced.get('min_size')} examples):",
        "",
        "| value | examples | gated | " + " | ".join(md.text(n, 30) for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for s in slices[:MAX_CLASS_ROWS]:
        cells = " | ".join(_cell(s["metrics"].get(n)) for n in names)
        gated = "yes" if s.get("gated") else "no"
        lines.append(f"| {md.text(s['value'], 60)} | {s['count']} | {gated} | {cells} |")
    if len(slices) > MAX_CLASS_ROWS:
        lines.append(f"| …and {len(slices) - MAX_CLASS_ROWS} more in metrics.json |||")
    return [*lines, ""]


def _tick_label(name: str) -> str:
    # Matplotlib reads "$...$" as mathtext (a malformed one raises and loses the report) and
    # a long name squeezes the matrix out of its fixed-size image.
    short = name if len(name) <= _TICK_LABEL_CHARS else name[: _TICK_LABEL_CHARS - 1] + "…"
    return " ".join(short.split()).replace("$", r"\$")


def _safe_spec(spec: PlotSpec) -> PlotSpec:
    """Label names and titles are data: no mathtext ("$"), bounded ticks."""
    text = lambda v: str(v).replace("$", r"\$")  # noqa: E731
    return replace(
        spec,
        title=text(spec.title),
        x_label=text(spec.x_label),
        y_label=text(spec.y_label),
        ticks=tuple(_tick_label(t) for t in spec.ticks),
        series={text(k): v for k, v in spec.series.items()},
    )


def plot_spec(spec: PlotSpec, out: Path) -> Path:
    """Draw one of the task's plot specs at the report's fixed size."""
    w, h = CONFUSION_SIZE_PX
    png = render_png(_safe_spec(spec), dpi=_DPI, size=(w / _DPI, h / _DPI))
    atomic_write_bytes(out, png)
    return out


def plot_confusion(confusion: list[list[int]], class_names: list[str], out: Path) -> Path:
    spec = PlotSpec(
        "confusion",
        "matrix",
        "Confusion matrix (test split)",
        "predicted",
        "true",
        matrix=confusion,
        ticks=tuple(class_names),
    )
    return plot_spec(spec, out)


def _plot_specs(metrics: dict[str, Any]) -> list[PlotSpec]:
    cand = metrics["candidate"]
    if "plots" not in cand:  # metrics.json written before the task seam: the confusion only
        return [
            PlotSpec(
                "confusion",
                "matrix",
                "Confusion matrix (test split)",
                "predicted",
                "true",
                matrix=cand["confusion"],
                ticks=tuple(metrics["class_names"]),
            )
        ]
    specs = []
    for doc in cand["plots"]:
        fields = {k: v for k, v in doc.items() if k in PlotSpec.__dataclass_fields__}
        fields["ticks"] = tuple(fields.get("ticks") or ())
        # The name becomes a file name in evaluation/: only a plain stem is accepted.
        if _PLOT_NAME.fullmatch(str(fields.get("name", ""))):
            specs.append(PlotSpec(**fields))
    return specs


def _history_series(train: dict[str, Any]) -> dict[str, list[float]]:
    # train.json "history": a list of per-epoch dicts, or Keras-style {metric: [per epoch]}.
    hist = train.get("history") or {}
    if isinstance(hist, list):
        keys = [k for k in hist[0] if k != "epoch"] if hist else []
        return {k: [float(e[k]) for e in hist if e.get(k) is not None] for k in keys}
    return {k: [float(v) for v in vals] for k, vals in hist.items() if isinstance(vals, list)}


# Per-epoch bookkeeping in train.json's history, not metrics: plotted next to accuracy, the step
# counter (0-280) set the y-axis and flattened every metric at the bottom.
_NOT_METRICS = frozenset({"step", "steps", "seconds", "step_seconds", "eval_seconds"})


def training_series(train: dict[str, Any]) -> dict[str, list[float]]:
    """The metric curves of train.json's history (loss, the task's metrics, val_*)."""
    return {
        k: v
        for k, v in _history_series(train).items()
        if v and k not in _NOT_METRICS and "time" not in k and not k.endswith("seconds")
    }


def plot_training(train: dict[str, Any], out: Path) -> Path | None:
    series = training_series(train)
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
    """Write report.md, the task's plots (<name>.png) and (with train.json) training.png."""
    ev = run_dir.evaluation
    for needed in ("gate.json", "metrics.json"):
        if not (ev / needed).is_file():
            raise DataError(
                f"{ev / needed} does not exist; the report is built from the gate's outputs",
                hint="run `tfship evaluate` first",
            )
    gate, metrics = read_json(ev / "gate.json"), read_json(ev / "metrics.json")
    images = [plot_spec(spec, ev / f"{spec.name}.png") for spec in _plot_specs(metrics)]
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
