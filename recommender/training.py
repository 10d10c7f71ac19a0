"""Training the model: batching, early stopping, refit.

Plain functions over rows given either as in-memory transformed columns
({column: array}: the transformed ID columns and one label per head) or as a
`Stream` of files read batch by batch, so the model trains the same way in the
Trainer, in the Tuner's trials, in benchmarks and in tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from recommender import features, heads
from recommender.config import ModelConfig
from recommender.model import (
    MultiTaskRecommender,
    RetrievalInputs,
    Training,
    TrainingData,
    base_rate,
    build_model,
    train,
)


@dataclasses.dataclass(frozen=True)
class Stream:
    """Rows read from their files as the model trains on them: memory does not grow with the rows.

    `read(files, batch_size, seed)` gives one pass over `files` as batches of
    transformed columns ({column: tensor}, `model_columns()` at least): with
    `seed`, in a new order each pass (drawn from the seed); with None, in file
    order. `rows`: how many rows the files hold (an epoch's steps, a
    validation pass's).
    """

    files: tuple[str, ...]
    read: Callable[[Sequence[str], int, int | None], tf.data.Dataset]
    rows: int

    def plus(self, other: Stream) -> Stream:
        """The rows of both (the refit's)."""
        return dataclasses.replace(self, files=self.files + other.files, rows=self.rows + other.rows)


def row_count(rows: Rows) -> int:
    """How many rows `rows` holds."""
    return rows.rows if isinstance(rows, Stream) else len(rows[model_columns()[0]])


# In-memory columns or a Stream.
Rows = Mapping[str, np.ndarray] | Stream


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


class Shard(NamedTuple):
    """This input pipeline's part of the rows: `index` of `count` (tf.distribute's input context)."""

    index: int = 0
    count: int = 1


WHOLE = Shard()


def batches(
    columns: Rows, config: ModelConfig, shuffle: bool, repeat: bool = False, shard: Shard = WHOLE,
    retrieval: RetrievalInputs | None = None,
) -> tf.data.Dataset:
    """(inputs, labels) batches of `config.batch_size` rows of transformed `columns` (in memory, or a Stream's).

    With `shuffle`, every pass draws a new order from `config.seed`; with
    `repeat`, pass after pass, each a whole number of batches. With a `shard`
    of several, the batches hold only this shard's rows (a Stream's files
    `index::count`, in-memory rows `index::count` of each pass's order), and a
    shuffled pass drops its last, short batch, so that every worker's step
    takes gradients of one shape.

    With `retrieval`, each batch's inputs also hold what the retrieval loss
    reads (RetrievalInputs.add), drawn from the seed, the shard and the
    batch's number: the same for every dataset made alike.

    In memory, every pass's order is the same for every dataset made with the
    seed, whatever TensorFlow's global seed; rows are ordered as indices and
    gathered a batch at a time, not one by one. Without `shuffle`, the rows in
    order, in the same batches.
    """
    dataset = _batches(columns, config, shuffle, repeat, shard)
    if retrieval is not None:
        dataset = retrieval.added_to(dataset, config.seed, shard.index)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _batches(columns: Rows, config: ModelConfig, shuffle: bool, repeat: bool, shard: Shard) -> tf.data.Dataset:
    drop = shuffle and shard.count > 1
    if isinstance(columns, Stream):
        if len(columns.files) < shard.count:
            raise ValueError(
                f"{len(columns.files)} file(s) for {shard.count} workers: each worker reads its own files "
                "(set PipelineConfig.example_files to at least the number of workers)")
        files = columns.files[shard.index::shard.count]
        dataset = columns.read(files, config.batch_size, config.seed if shuffle else None)
        if drop:
            dataset = dataset.filter(lambda batch: tf.shape(batch[model_columns()[0]])[0] == config.batch_size)
        dataset = dataset.map(split_labels, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.repeat() if repeat else dataset
    rows = len(next(iter(columns.values())))
    # Only what split_labels keeps: gathering the other columns (the tiers are strings) is wasted work.
    if not shuffle and shard.count == 1:
        # A plain slice per batch: a pass starts several times faster than the indexed
        # pipeline below, and the validation rows are read once per epoch.
        ordered = tf.data.Dataset.from_tensor_slices(split_labels({name: columns[name] for name in model_columns()}))
        return (ordered.repeat() if repeat else ordered).batch(config.batch_size)
    tensors = {name: tf.constant(columns[name]) for name in model_columns()}
    size = config.batch_size

    def order(number):
        if not shuffle:
            return tf.range(shard.index, rows, shard.count, dtype=tf.int64)
        # Stateless, keyed by (seed, pass number): no global seed enters.
        shuffled = tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=tf.int64), seed=tf.stack([tf.constant(config.seed, tf.int64), number])
        )
        return shuffled[shard.index::shard.count]

    def split(indices):
        count = tf.shape(indices, out_type=tf.int64)[0]
        full = count - count % size
        parts = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[:full], [-1, size]))
        if drop:
            return parts
        rest = tf.data.Dataset.from_tensors(indices[full:]).filter(lambda rest: tf.size(rest) > 0)
        return parts.concatenate(rest)

    # The pass numbers 1, 2, ... (a dataset, not a variable: a variable made under a
    # tf.distribute strategy's scope would be one of the strategy's).
    dataset = tf.data.Dataset.counter(1)
    if not repeat:
        dataset = dataset.take(1)
    return dataset.map(order).flat_map(split).map(
        lambda indices: split_labels({name: tf.gather(values, indices) for name, values in tensors.items()}),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )


