"""training.png plots metrics only: bookkeeping numbers would set the axis and hide them."""

from __future__ import annotations

from tfship.report import plot_training, training_series

HISTORY = {
    "history": [
        {
            "epoch": e,
            "step": 19 * e,
            "steps": 19,
            "seconds": 0.4,
            "step_seconds": 0.3,
            "eval_seconds": 0.1,
            "loss": 1.0 / e,
            "rmse": 3.0 / e,
            "val_loss": 1.2 / e,
            "val_rmse": 3.3 / e,
        }
        for e in (1, 2, 3)
    ]
}


def test_only_the_tasks_metrics_are_plotted():
    assert sorted(training_series(HISTORY)) == ["loss", "rmse", "val_loss", "val_rmse"]


def test_the_plot_is_written(tmp_path):
    out = plot_training(HISTORY, tmp_path / "training.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"
