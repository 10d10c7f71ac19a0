"""The Trainer's and the Tuner's module: reads raw splits through the transform graph, tunes, trains, exports.

`run_fn` and `tuner_fn` only adapt TFX's FnArgs to the plain functions below
and in `recommender.training` / `recommender.export`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from components.custom_config import MODEL, NUM_OOV_BUCKETS
from recommender import export, features
from recommender.config import ModelConfig
from recommender.training import first_fit, fit, training_columns, validation_loss

# Rows per batch when a split is read into memory (not the training batch size).
READ_BATCH_SIZE = 8192


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
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the training rows, the validation rows) of `fn_args` as in-memory columns (`training_columns(config)`).

    Both are read from their files once and trained from memory: the model
    already needs every training row's IDs, and re-reading and parsing the
    files each epoch cost more than the model's own steps. The training rows
    are the train splits less the validation split, which a refit's
    `train_args` also name (the refit fits both).
    """
    fitted = [pattern for pattern in fn_args.train_files if pattern not in fn_args.eval_files]
    # Only the columns training reads: the others (the tiers, as strings) would cost memory for nothing.
    return (
        read_columns(fitted, tf_transform_output, training_columns(config)),
        # The validation split (the Trainer's eval_args) is scored each epoch and
        # drives early stopping; the Evaluator judges the model on another split.
        read_columns(fn_args.eval_files, tf_transform_output, training_columns(config)),
    )


def tuned_config(config: ModelConfig, hyperparameters: Mapping[str, Any] | None) -> ModelConfig:
    """`config` with the Tuner's best values (a keras_tuner.HyperParameters config, or None) on top."""
    if not hyperparameters:
        return config
    values = keras_tuner.HyperParameters.from_config(hyperparameters).values
    logging.getLogger(features.PROGRESS_LOGGER).info("the Tuner's best hyperparameters: %s", values)
    return config.with_values({**values, "tuning": None})


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point."""
    custom: Mapping[str, Any] = fn_args.custom_config
    config = tuned_config(ModelConfig.from_json_dict(custom[MODEL]), fn_args.hyperparameters)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    sizes = vocabulary_sizes(tf_transform_output, int(custom[NUM_OOV_BUCKETS]))
    fitted = fit(*read_splits(fn_args, tf_transform_output, config), sizes, config)
    export.export_model(fitted.model, tf_transform_output, fn_args.serving_model_dir, fitted.training, config)


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

    def run_trial(self, trial, train_columns, validation, sizes, verbose: int = 2) -> float:
        config = self.config.with_values({**trial.hyperparameters.values, "tuning": None})
        model, fitted = first_fit(train_columns, validation, sizes, config, verbose)
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
    })
