"""Training on a data set larger than memory: peak RSS of a streamed training run vs data size.

Generates a sharded TFRecord data set (default 6 GiB in 64 shards: each tf.train.Example holds
an int64 `id` (the hash-split key), an int64 label `y`, a float vector `v` [3] the model reads,
and a `blob` of 16 KiB bytes the model ignores but every read still has to carry), then trains
a small Keras model on it for one epoch through tfship's streaming path (`data.stream` with a
hash split; `load_splits` + `run_train`, the stage functions `tfship train` calls) in a child
process, and reports:

- the data set's size on disk;
- the child's peak RSS (`getrusage(RUSAGE_CHILDREN).ru_maxrss` after it exits: the high-water
  mark of the only child this process starts);
- the ratio data / peak RSS (the issue's target: >= 4; exit 1 when below);
- wall time (whole child, data loading, training) and training examples/s.

Reads in the child: the profile sample, validation + test (one pass, hash split), the counting
pass over the training split, then one training epoch: three full passes over the data set.
The page cache is not RSS: the data set fits in this machine's cache, which makes the passes
faster, not the process bigger.

Generation writes one serialized template per shard with numpy-built bytes; only id, y and v
change per record. The data is removed at the end (a temp directory).

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/stream_train_memory.py [--gb 6]
        [--files 64] [--blob-kb 16] [--batch 512] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODEL = """
import keras


def small_model(spec, units=8):
    inputs = spec.inputs()
    h = keras.layers.Dense(units, activation="relu")(inputs["v"])
    return keras.Model(inputs, spec.head()(h))
"""

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from tfship.config import load_config
from tfship.data import load_splits
from tfship.rundir import RunDir
from tfship.train import run_train
cfg = load_config(sys.argv[1], env={})
t1 = time.perf_counter()
splits = load_splits(cfg)
t2 = time.perf_counter()
from pathlib import Path
result = run_train(cfg, RunDir(Path(sys.argv[2])), splits=splits)
t3 = time.perf_counter()
print(json.dumps({
    "streamed": bool(getattr(splits, "streamed", False)),
    "train_size": splits.train_size, "val": len(splits.y_val), "test": len(splits.y_test),
    "steps": result.steps, "import_s": t1 - t0, "load_s": t2 - t1, "train_s": t3 - t2,
}))
"""


def generate(folder: Path, gib: float, files: int, blob_kb: int) -> tuple[int, int]:
    """`files` TFRecord shards of ~`gib` GiB in all; returns (examples, bytes on disk)."""
    import numpy as np
    import tensorflow as tf

    blob = blob_kb << 10
    per_file = max(1, int(gib * (1 << 30)) // files // (blob + 64))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    F = tf.train.Feature
    for k in range(files):
        ex = tf.train.Example()
        feats = ex.features.feature
        feats["blob"].bytes_list.value.append(rng.integers(0, 256, blob, np.uint8).tobytes())
        v = rng.normal(0, 1, (per_file, 3)).astype(np.float32)
        ids = np.arange(k * per_file, (k + 1) * per_file)
        with tf.io.TFRecordWriter(str(folder / f"part-{k:05d}.tfrecord")) as w:
            for i in range(per_file):
                feats["id"].CopyFrom(F(int64_list=tf.train.Int64List(value=[int(ids[i])])))
                label = int(v[i, 0] > 0) + int(v[i, 1] > 0.5)  # learnable from v
                feats["y"].CopyFrom(F(int64_list=tf.train.Int64List(value=[label])))
                feats["v"].CopyFrom(F(float_list=tf.train.FloatList(value=v[i].tolist())))
                w.write(ex.SerializeToString())
    size = sum(p.stat().st_size for p in folder.iterdir())
    return files * per_file, size


def write_config(tmp: Path, shards: Path, batch: int) -> Path:
    import yaml

    raw = {
        "data": {
            "source": "tfrecord",
            "path": str(shards / "part-*.tfrecord"),
            "label": "y",
            "features": {"v": {"kind": "numeric", "shape": [3]}},
            # validation + test are held in memory (their declared features only): 2 % each
            "validation_fraction": 0.02,
            "test_fraction": 0.02,
            "shuffle_buffer": 10000,
            "stream": {"hash_key": "id", "hash_key_dtype": "int64", "cycle_length": 16},
        },
        "model": {"builder": "stream_bench_model:small_model"},
        "train": {"epochs": 1, "per_replica_batch_size": batch, "progress": "none"},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=6.0, help="data set size in GiB (default 6)")
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--blob-kb", type=int, default=16, help="ignored bytes per example (KiB)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dir", default=None, help="where to write the data (default: a tempdir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tfship-stream-mem-", dir=args.dir) as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        examples, size = generate(tmp / "shards", args.gb, args.files, args.blob_kb)
        gen_s = time.perf_counter() - t0
        print(
            f"generated {examples} examples in {args.files} shards: {size / 2**30:.2f} GiB "
            f"({size / examples / 1024:.1f} KiB/example) in {gen_s:.1f} s",
            flush=True,
        )
        (tmp / "stream_bench_model.py").write_text(textwrap.dedent(MODEL))
        cfg = write_config(tmp, tmp / "shards", args.batch)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT / "src")]),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t1 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(cfg), str(tmp / "run")],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t1
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"training child failed: exit {proc.returncode}")
            return 2
        assert peak_kib >= before
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        peak = peak_kib * 1024
        ratio = size / peak
        print(
            json.dumps(
                {
                    "data_bytes": size,
                    "data_gib": round(size / 2**30, 3),
                    "shards": args.files,
                    "examples": examples,
                    "train_examples": out["train_size"],
                    "held_in_memory_val_test": out["val"] + out["test"],
                    "steps": out["steps"],
                    "peak_rss_bytes": peak,
                    "peak_rss_gib": round(peak / 2**30, 3),
                    "data_over_peak_rss": round(ratio, 2),
                    "child_wall_s": round(wall, 1),
                    "import_s": round(out["import_s"], 1),
                    "load_splits_s": round(out["load_s"], 1),
                    "train_s": round(out["train_s"], 1),
                    "train_examples_per_s": round(out["train_size"] / out["train_s"]),
                    "train_mib_per_s": round(
                        out["train_size"] * size / examples / out["train_s"] / 2**20
                    ),
                    "generate_s": round(gen_s, 1),
                },
                indent=2,
            )
        )
        ok = out["streamed"] and ratio >= 4
        print(f"data / peak RSS = {ratio:.2f} ({'>= 4: OK' if ok else 'below 4: FAIL'})")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
