"""FILE vs DATA sharding with two MultiWorkerMirroredStrategy worker processes on 127.0.0.1:
each worker reads only its shard of the data, and together they read every example once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import stream_shards as ss
from tests.helpers.workers import start_python_workers

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys
import tensorflow as tf
sys.path.insert(0, {repo!r})
from tests.helpers import stream_shards as ss
from tfship.data.stream import StreamSource

strategy = tf.distribute.MultiWorkerMirroredStrategy()
out = {{}}
for name in ("many", "one"):
    src = StreamSource.open({root!r} + "/" + name, ss.schema())
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: src.dataset(8, input_context=ctx)
    )
    ids = []
    for x, _ in dist:
        for part in strategy.experimental_local_results(x["id"]):
            ids += [int(i) for i in part.numpy()]
    out[name] = {{"ids": ids, "policy": src.last_decision.policy}}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_two_workers_file_and_data_sharding(tmp_path: Path) -> None:
    ss.write_tfrecords(tmp_path / "many", 6, 20)
    ss.write_tfrecords(tmp_path / "one", 1, 30)
    code = WORKER.format(repo=str(REPO), root=str(tmp_path))
    procs = start_python_workers(code)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    many = [r["many"] for r in results]
    assert {m["policy"] for m in many} == {"FILE"}
    assert not set(many[0]["ids"]) & set(many[1]["ids"])
    assert sorted(many[0]["ids"] + many[1]["ids"]) == list(range(120))
    # FILE: whole files per worker (ids come in blocks of 20)
    assert not {i // 20 for i in many[0]["ids"]} & {i // 20 for i in many[1]["ids"]}
    one = [r["one"] for r in results]
    assert {o["policy"] for o in one} == {"DATA"}
    assert not set(one[0]["ids"]) & set(one[1]["ids"])
    assert sorted(one[0]["ids"] + one[1]["ids"]) == list(range(30))
