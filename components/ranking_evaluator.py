"""`RankingEvaluator`: the trained model's top-k quality on the eval split, next to popularity's.

It reads the raw examples ExampleGen wrote: the training splits (`train`, and
`validation` when the model was refitted on it) give each user's training
items (left out of every ranking) and each item's popularity, the
`eval` split each user's liked items (`binary_rating` 1). It asks the model's
`recommend_from_history` signature for each judged user's top k, the user's
training items as the request's history, and computes the metrics
of `components.ranking` for the model, the popularity baseline and, when there
is one with a `recommend` signature, the baseline model, overall and per user
activity tier (training interactions, as the Evaluator's slices count them).

The `fold_in` slice judges new users as a service meets them: for each user
with no training row, the first half (by time) of the user's `eval`
interactions is the request's history (`recommend_from_history`; popularity
leaves it out too), and the user is judged on the liked items of the rest.

Its `RankingEvaluation` artifact holds the overall figures as custom
properties and every slice in `ranking.json`; `blessed` is 1 unless a
`RankingThreshold` is given and fails (the reasons are recorded).
`ServingCheck` refuses to check, so the Pusher refuses to publish, a model
whose ranking was not blessed.
"""

import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Union

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.utils import path_utils

from components import choices, mlmd_names, ranking
from recommender import features, recommend


class RankingEvaluation(Artifact):
    """Ranking metrics of one model on one evaluation (see the module docstring)."""

    TYPE_NAME = mlmd_names.RANKING_EVALUATION_TYPE


def read_interactions(examples_uri: str, split: str) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(user_id, item_id, binary_rating, timestamp) of every example in one split of an Examples artifact."""
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    spec = {
        features.USER_ID: tf.io.FixedLenFeature([], tf.string),
        features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        features.BINARY_RATING: tf.io.FixedLenFeature([], tf.int64),
        features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    }
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536).map(
        lambda records: tf.io.parse_example(records, spec)
    )
    for batch in dataset.as_numpy_iterator():
        yield from zip(batch[features.USER_ID], batch[features.ITEM_ID], batch[features.BINARY_RATING],
                       batch[features.TIMESTAMP])


def tier(count: int, some: int, many: int) -> str:
    """A user's activity tier by training interactions, as `components.preprocessing.tiers` names them."""
    unseen, few, mid, top = features.TIERS
    return unseen if count == 0 else few if count < some else mid if count < many else top


# (users, items each user is judged without, the users' request histories or None) -> each user's top k.
TopFn = Callable[[list[bytes], Mapping[bytes, set], Mapping[bytes, list] | None], list | None]


