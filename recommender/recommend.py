"""The `recommend` signature: each user's top `k` items of the whole catalogue.

`recommend(user_id: string [batch], k: int32 scalar)` returns, per user, the
`min(k, catalogue)` best items as `item_id` string [batch, k'], each head's
prediction for that (user, item) pair float32 [batch, k'] and the `score` they
were ranked by float32 [batch, k'], best first.

- The catalogue is the item vocabulary: every item seen in training.
- The score is popularity ** `RankingConfig.popularity_weight` x prod
  over heads of max(prediction, 0) ** weight (`RankingConfig.weights_for`),
  where popularity is the item's share of training interactions. The heads
  predict what happens once a user meets an item; whether the user meets it
  at all is what popularity estimates, and a top k over the whole catalogue
  needs both. The defaults (1, 1, 1) rank by P(meet) x P(like) x expected
  purchase: the expected purchase of a liked item among those the user would
  reach.
- Every user's reported predictions are the model's, so they equal
  `serving_default`'s for the same pairs, known user or not. Items the user
  interacted with in training are left out
  (`RankingConfig.exclude_training_items`); where that leaves fewer than `k`
  items, the row ends with padding: `item_id` "" and zeros.
- An unknown user (an ID that maps to an out-of-vocabulary bucket, the empty
  string included) is ranked by the average user's score: each item's
  predictions averaged over a seeded sample of training users, computed at
  export and carried by the model; its `score` is that ranking score.

The tables (catalogue, training items per user, average user) are constant,
non-trainable variables of the exported model, so plain TensorFlow serves it.
A call scores batch x catalogue pairs at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from recommender import features, heads

if TYPE_CHECKING:  # the model code is needed at export only, not by readers of a loaded signature
    import tf_keras

    from recommender.config import ModelConfig
    from recommender.model import TrainingData

# Training users whose predictions make up the average user's.
AVERAGE_USER_SAMPLE = 512
# (user, item) pairs scored per model call by whoever calls it in batches: the
# average user's computation here, the batch job, the ranking evaluation.
PAIRS_PER_CALL = 1 << 21
MAX_USERS_PER_CALL = 1024


def _model_inputs(users: tf.Tensor, items: tf.Tensor) -> dict[str, tf.Tensor]:
    return {features.transformed_name(features.USER_ID): users, features.transformed_name(features.ITEM_ID): items}


def score_all_items(model: tf_keras.Model, users: tf.Tensor, num_items: int | tf.Tensor) -> dict[str, tf.Tensor]:
    """Each head's prediction for every (user, item index < num_items) pair: {head: [len(users), num_items]}.

    A separable model (`MultiTaskRecommender.score_grid`) looks each user and
    item up once; any other is called on every pair.
    """
    users = tf.cast(users, tf.int64)
    batch = tf.size(users)
    item_index = tf.range(tf.cast(num_items, tf.int64), dtype=tf.int64)
    if getattr(model, "separable", False):
        return model.score_grid(users, item_index)
    outputs = model(
        _model_inputs(tf.repeat(users, num_items), tf.tile(item_index, [batch])), training=False
    )
    return {name: tf.reshape(outputs[name], [batch, num_items]) for name in heads.NAMES}


def users_per_call(catalogue: int) -> int:
    """Users per call over a `catalogue` of items: PAIRS_PER_CALL pairs at most, 1 to MAX_USERS_PER_CALL users."""
    return int(min(MAX_USERS_PER_CALL, max(1, PAIRS_PER_CALL // max(catalogue, 1))))


def catalogue_size(signature) -> int:
    """How many items a loaded `recommend` signature ranks (k beyond the catalogue returns all of it)."""
    return int(signature(user_id=tf.constant([b""]), k=tf.constant(2**31 - 1))[features.ITEM_ID].shape[1])


def average_user(model: tf_keras.Model, num_users: int, num_items: int, seed: int) -> dict[str, np.ndarray]:
    """Each head's prediction per item, averaged over up to AVERAGE_USER_SAMPLE seeded training users."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(num_users, size=min(num_users, AVERAGE_USER_SAMPLE), replace=False))
    step = users_per_call(num_items)
    sums = {name: np.zeros(num_items, np.float64) for name in heads.NAMES}
    for start in range(0, len(sample), step):
        scores = score_all_items(model, tf.constant(sample[start:start + step]), num_items)
        for name in heads.NAMES:
            sums[name] += scores[name].numpy().sum(axis=0)
    return {name: (total / len(sample)).astype(np.float32) for name, total in sums.items()}


