"""Which auto-shard policy a worker's input pipeline uses (tf.distribute).

FILE when there are at least as many shards as input pipelines: each pipeline opens only its
own files, reading 1/N of the bytes. DATA otherwise: every pipeline reads every file and keeps
every N-th element, so each reads all the bytes (N times the I/O of FILE) — correct, but slower,
hence the warning. FILE with fewer files than pipelines would leave some workers without data
(TF then fails or hangs at the first all-reduce), so it is never chosen then. Global batch
semantics do not change: each pipeline batches per-replica examples, the strategy combines them.

Empty (0-byte) files hold no records, so they do not count towards FILE: `decide` is given the
number of non-empty files, and `shard_files` deals the non-empty files round-robin first and
the empty ones separately, so every pipeline gets at least one non-empty file. (Dealing all
files alike, 0-record shards at every N-th position left a worker without data, which hung the
collective.) A pipeline whose non-empty files still hold no example of its split (a hash split,
or every record skipped as bad) is caught when training starts (tfship.data.streamed).

With `distribute_datasets_from_function` (tfship's loop) TF does not auto-shard: `apply` shards
by hand (`shard_files` on the file list, or `Dataset.shard` on the records) and sets the
dataset's policy to OFF; for `experimental_distribute_dataset` it sets the chosen policy as the
dataset's `experimental_distribute.auto_shard_policy` and lets TF do it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardDecision:
    policy: str  # "FILE" | "DATA" | "OFF" (one pipeline: nothing to shard)
    files: int
    pipelines: int
    reason: str

    def tf_policy(self) -> Any:
        import tensorflow as tf

        return getattr(tf.data.experimental.AutoShardPolicy, self.policy)


def decide(files: int, pipelines: int, *, warn: bool = True) -> ShardDecision:
    if pipelines < 1:
        raise ValueError("pipelines must be >= 1")
    if pipelines == 1:
        return ShardDecision("OFF", files, 1, "one input pipeline: nothing to shard")
    if files >= pipelines:
        return ShardDecision(
            "FILE", files, pipelines, f"{files} file(s) >= {pipelines} input pipelines"
        )
    reason = (
        f"only {files} file(s) for {pipelines} input pipelines: DATA sharding, so every "
        f"pipeline reads all {files} file(s) and keeps 1/{pipelines} of the records ({pipelines}x "
        f"the I/O of FILE sharding). Write at least {pipelines} shards (ideally many more) to "
        "read each byte once"
    )
    if warn:
        log.warning("%s", reason)
    return ShardDecision("DATA", files, pipelines, reason)


def non_empty(paths: list[Any]) -> int:
    """How many of `paths` may hold records (a Shard of size 0 holds none)."""
    return sum(1 for p in paths if getattr(p, "size", 1) != 0)


def shard_files(paths: list[Any], decision: ShardDecision, index: int) -> list[Any]:
    """This pipeline's files under FILE sharding: every `pipelines`-th non-empty file from
    `index`, then every `pipelines`-th empty one (a Shard's `size` 0; other paths count as
    non-empty)."""
    if decision.policy != "FILE":
        return list(paths)
    n = decision.pipelines
    full = [p for p in paths if getattr(p, "size", 1) != 0]
    empty = [p for p in paths if getattr(p, "size", 1) == 0]
    return full[index::n] + empty[index::n]


def set_policy(ds: Any, policy: str) -> Any:
    import tensorflow as tf

    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy
    )
    return ds.with_options(opts)
