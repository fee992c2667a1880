"""The team's own unit test, run by the template's unit-tests job."""

import numpy as np

import team_model


def test_build_returns_one_logit_per_class():
    model = team_model.build((8, 8, 1), 3)
    out = model(np.zeros((2, 8, 8, 1), dtype="float32"))
    assert tuple(out.shape) == (2, 3)
