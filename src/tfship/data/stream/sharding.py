"""Which auto-shard policy a worker's input pipeline uses (tf.distribute).

FILE when there are at least as many shards as input pipelines: each pipeline opens only its
own files, reading 1/N of the bytes. DATA otherwise: every pipeline reads every file and keeps
every N-th element, so each reads all the bytes (N times the I/O of FILE) — correct, but slower,
hence the warning. FILE with fewer files than pipelines would leave some workers without data
(TF then fails or hangs at the first all-reduce), so it is never chosen then. Global batch
semantics do not change: each pipeline batches per-replica examples, the strategy combines them.

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


def shard_files(paths: list[Any], decision: ShardDecision, index: int) -> list[Any]:
    """This pipeline's files under FILE sharding (every `pipelines`-th, from `index`)."""
    if decision.policy != "FILE":
        return list(paths)
    return list(paths[index :: decision.pipelines])


def set_policy(ds: Any, policy: str) -> Any:
    import tensorflow as tf

    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy
    )
    return ds.with_options(opts)
