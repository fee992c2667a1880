"""The export against TF's session-based loader, run as `saved_model_cli run` in a fresh process.

One real export per module (each saved_model_cli run takes ~7 s on a 2-core runner).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from tests.helpers.schemas import pixels_schema
from tests.unit.test_export import export, tiny_model
from tfship import export as export_mod
from tfship.errors import ModelError
from tfship.rundir import RunDir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> export_mod.ExportResult:
    return export(tiny_model(), RunDir(tmp_path_factory.mktemp("run")).ensure())


def test_the_export_loads_in_the_cpp_loader_and_reproduces_golden_requests(
    exported: export_mod.ExportResult,
) -> None:
    assert exported.verify is not None
    assert exported.verify.cpp_loader_seconds > 0  # the real subprocess ran
    assert exported.verify.max_abs_diff["cpp"] <= 1e-4
    # The C++ loader's answers were compared with the manifest's golden outputs inside export.
    assert exported.verify.max_abs_diff["python"] <= 1e-4
    # 5 predict records for serving_default and 5 classify records for the tf.Example endpoint.
    assert exported.verify.golden_requests == 4 and exported.verify.warmup_records == 10
    assert exported.export_dir.name == "1"


def test_a_keras3_model_saved_with_tf_saved_model_save_fails_the_cpp_loader(
    exported: export_mod.ExportResult, tmp_path: Path
) -> None:
    # DESIGN.md's reason for ExportArchive: this SavedModel reloads in Python but its variables
    # are missing for the session-based loader TF Serving uses. verify_export must catch it.
    from tfship.export import example_function, signature_function
    from tfship.task import ClassificationTask

    model = tiny_model()
    schema, task, labels = pixels_schema(), ClassificationTask(), ["a", "b", "c"]
    serve, spec = signature_function(model, schema, task, labels)
    classify = example_function(model, schema, task, labels, "classify")
    signatures = {
        "serving_default": tf.function(serve, input_signature=spec),
        "classify": tf.function(
            classify, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")]
        ),
    }
    bad = tmp_path / "1"
    tf.saved_model.save(model, str(bad), signatures=signatures)
    # Same weights (same seed) as the good export, so its manifest is right for this model too.
    shutil.copytree(exported.export_dir / "assets.extra", bad / "assets.extra")
    with pytest.raises(ModelError, match=r"C\+\+ loader \(saved_model_cli run\) failed"):
        export_mod.verify_export(bad)


def test_verify_export_rejects_tampered_golden_outputs(
    exported: export_mod.ExportResult, tmp_path: Path
) -> None:
    copy = tmp_path / exported.export_dir.name  # the manifest names its own version
    shutil.copytree(exported.export_dir, copy)
    path = copy / "assets.extra" / "tfship-manifest.json"
    manifest = json.loads(path.read_text())
    manifest["golden"]["outputs"]["probabilities"][1][2] -= 0.25
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"output 'probabilities' differs by 0\.25"):
        export_mod.verify_export(copy)
