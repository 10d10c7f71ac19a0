"""tf.Transform preprocessing: ID vocabularies with OOV buckets, labels passed through.

The transform graph this defines is exported inside the model, so serving
applies exactly the mapping training saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from components.custom_config import NUM_OOV_BUCKETS, TIER_THRESHOLDS
from recommender import features, heads


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


def training_counts(x: tf.Tensor, vocab_filename: str) -> tf.Tensor:
    """How often each value of the string tensor `x` occurs in the analysed (training) data.

    One vocabulary that stores each value's frequency, looked up by value;
    0 for a value the analysis never saw.
    """
    # tf.Transform's own workaround (b/62379925): a frequency file is
    # "count value" per line, so spaces inside a value must not split it.
    formatted = tf.strings.regex_replace(x, " ", "__SPACE__")
    counts_file = tft.vocabulary(formatted, store_frequency=True, vocab_filename=vocab_filename)

    def lookup(values: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                path, key_dtype=tf.string, key_index=1, value_dtype=tf.int64, value_index=0, delimiter=" "
            ),
            default_value=0,
        )
        return table.lookup(values), table.size()

    return tft.apply_vocabulary(formatted, counts_file, lookup_fn=lookup)


def tiers(inputs: Mapping[str, tf.Tensor], some: int, many: int) -> dict[str, tf.Tensor]:
    """Each ID's tier by its count in the analysed (training) data, for slicing.

    "many" (>= many), "some" (>= some), "few" (seen), "unseen".
    """
    unseen, few, mid, top = features.TIERS
    out = {}
    for key, name in features.SLICE_FEATURES.items():
        count = training_counts(inputs[key], f"{features.vocabulary_name(key)}_counts")
        out[name] = tf.where(
            count >= many, top, tf.where(count >= some, mid, tf.where(count >= 1, few, unseen))
        )
    return out


def pass_labels(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Labels keep their names and become float32 (the heads' loss dtype)."""
    return {head: tf.cast(inputs[head], tf.float32) for head in heads.NAMES}


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any]):
    """The Transform component's entry point (see `transform_ids`, `tiers`, `pass_labels`)."""
    some, many = custom_config[TIER_THRESHOLDS]
    return {
        **transform_ids(inputs, int(custom_config[NUM_OOV_BUCKETS])),
        **tiers(inputs, int(some), int(many)),
        **pass_labels(inputs),
    }
