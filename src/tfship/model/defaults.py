"""Models tfship builds when `model.builder` is not set: one per kind of feature, joined.

Every preprocessing statistic (means, variances, vocabularies) is computed here with NumPy
from `spec.sample`, in a fixed order, and handed to the Keras layers as constants: a rebuild
of the same run (the host copy, export) gets exactly the same model, with or without a
distribution strategy in scope, and the SavedModel takes raw values.

Missing values: a NaN numeric value (an empty CSV cell, a feature left out of a tf.Example) is
replaced by the training mean inside the model; an empty or unseen string is the lookups'
out-of-vocabulary token. Neither crashes a served request.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import keras
import numpy as np

from tfship.data.schema import Feature, Kind
from tfship.model.spec import ModelSpec

# keras.layers.TextVectorization's default standardisation ("lower_and_strip_punctuation").
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~\']')


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    dropout: float = 0.25,
    input_name: str = "pixels",
) -> keras.Model:
    """Two 3x3 conv layers, one max-pool, one dense layer: ≥ 0.95 test accuracy on digits.

    Args:
        input_shape: (height, width, channels) of the raw images.
        num_classes: number of output logits.
        filters: channels of each conv layer (one layer per entry).
        dense_units: width of the hidden dense layer.
        dropout: rate after the pooling and the dense layer (0 disables).
        input_name: the model input's (and serving signature's) name.
    """
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
    if min(input_shape[0], input_shape[1]) >= 4:
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout2")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="small_cnn")


def vocabulary(values: np.ndarray, max_size: int) -> list:
    """The `max_size` most frequent non-missing values, ties broken by value (deterministic)."""
    flat = [v for v in np.asarray(values, dtype=object).ravel().tolist() if v not in ("", -1)]
    counts = Counter(flat)
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))][:max_size]


def text_vocabulary(texts: np.ndarray, max_tokens: int) -> list[str]:
    """Tokens as TextVectorization would split them, most frequent first (2 slots reserved:
    padding and out-of-vocabulary)."""
    counts: Counter[str] = Counter()
    for text in np.asarray(texts, dtype=object).ravel().tolist():
        counts.update(_PUNCTUATION.sub("", str(text).lower()).split())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, _ in ranked][: max(1, max_tokens - 2)]


class ImputeMean(keras.layers.Layer):
    """Replace NaN by a constant per column (the training mean): a missing value stays usable."""

    def __init__(self, mean: Sequence[float] | float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, dtype=np.float32)

    def call(self, x: object) -> object:
        x = keras.ops.cast(x, "float32")
        return keras.ops.where(keras.ops.isnan(x), keras.ops.convert_to_tensor(self.mean), x)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean.tolist()}


def _numeric(feature: Feature, sample: np.ndarray, x: object) -> object:
    values = np.asarray(sample, dtype=np.float64).reshape(len(sample), -1)
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(1)
        var = np.nan_to_num(np.nanvar(values, axis=0), nan=1.0) if len(values) else np.ones(1)
    x = keras.layers.Reshape((values.shape[1],), name=f"{feature.name}_flat")(x)
    x = ImputeMean(mean, name=f"{feature.name}_impute")(x)
    return keras.layers.Normalization(
        mean=mean.astype("float32"),
        variance=np.maximum(var, 1e-12).astype("float32"),
        name=f"{feature.name}_norm",
    )(x)


def _categorical(feature: Feature, sample: np.ndarray, x: object, max_vocabulary: int) -> object:
    vocab = vocabulary(sample, max_vocabulary)
    if feature.dtype == "string":
        lookup = keras.layers.StringLookup(vocabulary=vocab or [""], name=f"{feature.name}_lookup")
    else:
        ids = [int(v) for v in vocab] or [0]
        lookup = keras.layers.IntegerLookup(vocabulary=ids, name=f"{feature.name}_lookup")
    size = len(vocab or [0]) + 1  # + the out-of-vocabulary index 0
    dim = int(min(16, max(2, round(1.6 * size**0.56))))  # fastai's rule of thumb
    emb = keras.layers.Embedding(size, dim, name=f"{feature.name}_embedding")(lookup(x))
    return keras.layers.Flatten(name=f"{feature.name}_flat")(emb)


def _text(
    feature: Feature, sample: np.ndarray, x: object, max_tokens: int, length: int, dim: int
) -> object:
    vocab = text_vocabulary(sample, max_tokens)
    vectorize = keras.layers.TextVectorization(
        max_tokens=len(vocab) + 2,
        output_sequence_length=length,
        vocabulary=vocab,
        name=f"{feature.name}_vectorize",
    )
    tokens = vectorize(x)
    # No mask: an empty text is all padding, and a masked average over nothing is NaN.
    emb = keras.layers.Embedding(len(vocab) + 2, dim, name=f"{feature.name}_emb")
    return keras.layers.GlobalAveragePooling1D(name=f"{feature.name}_pool")(emb(tokens))


def _image(feature: Feature, x: object) -> object:
    x = keras.layers.Rescaling(1.0 / 255.0, name=f"{feature.name}_rescale")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=f"{feature.name}_conv")(
        x
    )
    return keras.layers.GlobalAveragePooling2D(name=f"{feature.name}_pool")(x)


def default_model(
    spec: ModelSpec,
    *,
    hidden_units: Sequence[int] = (64, 32),
    dropout: float = 0.1,
    max_vocabulary: int = 1000,
    max_tokens: int = 20_000,
    sequence_length: int = 32,
    embedding_dim: int = 32,
) -> keras.Model:
    """A model for any feature set: the small CNN for one image; otherwise one branch per
    feature (numeric: impute + normalise; categorical: lookup + embedding; text: vectorise +
    embedding + average; image: a conv layer + pooling), concatenated, then an MLP and the
    task's head.

    Args:
        hidden_units: widths of the dense layers after the concatenation.
        dropout: rate after each dense layer (0 disables).
        max_vocabulary: most frequent values kept per categorical feature.
        max_tokens: vocabulary size per text feature.
        sequence_length: tokens kept per text value.
        embedding_dim: width of the text embeddings.
    """
    image = spec.schema.single_image
    if image is not None:
        return small_cnn(image.shape, spec.output_width, input_name=image.name)
    inputs = spec.inputs()
    branches = []
    for feature in spec.schema.features:
        sample, x = spec.column(feature.name), inputs[feature.name]
        if feature.kind is Kind.NUMERIC:
            branches.append(_numeric(feature, sample, x))
        elif feature.kind is Kind.CATEGORICAL:
            branches.append(_categorical(feature, sample, x, max_vocabulary))
        elif feature.kind is Kind.TEXT:
            branches.append(_text(feature, sample, x, max_tokens, sequence_length, embedding_dim))
        else:
            branches.append(_image(feature, x))
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="features")(branches)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    return keras.Model(inputs, spec.head()(x), name=f"default_{spec.task.type}")