def distributed(columns: Rows, config: ModelConfig, shuffle: bool,
                retrieval: RetrievalInputs | None = None) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """Endless `batches` of `columns` for the current tf.distribute strategy.

    With one replica, `batches` as they are. With several (workers, or
    devices), each input pipeline makes its own shard's batches of the
    per-replica batch size (`config.batch_size` is the global batch), so no
    worker reads the others' rows.
    """
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync == 1:
        return batches(columns, config, shuffle, repeat=True, retrieval=retrieval)

    def per_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = dataclasses.replace(config, batch_size=context.get_per_replica_batch_size(config.batch_size))
        return batches(columns, local, shuffle, repeat=True,
                       shard=Shard(context.input_pipeline_id, context.num_input_pipelines), retrieval=retrieval)

    return strategy.distribute_datasets_from_function(per_pipeline)


def epoch_loop(columns: Rows, config: ModelConfig) -> ModelConfig:
    """`config` with `steps_per_epoch` set: as configured, else one pass over `columns`.

    Training batches then repeat endlessly and each epoch takes its steps from
    one iterator: Keras would otherwise start a new pass of the input pipeline
    every epoch, and runs several steps per call only where it knows the steps.
    """
    rows = row_count(columns)
    return dataclasses.replace(config, steps_per_epoch=config.steps_per_epoch or -(-rows // config.batch_size))


class Fitted(NamedTuple):
    model: MultiTaskRecommender  # the model to export
    training: TrainingData  # what it knew of the rows it learnt from
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


# How a fit learns what it needs to know of its rows (`summarized`: from in-memory columns).
Summarize = Callable[[Rows], TrainingData]


def summarized(rows: Rows) -> TrainingData:
    """TrainingData of in-memory columns; a Stream needs a `Summarize` of its own."""
    if isinstance(rows, Stream):
        raise ValueError("a Stream's TrainingData comes from its source: pass `summarize`")
    return TrainingData.from_columns(rows)


def first_fit(
    train_columns: Rows,
    validation: Rows,
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int = 2,
    summarize: Summarize = summarized,
) -> tuple[MultiTaskRecommender, Training]:
    """A model fitted on `train_columns`, validated (and early-stopped) on `validation`."""
    model, training = _built(train_columns, sizes, config, summarize)
    return model, _train_first(model, train_columns, validation, config, verbose,
                               retrieval_inputs(training, sizes, config))


def _built(
    train_columns: Rows, sizes: Mapping[str, int], config: ModelConfig, summarize: Summarize
) -> tuple[MultiTaskRecommender, TrainingData]:
    """(a model built for `train_columns`, their TrainingData)."""
    training = summarize(train_columns)
    return build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training), training


def retrieval_inputs(training: TrainingData, sizes: Mapping[str, int], config: ModelConfig) -> RetrievalInputs | None:
    """What the retrieval loss reads of the rows `training` summarises; None without the task."""
    if config.retrieval is None:
        return None
    return RetrievalInputs.of(training, sizes[features.USER_ID], sizes[features.ITEM_ID], config.retrieval)


def _one_process() -> bool:
    """Whether the model trains in this process alone: no other worker, replica or parameter server."""
    strategy = tf.distribute.get_strategy()
    return strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, tf.distribute.experimental.ParameterServerStrategy)


