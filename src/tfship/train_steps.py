"""The training loop's compiled parts: distributed inputs, the train step and the evaluation.

Every step is a full global batch (per-replica batch × replicas, repeated data), so all workers
run the same number of steps and `tf.nn.compute_average_loss` divides by the same number. The
train step also all-reduces the host flags it is given (see tfship.train), so every worker reads
the same flags back after the same step.
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


def build_steps(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    step_var: tf.Variable,
    *,
    global_batch: int,
) -> tuple[Callable[[Any, tf.Tensor], tf.Tensor], Callable[[Any], tf.Tensor]]:
    """`train_step(iterator, flags)` and `evaluate(dataset)` as tf.functions under `strategy`.

    `train_step` returns [loss, correct predictions, *flags] summed over replicas in one
    all-reduce; `evaluate` returns [summed loss, correct predictions, examples].
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def _correct(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        pred = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(y, tf.int64)), tf.float32))

    @tf.function
    def train_step(iterator: Any, flags: tf.Tensor) -> tf.Tensor:
        def replica_step(x: tf.Tensor, y: tf.Tensor, flags: tf.Tensor) -> Any:
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.nn.compute_average_loss(
                    loss_fn(y, logits), global_batch_size=global_batch
                )
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return tf.concat([tf.stack([loss, _correct(y, logits)]), flags], axis=0)

        x, y = next(iterator)
        per_replica = strategy.run(replica_step, args=(x, y, flags))
        step_var.assign_add(1)
        return strategy.reduce(_SUM, per_replica, axis=None)

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

    return train_step, evaluate
