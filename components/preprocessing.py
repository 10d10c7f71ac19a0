"""tf.Transform preprocessing: ID vocabularies with OOV buckets, labels passed through.

The transform graph this defines is exported inside the model, so serving
applies exactly the mapping training saw.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from components.custom_config import NUM_OOV_BUCKETS, TIER_THRESHOLDS, VOCABULARY_MIN_COUNT, VOCABULARY_TOP_K
from recommender import features, heads

# What a space inside a value becomes in a frequency vocabulary, whose lines are "count value"
# (tf.Transform's own workaround, b/62379925).
SPACE = "__SPACE__"


def _write_asset(text: str, folder: str, name: str) -> np.ndarray:
    """`text` as a file named `name` in a new folder under `folder`; its path."""
    path = os.path.join(folder, uuid.uuid4().hex, name)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return np.array(path.encode())


class DistinctCount(tft_beam.experimental.PTransformAnalyzer):
    """A tf.Transform analyzer (`tft.experimental.ptransform_analyzer`): the number of distinct values
    of one string tensor over the analysed rows, written as a one-line file named `name`, an asset.

    Beam's `Distinct` groups by value across workers, so no one worker holds every ID.
    """

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def expand(self, batches):
        return (
            batches
            | "Values" >> beam.FlatMap(lambda batch: batch[0].ravel().tolist())
            | "Distinct" >> beam.Distinct()
            | "Count" >> beam.combiners.Count.Globally()
            | "Write" >> beam.Map(lambda count, folder, name: _write_asset(f"{count}\n", folder, name),
                                  self.base_temp_dir, self._name)
        )


def count_distinct(x: tf.Tensor, name: str) -> None:
    """Writes the number of distinct values of `x` to the transform graph's asset `name`
    (`TFTransformOutput.vocabulary_file_by_name(name)`)."""
    tft.experimental.ptransform_analyzer(
        [x], DistinctCount(name), [tf.string], [[]], output_asset_default_values=[b"0\n"], name=name
    )
    tft.annotate_asset(name, name)


class LabelMeans(tft_beam.experimental.PTransformAnalyzer):
    """A tf.Transform analyzer: the analysed rows' count and each label's mean, written as a JSON
    file (`{"rows": n, "label_means": {label: mean}}`) named `name`, an asset.

    Each worker sums its batches and one combine adds the sums, so no worker holds the rows.
    `labels` names the inputs, in order.
    """

    def __init__(self, name: str, labels: Sequence[str]):
        super().__init__()
        self._name, self._labels = name, list(labels)

    def expand(self, batches):
        width = 1 + len(self._labels)
        return (
            batches
            | "Sums" >> beam.Map(lambda batch: np.array(
                [len(batch[0]), *(np.sum(values, dtype=np.float64) for values in batch)], np.float64))
            | "Total" >> beam.CombineGlobally(lambda sums: sum(sums, np.zeros(width)))
            | "Write" >> beam.Map(_write_label_means, self._labels, self.base_temp_dir, self._name)
        )


def _write_label_means(totals: np.ndarray, labels: Sequence[str], folder: str, name: str) -> np.ndarray:
    rows = int(totals[0])
    means = {label: float(totals[1 + i] / rows) if rows else 0.0 for i, label in enumerate(labels)}
    return _write_asset(json.dumps({"rows": rows, "label_means": means}), folder, name)


def label_means(inputs: Mapping[str, tf.Tensor]) -> None:
    """Writes the analysed (training) rows' count and each head's mean label to the transform graph's
    asset `features.TRAINING_STATISTICS` (read back by `training_statistics`): the heads' starting
    base rates, with no pass over the rows in the Trainer."""
    name = features.TRAINING_STATISTICS
    tft.experimental.ptransform_analyzer(
        [tf.cast(inputs[head], tf.float64) for head in heads.NAMES], LabelMeans(name, heads.NAMES),
        [tf.string], [[]], output_asset_default_values=[b"{}"], name=name,
    )
    tft.annotate_asset(name, name)


def training_statistics(tf_transform_output: tft.TFTransformOutput) -> dict[str, Any]:
    """What `label_means` wrote: {"rows": analysed rows, "label_means": {head: mean label}}."""
    path = tf_transform_output.vocabulary_file_by_name(features.TRAINING_STATISTICS)
    if not path:
        raise ValueError(f"the transform graph has no {features.TRAINING_STATISTICS} asset: "
                         "it was made by an older preprocessing_fn; run Transform again")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def item_counts(tf_transform_output: tft.TFTransformOutput) -> np.ndarray:
    """How often each item of the item vocabulary occurs in the analysed rows, in vocabulary index
    order (the tiers' counts vocabulary, read onto the lookup vocabulary's indices)."""
    key = features.ITEM_ID
    counts_path = tf_transform_output.vocabulary_file_by_name(counts_name(key))
    by_value = {}
    with tf.io.gfile.GFile(counts_path, "rb") as f:
        for line in f:
            count, _, value = line.rstrip(b"\n").partition(b" ")
            by_value[value.replace(SPACE.encode(), b" ")] = int(count)
    items = tf_transform_output.vocabulary_by_name(features.vocabulary_name(key))
    return np.array([by_value.get(item, 0) for item in items], np.int64)


def counts_name(key: str) -> str:
    """The file name of the training counts vocabulary of ID feature `key` (`training_counts`)."""
    return f"{features.vocabulary_name(key)}_counts"


def vocabulary_caps(top_k: int | None, min_count: int) -> dict[str, int | None]:
    """tf.Transform's vocabulary arguments for the caps: None where there is no cap."""
    return {"top_k": top_k, "frequency_threshold": min_count if min_count > 1 else None}


