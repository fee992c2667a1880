"""Report plots as data: a task says what to draw (`PlotSpec`), the report draws it.

Specs are plain JSON-able data, so `metrics.json` can keep them and a merge-request comment or a
dashboard can redraw them; `render_png` draws one with matplotlib (imported only here).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PlotKind = Literal["curve", "matrix", "scatter", "bars"]


@dataclass(frozen=True)
class PlotSpec:
    """One plot of the evaluation report.

    Attributes:
        name: file stem in `evaluation/` (`roc`, `pr`, `calibration`, `confusion`, `residuals`).
        kind: `curve` (lines through `series`), `scatter` (points of `series`), `matrix`
            (`matrix` as a heat map, `ticks` on both axes: rows true, columns predicted) or
            `bars` (one bar per tick, heights in `series[<name>][1]`).
        title, x_label, y_label: as drawn.
        series: legend name -> (x values, y values).
        reference: a guide line: `diagonal` (y = x, chance or perfect calibration), `zero`
            (y = 0, residuals) or None.
    """

    name: str
    kind: PlotKind
    title: str
    x_label: str = ""
    y_label: str = ""
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    matrix: list[list[int]] | None = None
    ticks: tuple[str, ...] = ()
    reference: Literal["diagonal", "zero"] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def render_png(spec: PlotSpec, *, dpi: int = 80, size: tuple[float, float] = (6.0, 5.0)) -> bytes:
    """Draw `spec` and return the PNG bytes (matplotlib's Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        if spec.kind == "matrix":
            _matrix(ax, fig, spec)
        elif spec.kind == "bars":
            ((_, heights),) = spec.series.values()
            ax.bar(range(len(heights)), heights)
            ax.set_xticks(range(len(spec.ticks)), spec.ticks, rotation=45)
        else:
            for label, (xs, ys) in spec.series.items():
                if spec.kind == "scatter":
                    ax.scatter(xs, ys, s=8, alpha=0.6, label=label)
                else:
                    ax.plot(xs, ys, marker="." if len(xs) <= 20 else None, label=label)
            if spec.reference == "diagonal":
                ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
            elif spec.reference == "zero":
                ax.axhline(0.0, linestyle="--", color="grey", linewidth=1)
            if len(spec.series) > 1:
                ax.legend()
        ax.set_title(spec.title)
        ax.set_xlabel(spec.x_label)
        ax.set_ylabel(spec.y_label)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def _matrix(ax: Any, fig: Any, spec: PlotSpec) -> None:
    matrix = spec.matrix or []
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(spec.ticks))
    ax.set_xticks(ticks, spec.ticks, rotation=45 if len(spec.ticks) > 10 else 0)
    ax.set_yticks(ticks, spec.ticks)
    if len(spec.ticks) <= 20:  # numbers in the cells stay legible up to about 20 classes
        top = max((max(row) for row in matrix if row), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                colour = "white" if top and count > top / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
