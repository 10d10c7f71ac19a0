"""The Trainer's and the Tuner's module: reads raw splits through the transform graph, tunes, trains, exports.

`run_fn` and `tuner_fn` only adapt TFX's FnArgs to the plain functions below
and in `recommender.training` / `recommender.export`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from components import preprocessing
from components.custom_config import MODEL, NUM_OOV_BUCKETS
from recommender import export, features
from recommender.config import ModelConfig
from recommender.model import TrainingData, build_model
from recommender.training import (
    Fitted,
    Rows,
    Stream,
    Summarize,
    first_fit,
    fit,
    summarized,
    training_columns,
    validation_loss,
)

# Rows per batch when a split is read into memory (not the training batch size).
READ_BATCH_SIZE = 8192


def files_of(file_pattern: Sequence[str]) -> list[str]:
    """The files matching any of `file_pattern`, sorted; an error if none does."""
    files = sorted(path for pattern in file_pattern for path in tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no files match {list(file_pattern)}")
    return files


def stream_reader(tf_transform_output: tft.TFTransformOutput, names: list[str], shuffle_buffer: int):
    """`Stream.read` over ExampleGen's gzipped tf.Example TFRecords: each batch goes through the
    transform graph as it is read, and only the columns `names` are kept.

    A shuffled pass draws the files' order, reads them in turn and shuffles
    `shuffle_buffer` records at a time. ExampleGen's files are each a uniform
    sample of their split (`components.shuffle`), so the buffer draws a fair
    order; memory holds the buffer, never the split. Under tf.distribute each
    worker is given its own files (`recommender.training.batches`).
    """
    raw_spec = tf_transform_output.raw_feature_spec()
    transform = tf_transform_output.transform_features_layer()

    def transformed(records):
        columns = transform(tf.io.parse_example(records, raw_spec))
        return {name: columns[name] for name in names}

    def read(files: Sequence[str], batch_size: int, seed: int | None) -> tf.data.Dataset:
        names_ = tf.data.Dataset.from_tensor_slices(list(files))
        if seed is not None:
            names_ = names_.shuffle(len(files), seed=seed)
        # One file after another: a parallel interleave of the files cost several times the
        # whole rest of a pass, per record; the shuffle buffer does the mixing.
        dataset = tf.data.TFRecordDataset(names_, compression_type="GZIP")
        if seed is not None:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        # Parsed and transformed READ_BATCH_SIZE records at a time, then cut into training batches:
        # a call of the transform graph per training batch cost more than the training step.
        return dataset.batch(READ_BATCH_SIZE).map(
            transformed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        ).rebatch(batch_size).prefetch(tf.data.AUTOTUNE)

    return read


def count_records(files: Sequence[str]) -> int:
    """How many records the gzipped TFRecord `files` hold (read, not parsed)."""
    # Counted a block of records at a time: a reduce over single records cost ten times as much.
    blocks = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(READ_BATCH_SIZE)
    return int(blocks.reduce(np.int64(0), lambda count, block: count + tf.size(block, out_type=tf.int64)))


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
    files = files_of(file_pattern)
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
    fn_args: FnArgs, tf_transform_output: tft.TFTransformOutput, config: ModelConfig
) -> tuple[Rows, Rows]:
    """(the training rows, the validation rows) of `fn_args`, each with the columns `training_columns(config)`.

    The training rows are the train splits less the validation split, which a
    refit's `train_args` also name (the refit fits both). Where the files of
    both take at most `config.input.max_in_memory_mib`, both are read once and
    trained from memory: re-reading and parsing the files each epoch costs
    more than the model's own steps on small data. Larger splits are Streams,
    read from their files each epoch, so memory does not grow with the rows.
    """
    patterns = [pattern for pattern in fn_args.train_files if pattern not in fn_args.eval_files]
    fitted, validation = files_of(patterns), files_of(fn_args.eval_files)
    # Only the columns training reads: the others (the tiers, as strings) would cost memory for nothing.
    names = training_columns(config)
    on_disk = sum(tf.io.gfile.stat(path).length for path in fitted + validation)
    if on_disk > config.input.max_in_memory_mib * 2**20:
        read = stream_reader(tf_transform_output, names, config.input.shuffle_buffer)
        return (Stream(tuple(fitted), read, count_records(fitted)),
                Stream(tuple(validation), read, count_records(validation)))
    # The validation split (the Trainer's eval_args) is scored each epoch and
    # drives early stopping; the Evaluator judges the model on another split.
    # By pattern: globbing each listed file again would be one listing per file on object storage.
    return (read_columns(patterns, tf_transform_output, names),
            read_columns(fn_args.eval_files, tf_transform_output, names))


def summarizer(tf_transform_output: tft.TFTransformOutput, config: ModelConfig):
    """The Trainer's `Summarize`: the heads' base rates and the items' popularity from Transform's
    analyzers (over the rows the shipped model learns from), with no pass over the rows; only
    the retrieval task also holds the rows' ID pairs (and times), read from their files for a Stream."""
    statistics = preprocessing.training_statistics(tf_transform_output)
    counts = preprocessing.item_counts(tf_transform_output)

    def summarize(rows: Rows) -> TrainingData:
        summary = TrainingData(label_means=statistics["label_means"], item_counts=counts)
        if config.retrieval is None:
            return summary
        names = [name for name in training_columns(config) if name not in summary.label_means]
        pairs = read_columns(list(rows.files), tf_transform_output, names) if isinstance(rows, Stream) else rows
        return dataclasses.replace(
            TrainingData.from_columns(pairs, label_names=()), label_means=summary.label_means, item_counts=counts
        )

    return summarize


