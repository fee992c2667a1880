"""Tiny SavedModels with tfship's serving signature, for stand-in tests.

The signature follows docs/run-directory.md: ``serving_default`` takes ``pixels``
(float32[batch, 8, 8, 1], raw values in [0, 255]) and returns ``probabilities``
(float32[batch, 10]) and ``class_id`` (int64[batch]). A second signature,
``probabilities_only``, has a single output, to check TF Serving's plain-list row format.
Exported with ``keras.export.ExportArchive`` as the project's export stage does.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def export_tiny_model(path: Path, seed: int) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")]

    def serve(pixels):
        probabilities = model(pixels, training=False)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    def probabilities_only(pixels):
        return {"probabilities": model(pixels, training=False)}

    archive.add_endpoint("serving_default", serve, input_signature=spec)
    archive.add_endpoint("probabilities_only", probabilities_only, input_signature=spec)
    archive.write_out(str(path), verbose=False)
    return path


def publish(source: Path, base_path: Path, version: int) -> Path:
    """Copy under a non-numeric name, then rename: the poller never sees a partial version."""
    base_path.mkdir(parents=True, exist_ok=True)
    staging = base_path / f".tmp-{version}"
    shutil.copytree(source, staging)
    final = base_path / str(version)
    staging.rename(final)
    return final


def publish_broken(source: Path, base_path: Path, version: int) -> Path:
    """A version directory whose variables are missing: it must fail to load."""
    final = publish(source, base_path, version)
    shutil.rmtree(final / "variables")
    return final
