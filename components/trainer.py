"""The Trainer's module: reads transformed data, trains, exports.

`run_fn` only adapts TFX's FnArgs to the plain functions below and in
`components.model` / `components.export`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx_bsl.public import tfxio

from components import export, features, heads
from components.model import ModelConfig, TrainingData, build_model, train
from components.preprocessing import NUM_OOV_BUCKETS

# custom_config key holding ModelConfig.to_json_dict().
MODEL_CONFIG = "model"


def split_labels(batch: Mapping[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Splits a transformed batch into (model inputs, {head: label})."""
    inputs = {
        features.transformed_name(key): batch[features.transformed_name(key)]
        for key in features.ID_FEATURES
    }
    labels = {head: batch[head] for head in heads.NAMES}
    return inputs, labels


def input_dataset(
    file_pattern: list[str],
    data_accessor: DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    config: ModelConfig,
    shuffle: bool,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Transformed examples as (inputs, labels) batches: one pass, or endless if `repeat`."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=config.batch_size,
            shuffle=shuffle,
            shuffle_seed=config.seed,
            num_epochs=None if repeat else 1,
        ),
        tf_transform_output.transformed_metadata.schema,
    )
    return dataset.map(split_labels, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def vocabulary_sizes(
    tf_transform_output: tft.TFTransformOutput, num_oov_buckets: int
) -> dict[str, int]:
    """Embedding rows per ID feature: the vocabulary plus its OOV buckets."""
    return {
        key: tf_transform_output.vocabulary_size_by_name(features.vocabulary_name(key))
        + num_oov_buckets
        for key in features.ID_FEATURES
    }


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point."""
    custom: Mapping[str, Any] = fn_args.custom_config
    config = ModelConfig.from_json_dict(custom[MODEL_CONFIG])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    sizes = vocabulary_sizes(tf_transform_output, int(custom[NUM_OOV_BUCKETS]))
    training = TrainingData.from_batches(input_dataset(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, config, shuffle=False
    ))
    model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training)
    train_data = input_dataset(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, config,
        shuffle=True, repeat=config.steps_per_epoch is not None,
    )
    # The validation split (the Trainer's eval_args) is scored each epoch and
    # drives early stopping; the Evaluator judges the model on another split.
    eval_data = input_dataset(
        fn_args.eval_files, fn_args.data_accessor, tf_transform_output, config, shuffle=False
    )
    train(model, train_data, eval_data, config)
    export.export_model(model, tf_transform_output, fn_args.serving_model_dir, training, config)
