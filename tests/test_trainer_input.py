"""The Trainer's in-memory input: every row once per pass, a new seeded order each pass."""

import numpy as np
import pytest
import tensorflow as tf

from components.trainer import read_columns
from data.synthetic import SyntheticSpec, generate_rows
from recommender import features, heads
from recommender.model import ModelConfig
from recommender.training import batches, model_columns
from tests.support import labelled_example, transform_and_train

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)


def _columns(rows: int) -> dict[str, np.ndarray]:
    ids = np.arange(rows, dtype=np.int64).reshape(-1, 1)
    columns = {USER: ids, ITEM: ids * 10}
    columns.update({head: ids.astype(np.float32) / rows for head in heads.NAMES})
    return columns


def _passes(dataset, count):
    """The user IDs of `count` passes over `dataset`, one array per pass; checks rows stay whole."""
    out = []
    for _ in range(count):
        users = []
        for inputs, labels in dataset:
            user = inputs[USER].numpy().ravel()
            assert (inputs[ITEM].numpy().ravel() == user * 10).all()
            for head in heads.NAMES:
                np.testing.assert_allclose(labels[head].numpy().ravel(), user / 1000.0, rtol=1e-6)
            users.append(user)
        out.append(np.concatenate(users))
    return out


def test_each_pass_has_every_row_once_in_a_new_order_that_the_seed_repeats():
    config = ModelConfig(batch_size=64, seed=7)
    first, second = _passes(batches(_columns(1000), config, shuffle=True), 2)
    assert sorted(first) == sorted(second) == list(range(1000))
    assert (first != second).any() and (first != np.arange(1000)).any()
    tf.random.set_seed(123)  # as model building does: the orders must not depend on it
    again = _passes(batches(_columns(1000), config, shuffle=True), 2)
    assert [list(p) for p in again] == [list(first), list(second)]  # same seed: same orders, run after run
    other = _passes(batches(_columns(1000), ModelConfig(batch_size=64, seed=8), shuffle=True), 1)[0]
    assert (other != first).any()


def test_without_shuffle_rows_keep_their_order_and_batches_their_size():
    dataset = batches(_columns(1000), ModelConfig(batch_size=64), shuffle=False)
    sizes = [len(inputs[USER]) for inputs, _ in dataset]
    assert sizes == [64] * 15 + [40]
    (users,) = _passes(dataset, 1)
    assert list(users) == list(range(1000))


def test_repeat_keeps_going_past_one_pass():
    dataset = batches(_columns(100), ModelConfig(batch_size=64), shuffle=True, repeat=True)
    assert len(list(dataset.take(10))) == 10  # 640 rows out of 100


def test_a_split_without_files_is_named(tmp_path):
    with pytest.raises(ValueError, match="no files match"):
        read_columns([str(tmp_path / "Split-train" / "*")], tf_transform_output=None)


def test_raw_rows_read_through_the_transform_graph_equal_tf_transforms_own_output(tmp_path):
    """The Trainer reads ExampleGen's raw rows through the transform graph: row for row, in
    file order, the columns it gets are the ones tf.Transform's Beam transform gave the rows
    it analysed, and IDs the analysis never saw land in out-of-vocabulary buckets."""
    rows = generate_rows(SyntheticSpec(num_users=300, num_items=40, num_interactions=1_200, seed=5))
    analysed = np.arange(1_000)
    tft_output, _, beam_columns = transform_and_train(tmp_path, rows, analysed, ModelConfig(epochs=1), 3)
    split = tmp_path / "Split-train"
    split.mkdir()
    order = np.random.default_rng(0).permutation(1_200)  # analysed and unseen rows mixed
    for part, indices in enumerate(np.array_split(order, 3)):
        with tf.io.TFRecordWriter(str(split / f"data-{part}.gz"), options="GZIP") as writer:
            for i in indices:
                writer.write(labelled_example(rows, i))
    got = read_columns([str(split / "*")], tft_output, model_columns())
    assert sorted(got) == sorted(model_columns())
    seen = order < len(analysed)
    for name in model_columns():
        np.testing.assert_array_equal(got[name][seen], beam_columns[name][order[seen]])
    vocabulary = tft_output.vocabulary_size_by_name(features.vocabulary_name(features.USER_ID))
    known_users = set(rows[features.USER_ID][analysed])
    new_user = np.array([rows[features.USER_ID][i] not in known_users for i in order])
    assert new_user.any()
    assert (got[USER].ravel()[new_user] >= vocabulary).all() and (got[USER].ravel()[~new_user] < vocabulary).all()
