"""The training loop's compiled parts: distributed inputs, the train step and the evaluation.

Every step is a full global batch (per-replica batch × replicas, repeated data), so all workers
run the same number of steps and `tf.nn.compute_average_loss` divides by the same number. One
call runs several steps (`train.steps_per_execution`, like Keras' `steps_per_execution`), so
Python and the host read-back are paid once per call, not per step. The call also all-reduces
the host flags it is given (see tfship.train), so every worker reads the same flags back after
the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from tfship.config import PipelineConfig
from tfship.model import feed

if TYPE_CHECKING:
    from tfship.task import Task

_SUM = tf.distribute.ReduceOp.SUM


def distributed_inputs(
    strategy: tf.distribute.Strategy,
    cfg: PipelineConfig,
    splits: Any,
    *,
    global_batch: int,
    start_step: int,
    steps_per_epoch: int | None = None,
) -> tuple[Any, Any]:
    """(train, validation) distributed datasets; train repeats forever in full global batches.

    Streamed data (`data.stream`: `splits.train_dataset`) is read per input pipeline with the
    FILE/DATA sharding of tfship.data.stream.sharding; a resumed run replays the interrupted
    epoch's order and skips the steps already trained (exact resume). The in-memory path
    continues with a fresh order instead."""
    from tfship.data import make_dataset

    def train_input(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        if hasattr(splits, "train_dataset"):
            return splits.train_dataset(
                ctx,
                global_batch=global_batch,
                steps_per_epoch=steps_per_epoch or max(1, splits.train_size // global_batch),
                start_step=start_step,
            )
        return make_dataset(
            splits.x_train,
            splits.y_train,
            global_batch_size=global_batch,
            shuffle=True,
            # A resumed run continues with a fresh order rather than replaying epoch 1's.
            seed=cfg.run.seed + start_step,
            cache=cfg.data.cache,
            shuffle_buffer=cfg.data.shuffle_buffer,
            input_context=ctx,
            repeat=True,
            drop_remainder=True,
        )

    def val_input(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(
            splits.x_val,
            splits.y_val,
            global_batch_size=global_batch,
            shuffle=False,
            seed=cfg.run.seed,
            cache=cfg.data.cache,
            input_context=ctx,
        )

    return (
        strategy.distribute_datasets_from_function(train_input),
        strategy.distribute_datasets_from_function(val_input),
    )


def chunk_end(step: int, limit: int, *boundaries: int | None) -> int:
    """Where a compiled call starting at `step` stops: after at most `limit` steps and never
    past the next multiple of any boundary (epoch end, periodic checkpoint, the last step);
    a boundary of None is ignored. Every worker computes the same ends from the same numbers."""
    end = step + limit
    for every in boundaries:
        if every is not None:
            end = min(end, (step // every + 1) * every)
    return end


def build_steps(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    step_var: tf.Variable,
    *,
    global_batch: int,
    task: Task,
    names: Sequence[str],
    class_weights: np.ndarray | None = None,
) -> tuple[Callable[[Any, tf.Tensor, tf.Tensor], tf.Tensor], Callable[[Any], tf.Tensor]]:
    """`train_steps(iterator, flags, n)` and `evaluate(dataset)` as tf.functions under `strategy`.

    The loss and the per-batch sums come from the task (`per_example_loss`,
    `step_statistics`: S sums). `train_steps` runs n steps in one call (n is a tensor, so any n
    reuses one trace) and returns [loss summed over the steps, S statistics summed, offset of
    the first step whose loss was not finite or -1, *flags summed over replicas]; `evaluate`
    returns [summed per-example loss, S statistics, examples]. Class weights apply to the
    training loss only, like Keras' `class_weight`.
    """
    n_stats = len(task.STATISTICS)

    def replica_step(x: Any, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(feed(names, x), training=True)
            per_example = task.per_example_loss(y, logits, class_weights)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return tf.concat([[loss], task.step_statistics(y, logits)], axis=0)

    @tf.function
    def train_steps(iterator: Any, flags: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros([1 + n_stats])
        first_bad = tf.constant(-1, dtype=n.dtype)
        for i in tf.range(n):
            x, y = next(iterator)
            step_totals = strategy.reduce(_SUM, strategy.run(replica_step, args=(x, y)), axis=None)
            step_var.assign_add(1)
            bad = tf.logical_and(first_bad < 0, tf.logical_not(tf.math.is_finite(step_totals[0])))
            first_bad = tf.where(bad, i, first_bad)
            totals += step_totals
        agreed = strategy.reduce(_SUM, strategy.run(tf.identity, args=(flags,)), axis=None)
        return tf.concat([totals, [tf.cast(first_bad, tf.float32)], agreed], axis=0)

    @tf.function
    def evaluate(dataset: Any) -> tf.Tensor:
        def replica_eval(x: Any, y: tf.Tensor) -> tf.Tensor:
            logits = model(feed(names, x), training=False)
            loss = tf.reduce_sum(task.per_example_loss(y, logits))
            count = tf.cast(tf.shape(y)[0], tf.float32)
            return tf.concat([[loss], task.step_statistics(y, logits), [count]], axis=0)

        totals = tf.zeros([2 + n_stats])
        for x, y in dataset:
            totals += strategy.reduce(_SUM, strategy.run(replica_eval, args=(x, y)), axis=None)
        return totals

    return train_steps, evaluate


def make_optimizer(cfg: PipelineConfig, learning_rate: float, total_steps: int) -> Any:
    """`train.optimizer` with `train.lr_schedule` (cosine decays to 0 over the run's steps)."""
    tcfg = cfg.train
    rate: Any = learning_rate
    if tcfg.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
    decay = {"weight_decay": tcfg.weight_decay} if tcfg.weight_decay is not None else {}
    if tcfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    if tcfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, **decay)
    if tcfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=0.9, **decay)
    return keras.optimizers.RMSprop(learning_rate=rate, **decay)
