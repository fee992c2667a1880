"""A minimal TensorFlow training loop wired to tfship.backup the way the training stage is:
restore before the CheckpointManager exists, `sync()` after every save, `close()` at the end.

Run by tests/integration/test_backup.py as a subprocess (so it can be SIGKILLed). The "model"
is a variable following a fixed update rule, so the test can compute exactly what it must hold
after N steps whether or not training was interrupted. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def expected_weight(steps: int) -> float:
    w = 0.0
    for i in range(1, steps + 1):
        w = 0.9 * w + i  # what the loop below does, in plain Python
    return w


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--endpoint-url")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--keep-local", type=int, default=3)
    ap.add_argument("--keep-remote", type=int, default=2)
    ap.add_argument("--step-seconds", type=float, default=0.0)
    ap.add_argument("--upload-delay", type=float, default=0.0, help="sleep before each upload")
    ap.add_argument("--payload", type=int, default=50_000, help="floats in the checkpoint")
    ap.add_argument("--wait-each", action="store_true", help="flush after every save")
    args = ap.parse_args()

    import tensorflow as tf

    from tfship.backup import CheckpointBackup, open_store, restore_latest

    store = open_store(args.url, endpoint_url=args.endpoint_url)
    if args.upload_delay:
        put_file = store.put_file

        def slow_put_file(key: str, path: Path) -> None:  # a slow link, injected for the test
            time.sleep(args.upload_delay)
            put_file(key, path)

        store.put_file = slow_put_file  # type: ignore[method-assign]

    restored = restore_latest(args.ckpt_dir, store)
    print(json.dumps({"restored": restored}), flush=True)

    step = tf.Variable(0, dtype=tf.int64)
    w = tf.Variable(0.0, dtype=tf.float64)
    payload = tf.Variable(tf.zeros([args.payload]))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(step=step, w=w, payload=payload),
        args.ckpt_dir,
        max_to_keep=args.keep_local,
        checkpoint_name="ckpt",
    )
    if manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    print(json.dumps({"start": int(step.numpy()), "w": float(w.numpy())}), flush=True)
    backup = CheckpointBackup(store, args.ckpt_dir, keep=args.keep_remote)
    while int(step.numpy()) < args.steps:
        step.assign_add(1)
        w.assign(0.9 * w + tf.cast(step, tf.float64))
        payload.assign_add(tf.ones_like(payload))
        if args.step_seconds:
            time.sleep(args.step_seconds)
        n = int(step.numpy())
        if n % args.save_every == 0:
            manager.save(checkpoint_number=n)
            t0 = time.perf_counter()
            backup.sync()
            sync_s = time.perf_counter() - t0
            if args.wait_each:
                assert backup.flush(timeout=60), "upload did not finish within 60 s"
            print(json.dumps({"saved": n, "sync_seconds": sync_s, "t": time.time()}), flush=True)
        print(json.dumps({"step": n, "t": time.time()}), flush=True)
    t_train_end = time.time()
    status = backup.close(timeout=120)
    print(
        json.dumps(
            {
                "done": int(step.numpy()),
                "w": float(w.numpy()),
                "train_end": t_train_end,
                "closed": time.time(),
                "uploaded": list(status.uploaded),
                "superseded": status.superseded,
                "failures": status.failures,
                "pending": list(status.pending),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