def tuned_config(config: ModelConfig, hyperparameters: Mapping[str, Any] | None) -> ModelConfig:
    """`config` with the Tuner's best values (a keras_tuner.HyperParameters config, or None) on top."""
    if not hyperparameters:
        return config
    values = keras_tuner.HyperParameters.from_config(hyperparameters).values
    logging.getLogger(features.PROGRESS_LOGGER).info("the Tuner's best hyperparameters: %s", values)
    return config.with_values({**values, "tuning": None})


class Role(NamedTuple):
    """This task's place in the cluster TF_CONFIG describes (`cluster_role`)."""

    tasks: int  # every task of the cluster, parameter servers included
    chief: bool  # this task alone exports (and, with parameter servers, coordinates the training)
    parameter_servers: int  # 0: none, the workers train under MultiWorkerMirroredStrategy


def cluster_role(tf_config: str | None) -> Role:
    """This task's `Role` in the cluster `tf_config` (TF_CONFIG's JSON) describes: the chief is task
    "chief", else worker 0; with no TF_CONFIG, the one task and the chief.

    A cluster with parameter servers needs a "chief" task: it runs the
    training program and sends the steps to the workers.
    """
    spec = json.loads(tf_config) if tf_config else {}
    cluster, task = spec.get("cluster", {}), spec.get("task", {})
    tasks = sum(len(addresses) for addresses in cluster.values())
    servers = len(cluster.get("ps", ()))
    if servers and "chief" not in cluster:
        raise ValueError("TF_CONFIG names parameter servers but no chief: with parameter servers, the chief "
                         "coordinates the training")
    if tasks <= 1:
        return Role(max(tasks, 1), True, 0)
    kind, index = task.get("type"), int(task.get("index", 0))
    return Role(tasks, kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster), servers)


def distribution(tf_config: str | None) -> tuple[tf.distribute.Strategy | None, Role]:
    """(the tf.distribute strategy this task trains under, its `Role`).

    One task: TensorFlow's default strategy. Several: MultiWorkerMirroredStrategy,
    each worker training on its share of the files (streamed) or rows (in
    memory) with the variables mirrored. With parameter servers, the chief
    trains under ParameterServerStrategy, every variable split over the
    parameter servers (so an embedding table may exceed one machine's
    memory), and the strategy of a worker or parameter server is None: it
    serves the chief (`serve`). It must be made before any TensorFlow op runs
    in the process (collective ops are configured at start).
    """
    role = cluster_role(tf_config)
    if role.tasks == 1:
        return tf.distribute.get_strategy(), role
    if not role.parameter_servers:
        return tf.distribute.MultiWorkerMirroredStrategy(), role
    if not role.chief:
        return None, role
    # Every variable over every parameter server: a table's rows (the first axis) are split
    # evenly, so each server holds 1/N of each embedding table and of its optimizer slots.
    partitioner = tf.distribute.experimental.partitioners.FixedShardsPartitioner(role.parameter_servers)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.experimental.ParameterServerStrategy(resolver, variable_partitioner=partitioner), role


def serve(tf_config: str) -> None:
    """Runs this worker's or parameter server's TensorFlow server for the chief; never returns (the
    cluster's launcher ends the job when the chief ends)."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
                         protocol=resolver.rpc_layer or "grpc", start=True).join()


class Trained(NamedTuple):
    """A fitted model and what its export needs."""

    fitted: Fitted
    config: ModelConfig
    sizes: Mapping[str, int]
    transform_output: tft.TFTransformOutput


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point; TF_CONFIG, where the launcher sets it, distributes the training (`distribution`)."""
    tf_config = os.environ.get("TF_CONFIG")
    strategy, role = distribution(tf_config)
    if strategy is None:
        serve(tf_config)
    export_trained(train(fn_args, strategy), fn_args.serving_model_dir, role)


