"""The Trainer's input, in memory or streamed from the files: every row once per pass, a new seeded
order each pass, each worker its own shard."""

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from components.trainer import read_columns, read_splits, summarizer, vocabulary_sizes
from data.synthetic import SyntheticSpec, generate_rows
from recommender import features, heads
from recommender.config import RetrievalConfig
from recommender.model import ModelConfig, RetrievalInputs, TrainingData
from recommender.training import Shard, Stream, batches, fit, model_columns
from tests.support import analysed, labelled_example, transform_and_train, write_examples

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)


def _columns(rows: int) -> dict[str, np.ndarray]:
    ids = np.arange(rows, dtype=np.int64).reshape(-1, 1)
    columns = {USER: ids, ITEM: ids * 10}
    columns.update({head: ids.astype(np.float32) / rows for head in heads.NAMES})
    return columns


def _users(dataset, batches_: int | None = None, rows: int = 1000):
    """The user IDs of `dataset`'s first `batches_` batches (all, if None), in order; checks rows stay whole."""
    users = []
    for inputs, labels in dataset.take(-1 if batches_ is None else batches_):
        user = inputs[USER].numpy().ravel()
        assert (inputs[ITEM].numpy().ravel() == user * 10).all()
        for head in heads.NAMES:
            np.testing.assert_allclose(labels[head].numpy().ravel(), user / rows, rtol=1e-6)
        users.append(user)
    return np.concatenate(users)


def _passes(dataset, count):
    """The user IDs of the first `count` passes of an endless `dataset` of 1,000 rows in batches of 64."""
    return list(_users(dataset, 16 * count).reshape(count, 1000))


def test_each_pass_has_every_row_once_in_a_new_order_that_the_seed_repeats():
    config = ModelConfig(batch_size=64, seed=7)
    first, second = _passes(batches(_columns(1000), config, shuffle=True, repeat=True), 2)
    assert sorted(first) == sorted(second) == list(range(1000))
    assert (first != second).any() and (first != np.arange(1000)).any()
    tf.random.set_seed(123)  # as model building does: the orders must not depend on it
    again = _passes(batches(_columns(1000), config, shuffle=True, repeat=True), 2)
    assert [list(p) for p in again] == [list(first), list(second)]  # same seed: same orders, run after run
    other = _passes(batches(_columns(1000), ModelConfig(batch_size=64, seed=8), shuffle=True, repeat=True), 1)[0]
    assert (other != first).any()


def test_shards_split_each_pass_between_workers_in_full_batches():
    """Two workers' shards of one pass: disjoint, together every row but the short batches' ones,
    every training batch full (each worker's gradients take one shape)."""
    config = ModelConfig(batch_size=32, seed=7)
    parts = [batches(_columns(1000), config, shuffle=True, repeat=False, shard=Shard(i, 2)) for i in range(2)]
    sizes = [[len(inputs[USER]) for inputs, _ in part] for part in parts]
    assert sizes == [[32] * 15, [32] * 15]  # 500 rows each: 15 full batches, 20 rows dropped
    users = [_users(part) for part in parts]
    assert not set(users[0]) & set(users[1]) and len(set(users[0]) | set(users[1])) == 960
    # Validation shards keep every row, in order, short batch included.
    ordered = [_users(batches(_columns(1000), config, shuffle=False, shard=Shard(i, 2))) for i in range(2)]
    assert list(ordered[0]) == list(range(0, 1000, 2)) and list(ordered[1]) == list(range(1, 1000, 2))


def test_without_shuffle_rows_keep_their_order_and_batches_their_size():
    dataset = batches(_columns(1000), ModelConfig(batch_size=64), shuffle=False)
    sizes = [len(inputs[USER]) for inputs, _ in dataset]
    assert sizes == [64] * 15 + [40]
    assert list(_users(dataset)) == list(range(1000))


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


