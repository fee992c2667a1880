"""Tiny SavedModels with tfship's serving signature, for stand-in tests.

The signature follows docs/run-directory.md: ``serving_default`` takes ``pixels``
(float32[batch, 8, 8, 1], raw values in [0, 255]) and returns ``probabilities``
(float32[batch, 10]) and ``class_id`` (int64[batch]). A second signature,
``probabilities_only``, has a single output, to check TF Serving's plain-list row format.
Exported with ``keras.export.ExportArchive`` as the project's export stage does.

Any-task models (named inputs, strings, int64, tf.Example endpoints), small and deterministic:
* ``export_tabular_binary``: ``amount`` float32[batch] + ``country`` string[batch] ->
  ``probability``, ``class_id``, ``class_name``; endpoints ``classify`` (``scores``/``classes``)
  and ``regress`` (``outputs``), each one DT_STRING input ``inputs`` of serialized tf.Example.
* ``export_regression``: ``x`` float32[batch, 3] + ``count`` int64[batch] -> ``prediction``;
  endpoint ``regress``.
* ``export_text``: ``text`` string[batch] -> ``score``, ``label`` (string) and ``text_bytes``
  (the input echoed: TF Serving writes ``*_bytes`` string outputs as ``{"b64": ...}``).
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


BINARY_LABELS = ("legit", "fraud")
COUNTRIES = ("de", "fr", "us")


def _example_parser(spec: dict):
    import tensorflow as tf

    def parse(inputs):
        return tf.io.parse_example(inputs, spec)

    return parse


def export_tabular_binary(path: Path, seed: int) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    amount = keras.Input((), name="amount")
    country = keras.Input((), dtype="string", name="country")
    onehot = keras.layers.StringLookup(vocabulary=list(COUNTRIES), output_mode="one_hot")(country)
    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(amount / 100.0), onehot])
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model([amount, country], out)
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = tf.constant(BINARY_LABELS)

    def serve(amount, country):
        p = model([amount, country], training=False)[:, 0]
        class_id = tf.cast(p > 0.5, tf.int64)
        return {"probability": p, "class_id": class_id, "class_name": tf.gather(names, class_id)}

    parse = _example_parser(
        {
            "amount": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
            "country": tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
    )

    def classify(inputs):
        f = parse(inputs)
        p = model([f["amount"], f["country"]], training=False)[:, 0]
        batch = tf.shape(p)[0]
        return {
            "scores": tf.stack([1.0 - p, p], axis=1),
            "classes": tf.tile(names[tf.newaxis, :], [batch, 1]),
        }

    def regress(inputs):
        f = parse(inputs)
        return {"outputs": model([f["amount"], f["country"]], training=False)[:, 0]}

    examples = [tf.TensorSpec([None], tf.string, name="inputs")]
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="amount"),
            tf.TensorSpec([None], tf.string, name="country"),
        ],
    )
    archive.add_endpoint("classify", classify, input_signature=examples)
    archive.add_endpoint("regress", regress, input_signature=examples)
    archive.write_out(str(path), verbose=False)
    return path


def export_regression(path: Path, seed: int) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    x = keras.Input((3,), name="x")
    count = keras.Input((), dtype="int64", name="count")
    count_f = keras.layers.Reshape((1,))(keras.ops.cast(count, "float32"))
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([x, count_f]))
    model = keras.Model([x, count], out)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(x, count):
        return {"prediction": model([x, count], training=False)[:, 0]}

    parse = _example_parser(
        {
            "x": tf.io.FixedLenFeature([3], tf.float32),
            "count": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        }
    )

    def regress(inputs):
        f = parse(inputs)
        return {"outputs": model([f["x"], f["count"]], training=False)[:, 0]}

    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([None], tf.int64, name="count"),
        ],
    )
    archive.add_endpoint(
        "regress", regress, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")]
    )
    archive.write_out(str(path), verbose=False)
    return path


def export_text(path: Path, seed: int) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    text = keras.Input((), dtype="string", name="text")
    hashed = keras.layers.Hashing(num_bins=32)(keras.layers.Reshape((1,))(text))
    x = keras.layers.Flatten()(keras.layers.Embedding(32, 4)(hashed))
    model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(x))
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(text):
        score = model(text, training=False)[:, 0]
        label = tf.where(score > 0.5, tf.constant("pos"), tf.constant("neg"))
        return {"score": score, "label": label, "text_bytes": text}

    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
    )
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