def transform_ids(
    inputs: Mapping[str, tf.Tensor], num_oov_buckets: int, top_k: int | None = None, min_count: int = 1,
) -> dict[str, tf.Tensor]:
    """Maps each raw ID feature to its vocabulary index.

    Known IDs get 0..V-1 (most frequent first); unseen IDs hash into
    V..V+num_oov_buckets-1, so serving never fails on a new user or item.
    With caps, the vocabulary keeps the `top_k` most frequent IDs at most, and
    only IDs seen at least `min_count` times; the others hash into the OOV
    buckets as unseen IDs do, and the analysis also writes the number of
    distinct IDs it saw (asset `features.distinct_name(key)`), so that the
    dropped ones can be counted.
    """
    caps = vocabulary_caps(top_k, min_count)
    capped = any(value is not None for value in caps.values())
    out = {}
    for key in features.ID_FEATURES:
        out[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            inputs[key], num_oov_buckets=num_oov_buckets, vocab_filename=features.vocabulary_name(key), **caps,
        )
        if capped:
            count_distinct(inputs[key], features.distinct_name(key))
    return out


def training_counts(x: tf.Tensor, vocab_filename: str, top_k: int | None = None, min_count: int = 1) -> tf.Tensor:
    """How often each value of the string tensor `x` occurs in the analysed (training) data.

    One vocabulary that stores each value's frequency, looked up by value;
    0 for a value the analysis never saw, or that the caps (as `transform_ids`'s) left out.
    """
    # Spaces inside a value must not split its "count value" line.
    formatted = tf.strings.regex_replace(x, " ", SPACE)
    counts_file = tft.vocabulary(
        formatted, store_frequency=True, vocab_filename=vocab_filename, **vocabulary_caps(top_k, min_count)
    )

    def lookup(values: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                path, key_dtype=tf.string, key_index=1, value_dtype=tf.int64, value_index=0, delimiter=" "
            ),
            default_value=0,
        )
        return table.lookup(values), table.size()

    return tft.apply_vocabulary(formatted, counts_file, lookup_fn=lookup)


def tiers(
    inputs: Mapping[str, tf.Tensor], some: int, many: int, top_k: int | None = None, min_count: int = 1,
) -> dict[str, tf.Tensor]:
    """Each ID's tier by its count in the analysed (training) data, for slicing.

    "many" (>= many), "some" (>= some), "few" (seen), "unseen" (not seen, or
    left out of the capped vocabulary: the model knows it no better than an
    unseen ID).
    """
    unseen, few, mid, top = features.TIERS
    out = {}
    for key, name in features.SLICE_FEATURES.items():
        count = training_counts(inputs[key], counts_name(key), top_k, min_count)
        out[name] = tf.where(
            count >= many, top, tf.where(count >= some, mid, tf.where(count >= 1, few, unseen))
        )
    return out


def pass_labels(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Labels keep their names and become float32 (the heads' loss dtype); the timestamp passes
    as it is (which of a user's training items are the latest)."""
    return {**{head: tf.cast(inputs[head], tf.float32) for head in heads.NAMES},
            features.TIMESTAMP: inputs[features.TIMESTAMP]}


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any]):
    """The Transform component's entry point (see `transform_ids`, `tiers`, `pass_labels`, `label_means`)."""
    some, many = custom_config[TIER_THRESHOLDS]
    top_k = custom_config.get(VOCABULARY_TOP_K)
    caps = {"top_k": None if top_k is None else int(top_k), "min_count": int(custom_config.get(VOCABULARY_MIN_COUNT, 1))}
    label_means(inputs)
    return {
        **transform_ids(inputs, int(custom_config[NUM_OOV_BUCKETS]), **caps),
        **tiers(inputs, int(some), int(many), **caps),
        **pass_labels(inputs),
    }


def vocabulary_report(transform_graph: str) -> dict[str, dict[str, int | None]]:
    """Per ID feature of the transform graph at `transform_graph` (Transform's output folder):
    `ids` in its vocabulary; where the vocabulary was capped, the `distinct` IDs of the analysed
    rows and how many of them were `dropped`; otherwise both None (nothing was dropped)."""
    output = tft.TFTransformOutput(transform_graph)
    report = {}
    for key in features.ID_FEATURES:
        ids = output.vocabulary_size_by_name(features.vocabulary_name(key))
        path = output.vocabulary_file_by_name(features.distinct_name(key))
        distinct = None
        if path:
            with tf.io.gfile.GFile(path) as f:
                distinct = int(f.read().strip())
        report[key] = {"ids": ids, "distinct": distinct, "dropped": None if distinct is None else distinct - ids}
    return report
