"""Training the model on in-memory transformed columns: batching, early stopping, refit.

Plain functions over {column: array} (the transformed ID columns and one label
per head), so the model trains the same way in the Trainer, in the Tuner's
trials, in benchmarks and in tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from recommender import features, heads
from recommender.config import ModelConfig
from recommender.model import (
    MultiTaskRecommender,
    Training,
    TrainingData,
    base_rate,
    build_model,
    sample_inputs,
    train,
)


def model_columns() -> list[str]:
    """The transformed columns the model and its losses read: the ID inputs and one label per head."""
    return [features.transformed_name(key) for key in features.ID_FEATURES] + list(heads.NAMES)


def training_columns(config: ModelConfig) -> list[str]:
    """What the Trainer reads of each split for `config`: `model_columns`, and the timestamp where
    the retrieval task picks each user's latest items by it (TrainingData.times)."""
    return [*model_columns(), *([features.TIMESTAMP] if config.retrieval is not None else [])]


def split_labels(batch: Mapping[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Splits a transformed batch into (model inputs, {head: label})."""
    inputs = {
        features.transformed_name(key): batch[features.transformed_name(key)]
        for key in features.ID_FEATURES
    }
    labels = {head: batch[head] for head in heads.NAMES}
    return inputs, labels


def batches(
    columns: Mapping[str, np.ndarray], config: ModelConfig, shuffle: bool, repeat: bool = False
) -> tf.data.Dataset:
    """(inputs, labels) batches of in-memory transformed `columns`.

    With `shuffle`, every pass draws a new order of all rows from `config.seed`
    (the same sequence of orders for every dataset made with that seed,
    whatever TensorFlow's global seed); with `repeat`, endless. Rows are
    ordered as indices and gathered a batch at a time, not one by one.
    Without `shuffle`, the rows in order, in the same batches.
    """
    rows = len(next(iter(columns.values())))
    # Only what split_labels keeps: gathering the other columns (the tiers are strings) is wasted work.
    if not shuffle:
        # A plain slice per batch: a pass starts several times faster than the indexed
        # pipeline below, and the validation rows are read once per epoch.
        ordered = tf.data.Dataset.from_tensor_slices(split_labels({name: columns[name] for name in model_columns()}))
        return (ordered.repeat() if repeat else ordered).batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
    tensors = {name: tf.constant(columns[name]) for name in model_columns()}
    passes = tf.Variable(0, dtype=tf.int64, trainable=False)

    def order(_):
        # Stateless, keyed by (seed, pass number): no global seed enters.
        return tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=tf.int64), seed=tf.stack([tf.constant(config.seed, tf.int64), passes.assign_add(1)])
        )

    def split(indices):
        full = rows - rows % config.batch_size
        parts = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[:full], [-1, config.batch_size]))
        return parts.concatenate(tf.data.Dataset.from_tensors(indices[full:])) if rows % config.batch_size else parts

    dataset = tf.data.Dataset.from_tensors(0)
    if repeat:
        dataset = dataset.repeat()
    return dataset.map(order).flat_map(split).map(
        lambda indices: split_labels({name: tf.gather(values, indices) for name, values in tensors.items()}),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def epoch_loop(columns: Mapping[str, np.ndarray], config: ModelConfig) -> ModelConfig:
    """`config` with `steps_per_epoch` set: as configured, else one pass over `columns`.

    Training batches then repeat endlessly and each epoch takes its steps from
    one iterator: Keras would otherwise start a new pass of the input pipeline
    every epoch. The batches are the same.
    """
    rows = len(columns[model_columns()[0]])
    return dataclasses.replace(config, steps_per_epoch=config.steps_per_epoch or -(-rows // config.batch_size))


class Fitted(NamedTuple):
    model: MultiTaskRecommender  # the model to export
    training: TrainingData  # the rows it learnt from
    epochs_run: tuple[int, ...]  # per fit: the first, then the refit's
    validation_loss: float  # the first fit's at the epoch it kept, heads weighted by the loss weights


def validation_loss(fit: Training, config: ModelConfig) -> float:
    """The validation loss at the epoch `fit` kept, each head's loss weighted by `config`'s
    loss weights (the L2 penalty, a training loss only, left out); NaN counts as infinite."""
    loss = sum(
        weight * fit.history.history[f"val_{name}_loss"][fit.best_epoch - 1]
        for name, weight in config.weights_for().items()
    )
    return float(loss) if np.isfinite(loss) else np.inf


def first_fit(
    train_columns: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int = 2,
) -> tuple[MultiTaskRecommender, Training]:
    """A model fitted on `train_columns`, validated (and early-stopped) on `validation`."""
    model, _ = _built(train_columns, sizes, config)
    return model, _train_first(model, train_columns, validation, config, verbose)


def _built(
    train_columns: Mapping[str, np.ndarray], sizes: Mapping[str, int], config: ModelConfig
) -> tuple[MultiTaskRecommender, TrainingData]:
    """(a model built for `train_columns`, their TrainingData)."""
    training = TrainingData.from_columns(train_columns)
    return build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training), training


def _train_first(model, train_columns, validation, config: ModelConfig, verbose: int) -> Training:
    loop = epoch_loop(train_columns, config)
    return train(
        model, batches(train_columns, loop, shuffle=True, repeat=True), batches(validation, loop, shuffle=False),
        loop, verbose,
    )


def restart(model: MultiTaskRecommender, weights: list[np.ndarray], training: TrainingData,
            config: ModelConfig) -> None:
    """`model` (built with `config` and the declared heads) back at `weights`, its starting
    ones, each head's bias at `training`'s base rate (with base-rate initialisation), and its
    optimizer's state cleared: a fresh model's start, with Keras's traced training step kept."""
    model.set_weights(weights)
    if config.base_rate_init:
        for head in heads.HEADS:
            layer = model.heads[head.name]
            layer.bias.assign(base_rate(head, training)(layer.bias.shape))
    for variable in model.optimizer.variables:
        variable.assign(tf.zeros_like(variable))


def fit(
    train_columns: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int = 2,
) -> Fitted:
    """The model to export: fitted on `train_columns`, early-stopped on `validation`.

    With `config.refit`, the model returned starts again from the first fit's
    starting weights and is fitted on both for the epochs early stopping kept,
    with no validation.
    """
    model, first = _built(train_columns, sizes, config)
    # Without the retrieval task the refit restarts this model (see below): its starting
    # weights are kept, so it is built before training.
    restarts = config.refit and config.retrieval is None
    if restarts:
        model(sample_inputs(first))
    start = model.get_weights() if restarts else None
    fitted = _train_first(model, train_columns, validation, config, verbose)
    epochs_run = len(fitted.history.history["loss"])
    score = validation_loss(fitted, config)
    if not config.refit:
        return Fitted(model, first, (epochs_run,), score)
    # Only the loop changes; the model's own settings (export, ranking) stay the config's.
    refit = dataclasses.replace(config, epochs=fitted.best_epoch, early_stopping_patience=None, refit=False)
    both = {
        name: np.concatenate([train_columns[name], validation[name]])
        for name in training_columns(config) if name in train_columns and name in validation
    }
    training = TrainingData.from_columns(both)
    if restarts:
        # Tracing Keras's training step again for a new model cost as much as several epochs.
        restart(model, start, training, config)
    else:
        # The retrieval loss holds the training rows' histories as constants of the traced
        # step: a new model, built on both splits' rows.
        del model, fitted, start
        model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], refit, training)
    loop = epoch_loop(both, refit)
    train(model, batches(both, loop, shuffle=True, repeat=True), None, loop, verbose, label="refit epoch")
    return Fitted(model, training, (epochs_run, refit.epochs), score)
