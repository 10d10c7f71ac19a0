"""The Trainer's module: reads raw splits through the transform graph, trains, exports.

`run_fn` only adapts TFX's FnArgs to the plain functions below and in
`components.model` / `components.export`.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import autoencoder, export, features, heads
from components.model import ModelConfig, MultiTaskRecommender, TrainingData, best_epoch, build_model, train
from components.preprocessing import NUM_OOV_BUCKETS

# custom_config key holding ModelConfig.to_json_dict().
MODEL_CONFIG = "model"
# Rows per batch when a split is read into memory (not the training batch size).
READ_BATCH_SIZE = 8192


def model_columns() -> list[str]:
    """The transformed columns the model and its losses read: the ID inputs and one label per head."""
    return [features.transformed_name(key) for key in features.ID_FEATURES] + list(heads.NAMES)


def split_labels(batch: Mapping[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Splits a transformed batch into (model inputs, {head: label})."""
    inputs = {
        features.transformed_name(key): batch[features.transformed_name(key)]
        for key in features.ID_FEATURES
    }
    labels = {head: batch[head] for head in heads.NAMES}
    return inputs, labels


def read_columns(
    file_pattern: list[str], tf_transform_output: tft.TFTransformOutput, names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Every row of a raw split (ExampleGen's gzipped tf.Example TFRecords) through the transform graph, in file order.

    Returns {column: array} of the transformed columns `names` (default:
    every transformed column). The rows go through the same transform graph the
    exported model carries, in large batches, so Transform need not write a
    transformed copy of each split. Reads with plain tf.data rather than the
    DataAccessor's TFXIO dataset, which parsed the same files several times slower.
    """
    files = sorted(path for pattern in file_pattern for path in tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no files match {file_pattern}")
    raw_spec = tf_transform_output.raw_feature_spec()
    transform = tf_transform_output.transform_features_layer()

    def transformed(records):
        columns = transform(tf.io.parse_example(records, raw_spec))
        return {name: columns[name] for name in names or columns}

    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(READ_BATCH_SIZE).map(
        transformed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    parts: dict[str, list[np.ndarray]] = {}
    for batch in dataset:
        for name, values in batch.items():
            parts.setdefault(name, []).append(values.numpy())
    if not parts:
        raise ValueError(f"no rows in {file_pattern}")
    return {name: np.concatenate(values) for name, values in parts.items()}


def batches(
    columns: Mapping[str, np.ndarray], config: ModelConfig, shuffle: bool, repeat: bool = False
) -> tf.data.Dataset:
    """(inputs, labels) batches of in-memory transformed `columns`.

    With `shuffle`, every pass draws a new order of all rows from `config.seed`
    (the same sequence of orders for every dataset made with that seed,
    whatever TensorFlow's global seed); with `repeat`, endless. Rows are
    ordered as indices and gathered a batch at a time, not one by one.
    """
    rows = len(next(iter(columns.values())))
    # Only what split_labels keeps: gathering the other columns (the tiers are strings) is wasted work.
    tensors = {name: tf.constant(columns[name]) for name in model_columns()}
    passes = tf.Variable(0, dtype=tf.int64, trainable=False)

    def order(_):
        if not shuffle:
            return tf.range(rows, dtype=tf.int64)
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


def vocabulary_sizes(
    tf_transform_output: tft.TFTransformOutput, num_oov_buckets: int
) -> dict[str, int]:
    """Embedding rows per ID feature: the vocabulary plus its OOV buckets."""
    return {
        key: tf_transform_output.vocabulary_size_by_name(features.vocabulary_name(key))
        + num_oov_buckets
        for key in features.ID_FEATURES
    }


def read_splits(
    fn_args: FnArgs, tf_transform_output: tft.TFTransformOutput
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the training rows, the validation rows) of `fn_args` as in-memory model columns.

    Both are read from their files once and trained from memory: the model
    already needs every training row's IDs, and re-reading and parsing the
    files each epoch cost more than the model's own steps. The training rows
    are the train splits less the validation split, which a refit's
    `train_args` also name (the refit fits both).
    """
    fitted = [pattern for pattern in fn_args.train_files if pattern not in fn_args.eval_files]
    # Only the model's columns: the others (the tiers, as strings) would cost memory for nothing.
    return (
        read_columns(fitted, tf_transform_output, model_columns()),
        # The validation split (the Trainer's eval_args) is scored each epoch and
        # drives early stopping; the Evaluator judges the model on another split.
        read_columns(fn_args.eval_files, tf_transform_output, model_columns()),
    )


def datasets(
    fn_args: FnArgs, tf_transform_output: tft.TFTransformOutput, config: ModelConfig
) -> tuple[TrainingData, tf.data.Dataset, tf.data.Dataset]:
    """(what the model learns from the training rows before fitting, training
    batches, validation batches) for the Trainer's `fn_args` (see `read_splits`)."""
    train_columns, validation = read_splits(fn_args, tf_transform_output)
    return (
        TrainingData.from_columns(train_columns),
        batches(train_columns, config, shuffle=True, repeat=config.steps_per_epoch is not None),
        batches(validation, config, shuffle=False),
    )


class Fitted(NamedTuple):
    model: MultiTaskRecommender  # the model to export
    training: TrainingData  # the rows it learnt from
    epochs_run: tuple[int, ...]  # per fit: the first (the kept alternative's), then the refit's
    blend: autoencoder.Blend | None = None  # the autoencoder blend the model holds, if any
    # The entry of `config.alternatives` whose first fit was kept ({} for the config
    # itself), and the config the model was fitted with: that entry over `config`.
    alternative: Mapping[str, Any] = types.MappingProxyType({})
    config: ModelConfig | None = None
    # Epochs each first fit ran: the config's, then each alternative's.
    epochs_tried: tuple[int, ...] = ()


def fit(
    train_columns: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int = 2,
) -> Fitted:
    """A model fitted on `train_columns`, validated (and early-stopped) on `validation`.

    The first fit runs for `config` and for each of its `alternatives`, and
    keeps the one `validation_score` ranks first (`first_fit`); from there the
    kept alternative's config is the config. With `config.refit`, the model
    returned is a fresh one fitted on both for the epochs early stopping kept,
    with no validation. With `config.autoencoder_units`, an item autoencoder is
    fitted beside it and blended in (`fit_autoencoder_blend`; a refit refits it
    too and keeps the blend, whose support features then count the pairs the
    refitted autoencoder learned from).
    """
    training = TrainingData.from_columns(train_columns)
    model, history, alternative, config, epochs_tried = first_fit(
        train_columns, validation, training, sizes, config, verbose
    )
    repeat = config.steps_per_epoch is not None
    epochs_run = len(history.history["loss"])
    fitted_autoencoder = blend = None
    if config.autoencoder_units:
        fitted_autoencoder, blend = fit_autoencoder_blend(model, training, validation, sizes, config)
    if not config.refit:
        if blend is not None:
            model.autoencoder.assign(fitted_autoencoder, blend)
        return Fitted(model, training, (epochs_run,), blend, alternative, config, epochs_tried)
    # Only the loop changes; the model's own settings (export, ranking) stay the config's.
    loop = dataclasses.replace(config, epochs=best_epoch(history), early_stopping_patience=None, refit=False)
    # The first model (the history holds it too) is done with: its embeddings and
    # optimizer slots need not stay in memory beside the refit's.
    del model, history
    both = {name: np.concatenate([train_columns[name], validation[name]]) for name in model_columns()}
    training = TrainingData.from_columns(both)
    model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], loop, training)
    train(model, batches(both, loop, shuffle=True, repeat=repeat), None, loop, verbose, label="refit epoch")
    if blend is not None:
        # The autoencoder too is refitted on both for the steps its early stopping kept; the blend stays.
        model.autoencoder.assign(
            _autoencoder(training, model.factorized_head, sizes, config, fitted_autoencoder.steps), blend
        )
    return Fitted(model, training, (epochs_run, loop.epochs), blend, alternative, config, epochs_tried)


def validation_score(history: tf_keras.callbacks.History, config: ModelConfig) -> float:
    """The validation loss of the epoch whose weights a first fit keeps (early stopping's,
    else the last), each head's loss weighted by `config`'s loss weights; NaN counts as infinite.

    Fits under other L2 or loss weights compare alike: the L2 penalty is a
    training loss only, and the weights are the one config's.
    """
    epoch = best_epoch(history) if config.early_stopping_patience is not None else len(history.history["loss"])
    score = sum(
        weight * history.history[f"val_{name}_loss"][epoch - 1] for name, weight in config.weights_for().items()
    )
    return score if np.isfinite(score) else np.inf


def first_fit(
    train_columns: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    training: TrainingData,
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int,
) -> tuple[MultiTaskRecommender, tf_keras.callbacks.History, Mapping[str, Any], ModelConfig, tuple[int, ...]]:
    """(model, its history, the alternative it came from: {} for `config` itself, the config it
    was fitted with) of the fit with the lowest `validation_score` among `config`'s and its
    alternatives' (the first on a tie), and the epochs each of those fits ran.

    Each is trained on `train_columns` and validated on `validation`; only
    the best so far stays in memory.
    """
    best, epochs = None, []
    for alternative in ({}, *config.alternatives):
        candidate = config.alternative(alternative) if alternative else config
        model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], candidate, training)
        history = train(
            model, batches(train_columns, candidate, shuffle=True, repeat=candidate.steps_per_epoch is not None),
            batches(validation, candidate, shuffle=False), candidate, verbose,
        )
        score = validation_score(history, config)
        epochs.append(len(history.history["loss"]))
        if config.alternatives:
            logging.getLogger(features.PROGRESS_LOGGER).info(
                "first fit %s: validation score %.5f", dict(alternative) or "as configured", score
            )
        if best is None or score < best[0]:
            best = (score, model, history, alternative, candidate)
        del model, history
    _, model, history, alternative, kept = best
    return model, history, alternative, kept, tuple(epochs)


