"""`RankingEvaluator`: the trained model's top-k quality on the eval split, next to popularity's.

It reads the raw examples ExampleGen wrote: the training splits (`train`, and
`validation` when the model was refitted on it) give each user's training
items (left out of every ranking) and each item's popularity, the
`eval` split each user's liked items (`binary_rating` 1). It asks the model's
`recommend` signature for each judged user's top k, and computes the metrics
of `components.ranking` for the model, the popularity baseline and, when there
is one with a `recommend` signature, the baseline model, overall and per user
activity tier (training interactions, as the Evaluator's slices count them).

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


def read_interactions(examples_uri: str, split: str) -> Iterator[tuple[bytes, bytes, int]]:
    """(user_id, item_id, binary_rating) of every example in one split of an Examples artifact."""
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    spec = {
        features.USER_ID: tf.io.FixedLenFeature([], tf.string),
        features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        features.BINARY_RATING: tf.io.FixedLenFeature([], tf.int64),
    }
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536).map(
        lambda records: tf.io.parse_example(records, spec)
    )
    for batch in dataset.as_numpy_iterator():
        yield from zip(batch[features.USER_ID], batch[features.ITEM_ID], batch[features.BINARY_RATING])


def tier(count: int, some: int, many: int) -> str:
    """A user's activity tier by training interactions, as `components.preprocessing.tiers` names them."""
    unseen, few, mid, top = features.TIERS
    return unseen if count == 0 else few if count < some else mid if count < many else top


def model_top(model_dir: str, users: list[bytes], seen: Mapping[bytes, set], k: int) -> list[list[bytes]] | None:
    """Each user's top k items from the model's `recommend` signature, training items left out.

    None if the model has no `recommend` signature (one exported before it existed).
    """
    signatures = tf.saved_model.load(model_dir).signatures
    if features.RECOMMEND not in signatures:
        return None
    signature = signatures[features.RECOMMEND]

    def ranked(chunk: list[bytes], n: int):
        return signature(user_id=tf.constant(chunk), k=tf.constant(n, tf.int32))[features.ITEM_ID].numpy()

    return ranking.top_k_unseen(ranked, users, seen, k, recommend.users_per_call(recommend.catalogue_size(signature)))


def evaluate(
    train_rows: Iterable[tuple[bytes, bytes, int]], eval_rows: Iterable[tuple[bytes, bytes, int]],
    model_top_fn: Callable[[list[bytes], Mapping[bytes, set]], list | None],
    baseline_top_fn: Callable[[list[bytes], Mapping[bytes, set]], list | None] | None,
    k: int, tier_thresholds: tuple[int, int],
) -> dict:
    """{slice: {ranker: metrics}} over the users with a liked item among `eval_rows` (see the module docstring).

    Rows are (user_id, item_id, liked); `*_top_fn(users, training items per user)`
    gives each user's top k, training items left out.
    """
    seen, counts, activity = {}, Counter(), Counter()
    for user, item, _ in train_rows:
        seen.setdefault(user, set()).add(item)
        counts[item] += 1
        activity[user] += 1
    relevant = {}
    for user, item, liked in eval_rows:
        if liked and item not in seen.get(user, ()):
            relevant.setdefault(user, set()).add(item)
    users = sorted(relevant)
    tops = {ranking.MODEL: model_top_fn(users, seen), ranking.POPULARITY: ranking.popularity_top(counts, seen, users, k)}
    if baseline_top_fn is not None:
        baseline = baseline_top_fn(users, seen)
        if baseline is not None:
            tops[ranking.BASELINE] = baseline
    liked = [relevant[u] for u in users]
    values = {name: ranking.per_user(top, liked, k) for name, top in tops.items()}
    tiers = np.array([tier(activity[u], *tier_thresholds) for u in users])
    slices = {ranking.OVERALL: np.ones(len(users), bool)}
    slices.update({f"user_activity:{t}": tiers == t for t in features.TIERS if (tiers == t).any()})
    return {
        name: {ranker: ranking.summarize(v[mask], k) for ranker, v in values.items()}
        for name, mask in slices.items()
    }


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
    # {"metric", "bound", "max_regression"} of a RankingThreshold, or empty: not gated.
    # typing.Union, not "str | float": TFX 1.21 recognises only the former as JSON-compatible.
    threshold: Parameter[dict[str, Union[str, float]]],  # noqa: UP007
    baseline_model: InputArtifact[standard_artifacts.Model] = None,
) -> None:
    """Ranks the eval split's users with `model` (and `baseline_model`) and gates on `threshold`."""
    some, many = tier_thresholds

    def candidate_top(users: list[bytes], seen: Mapping[bytes, set]) -> list[list[bytes]]:
        top = model_top(_model_dir(model), users, seen, k)
        if top is None:
            raise ValueError(f"{_model_dir(model)}: the model has no {features.RECOMMEND!r} signature to rank with")
        return top

    result = evaluate(
        itertools.chain.from_iterable(read_interactions(examples.uri, split) for split in training_splits),
        read_interactions(examples.uri, choices.EVAL),
        candidate_top,
        (lambda users, seen: model_top(_model_dir(baseline_model), users, seen, k)) if baseline_model else None,
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
        baseline = overall.get(ranking.BASELINE, {}).get(key)
        failures = gate.failures(overall[ranking.MODEL][key], baseline, k)
    evaluation.set_int_custom_property(mlmd_names.BLESSED, int(not failures))
    evaluation.set_string_custom_property(mlmd_names.RANKING_FAILURES, json.dumps(failures))
