"""Real tfship exports for any task, for serving tests: a default model on a small table,
exported by `tfship.export.export_savedmodel` (so with its manifest, golden requests for every
API and warmup records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfship.config import PipelineConfig
from tfship.data.schema import Feature, Kind, Schema
from tfship.rundir import RunDir

SCHEMA = Schema(
    (
        Feature("amount", Kind.NUMERIC, "float32"),
        Feature("country", Kind.CATEGORICAL, "string"),
        Feature("note", Kind.TEXT, "string"),
    ),
    "label",
)


def rows(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 50.0, n).astype(np.float32)
    return {
        "amount": amount,
        "country": rng.choice(["de", "fr", "us", "ünïcode"], n).astype(object),
        "note": np.array(
            [" ".join(rng.choice(["late", "refund", "thanks", "card"], 3)) for _ in range(n)],
            dtype=object,
        ),
    }


def export_task_model(root: Path, task: str, model_name: str, version: int = 1) -> Path:
    """Build the default model for `task` on `rows()` (untrained: serving does not care) and
    export it as version `version` under `root`; returns the export directory."""
    import keras

    from tfship.export import export_savedmodel
    from tfship.model import ModelSpec, build_model
    from tfship.task import load_task

    keras.utils.set_random_seed(version)
    labels = {"binary": ("legit", "fraud"), "regression": ("target",)}.get(task, ("a", "b", "c"))
    x = rows()
    spec = ModelSpec(SCHEMA, load_task(task), labels, x)
    cfg = PipelineConfig.model_validate(
        {
            "task": {"type": task},
            "project": {"model_name": model_name},
            "export": {"version": version},
        }
    )
    model = build_model(cfg.model, spec)
    result = export_savedmodel(
        model,
        cfg=cfg,
        run_dir=RunDir(root / f"{task}-run"),
        schema=SCHEMA,
        label_names=labels,
        golden_x={k: v[:4] for k, v in x.items()},
        warmup_x={k: v[:3] for k, v in x.items()},
        training_summary={},
        data_fingerprint="test-" + task,
    )
    return result.export_dir