def model_top(signatures: Mapping, users: list[bytes], seen: Mapping[bytes, set], k: int,
              histories: Mapping[bytes, list[bytes]] | None = None) -> list[list[bytes]] | None:
    """Each user's top k items from a loaded model's `recommend` signature, `seen` items left out;
    with `histories`, from `recommend_from_history` given each user's history (none for a user it
    does not list). A model without that signature (exported before it existed) is asked
    `recommend`, and ranks users with only a history as it ranks any unknown user.

    None if the model has no `recommend` signature (one exported before it existed).
    """
    if features.RECOMMEND not in signatures:
        return None
    reads_history = histories is not None and features.RECOMMEND_FROM_HISTORY in signatures
    signature = signatures[features.RECOMMEND_FROM_HISTORY if reads_history else features.RECOMMEND]

    def call(chunk: list[bytes], n: int) -> np.ndarray:
        inputs = {features.USER_ID: tf.constant(chunk), "k": tf.constant(n, tf.int32)}
        if reads_history:
            inputs[features.HISTORY] = tf.constant(recommend.padded([histories.get(u, []) for u in chunk]), tf.string)
        return signature(**inputs)[features.ITEM_ID].numpy()

    def ranked(chunk: list[bytes], n: int) -> np.ndarray:
        # The padded histories of a call hold at most PAIRS_PER_CALL IDs, however long a user's is.
        longest = max([1, *(len(histories.get(u, ())) for u in chunk)]) if reads_history else 1
        step = max(1, recommend.PAIRS_PER_CALL // longest)
        return np.concatenate([call(chunk[i:i + step], n) for i in range(0, len(chunk), step)])

    catalogue = recommend.catalogue_size(signatures[features.RECOMMEND])
    return ranking.top_k_unseen(ranked, users, seen, k, recommend.users_per_call(catalogue))


def fold_in(events_by_user: Mapping[bytes, list[tuple[int, int, bytes, int]]]
            ) -> tuple[dict[bytes, list[bytes]], dict[bytes, set]]:
    """(history, liked items after it) of each new user with a liked item after the first half, by
    time, of the user's eval interactions, given as (timestamp, row number, item, liked); ties in
    time keep the rows' order."""
    histories, relevant = {}, {}
    for user, events in events_by_user.items():
        events.sort()
        cut = len(events) // 2
        history = [item for _, _, item, _ in events[:cut]]
        later = {item for _, _, item, liked in events[cut:] if liked and item not in history}
        if history and later:
            histories[user], relevant[user] = history, later
    return histories, relevant


def evaluate(
    train_rows: Iterable[tuple[bytes, bytes, int, int]], eval_rows: Iterable[tuple[bytes, bytes, int, int]],
    model_top_fn: TopFn, baseline_top_fn: TopFn | None, k: int, tier_thresholds: tuple[int, int],
) -> dict:
    """{slice: {ranker: metrics}} over the users with a liked item among `eval_rows`, and the
    `fold_in` slice of new users (see the module docstring).

    Rows are (user_id, item_id, liked, timestamp); `*_top_fn(users, items
    left out per user, histories)` gives each user's top k, those items left
    out; `histories` are the requests' histories: a known user's training
    items, a fold-in user's first interactions.
    """
    seen, counts, activity, trained = {}, Counter(), Counter(), {}
    for position, (user, item, _, timestamp) in enumerate(train_rows):
        if item not in seen.setdefault(user, set()):
            seen[user].add(item)
            trained.setdefault(user, []).append((timestamp, position, item))
        counts[item] += 1
        activity[user] += 1
    relevant, new_users = {}, {}
    for position, (user, item, liked, timestamp) in enumerate(eval_rows):
        if liked and item not in seen.get(user, ()):
            relevant.setdefault(user, set()).add(item)
        if user not in seen:
            new_users.setdefault(user, []).append((timestamp, position, item, liked))
    users = sorted(relevant)

    def judged(users: list[bytes], left_out: Mapping[bytes, set], liked: Mapping[bytes, set], histories):
        tops = {ranking.MODEL: model_top_fn(users, left_out, histories),
                ranking.POPULARITY: ranking.popularity_top(counts, left_out, users, k)}
        if baseline_top_fn is not None:
            baseline = baseline_top_fn(users, left_out, histories)
            if baseline is not None:
                tops[ranking.BASELINE] = baseline
        return {name: ranking.per_user(top, [liked[u] for u in users], k) for name, top in tops.items()}

    # A known user's request history is the user's distinct training items, oldest first: the
    # model leaves them out and, with the retrieval task, describes the user by the latest of them.
    known_histories = {u: [item for *_, item in sorted(trained[u])] for u in users if u in trained}
    values = judged(users, seen, relevant, known_histories)
    tiers = np.array([tier(activity[u], *tier_thresholds) for u in users])
    slices = {ranking.OVERALL: np.ones(len(users), bool), ranking.KNOWN: np.array([u in seen for u in users], bool)}
    slices.update({f"user_activity:{t}": tiers == t for t in features.TIERS if (tiers == t).any()})
    result = {
        name: {ranker: ranking.summarize(v[mask], k) for ranker, v in values.items()}
        for name, mask in slices.items() if mask.any() or name == ranking.OVERALL
    }
    histories, later = fold_in(new_users)
    if histories:
        new_users = sorted(histories)
        values = judged(new_users, {u: set(histories[u]) for u in new_users}, later, histories)
        result[ranking.FOLD_IN] = {ranker: ranking.summarize(v, k) for ranker, v in values.items()}
    return result


def _model_dir(model: Artifact) -> str:
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


@component
def RankingEvaluator(  # pylint: disable=invalid-name
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    evaluation: OutputArtifact[RankingEvaluation],
    k: Parameter[int],
    tier_thresholds: Parameter[list[int]],
    training_splits: Parameter[list[str]],
    # {"metric", "bound", "max_regression"[, "slice"]} of a RankingThreshold, or empty: not gated.
    # typing.Union, not "str | float": TFX 1.21 recognises only the former as JSON-compatible.
    threshold: Parameter[dict[str, Union[str, float]]],  # noqa: UP007
    baseline_model: InputArtifact[standard_artifacts.Model] = None,
) -> None:
    """Ranks the eval split's users with `model` (and `baseline_model`) and gates on `threshold`."""
    some, many = tier_thresholds

    # Each model is loaded once, for all its slices.
    candidate = tf.saved_model.load(_model_dir(model)).signatures
    if features.RECOMMEND not in candidate:
        raise ValueError(f"{_model_dir(model)}: the model has no {features.RECOMMEND!r} signature to rank with")
    baseline = tf.saved_model.load(_model_dir(baseline_model)).signatures if baseline_model else None

    result = evaluate(
        itertools.chain.from_iterable(read_interactions(examples.uri, split) for split in training_splits),
        read_interactions(examples.uri, choices.EVAL),
        lambda users, seen, histories: model_top(candidate, users, seen, k, histories),
        (lambda users, seen, histories: model_top(baseline, users, seen, k, histories)) if baseline else None,
        k, (some, many),
    )
    overall = result[ranking.OVERALL]
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, mlmd_names.RANKING_FILE), "w") as f:
        json.dump({"k": k, "slices": result}, f, indent=1, sort_keys=True)
    for ranker in (ranking.MODEL, ranking.POPULARITY, ranking.BASELINE):
        for key, value in overall.get(ranker, {}).items():
            name = key if ranker == ranking.MODEL else f"{ranker}_{key}"
            if key == "users":
                evaluation.set_int_custom_property(name, int(value))
            else:
                evaluation.set_float_custom_property(name, float(value))
    failures = []
    if threshold:
        gate = ranking.RankingThreshold(**threshold)
        key = ranking.metric_key(gate.metric, k)
        judged = result.get(gate.slice)
        if judged is None or ranking.MODEL not in judged:
            failures = [f"no user fell in the gated slice {gate.slice!r}"]
        else:
            baseline = judged.get(ranking.BASELINE, {}).get(key)
            failures = [f"{gate.slice}: {failure}" if gate.slice != ranking.OVERALL else failure
                        for failure in gate.failures(judged[ranking.MODEL][key], baseline, k)]
    evaluation.set_int_custom_property(mlmd_names.BLESSED, int(not failures))
    evaluation.set_string_custom_property(mlmd_names.RANKING_FAILURES, json.dumps(failures))
