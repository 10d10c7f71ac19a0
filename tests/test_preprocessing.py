"""preprocessing_fn through real tf.Transform analysis, checked against hand-made vocabularies."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components.custom_config import NUM_OOV_BUCKETS, TIER_THRESHOLDS, VOCABULARY_MIN_COUNT, VOCABULARY_TOP_K
from components.preprocessing import (
    item_counts,
    preprocessing_fn,
    training_counts,
    training_statistics,
    vocabulary_report,
)
from recommender import features

OOV = 2
SPEC = {
    features.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    features.ITEM_ID: tf.io.FixedLenFeature([1], tf.string),
    features.BINARY_RATING: tf.io.FixedLenFeature([1], tf.int64),
    features.PURCHASE_PROBABILITY: tf.io.FixedLenFeature([1], tf.float32),
    features.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64),
}


def _row(user, item, liked=1, prob=0.5, timestamp=1_600_000_000):
    return {
        features.USER_ID: [user],
        features.ITEM_ID: [item],
        features.BINARY_RATING: [liked],
        features.PURCHASE_PROBABILITY: [prob],
        features.TIMESTAMP: [timestamp],
    }


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    # Distinct frequencies so the vocabulary order (most frequent first) is unambiguous:
    # users "3" x3, "1" x2, "2" x1; items "10" x4, "9" x2.
    rows = [
        _row(b"3", b"10", 1, 0.9), _row(b"3", b"10", 0, 0.2), _row(b"3", b"9", 1, 0.7),
        _row(b"1", b"10"), _row(b"1", b"9"), _row(b"2", b"10", 0, 0.25),
    ]
    unseen = [_row(b"never-seen", b"10"), _row(b"3", b"no-such-item")]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(SPEC))
    written = tmp_path_factory.mktemp("transform")
    with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft"))):
        (train, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, {NUM_OOV_BUCKETS: OOV, TIER_THRESHOLDS: [2, 3]})
        )
        new, _ = ((unseen, metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(written))
    return train, new, tft.TFTransformOutput(str(written))


def _column(rows, key):
    return [np.asarray(r[key]).item() for r in rows]


def test_ids_map_to_frequency_ordered_vocabulary_indices(transformed):
    train, _, _ = transformed
    assert _column(train, features.transformed_name(features.USER_ID)) == [0, 0, 0, 1, 1, 2]
    assert _column(train, features.transformed_name(features.ITEM_ID)) == [0, 0, 1, 0, 1, 0]


def test_unknown_ids_fall_into_oov_buckets_after_the_vocabulary(transformed):
    _, new, _ = transformed
    unknown_user = _column(new, features.transformed_name(features.USER_ID))[0]
    unknown_item = _column(new, features.transformed_name(features.ITEM_ID))[1]
    assert 3 <= unknown_user < 3 + OOV  # 3 known users
    assert 2 <= unknown_item < 2 + OOV  # 2 known items
    assert _column(new, features.transformed_name(features.ITEM_ID))[0] == 0  # "10" still known


def test_the_analysis_records_the_base_rates_and_the_item_counts_the_trainer_starts_from(transformed):
    """What the Trainer reads instead of a pass over the rows: the analysed rows' count, each
    head's mean label and each item's count, in the item vocabulary's index order."""
    _, _, output = transformed
    assert training_statistics(output) == {
        "rows": 6,
        "label_means": {
            features.BINARY_RATING: pytest.approx(4 / 6),
            features.PURCHASE_PROBABILITY: pytest.approx(np.mean([0.9, 0.2, 0.7, 0.5, 0.5, 0.25])),
        },
    }
    assert list(item_counts(output)) == [4, 2]  # "10", then "9"


def test_labels_pass_through_as_float(transformed):
    train, _, _ = transformed
    assert _column(train, features.BINARY_RATING) == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert _column(train, features.PURCHASE_PROBABILITY) == pytest.approx([0.9, 0.2, 0.7, 0.5, 0.5, 0.25])
    assert set(train[0]) == {
        features.transformed_name(features.USER_ID),
        features.transformed_name(features.ITEM_ID),
        features.BINARY_RATING,
        features.PURCHASE_PROBABILITY,
        features.TIMESTAMP,
        *features.SLICE_FEATURES.values(),
    }


