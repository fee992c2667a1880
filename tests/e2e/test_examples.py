"""Each worked example end to end, as its README says to run it: train -> export (C++ loader
check) -> evaluate/gate -> deploy to a model server (the TF Serving stand-in, or
TFSHIP_MODEL_SERVER), then TF Serving's REST APIs answer with the golden outputs: predict with
the named raw features, and `:classify` / `:regress` on tf.Example where the task exports them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.tfserving_standin.fixture import start_model_server
from tfship.config.trust import CI_MARKERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = {
    # example -> (its config, model name, task, tf.Example APIs its export must have)
    "fraud": ("examples/fraud/pipeline.yaml", "fraud", "binary", {"classify", "regress"}),
    "intent": ("examples/intent/pipeline.yaml", "intent", "classification", {"classify"}),
    "regression": ("examples/regression/pipeline.yaml", "diabetes", "regression", {"regress"}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_model_server(
        tmp_path_factory.mktemp("server"),
        model_config_text="model_config_list {}\n",
        extra_flags=["--file_system_poll_wait_seconds=1"],
    ) as handle:
        yield handle


def tfship_run(repo_root: Path, example: str, tmp: Path, server) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TFSHIP_", "CI_", "GITHUB_")) and k not in CI_MARKERS
    }
    sets = {
        "serving.model_repository": tmp / "repo",
        "serving.rest_url": server.rest_url,
        "serving.grpc_target": server.grpc_target,
        "serving.load_deadline_seconds": 120,
        "train.progress": "none",
    }
    cmd = [sys.executable, "-m", "tfship", "run", "--config", EXAMPLES[example][0]]
    cmd += ["--skip", "scan", "--run-dir", str(tmp / "run"), "--output", "json"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_example_trains_passes_its_gate_deploys_and_serves_its_golden_answers(
    example, repo_root, server, tmp_path
):
    _, model, task, methods = EXAMPLES[example]
    result = tfship_run(repo_root, example, tmp_path, server)
    assert [s["name"] for s in result["stages"]] == [
        "data",
        "train",
        "export",
        "evaluate",
        "deploy",
    ]
    run_dir = tmp_path / "run"
    gate = json.loads((run_dir / "evaluation" / "gate.json").read_text())
    assert gate["verdict"] == "passed", gate

    (export,) = [p for p in (run_dir / "export").iterdir() if p.name.isdigit()]
    manifest = json.loads((export / "assets.extra" / "tfship-manifest.json").read_text())
    assert manifest["task"]["type"] == task
    assert set(manifest["golden"].get("examples", {})) == methods
    # The features are served by name, with their dtypes: strings are DT_STRING.
    declared = manifest["schema"]["features"]
    served = manifest["signature"]["inputs"]
    assert set(served) == set(declared)
    for name, spec in declared.items():
        want = "string" if spec["dtype"] == "string" else spec["dtype"]
        assert served[name]["dtype"] == want, name

    base = f"{server.rest_url}/v1/models/{model}/labels/stable"
    golden = manifest["golden"]
    answer = requests.post(f"{base}:predict", json={"inputs": golden["inputs"]}, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    if not isinstance(outputs, dict):  # one output: TF Serving sends the bare tensor
        (name,) = golden["outputs"]
        outputs = {name: outputs}
    for name, expected in golden["outputs"].items():
        if expected and isinstance(np.asarray(expected).ravel()[0], str):
            assert outputs[name] == expected, name
        else:
            np.testing.assert_allclose(outputs[name], expected, atol=1e-4, err_msg=name)

    for method in methods:
        block = golden["examples"][method]
        body = {"signature_name": method, "examples": block["examples"]}
        resp = requests.post(f"{base}:{method}", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        if method == "classify":
            assert [[p[0] for p in row] for row in results] == block["outputs"]["classes"]
            got = [[p[1] for p in row] for row in results]
            np.testing.assert_allclose(got, block["outputs"]["scores"], atol=1e-4)
        else:
            np.testing.assert_allclose(results, block["outputs"]["outputs"], atol=1e-4)
