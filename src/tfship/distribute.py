"""Which tf.distribute strategy a training run uses, and on which devices.

`configure_devices` and a MultiWorkerMirroredStrategy must both come before TensorFlow
initialises its devices (the first op does that), so `run_train` calls `configure_devices` and
`make_strategy` first thing. A caller that runs TensorFlow ops before training in the same
process (e.g. reading TFRecords) must call both earlier itself.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from tfship.cluster import cluster_size, task_id
from tfship.config import StrategyKind, TrainConfig
from tfship.errors import ConfigError

log = logging.getLogger(__name__)


def configure_devices(train_cfg: TrainConfig) -> None:
    """Split the CPU into `train.cpu_logical_devices` logical devices (no-op when 0).

    Idempotent: a second call with the same count is fine. TensorFlow refuses to change
    devices once it has initialised them, which is reported as a ConfigError.
    """
    n = train_cfg.cpu_logical_devices
    if n <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise ConfigError(
            f"train.cpu_logical_devices={n}, but TensorFlow already initialised its devices "
            f"({have} logical CPU device(s))",
            hint="call tfship.distribute.configure_devices() before any TensorFlow op runs "
            "(a new process: `tfship train` does this itself)",
        ) from None
    log.info("split the CPU into %d logical devices", n)


def _mirror_devices() -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus] if len(cpus) > 1 else []


def make_strategy(train_cfg: TrainConfig) -> tf.distribute.Strategy:
    """The strategy for `train.strategy` (auto: from TF_CONFIG and the visible devices).

    auto picks MultiWorkerMirroredStrategy when TF_CONFIG lists more than one training task,
    MirroredStrategy over the GPUs (or the logical CPU devices) when there is more than one,
    else the default strategy. MultiWorkerMirroredStrategy must be created before other ops run.
    """
    kind = train_cfg.strategy
    workers = cluster_size()
    if kind == StrategyKind.AUTO:
        if workers > 1:
            kind = StrategyKind.MULTI_WORKER
        elif len(_mirror_devices()) > 1:
            kind = StrategyKind.MIRRORED
        else:
            kind = StrategyKind.DEFAULT

    if kind == StrategyKind.MULTI_WORKER:
        if workers < 2:
            raise ConfigError(
                f"train.strategy=multi_worker, but TF_CONFIG lists {workers} training task(s)",
                hint="set TF_CONFIG with at least two chief/worker tasks (the TFJob operator "
                "does this), or use train.strategy=auto",
            )
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == StrategyKind.MIRRORED:
        devices = _mirror_devices()
        if len(devices) < 2:
            raise ConfigError(
                f"train.strategy=mirrored, but only {max(len(devices), 1)} device is visible "
                "(no GPUs, one CPU device)",
                hint="set train.cpu_logical_devices=2 (or more) to mirror across CPU devices, "
                "or use train.strategy=auto",
            )
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info(
        "strategy %s with %d replica(s) in sync (%s)",
        strategy_name(strategy),
        strategy.num_replicas_in_sync,
        task_id(),
    )
    return strategy


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """'MirroredStrategy', 'MultiWorkerMirroredStrategy', or 'default' (no distribution)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    name = type(strategy).__name__
    return "default" if name.startswith("_Default") else name
