"""Tiny SavedModels for the serving tests: good versions with different weights, and broken ones.

Good versions go through tfship's own export (`export_savedmodel`: signature, manifest, golden
requests, warmup, C++ loader check). Broken ones are built the way a broken export would look:
variables missing, a different signature, NaN outputs, each with a manifest claiming it is fine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.helpers.schemas import pixels_schema
from tfship.config import load_config
from tfship.rundir import RunDir

MANIFEST = Path("assets.extra") / "tfship-manifest.json"


def tiny_model(seed: int, *, nan: bool = False):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    if nan:
        kernel, bias = model.layers[-1].get_weights()
        model.layers[-1].set_weights([np.full_like(kernel, np.nan), bias])
    return model


def golden_pixels(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, 8, 8, 1)).astype("float32")


def export_good(root: Path, version: int, seed: int) -> RunDir:
    from tfship.export import export_savedmodel

    run_dir = RunDir(root / f"run-v{version}")
    cfg = load_config(None)
    export_savedmodel(
        tiny_model(seed),
        cfg=cfg,
        run_dir=run_dir,
        schema=pixels_schema(),
        label_names=[str(i) for i in range(10)],
        golden_x={"pixels": golden_pixels()},
        warmup_x={"pixels": golden_pixels(2)},
        training_summary={},
        data_fingerprint="test",
        version=version,
    )
    return run_dir


def _copy_as(src: RunDir, root: Path, version: int, name: str) -> tuple[RunDir, Path]:
    old = next(p for p in src.export.iterdir() if p.name.isdigit())
    run_dir = RunDir(root / f"run-{name}")
    dst = run_dir.export / str(version)
    shutil.copytree(old, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    manifest["version"] = version
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return run_dir, dst


def export_missing_variables(good: RunDir, root: Path, version: int) -> RunDir:
    run_dir, dst = _copy_as(good, root, version, "missing-variables")
    shutil.rmtree(dst / "variables")
    return run_dir


LABELS = [str(i) for i in range(10)]


def _endpoints(model, input_name: str):
    """The signatures tfship's export writes for a digits classifier: serving_default and
    classify (tf.Example in), from tfship.export itself."""
    from tfship.export import example_function, signature_function
    from tfship.task import ClassificationTask

    schema, task = pixels_schema(name=input_name), ClassificationTask()
    serve, spec = signature_function(model, schema, task, LABELS)
    return schema, serve, spec, example_function(model, schema, task, LABELS, "classify")


def _archive(model, dst: Path, input_name: str) -> None:
    import keras
    import tensorflow as tf

    _, serve, spec, classify = _endpoints(model, input_name)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=spec)
    archive.add_endpoint(
        "classify", classify, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")]
    )
    tmp = dst.with_name(".tmp-" + dst.name)
    archive.write_out(str(tmp), verbose=False)
    (tmp / "assets.extra").mkdir(exist_ok=True)
    tmp.rename(dst)


def _replace_model(good: RunDir, root: Path, version: int, name: str, model, input_name: str):
    run_dir, dst = _copy_as(good, root, version, name)
    manifest = (dst / MANIFEST).read_bytes()
    shutil.rmtree(dst)
    _archive(model, dst, input_name)
    (dst / MANIFEST).write_bytes(manifest)  # the manifest still promises the good answers
    return run_dir


def export_wrong_signature(good: RunDir, root: Path, version: int) -> RunDir:
    return _replace_model(good, root, version, "wrong-signature", tiny_model(1), "image")


def export_nan_outputs(good: RunDir, root: Path, version: int) -> RunDir:
    return _replace_model(good, root, version, "nan", tiny_model(1, nan=True), "pixels")


def export_variant(good: RunDir, root: Path, version: int, seed: int) -> RunDir:
    """A good model with other weights: same signature, its own golden outputs in the manifest.

    Cheaper than a second full export (no C++ loader run); the deploy verifies it server-side.
    """
    import tensorflow as tf

    model = tiny_model(seed)
    run_dir, dst = _copy_as(good, root, version, f"v{version}")
    manifest = json.loads((dst / MANIFEST).read_text())
    shutil.rmtree(dst)
    _archive(model, dst, "pixels")
    from tfship.features_io import serialize

    schema, serve, _, classify = _endpoints(model, "pixels")
    x = np.asarray(manifest["golden"]["inputs"]["pixels"], dtype="float32")
    outputs = {k: v.numpy() for k, v in serve(tf.constant(x)).items()}
    outputs["class_name"] = [c.decode() for c in outputs["class_name"]]
    manifest["golden"]["outputs"] = {k: np.asarray(v).tolist() for k, v in outputs.items()}
    block = manifest["golden"]["examples"]["classify"]
    scored = classify(tf.constant(serialize(schema, block["examples"])))
    block["outputs"] = {
        "scores": scored["scores"].numpy().tolist(),
        "classes": [[c.decode() for c in row] for row in scored["classes"].numpy()],
    }
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return run_dir
