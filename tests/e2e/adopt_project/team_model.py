"""The team's own model, at the root of its repository (pipeline.yaml: model.builder
team_model:build). tfship calls it as build(input_shape, num_classes) for one image feature
and expects logits: the classification task adds the softmax in its loss and serving outputs.
"""

import keras


def build(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape, name="image")
    # pixels arrive raw (0..255): scale inside the model so serving takes raw pixels too
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="team_model")
