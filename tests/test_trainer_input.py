"""The Trainer's in-memory input: every row once per pass, a new seeded order each pass."""

import numpy as np
import pytest
import tensorflow as tf

from components import features, heads
from components.model import ModelConfig
from components.trainer import batches, read_columns

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
