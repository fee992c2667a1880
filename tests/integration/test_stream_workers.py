"""FILE vs DATA sharding with two MultiWorkerMirroredStrategy worker processes on 127.0.0.1:
each worker reads only its shard of the data, and together they read every example once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import stream_shards as ss

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


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_file_and_data_sharding(tmp_path: Path) -> None:
    ss.write_tfrecords(tmp_path / "many", 6, 20)
    ss.write_tfrecords(tmp_path / "one", 1, 30)
    workers = [f"127.0.0.1:{p}" for p in _ports(2)]
    code = WORKER.format(repo=str(REPO), root=str(tmp_path))
    procs = []
    for i in range(2):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="3",
            TF_ENABLE_ONEDNN_OPTS="0",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
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
