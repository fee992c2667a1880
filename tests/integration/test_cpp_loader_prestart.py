"""The loader check's fresh interpreter, started ahead of time: it imports TensorFlow and waits;
the check then uses it (same isolation: it never imports tfship or user code), and an unused
one is stopped, never left behind."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tfserving_standin import testmodels
from tfship import cpp_loader

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return testmodels.export_tiny_model(tmp_path_factory.mktemp("cpp") / "m", 1)


def test_a_prestarted_interpreter_runs_the_check(export):
    import tensorflow as tf

    cpp_loader.prestart()
    (proc,) = cpp_loader._ready
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    outputs, _ = cpp_loader.run_cpp_loader(export, {"pixels": x})
    assert cpp_loader._ready == [] and proc.returncode == 0  # used once, then gone
    expected = tf.saved_model.load(str(export)).signatures["serving_default"](pixels=x)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-6)


def test_an_unused_interpreter_is_stopped(export):
    cpp_loader.prestart()
    (proc,) = cpp_loader._ready
    cpp_loader.discard()
    assert cpp_loader._ready == [] and proc.poll() is not None


def test_a_failing_load_in_the_prestarted_interpreter_is_a_model_error(tmp_path):
    from tfship.errors import ModelError

    cpp_loader.prestart()
    with pytest.raises(ModelError, match="saved_model_cli run\\) failed"):
        cpp_loader.run_cpp_loader(tmp_path, {"pixels": np.zeros((1, 8, 8, 1), np.float32)})