class RecommendTables(tf.Module):
    """What `recommend` needs besides the model, as constant variables saved with it.

    `items`: the catalogue (item vocabulary, in index order); `seen_splits`,
    `seen_items`: each known user's training item indices as a ragged table (row
    splits, values); `popularity`: each item's share of the training
    interactions; `average`: {head: [catalogue]} for unknown users; `weights`:
    {head: exponent}; `popularity_weight`: popularity's exponent;
    `num_users`: the user vocabulary's size.
    """

    def __init__(self, items: list[bytes], users: np.ndarray, train_items: np.ndarray, num_users: int,
                 average: Mapping[str, np.ndarray], weights: Mapping[str, float], exclude: bool,
                 popularity_weight: float):
        super().__init__(name="recommend_tables")
        counts = np.bincount(train_items, minlength=len(items))[: len(items)]
        self.popularity = tf.Variable(
            (counts / max(counts.sum(), 1)).astype(np.float32), trainable=False, name="popularity"
        )
        self.popularity_weight = float(popularity_weight)
        if not exclude:
            users, train_items = users[:0], train_items[:0]
        # Distinct (user, item) pairs, sorted by user: one int64 key per pair.
        keys = np.unique(users.astype(np.int64) * len(items) + train_items)
        pair_users, pair_items = keys // len(items), keys % len(items)
        counts = np.bincount(pair_users, minlength=num_users)
        self.items = tf.Variable(tf.constant(list(items), tf.string), trainable=False, name="items")
        self.seen_splits = tf.Variable(
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), trainable=False, name="seen_splits"
        )
        self.seen_items = tf.Variable(pair_items.astype(np.int64), trainable=False, name="seen_items")
        self.num_users = tf.Variable(np.int64(num_users), trainable=False, name="num_users")
        self.average = {
            name: tf.Variable(average[name], trainable=False, name=f"average_{name}") for name in heads.NAMES
        }
        self.weights = dict(weights)


def build_tables(model: tf_keras.Model, items: list[bytes], num_users: int, training: TrainingData,
                 config: ModelConfig) -> RecommendTables:
    """The tables for `model`, trained on `training`; `items` is the item vocabulary, `num_users` the user one's size."""
    return RecommendTables(
        items, training.users, training.items, num_users,
        average_user(model, num_users, len(items), config.seed),
        config.ranking.weights_for(), config.ranking.exclude_training_items, config.ranking.popularity_weight,
    )


def ranking_score(predictions: Mapping[str, tf.Tensor], weights: Mapping[str, float],
                  popularity: tf.Tensor, popularity_weight: float) -> tf.Tensor:
    """popularity ** popularity_weight x prod over heads of max(prediction, 0) ** weight.

    `predictions` are [batch, catalogue], `popularity` [catalogue]; a weight of 0 leaves its term out.
    """
    factors = []
    if popularity_weight:
        factors.append(tf.pow(popularity, popularity_weight)[None, :])
    for name, weight in weights.items():
        if weight:
            positive = tf.maximum(predictions[name], 0.0)
            # x ** 1 is x: the default weights skip a transcendental pass over every pair.
            factors.append(positive if weight == 1 else tf.pow(positive, weight))
    shape = tf.shape(predictions[heads.NAMES[0]])
    if not factors:
        return tf.ones(shape)
    score = factors[0]
    for factor in factors[1:]:
        score *= factor
    return tf.broadcast_to(score, shape)


def recommend(model: tf_keras.Model, tables: RecommendTables, users: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
    """The signature's body for user indices `users` [batch] (see the module docstring)."""
    users = tf.cast(tf.reshape(users, [-1]), tf.int64)
    num_items = tf.size(tables.items)
    known = users < tables.num_users
    # Every user's predictions are the model's (an unknown user's are its OOV bucket's, as
    # serving_default gives them); an unknown user is ranked by the average user's.
    predictions = score_all_items(model, users, num_items)
    ranked_by = {
        name: tf.where(known[:, None], value, tables.average[name][None, :]) for name, value in predictions.items()
    }
    score = ranking_score(ranked_by, tables.weights, tables.popularity, tables.popularity_weight)

    seen = tf.RaggedTensor.from_row_splits(tables.seen_items, tables.seen_splits)
    lists = tf.gather(seen, tf.where(known, users, 0))
    rows = lists.value_rowids()
    keep = tf.gather(known, rows)
    excluded = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(lists.flat_values, keep)], axis=1)
    ranked = tf.tensor_scatter_nd_update(
        score, tf.cast(excluded, tf.int32), tf.fill([tf.shape(excluded)[0]], tf.constant(-np.inf, tf.float32))
    )

    top = tf.math.top_k(ranked, k=tf.clip_by_value(k, 0, num_items))
    valid = top.values > -np.inf
    out = {
        features.ITEM_ID: tf.where(valid, tf.gather(tables.items, top.indices), ""),
        features.SCORE: tf.where(valid, top.values, 0.0),
    }
    for name, value in predictions.items():
        out[name] = tf.where(valid, tf.gather(value, top.indices, batch_dims=1), 0.0)
    return out