def _autoencoder(
    training: TrainingData, head: str, sizes: Mapping[str, int], config: ModelConfig, steps: int,
    validation: TrainingData | None = None,
) -> autoencoder.Autoencoder:
    """The item autoencoder of `config` fitted on `training`'s rows and their `head` labels, for at most `steps`."""
    return autoencoder.fit_autoencoder(
        training.users, training.items, training.labels[head], sizes[features.USER_ID], sizes[features.ITEM_ID],
        units=config.autoencoder_units, l2=config.autoencoder_l2, learning_rate=config.autoencoder_learning_rate,
        seed=config.seed, max_steps=steps,
        max_users=config.autoencoder_max_users, max_items=config.autoencoder_max_items,
        validation=None if validation is None else (validation.users, validation.items, validation.labels[head]),
    )


def fit_autoencoder_blend(
    model: MultiTaskRecommender,
    training: TrainingData,
    validation: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    config: ModelConfig,
) -> tuple[autoencoder.Autoencoder, autoencoder.Blend]:
    """The item autoencoder fitted on `training` (early-stopped on `validation`), and the blend
    of it with `model`'s (not yet blended) heads, fitted on the validation pairs both know."""
    checked = TrainingData.from_columns(validation)
    fitted = _autoencoder(training, model.factorized_head, sizes, config, config.autoencoder_max_steps, checked)
    known = fitted.known_users[checked.users] & fitted.known_items[checked.items]
    # Only the ID columns, of the known pairs: the model predicts nothing else here.
    inputs, _ = split_labels({name: validation[name][known] for name in model_columns()})
    outputs = model.predict(inputs, batch_size=READ_BATCH_SIZE, verbose=0)
    predicted = {name: values.ravel() for name, values in outputs.items()}
    binary = model.autoencoder.binary
    users, items = checked.users[known], checked.items[known]
    blend = autoencoder.fit_blend(
        predicted[model.factorized_head],
        {name: predicted[name] for name in binary},
        autoencoder.estimates(fitted, users, items),
        checked.labels[model.factorized_head][known],
        {name: checked.labels[name][known] for name in binary},
        autoencoder.support(fitted, users, items) if config.blend_by_support else None,
        regression=model.factorized_head,
    )
    logging.getLogger(features.PROGRESS_LOGGER).info("autoencoder blend: %s", blend)
    return fitted, blend


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point."""
    custom: Mapping[str, Any] = fn_args.custom_config
    config = ModelConfig.from_json_dict(custom[MODEL_CONFIG])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    sizes = vocabulary_sizes(tf_transform_output, int(custom[NUM_OOV_BUCKETS]))
    fitted = fit(*read_splits(fn_args, tf_transform_output), sizes, config)
    export.export_model(fitted.model, tf_transform_output, fn_args.serving_model_dir, fitted.training, fitted.config)