def test_tiers_count_training_interactions(transformed):
    train, new, _ = transformed
    # Thresholds (2, 3): users "3" x3 many, "1" x2 some, "2" x1 few; items "10" x4, "9" x2.
    assert _column(train, "user_activity") == [b"many"] * 3 + [b"some"] * 2 + [b"few"]
    assert _column(train, "item_popularity") == [b"many", b"many", b"some", b"many", b"some", b"many"]
    assert _column(new, "user_activity") == [b"unseen", b"many"]
    assert _column(new, "item_popularity") == [b"many", b"unseen"]


def test_training_counts_keep_values_with_spaces_apart(tmp_path):
    # The frequency file is "count value" per line: a space inside a value must not split it.
    spec = {"id": tf.io.FixedLenFeature([1], tf.string)}
    rows = [{"id": [b"a b"]}, {"id": [b"a b"]}, {"id": [b"a"]}, {"id": [b"b"]}, {"id": [b"a b"]}]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with tft_beam.Context(temp_dir=str(tmp_path)):
        (counted, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: {"count": training_counts(inputs["id"], "id_counts")}
        )
        new, _ = (([{"id": [b"a  b"]}, {"id": [b"b"]}], metadata), transform_fn) | tft_beam.TransformDataset()
    assert _column(counted, "count") == [3, 3, 1, 1, 3]
    assert _column(new, "count") == [0, 1]


def _analysed(tmp_path, rows, config):
    """The transform graph of `rows` (written to tmp_path/graph), and the rows transformed."""
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(SPEC))
    with tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        (transformed_rows, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, {NUM_OOV_BUCKETS: OOV, TIER_THRESHOLDS: [2, 3], **config})
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "graph"))
    return str(tmp_path / "graph"), transformed_rows


# Users "u0" x5, "u1" x4, "u2" x3, "u3" x2, "u4" x1; items "i0" x9, "i1" x6.
CAPPED_ROWS = [_row(f"u{u}".encode(), b"i0" if n % 2 == 0 else b"i1") for u in range(5) for n in range(5 - u)]


@pytest.mark.parametrize(("config", "kept_users"), [
    ({VOCABULARY_TOP_K: 2}, [b"u0", b"u1"]),
    ({VOCABULARY_MIN_COUNT: 3}, [b"u0", b"u1", b"u2"]),
    ({VOCABULARY_TOP_K: 4, VOCABULARY_MIN_COUNT: 3}, [b"u0", b"u1", b"u2"]),
])
def test_capped_vocabularies_keep_the_most_frequent_ids_and_report_the_dropped(tmp_path, config, kept_users):
    graph, rows = _analysed(tmp_path, CAPPED_ROWS, config)
    output = tft.TFTransformOutput(graph)
    assert output.vocabulary_by_name(features.vocabulary_name(features.USER_ID)) == kept_users
    users = _column(rows, features.transformed_name(features.USER_ID))
    raw = [r[features.USER_ID][0] for r in CAPPED_ROWS]
    for user, index in zip(raw, users):
        if user in kept_users:
            assert index == kept_users.index(user)
        else:  # dropped: hashed into the OOV buckets, like an unseen user
            assert len(kept_users) <= index < len(kept_users) + OOV
    # A dropped user is "unseen" to the slices too: the model knows it no better.
    activity = dict(zip(raw, _column(rows, "user_activity")))
    assert {user for user, tier in activity.items() if tier == b"unseen"} == set(raw) - set(kept_users)
    report = vocabulary_report(graph)
    assert report[features.USER_ID] == {"ids": len(kept_users), "distinct": 5, "dropped": 5 - len(kept_users)}
    assert report[features.ITEM_ID]["distinct"] == 2


def test_without_caps_every_id_is_kept_and_nothing_is_counted_again(tmp_path):
    graph, _ = _analysed(tmp_path, CAPPED_ROWS, {})
    assert vocabulary_report(graph) == {
        features.USER_ID: {"ids": 5, "distinct": None, "dropped": None},
        features.ITEM_ID: {"ids": 2, "distinct": None, "dropped": None},
    }
