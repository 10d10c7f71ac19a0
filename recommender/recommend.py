"""The `recommend` signatures: each user's top `k` items of the whole catalogue.

`recommend(user_id: string [batch], k: int32 scalar)` and
`recommend_from_history(user_id: string [batch], history: string [batch, n],
k: int32 scalar)` return, per user, the `min(k, catalogue)` best items as
`item_id` string [batch, k'], each head's prediction for that (user, item)
pair float32 [batch, k'] and the `score` they were ranked by float32
[batch, k'], best first.

- The catalogue is the item vocabulary: every item seen in training.
- The score is, in log space (`RankingConfig`): `retrieval_weight` x the
  retrieval task's logit + `popularity_weight` x log(popularity) + the sum
  over heads of weight x log(max(prediction, 1e-30)), where popularity is the
  item's share of training interactions. The default model has no retrieval
  task and ranks by popularity x P(like) x expected purchase; the retrieval
  preset (`configs/retrieval-model.json`) ranks by the retrieval logit and
  the heads, with no popularity term: its softmax was trained to pick, out of
  the catalogue, the item a user chose, popularity included.
- With the retrieval task, the user's vector is its query (`MultiTaskRecommender.query`):
  the user's own embedding when the ID is known, plus the mean embedding of
  the request's `history` item IDs (`recommend_from_history`; "" pads; IDs
  outside the catalogue are ignored; of a longer history, the last
  `RetrievalConfig.max_history` count). A new user with a few interactions so
  gets a personal list without retraining; a known user's list follows what
  the caller sends, such as the items the user trained on.
  A user with neither is ranked by popularity, and by the average user's
  predictions where heads are weighted.
- Every user's reported predictions are the model's, so they equal
  `serving_default`'s for the same pairs, known user or not. Every item of
  the request's history is left out; where that leaves fewer than `k` items,
  the row ends with padding: `item_id` "" and zeros. The model holds nothing
  per user beyond its embeddings: which items a user has seen comes with the
  request, so the model's size does not grow with the training rows.

The catalogue is scored in blocks of items, keeping each user's best `k` so
far, so a call holds at most PAIRS_PER_CALL scores at once whatever the batch
and the catalogue. The tables (catalogue, popularity, average user) are
constant, non-trainable variables of the exported model, so plain TensorFlow
serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from recommender import features, heads

if TYPE_CHECKING:  # the model code is needed at export only, not by readers of a loaded signature
    import tf_keras

    from recommender.config import ModelConfig, RankingConfig
    from recommender.model import TrainingData

# Training users whose predictions make up the average user's.
AVERAGE_USER_SAMPLE = 512
# The most (user, item) scores a call holds at once: the signatures' block of
# the catalogue, and the users per call of whoever calls them in batches (the
# batch job, the ranking evaluation).
PAIRS_PER_CALL = 1 << 21
MAX_USERS_PER_CALL = 1024
# log(max(prediction, FLOOR)): a prediction of 0 ranks last without an infinite score.
FLOOR = 1e-30


def _model_inputs(users: tf.Tensor, items: tf.Tensor) -> dict[str, tf.Tensor]:
    return {features.transformed_name(features.USER_ID): users, features.transformed_name(features.ITEM_ID): items}


def score_items(model: tf_keras.Model, users: tf.Tensor, items: tf.Tensor) -> dict[str, tf.Tensor]:
    """Each head's prediction for every (user, item) pair: {head: [len(users), len(items)]}.

    A separable model (`MultiTaskRecommender.score_grid`) looks each user and
    item up once; any other is called on every pair.
    """
    users, items = tf.cast(tf.reshape(users, [-1]), tf.int64), tf.cast(tf.reshape(items, [-1]), tf.int64)
    if getattr(model, "separable", False):
        return model.score_grid(users, items)
    batch, width = tf.size(users), tf.size(items)
    outputs = model(_model_inputs(tf.repeat(users, width), tf.tile(items, [batch])), training=False)
    return {name: tf.reshape(outputs[name], [batch, width]) for name in heads.NAMES}


def user_histories(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                   limit: int | None = None, times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct items in item index order, as (row splits [num_users + 1], items).

    With `limit`, `limit` of each user's items at most, the retrieval task's
    training histories: with `times` (each pair's timestamp), the user's
    latest by the time the user first had each item, as `recommend`'s query
    reads the last of a history sent oldest first; without, the first by
    index. A pair whose user or item is outside its vocabulary (an OOV
    bucket: an ID the vocabulary's caps left out) is in no history.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    known = (users >= 0) & (users < num_users) & (items >= 0) & (items < num_items)
    keys = users[known] * num_items + items[known]
    stamps = None
    if times is None:
        keys = np.unique(keys)
    else:
        first_seen = np.asarray(times, np.int64)[known]
        order = np.lexsort((first_seen, keys))
        keys, first_seen = keys[order], first_seen[order]
        distinct = np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, bool)
        keys, stamps = keys[distinct], first_seen[distinct]
    pair_users, pair_items = keys // num_items, keys % num_items
    counts = np.bincount(pair_users, minlength=num_users)[:num_users]
    if limit is not None:
        starts = np.repeat(np.concatenate([[0], np.cumsum(counts)])[:-1], counts)
        if stamps is None:
            rank = np.arange(len(keys)) - starts
        else:
            # Within each user (pairs are grouped by user already): latest first.
            order = np.lexsort((-pair_items, -stamps, pair_users))
            rank = np.empty(len(keys), np.int64)
            rank[order] = np.arange(len(keys)) - starts
        pair_items, counts = pair_items[rank < limit], np.minimum(counts, limit)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), pair_items.astype(np.int64)


def padded(histories: list[list[bytes]]) -> np.ndarray:
    """Histories as `recommend_from_history` takes them: string [users, longest], "" padding."""
    out = np.full((len(histories), max([0, *map(len, histories)])), b"", dtype=object)
    for row, items in enumerate(histories):
        out[row, : len(items)] = items
    return out


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
        scores = score_items(model, tf.constant(sample[start:start + step]), tf.range(num_items, dtype=tf.int64))
        for name in heads.NAMES:
            sums[name] += scores[name].numpy().sum(axis=0)
    return {name: (total / len(sample)).astype(np.float32) for name, total in sums.items()}


class RecommendTables(tf.Module):
    """What `recommend` needs besides the model, as constant variables saved with it; each is
    sized by the vocabularies, not by the training rows.

    `items`: the catalogue (item vocabulary, in index order); `popularity`:
    each item's share of the training interactions (`counts`: each item's); `average`: {head:
    [catalogue]} for users with neither a known ID nor a history; `weights`:
    {head: weight}; `popularity_weight`, `retrieval_weight`: theirs in the
    log-space score; `max_history`: how many of a request's history items make
    the user's query (0: the model has no retrieval task); `num_users`: the
    user vocabulary's size.
    """

    def __init__(self, items: list[bytes], counts: np.ndarray, num_users: int,
                 average: Mapping[str, np.ndarray], ranking: RankingConfig, max_history: int):
        super().__init__(name="recommend_tables")
        self.popularity = tf.Variable(
            (counts / max(counts.sum(), 1)).astype(np.float32), trainable=False, name="popularity"
        )
        self.weights = ranking.weights_for()
        self.popularity_weight = float(ranking.popularity_weight)
        self.retrieval_weight = float(ranking.retrieval_weight) if max_history else 0.0
        self.max_history = int(max_history)
        self.items = tf.Variable(tf.constant(list(items), tf.string), trainable=False, name="items")
        self.num_users = tf.Variable(np.int64(num_users), trainable=False, name="num_users")
        self.average = {
            name: tf.Variable(average[name], trainable=False, name=f"average_{name}") for name in heads.NAMES
        }


def build_tables(model: tf_keras.Model, items: list[bytes], num_users: int, training: TrainingData,
                 config: ModelConfig) -> RecommendTables:
    """The tables for `model`, trained on `training`; `items` is the item vocabulary, `num_users` the user one's size.

    The average user is computed only where a head's weight needs it.
    """
    weighted = any(config.ranking.weights_for().values())
    average = (
        average_user(model, num_users, len(items), config.seed) if weighted
        else {name: np.zeros(len(items), np.float32) for name in heads.NAMES}
    )
    max_history = config.retrieval.max_history if config.retrieval is not None else 0
    return RecommendTables(items, training.counts(len(items)), num_users, average, config.ranking, max_history)


def ranking_score(predictions: Mapping[str, tf.Tensor], weights: Mapping[str, float], retrieval: tf.Tensor | None,
                  retrieval_weight: float, popularity: tf.Tensor, popularity_weight: float) -> tf.Tensor:
    """retrieval_weight x retrieval + popularity_weight x log(popularity) + sum of weight x log(max(prediction, FLOOR)).

    `predictions` and `retrieval` (logits, or None) are [batch, items],
    `popularity` [items]; a weight of 0 leaves its term out.
    """
    shape = tf.shape(predictions[heads.NAMES[0]])
    score = tf.zeros(shape)
    if retrieval is not None and retrieval_weight:
        score += retrieval_weight * retrieval
    if popularity_weight:
        score += popularity_weight * tf.math.log(tf.maximum(popularity, FLOOR))[None, :]
    for name, weight in weights.items():
        if weight:
            score += weight * tf.math.log(tf.maximum(predictions[name], FLOOR))
    return score


def recommend(model: tf_keras.Model, tables: RecommendTables, users: tf.Tensor, k: tf.Tensor,
              history: tf.RaggedTensor | None = None) -> dict[str, tf.Tensor]:
    """The signatures' body for user indices `users` [batch] and, optionally, each user's
    `history` (ragged [batch, None] item indices; any outside the catalogue ignored)."""
    users = tf.cast(tf.reshape(users, [-1]), tf.int64)
    batch = tf.size(users, out_type=tf.int64)
    num_items = tf.size(tables.items, out_type=tf.int64)
    known = users < tables.num_users
    if history is None:
        history = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int64), tf.zeros([batch], tf.int64))
    history = tf.cast(history, tf.int64)
    history = tf.ragged.boolean_mask(history, (history >= 0) & (history < num_items))
    left_out = tf.stack([history.value_rowids(), history.flat_values], axis=1)

    queries, cold = None, None
    if tables.retrieval_weight:
        # The request's last `max_history` items make the query (all are left out): a call's
        # memory is bounded by the configuration, not by how long a history a caller sends.
        queries = model.query(users, known, history[:, -tables.max_history:])
        # Neither a known ID nor a history: the query is empty, and popularity ranks.
        cold = tf.logical_and(tf.logical_not(known), history.row_lengths() == 0)
    # Every user's predictions are the model's (an unknown user's are its OOV bucket's, as
    # serving_default gives them); a user with no ID and no history is ranked by the average user's.
    unknown = tf.logical_not(known) if cold is None else cold

    def block_scores(start, size):
        items = tf.range(start, start + size)
        predictions = (
            score_items(model, users, items) if any(tables.weights.values())
            else {name: tf.zeros([batch, size]) for name in heads.NAMES}
        )
        ranked_by = {
            name: tf.where(unknown[:, None], tables.average[name][None, start:start + size], value)
            for name, value in predictions.items()
        }
        retrieval = None
        if queries is not None:
            retrieval = tf.where(
                cold[:, None], tf.math.log(tf.maximum(tables.popularity[start:start + size], FLOOR))[None, :],
                model.retrieval_scores(queries, items),
            )
        score = ranking_score(ranked_by, tables.weights, retrieval, tables.retrieval_weight,
                              tables.popularity[start:start + size], tables.popularity_weight)
        inside = (left_out[:, 1] >= start) & (left_out[:, 1] < start + size)
        excluded = tf.boolean_mask(left_out, inside) - tf.stack([tf.constant(0, tf.int64), start])[None, :]
        return tf.tensor_scatter_nd_update(
            score, excluded, tf.fill([tf.shape(excluded)[0]], tf.constant(-np.inf, tf.float32))
        )

    width = tf.minimum(tf.cast(tf.maximum(k, 0), tf.int64), num_items)
    block = tf.maximum(tf.constant(PAIRS_PER_CALL, tf.int64) // tf.maximum(batch, 1), width)
    best = tf.fill(tf.stack([batch, width]), tf.constant(-np.inf, tf.float32))
    best_items = tf.zeros(tf.stack([batch, width]), tf.int64)

    def step(start, best, best_items):
        size = tf.minimum(block, num_items - start)
        values = tf.concat([best, block_scores(start, size)], axis=1)
        candidates = tf.concat([best_items, tf.broadcast_to(tf.range(start, start + size)[None, :], [batch, size])], axis=1)
        top = tf.math.top_k(values, k=tf.cast(width, tf.int32))
        return start + size, top.values, tf.gather(candidates, top.indices, batch_dims=1)

    def whole_catalogue():
        top = tf.math.top_k(block_scores(tf.constant(0, tf.int64), num_items), k=tf.cast(width, tf.int32))
        return top.values, tf.cast(top.indices, tf.int64)

    def in_blocks():
        _, values, items = tf.while_loop(
            lambda start, *_: start < num_items, step, (tf.constant(0, tf.int64), best, best_items),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None]), tf.TensorShape([None, None])),
        )
        return values, items

    # One block holds the whole catalogue for most calls of a small catalogue: the loop's own
    # cost, per call, is then most of the call's.
    best, best_items = tf.cond(num_items <= block, whole_catalogue, in_blocks)
    valid = best > -np.inf
    out = {
        features.ITEM_ID: tf.where(valid, tf.gather(tables.items, best_items), ""),
        features.SCORE: tf.where(valid, best, 0.0),
    }
    outputs = model(_model_inputs(tf.repeat(users, width), tf.reshape(best_items, [-1])), training=False)
    for name in heads.NAMES:
        out[name] = tf.where(valid, tf.reshape(outputs[name], tf.stack([batch, width])), 0.0)
    return out
