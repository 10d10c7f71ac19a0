"""tf.Transform preprocessing: ID vocabularies with OOV buckets, labels passed through.

The transform graph this defines is exported inside the model, so serving
applies exactly the mapping training saw.
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from components import features

# custom_config key holding the number of out-of-vocabulary buckets per ID.
NUM_OOV_BUCKETS = "num_oov_buckets"


def transform_ids(inputs: Mapping[str, tf.Tensor], num_oov_buckets: int) -> dict[str, tf.Tensor]:
    """Maps each raw ID feature to its vocabulary index.

    Known IDs get 0..V-1 (most frequent first); unseen IDs hash into
    V..V+num_oov_buckets-1, so serving never fails on a new user or item.
    """
    return {
        features.transformed_name(key): tft.compute_and_apply_vocabulary(
            inputs[key],
            num_oov_buckets=num_oov_buckets,
            vocab_filename=features.vocabulary_name(key),
        )
        for key in features.ID_FEATURES
    }


def pass_labels(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Labels keep their names and become float32 (the heads' loss dtype)."""
    return {head: tf.cast(inputs[head], tf.float32) for head in features.HEADS}


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any]):
    """The Transform component's entry point (see `transform_ids`, `pass_labels`)."""
    return {
        **transform_ids(inputs, int(custom_config[NUM_OOV_BUCKETS])),
        **pass_labels(inputs),
    }