def train(fn_args: FnArgs, strategy: tf.distribute.Strategy) -> Trained:
    """The model `fn_args` describes, fitted under `strategy` (`fit` on `read_splits`)."""
    custom: Mapping[str, Any] = fn_args.custom_config
    config = tuned_config(ModelConfig.from_json_dict(custom[MODEL]), fn_args.hyperparameters)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    sizes = vocabulary_sizes(tf_transform_output, int(custom[NUM_OOV_BUCKETS]))
    with strategy.scope():
        fitted = fit(*read_splits(fn_args, tf_transform_output, config), sizes, config,
                     summarize=summarizer(tf_transform_output, config))
    return Trained(fitted, config, sizes, tf_transform_output)


def export_trained(trained: Trained, serving_model_dir: str, role: Role) -> None:
    """Exports `trained`'s model to `serving_model_dir` if this task is the chief; a worker under
    MultiWorkerMirroredStrategy takes its part in the save, to a scratch folder it deletes."""
    fitted = trained.fitted
    model = fitted.model
    if role.parameter_servers:
        # A SavedModel of split variables cannot be loaded with tf.saved_model.load: the export is
        # the same model with whole tables, restored from the split one's checkpoint.
        model = unsplit(model, trained.sizes, trained.config, fitted.training)
    if role.chief:
        export.export_model(model, trained.transform_output, serving_model_dir, fitted.training, trained.config)
        return
    # Saving a mirrored model takes every worker's part; the others' copies are thrown away.
    scratch = tempfile.mkdtemp(prefix="worker-export-")
    try:
        export.export_model(model, trained.transform_output, scratch, fitted.training, trained.config)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unsplit(model: tf_keras.Model, sizes: Mapping[str, int], config: ModelConfig,
            training: TrainingData) -> tf_keras.Model:
    """`model`'s weights in the same model built outside any strategy: each variable split over
    parameter servers becomes one variable (a checkpoint restores into any number of shards)."""
    whole = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training)
    whole.build_weights()
    with tempfile.TemporaryDirectory(prefix="unsplit-") as folder:
        path = tf.train.Checkpoint(model=model).write(os.path.join(folder, "weights"))
        restored = tf.train.Checkpoint(model=whole).read(path)
        # Every variable of the model is restored; the optimizer's slots are not exported.
        restored.assert_existing_objects_matched().expect_partial()
    return whole


class SearchSpaceTuner(keras_tuner.RandomSearch):
    """KerasTuner's random search over a TuningConfig, each trial the Trainer's first fit.

    A trial draws one value per field of the search space, fits `config` with
    those values on the train rows (early-stopped on the validation rows) and
    returns its validation loss (`recommender.training.validation_loss`), which
    the oracle minimises. No trial is refitted or exported.
    """

    def __init__(self, config: ModelConfig, **kwargs):
        self.config = config
        hyperparameters = keras_tuner.HyperParameters()
        for name, values in config.tuning.search_space.items():
            hyperparameters.Choice(name, list(values))
        super().__init__(
            objective=keras_tuner.Objective("val_loss", "min"), max_trials=config.tuning.max_trials,
            seed=config.seed, hyperparameters=hyperparameters, tune_new_entries=False, **kwargs,
        )

    def run_trial(self, trial, train_columns, validation, sizes, summarize: Summarize = summarized,
                  verbose: int = 2) -> float:
        config = self.config.with_values({**trial.hyperparameters.values, "tuning": None})
        model, fitted = first_fit(train_columns, validation, sizes, config, verbose, summarize)
        del model
        return validation_loss(fitted, config)


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """TFX Tuner entry point: the search of the model config's `tuning` over the Tuner's splits
    (train_args: the train split; eval_args: the validation split)."""
    custom: Mapping[str, Any] = fn_args.custom_config
    config = ModelConfig.from_json_dict(custom[MODEL])
    if config.tuning is None:
        raise ValueError("the Tuner needs the model config's tuning (its search space and trials)")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train_columns, validation = read_splits(fn_args, tf_transform_output, config)
    tuner = SearchSpaceTuner(config, directory=fn_args.working_dir, project_name="search", overwrite=True)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        "train_columns": train_columns, "validation": validation,
        "sizes": vocabulary_sizes(tf_transform_output, int(custom[NUM_OOV_BUCKETS])),
        "summarize": summarizer(tf_transform_output, config),
    })
