"""The training loop's compiled parts: distributed inputs, the train step and the evaluation.

Every step is a full global batch (per-replica batch × replicas, repeated data), so all workers
run the same number of steps and `tf.nn.compute_average_loss` divides by the same number. One
call runs several steps (`train.steps_per_execution`, like Keras' `steps_per_execution`), so
Python and the host read-back are paid once per call, not per step. The call also all-reduces
the host flags it is given (see tfship.train), so every worker reads the same flags back after
the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfship.config import PipelineConfig

_SUM = tf.distribute.ReduceOp.SUM


def distributed_inputs(
    strategy: tf.distribute.Strategy,
    cfg: PipelineConfig,
    splits: Any,
    *,
    global_batch: int,
    start_step: int,
) -> tuple[Any, Any]:
    """(train, validation) distributed datasets; train repeats forever in full global batches."""
    from tfship.data import make_dataset

    def train_input(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
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
) -> tuple[Callable[[Any, tf.Tensor, tf.Tensor], tf.Tensor], Callable[[Any], tf.Tensor]]:
    """`train_steps(iterator, flags, n)` and `evaluate(dataset)` as tf.functions under `strategy`.

    `train_steps` runs n steps in one call (n is a tensor, so any n reuses one trace) and returns
    [loss summed over the steps, correct predictions, offset of the first step whose loss was
    not finite or -1, *flags summed over replicas]; `evaluate` returns [summed loss, correct
    predictions, examples].
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def _correct(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        pred = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(y, tf.int64)), tf.float32))

    def replica_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, logits), global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return tf.stack([loss, _correct(y, logits)])

    @tf.function
    def train_steps(iterator: Any, flags: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros([2])
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
        def replica_eval(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            logits = model(x, training=False)
            return tf.stack(
                [
                    tf.reduce_sum(loss_fn(y, logits)),
                    _correct(y, logits),
                    tf.cast(tf.shape(y)[0], tf.float32),
                ]
            )

        totals = tf.zeros([3])
        for x, y in dataset:
            totals += strategy.reduce(_SUM, strategy.run(replica_eval, args=(x, y)), axis=None)
        return totals

    return train_steps, evaluate
