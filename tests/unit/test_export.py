"""Export: numeric monotonic versions, manifest, warmup records, and rejection of bad models.

The subprocess run of `saved_model_cli` (~7 s) is replaced here by the same session-based load
done in this process; tests/integration/test_export_cpp_loader.py runs the real subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.schemas import pixels_schema
from tfship import export as export_mod
from tfship import verify as verify_mod
from tfship.config import PipelineConfig
from tfship.errors import DataError, ModelError
from tfship.rundir import RunDir

H, W, C, CLASSES = 8, 8, 1, 3
DIGEST = "registry.example.invalid/team/train@sha256:" + "ab" * 32


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((H, W, C)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )


def pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, H, W, C)).astype(np.float32)


def export(
    model: keras.Model, run_dir: RunDir, cfg: PipelineConfig | None = None, **kw: Any
) -> export_mod.ExportResult:
    cfg = cfg or PipelineConfig.model_validate(
        {"project": {"model_name": "tiny"}, "export": {"version_scheme": "sequential"}}
    )
    return export_mod.export_savedmodel(
        model,
        cfg=cfg,
        run_dir=run_dir,
        schema=pixels_schema((H, W, C)),
        label_names=["a", "b", "c"],
        golden_x={"pixels": pixels(4)},
        warmup_x={"pixels": pixels(5, seed=2)},
        training_summary={"steps": 10, "val_accuracy": 0.9},
        data_fingerprint="f" * 64,
        **kw,
    )


def session_loader(
    export_dir: Path, inputs: dict[str, np.ndarray], *, timeout: float = 0
) -> tuple[dict[str, np.ndarray], float]:
    # What `saved_model_cli run` does, without the fresh process.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(export_dir))
        sig = meta.signature_def["serving_default"]
        feed = {sig.inputs[k].name: v for k, v in inputs.items()}
        return sess.run({k: t.name for k, t in sig.outputs.items()}, feed), 0.0


@pytest.fixture(autouse=True)
def _in_process_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_mod, "run_cpp_loader", session_loader)


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    return RunDir(tmp_path / "run").ensure()


def entries(run_dir: RunDir) -> list[str]:
    """What the export root holds besides verification records (`<version>.verified.json`)."""
    if not run_dir.export.exists():
        return []
    return sorted(p.name for p in run_dir.export.iterdir() if not p.name.endswith(".verified.json"))


def manifest_of(result: export_mod.ExportResult) -> dict[str, Any]:
    assert result.manifest is not None
    return json.loads(result.manifest.read_text())


def test_timestamp_versions_never_go_below_the_clock_or_the_run_s_own_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "export"
    root.mkdir()
    monkeypatch.setattr(export_mod.time, "time", lambda: 1_800_000_000.7)
    assert export_mod.next_version(root, "timestamp") == 1_800_000_000
    (root / "1800000005").mkdir()  # an earlier export of this run, a few seconds ahead
    assert export_mod.next_version(root, "timestamp") == 1_800_000_006
    assert export_mod.next_version(root, "sequential") == 1_800_000_006
    (root / ".tmp-1800000009-abc").mkdir()  # half-written exports are not versions
    assert export_mod.next_version(root, "timestamp") == 1_800_000_006


def test_two_exports_get_consecutive_versions_and_leave_no_temp_dirs(run_dir: RunDir) -> None:
    model = tiny_model()
    first, second = export(model, run_dir), export(model, run_dir)
    assert (first.version, second.version) == (1, 2)
    assert entries(run_dir) == ["1", "2"]
    assert (run_dir.export / "2" / "saved_model.pb").is_file()
    assert manifest_of(second)["version"] == 2
    assert second.verify is not None and second.verify.export_dir == run_dir.export / "2"


def test_the_next_version_follows_the_highest_present_not_the_count(run_dir: RunDir) -> None:
    (run_dir.export / "7").mkdir(parents=True)
    (run_dir.export / "notes").mkdir()
    assert export(tiny_model(), run_dir).version == 8


def test_an_explicit_version_is_used_and_never_overwritten(run_dir: RunDir) -> None:
    cfg = PipelineConfig.model_validate({"export": {"version": 5}})
    assert export(tiny_model(), run_dir, cfg).version == 5
    with pytest.raises(ModelError, match=r"export/5 already exists"):
        export(tiny_model(), run_dir, cfg)
    assert entries(run_dir) == ["5"]


def _doc_manifest_example(repo_root: Path) -> dict[str, Any]:
    doc = (repo_root / "docs" / "run-directory.md").read_text()
    block = re.search(r"tfship-manifest.json`\n\n```json\n(.*?)\n```", doc, re.S)
    assert block, "docs/run-directory.md lost its manifest example"
    return json.loads(block.group(1))


def test_the_manifest_has_every_documented_field_and_provenance(
    run_dir: RunDir, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_PIPELINE_ID", "4242")
    cfg = PipelineConfig.model_validate(
        {"project": {"model_name": "tiny"}, "export": {"image_digest": DIGEST}}
    )
    m = manifest_of(export(tiny_model(), run_dir, cfg))
    doc = _doc_manifest_example(repo_root)
    assert set(doc) <= set(m), f"missing: {set(doc) - set(m)}"
    assert set(doc["golden"]) <= set(m["golden"])
    assert m["format"] == "tfship-manifest/2" and m["model_name"] == "tiny"
    assert m["schema"]["features"] == {
        "pixels": {"kind": "image", "dtype": "float32", "shape": [H, W, C]}
    }
    assert m["task"]["type"] == "classification" and m["label_names"] == ["a", "b", "c"]
    assert m["ci"]["CI_PIPELINE_ID"] == "4242"
    assert m["image_digest"] == DIGEST
    assert m["tensorflow"] == tf.__version__ and m["keras"] == keras.__version__
    assert m["config_sha256"] == cfg.fingerprint()
    assert m["data_fingerprint"] == "f" * 64
    assert m["class_names"] == ["a", "b", "c"]
    assert m["training"] == {"steps": 10, "val_accuracy": 0.9}
    assert m["signature"] == {
        "name": "serving_default",
        "inputs": {"pixels": {"dtype": "float32", "shape": [-1, H, W, C]}},
        "outputs": {
            "class_id": {"dtype": "int64", "shape": [-1]},
            "class_name": {"dtype": "string", "shape": [-1]},
            "probabilities": {"dtype": "float32", "shape": [-1, CLASSES]},
        },
    }
    assert m["endpoints"]["classify"]["inputs"] == {"inputs": {"dtype": "string", "shape": [-1]}}
    assert set(m["git"]) >= {"commit", "ref"}


def test_golden_outputs_are_what_the_model_gives_for_raw_pixels(run_dir: RunDir) -> None:
    model = tiny_model()
    golden = manifest_of(export(model, run_dir))["golden"]
    x = np.asarray(golden["inputs"]["pixels"], dtype=np.float32)
    np.testing.assert_array_equal(x, pixels(4))
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
    np.testing.assert_allclose(golden["outputs"]["probabilities"], probs, atol=1e-6)
    assert golden["outputs"]["class_id"] == probs.argmax(-1).tolist()
    assert golden["tolerance"] == 1e-4


def test_the_export_stores_every_weight_once(run_dir: RunDir) -> None:
    # keras-team/keras#23553: a plain ExportArchive.track(model) export writes each weight
    # twice (2x on disk and in every loader's memory, TF Serving's included).
    layers = [keras.layers.Flatten(), keras.layers.BatchNormalization(), keras.layers.Dense(3)]
    model = keras.Sequential([keras.Input((H, W, C)), *layers])
    result = export(model, run_dir)
    reader = tf.train.load_checkpoint(str(result.export_dir / "variables" / "variables"))
    stored = {k: s for k, s in reader.get_variable_to_shape_map().items() if "VARIABLE" in k}
    assert sum(int(np.prod(s)) for s in stored.values()) == model.count_params()
    loaded = tf.saved_model.load(str(result.export_dir))
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert len(loaded.non_trainable_variables) == len(model.non_trainable_variables)


def test_the_warmup_file_holds_prediction_logs_for_the_model_and_signature(run_dir: RunDir) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    result = export(tiny_model(), run_dir)
    path = result.export_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]
    # One predict record per sample for serving_default, then one ClassifyLog per sample for
    # the tf.Example endpoint TF Serving's :classify calls.
    assert len(records) == result.warmup_records == 10
    assert [r.WhichOneof("log_type") for r in records] == ["predict_log"] * 5 + ["classify_log"] * 5
    for rec in records[5:]:
        req = rec.classify_log.request
        assert req.model_spec.signature_name == "classify"
        assert len(req.input.example_list.examples) == 1
    for i, rec in enumerate(records[:5]):
        req = rec.predict_log.request
        assert req.model_spec.name == "tiny"
        assert req.model_spec.signature_name == "serving_default"
        assert list(req.inputs) == ["pixels"]
        arr = tf.make_ndarray(req.inputs["pixels"])
        assert arr.dtype == np.float32 and arr.shape == (1, H, W, C)
        np.testing.assert_array_equal(arr[0], pixels(5, seed=2)[i])


def test_no_warmup_samples_means_no_warmup_file(run_dir: RunDir) -> None:
    result = export_mod.export_savedmodel(
        tiny_model(),
        cfg=PipelineConfig(),
        run_dir=run_dir,
        schema=pixels_schema((H, W, C)),
        label_names=["a", "b", "c"],
        golden_x={"pixels": pixels(2)},
        warmup_x={"pixels": np.zeros((0, H, W, C), np.float32)},
        training_summary={},
        data_fingerprint="x",
    )
    assert result.warmup_records == 0
    assert not (result.export_dir / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_a_model_with_nan_outputs_is_rejected_and_leaves_no_version(run_dir: RunDir) -> None:
    model = tiny_model()
    dense = model.layers[-1]
    dense.kernel.assign(np.full(dense.kernel.shape, np.nan, np.float32))
    with pytest.raises(ModelError, match=r"output 'probabilities' has 12 NaN/Inf"):
        export(model, run_dir)
    assert entries(run_dir) == []


def test_a_tampered_golden_output_is_rejected_and_leaves_no_version(
    run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_mod._manifest

    def tampered(**fields: Any) -> dict[str, Any]:
        fields["golden"]["outputs"]["probabilities"][0][0] += 0.5
        return real(**fields)

    monkeypatch.setattr(export_mod, "_manifest", tampered)
    with pytest.raises(ModelError, match=r"output 'probabilities' differs by 0\.5"):
        export(tiny_model(), run_dir)
    assert entries(run_dir) == []


def test_verify_export_rejects_an_edited_manifest(run_dir: RunDir, tmp_path: Path) -> None:
    good = export(tiny_model(), run_dir)
    copy = tmp_path / "copy"
    shutil.copytree(good.export_dir, copy)
    path = copy / "assets.extra" / "tfship-manifest.json"
    m = json.loads(path.read_text())
    m["golden"]["outputs"]["class_id"][0] = (m["golden"]["outputs"]["class_id"][0] + 1) % CLASSES
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match=r"output 'class_id' differs by [12]"):
        export_mod.verify_export(copy)
    assert export_mod.verify_export(good.export_dir).golden_requests == 4


def test_verify_export_rejects_a_signature_that_differs_from_the_manifest(
    run_dir: RunDir, tmp_path: Path
) -> None:
    good = export(tiny_model(), run_dir)
    path = good.export_dir / "assets.extra" / "tfship-manifest.json"
    m = json.loads(path.read_text())
    m["signature"]["inputs"]["pixels"]["shape"] = [-1, 28, 28, 1]
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match=r"signature .* differs from the manifest"):
        export_mod.verify_export(good.export_dir)


def test_run_export_skips_on_a_non_chief_worker(
    run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    result = export_mod.run_export(PipelineConfig(), run_dir)
    assert result.skipped and "chief" in result.skipped
    assert result.version is None and not run_dir.export.exists()


def test_export_verify_only_cli_prints_the_check_as_json(run_dir: RunDir, capsys: Any) -> None:
    from tfship.cli import main

    good = export(tiny_model(), run_dir)
    assert main(["export", "--verify-only", str(good.export_dir), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 1 and out["golden_requests"] == 4 and out["warmup_records"] == 10


def test_verify_export_rejects_outputs_of_the_cpp_loader_that_disagree(
    run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = export(tiny_model(), run_dir)

    def drifting_loader(
        export_dir: Path, inputs: dict[str, np.ndarray], *, timeout: float = 0
    ) -> tuple[dict[str, np.ndarray], float]:
        outputs, seconds = session_loader(export_dir, inputs)
        return {**outputs, "probabilities": outputs["probabilities"] + 1e-3}, seconds

    monkeypatch.setattr(verify_mod, "run_cpp_loader", drifting_loader)
    with pytest.raises(ModelError, match=r"C\+\+ loader .* 'probabilities' differs by 0\.001"):
        export_mod.verify_export(good.export_dir)
    assert export_mod.verify_export(good.export_dir, tolerance=0.01).max_abs_diff["cpp"] < 0.01


def test_golden_inputs_of_the_wrong_shape_are_a_model_error_not_a_crash(run_dir: RunDir) -> None:
    with pytest.raises(
        ModelError, match=r"cannot run on the golden rows \{'pixels': \[2, 4, 4, 1\]\}"
    ):
        export_mod.export_savedmodel(
            tiny_model(),
            cfg=PipelineConfig(),
            run_dir=run_dir,
            schema=pixels_schema((H, W, C)),
            label_names=["a", "b", "c"],
            golden_x={"pixels": np.zeros((2, 4, 4, 1), np.float32)},
            warmup_x={"pixels": pixels(1)},
            training_summary={},
            data_fingerprint="x",
        )
    assert entries(run_dir) == []


DATA_MANIFEST = {
    "fingerprint": "f" * 64,
    "files": [{"path": "a/1.png", "size": 3, "sha256": "0" * 64}],
}


def test_the_data_manifest_is_copied_into_the_export_and_verified_with_it(run_dir: RunDir) -> None:
    result = export(tiny_model(), run_dir, data_manifest=DATA_MANIFEST)
    assert result.export_dir is not None and result.verify is not None
    copied = result.export_dir / "assets.extra" / "tfship-data-manifest.json"
    assert json.loads(copied.read_text()) == DATA_MANIFEST
    assert result.verify.data_manifest_files == 1
    assert export_mod.verify_export(result.export_dir).data_manifest_files == 1


def test_an_export_without_a_data_manifest_still_verifies(run_dir: RunDir) -> None:
    result = export(tiny_model(), run_dir)  # as exports made before the data manifest existed
    assert result.export_dir is not None
    assert not (result.export_dir / "assets.extra" / "tfship-data-manifest.json").exists()
    assert export_mod.verify_export(result.export_dir).data_manifest_files is None


def test_a_data_manifest_for_other_data_is_refused_and_leaves_no_version(run_dir: RunDir) -> None:
    with pytest.raises(DataError, match=r"data manifest is for data fingerprint e+; expected"):
        export(tiny_model(), run_dir, data_manifest={**DATA_MANIFEST, "fingerprint": "e" * 64})
    assert entries(run_dir) == []


def test_verify_export_rejects_a_data_manifest_that_disagrees_with_the_manifest(
    run_dir: RunDir,
) -> None:
    good = export(tiny_model(), run_dir, data_manifest=DATA_MANIFEST)
    assert good.export_dir is not None
    path = good.export_dir / "assets.extra" / "tfship-data-manifest.json"
    path.write_text(json.dumps({**DATA_MANIFEST, "fingerprint": "e" * 64}))
    with pytest.raises(ModelError, match=r"tfship-data-manifest.json does not match"):
        export_mod.verify_export(good.export_dir)
    path.write_text("{not json")
    with pytest.raises(ModelError, match=r"tfship-data-manifest.json is not readable JSON"):
        export_mod.verify_export(good.export_dir)


def _trained_npz_run(tmp_path: Path) -> tuple[PipelineConfig, RunDir, Path]:
    from tfship.train import run_train

    x = np.random.default_rng(3).integers(0, 256, size=(60, H, W)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    cfg = PipelineConfig.model_validate(
        {
            "data": {"source": "npz", "path": str(tmp_path / "d.npz")},
            "model": {"builder": "tests.unit.user_models:tiny_mlp", "options": {"units": 4}},
            "train": {"epochs": 1, "per_replica_batch_size": 16, "progress": "none"},
            "checkpoint": {"every_steps": None},
            "export": {"golden_requests": 2, "warmup_requests": 2},
        }
    )
    run_dir = RunDir(tmp_path / "run")
    run_train(cfg, run_dir)
    return cfg, run_dir, tmp_path / "d.npz"


@pytest.mark.slow  # trains a tiny model
def test_run_export_copies_the_runs_data_manifest_or_builds_it_from_the_data(
    tmp_path: Path,
) -> None:
    from tfship.data import run_data

    cfg, run_dir, npz = _trained_npz_run(tmp_path)
    # No data.manifest.json in the run directory (train alone): built from the loaded data.
    built = export_mod.run_export(cfg, run_dir)
    assert built.export_dir is not None and built.verify is not None
    data_manifest = built.export_dir / "assets.extra" / "tfship-data-manifest.json"
    m = json.loads(data_manifest.read_text())
    assert [f["path"] for f in m["files"]] == ["d.npz"]
    assert m["files"][0]["size"] == npz.stat().st_size
    assert m["fingerprint"] == manifest_of(built)["data_fingerprint"]
    assert built.verify.data_manifest_files == 1
    # `tfship data` ran: its data.manifest.json is what the export carries, byte for byte.
    run_data(cfg, run_dir)
    copied = export_mod.run_export(cfg, run_dir)
    assert copied.export_dir is not None
    assert json.loads(
        (copied.export_dir / "assets.extra" / "tfship-data-manifest.json").read_text()
    ) == json.loads((run_dir.root / "data.manifest.json").read_text())


def _set(path: str, value: Any):
    def mutate(m: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = m
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _tamper_output_and(path: str, value: Any):
    def mutate(m: dict[str, Any]) -> None:
        m["golden"]["outputs"]["probabilities"][0][0] += 0.5
        _set(path, value)(m)

    return mutate


TAMPERED_MANIFESTS = [
    ("empty golden outputs", _set("golden.outputs", {}), "/golden/outputs"),
    ("empty golden inputs", _set("golden.inputs", {}), "/golden/inputs"),
    ("an empty golden batch", _set("golden.outputs.probabilities", []), "/golden/outputs"),
    (
        "a NaN golden output",
        _set("golden.outputs.probabilities", [[float("nan")] * 3] * 4),
        "nan is not a finite number",
    ),
    (
        "a NaN tolerance hiding a tampered output",
        _tamper_output_and("golden.tolerance", "NaN"),
        "tolerance",
    ),
    (
        "a huge tolerance hiding a tampered output",
        _tamper_output_and("golden.tolerance", 1e9),
        "golden tolerance must be a number in (0, 1]",
    ),
    ("a negative version", _set("version", -5), "/version"),
    ("a version beyond int64", _set("version", 2**64), "/version"),
    ("a version that is text", _set("version", "1; rm"), "/version"),
]


@pytest.mark.parametrize(
    ("case", "mutate", "fragment"), TAMPERED_MANIFESTS, ids=[c[0] for c in TAMPERED_MANIFESTS]
)
def test_verify_export_refuses_a_tampered_manifest_with_exit_6(
    case: str, mutate: Any, fragment: str, run_dir: RunDir, tmp_path: Path
) -> None:
    good = export(tiny_model(), run_dir)
    copy = tmp_path / "copy"
    shutil.copytree(good.export_dir, copy)
    path = copy / "assets.extra" / "tfship-manifest.json"
    m = json.loads(path.read_text())
    mutate(m)
    path.write_text(json.dumps(m).replace('"NaN"', "NaN"))
    with pytest.raises(ModelError) as err:
        export_mod.verify_export(copy)
    assert fragment in str(err.value)
    assert err.value.exit_code == 6


def test_export_verify_only_exits_6_on_a_manifest_claiming_version_0(
    run_dir: RunDir, capsys: Any
) -> None:
    from tfship.cli import main

    good = export(tiny_model(), run_dir)
    path = good.export_dir / "assets.extra" / "tfship-manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 0}))
    assert main(["export", "--verify-only", str(good.export_dir)]) == 6
    err = capsys.readouterr().err
    assert "/version" in err and "Traceback" not in err


@pytest.mark.parametrize("version", [-5, 2**63, 2**70])
def test_an_export_version_outside_int64_is_refused_and_leaves_no_version(
    version: int, run_dir: RunDir
) -> None:
    from tfship.errors import ConfigError

    with pytest.raises(ConfigError, match=r"integer in \[1, 2\*\*63 - 1\]"):
        export(tiny_model(), run_dir, version=version)
    assert entries(run_dir) == []


def test_golden_pixels_that_are_not_finite_are_refused_before_export(run_dir: RunDir) -> None:
    bad = pixels(4)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match="golden_x holds 1 NaN/Inf pixel"):
        export_mod.export_savedmodel(
            tiny_model(),
            cfg=PipelineConfig.model_validate({"export": {"version_scheme": "sequential"}}),
            run_dir=run_dir,
            schema=pixels_schema((H, W, C)),
            label_names=["a", "b", "c"],
            golden_x={"pixels": bad},
            warmup_x={"pixels": pixels(2)},
            training_summary={},
            data_fingerprint="f" * 64,
        )
    assert entries(run_dir) == []