def test_a_stream_reads_the_files_rows_each_pass_in_a_new_order_and_trains(tmp_path):
    """Rows streamed from ExampleGen's files are the rows `read_columns` holds in memory: in file
    order unshuffled, every row once per shuffled pass in a new order; the Trainer streams once the
    files pass InputConfig.max_in_memory_mib, and `fit` trains on the Stream."""
    rows = generate_rows(SyntheticSpec(num_users=100, num_items=40, num_interactions=1_500, seed=4))
    tft_output, _ = analysed(tmp_path, rows, np.arange(1_000), 2)
    write_examples(tmp_path / "Split-train", rows, np.arange(1_000), files=3)
    write_examples(tmp_path / "Split-validation", rows, np.arange(1_000, 1_500), files=1)
    fn_args = FnArgs(train_files=[str(tmp_path / "Split-train" / "*")],
                     eval_files=[str(tmp_path / "Split-validation" / "*")])
    config = ModelConfig(batch_size=64, epochs=2, input={"max_in_memory_mib": 0})
    train, validation = read_splits(fn_args, tft_output, config)
    assert isinstance(train, Stream) and (train.rows, validation.rows) == (1_000, 500)
    held, _ = read_splits(fn_args, tft_output, ModelConfig(batch_size=64))
    assert not isinstance(held, Stream)

    def keys(columns):
        return columns[USER].ravel() * 1_000 + columns[ITEM].ravel()

    in_memory = keys(held)
    ordered = [inputs for inputs, _ in batches(train, config, shuffle=False)]
    assert list(keys({USER: np.concatenate([b[USER] for b in ordered]),
                      ITEM: np.concatenate([b[ITEM] for b in ordered])})) == list(in_memory)
    passes = [inputs for inputs, _ in batches(train, config, shuffle=True, repeat=True).take(2 * 16)]
    first, second = ({USER: np.concatenate([b[USER] for b in part]), ITEM: np.concatenate([b[ITEM] for b in part])}
                     for part in (passes[:16], passes[16:]))
    assert sorted(keys(first)) == sorted(keys(second)) == sorted(in_memory)
    assert list(keys(first)) != list(keys(second)) != list(in_memory)
    sizes = vocabulary_sizes(tft_output, 2)
    fitted = fit(train, validation, sizes, config, verbose=0, summarize=summarizer(tft_output, config))
    assert fitted.epochs_run == (2, 2) and np.isfinite(fitted.validation_loss)


def test_the_retrieval_inputs_draw_from_each_users_history_the_same_for_datasets_made_alike():
    # Users 0..8 have the items 10u..10u+4 and user 9 none, over 10 user and 100 item indices.
    users = np.repeat(np.arange(9), 5)
    items = (users * 10 + np.tile(np.arange(5), 9)).astype(np.int64)
    training = TrainingData(label_means={}, item_counts=np.bincount(items), users=users, items=items)
    retrieval = RetrievalConfig(history_sample=6)
    inputs = RetrievalInputs.of(training, 10, 100, retrieval)
    rows = np.arange(10).repeat(4)
    columns = {USER: rows.reshape(-1, 1), ITEM: (rows * 10).reshape(-1, 1)}
    columns.update({head: np.zeros((40, 1), np.float32) for head in heads.NAMES})

    def drawn(seed):
        config = ModelConfig(batch_size=16, seed=seed, retrieval=retrieval)
        out = [(x[USER].numpy().ravel(), x[features.HISTORY_DRAWS].numpy(), x[features.ITEM_SHARE].numpy())
               for x, _ in batches(columns, config, shuffle=True, repeat=True, retrieval=inputs).take(6)]
        return [np.concatenate(part) for part in zip(*out)]

    user, draws, share = drawn(5)
    assert draws.shape == (len(user), 6)
    for u, row in zip(user, draws):
        if u == 9:
            assert (row == -1).all()  # no history
        else:
            assert set(row) <= set(range(10 * u, 10 * u + 5))
    assert len(set(draws[user == 0].ravel())) == 5  # with replacement, over six draws per row
    np.testing.assert_allclose(share[user < 9], 1 / 45, rtol=1e-6)
    np.testing.assert_allclose(share[user == 9], 1 / 45, rtol=1e-6)  # item 90: no pair, one pair's share
    again = drawn(5)
    for part, repeated in zip((user, draws, share), again):
        np.testing.assert_array_equal(part, repeated)
    assert not np.array_equal(drawn(6)[1], draws)