def _train_first(model, train_columns, validation, config: ModelConfig, verbose: int,
                 retrieval: RetrievalInputs | None) -> Training:
    """Fits `model`, early-stopped on `validation`; the validation rows' retrieval loss reads the
    training rows' histories (`retrieval`), as a request for those users would."""
    loop = epoch_loop(train_columns, config)
    if isinstance(validation, Mapping) and _one_process():
        return train(model, distributed(train_columns, loop, shuffle=True, retrieval=retrieval),
                     batches(validation, loop, shuffle=False, retrieval=retrieval), loop, verbose)
    # Keras cannot know a Stream's or a distributed dataset's size: it is told the validation
    # steps, and each epoch's validation continues the same endless iterator with the next pass.
    return train(
        model, distributed(train_columns, loop, shuffle=True, retrieval=retrieval),
        distributed(validation, loop, shuffle=False, retrieval=retrieval),
        loop, verbose, validation_steps=-(-row_count(validation) // loop.batch_size),
    )


def _both(train_columns: Rows, validation: Rows, config: ModelConfig) -> Rows:
    """The refit's rows: both splits."""
    if isinstance(train_columns, Stream):
        return train_columns.plus(validation)
    return {
        name: np.concatenate([train_columns[name], validation[name]])
        for name in training_columns(config) if name in train_columns and name in validation
    }


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
    train_columns: Rows,
    validation: Rows,
    sizes: Mapping[str, int],
    config: ModelConfig,
    verbose: int = 2,
    summarize: Summarize = summarized,
) -> Fitted:
    """The model to export: fitted on `train_columns`, early-stopped on `validation`.

    With `config.refit`, the model returned starts again from the first fit's
    starting weights and is fitted on both for the epochs early stopping kept,
    with no validation. `summarize` gives each fit's TrainingData (base rates,
    popularity, and the retrieval task's pairs, from which its inputs are drawn).
    """
    model, first = _built(train_columns, sizes, config, summarize)
    # The refit restarts this model (see below): its starting weights are kept, so it is built
    # before training.
    if config.refit:
        model.build_weights()
    start = model.get_weights() if config.refit else None
    fitted = _train_first(model, train_columns, validation, config, verbose, retrieval_inputs(first, sizes, config))
    epochs_run = len(fitted.history.history["loss"])
    score = validation_loss(fitted, config)
    if not config.refit:
        return Fitted(model, first, (epochs_run,), score)
    # Only the loop changes; the model's own settings (export, ranking) stay the config's.
    refit = dataclasses.replace(config, epochs=fitted.best_epoch, early_stopping_patience=None, refit=False)
    both = _both(train_columns, validation, config)
    training = summarize(both)
    # Tracing Keras's training step again for a new model cost as much as several epochs; the
    # step holds nothing of the rows (the retrieval task's inputs come with each batch).
    restart(model, start, training, config)
    loop = epoch_loop(both, refit)
    train(model, distributed(both, loop, shuffle=True, retrieval=retrieval_inputs(training, sizes, config)), None,
          loop, verbose, label="refit epoch")
    return Fitted(model, training, (epochs_run, refit.epochs), score)
