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
Small training splits are ranked in the component's process
(`ranking.evaluate`); past `in_process_mib`, as a job on the pipeline's Beam
runner (`components.ranking_job`), which groups each user's rows in Beam and
ranks blocks of users per worker. Both give the same figures.

The `fold_in` slice judges new users as a service meets them: for each user
with no training row, the first half (by time) of the user's `eval`
interactions is the request's history (`recommend_from_history`; popularity
leaves it out too), and the user is judged on the liked items of the rest.

Its `RankingEvaluation` artifact holds the overall figures as custom
properties and every slice in `ranking.json`; `blessed` is 1 unless a
`RankingThreshold` is given and fails (the reasons are recorded). With a
`sample` below 1, only that fraction of the users is judged, chosen by a keyed
hash of the ID (`ranking.sampled`); `ranking.json` and the artifact record it.
`ServingCheck` refuses to check, so the Pusher refuses to publish, a model
whose ranking was not blessed.
"""

import json
import os
from typing import Union

import apache_beam as beam
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.utils import path_utils

from components import choices, mlmd_names, ranking, ranking_job
from recommender import features, recommend


class RankingEvaluation(Artifact):
    """Ranking metrics of one model on one evaluation (see the module docstring)."""

    TYPE_NAME = mlmd_names.RANKING_EVALUATION_TYPE


def _model_dir(model: Artifact) -> str:
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


@component(use_beam=True)
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
    sample: Parameter[float] = 1.0,
    in_process_mib: Parameter[float] = 64.0,
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Ranks the eval split's users with `model` (and `baseline_model`) and gates on `threshold`;
    with `sample` < 1, only that fraction of the users, chosen by a keyed hash. Training splits of
    at most `in_process_mib` MiB are ranked in this process, larger ones on `beam_pipeline`."""
    if not 0.0 < sample <= 1.0:
        raise ValueError(f"the ranking sample must be in (0, 1], got {sample}")
    candidate_dir = _model_dir(model)
    candidate = tf.saved_model.load(candidate_dir).signatures
    if features.RECOMMEND not in candidate:
        raise ValueError(f"{candidate_dir}: the model has no {features.RECOMMEND!r} signature to rank with")
    baseline_dir = _model_dir(baseline_model) if baseline_model else None
    baseline = tf.saved_model.load(baseline_dir).signatures if baseline_dir else None
    # Listed once: their sizes choose the path, and the in-process path reads them.
    training_files = [path for split in training_splits
                      for path in tf.io.gfile.glob(ranking_job.split_pattern(examples.uri, split))]
    size = sum(tf.io.gfile.stat(path).length for path in training_files)
    # A Beam job costs seconds to start and to load the models again in its workers: on small
    # splits that is most of the evaluation, so they are ranked here, the same way.
    on_beam = size > in_process_mib * 2**20
    if on_beam:
        rankers = [ranking.MODEL, ranking.POPULARITY]
        if baseline is not None and features.RECOMMEND in baseline:
            rankers.append(ranking.BASELINE)
        block = recommend.users_per_call(recommend.catalogue_size(candidate[features.RECOMMEND]))
        work = os.path.join(evaluation.uri, "job")
        with beam_pipeline as pipeline:
            ranking_job.add_evaluation(pipeline, examples.uri, training_splits, choices.EVAL, candidate_dir,
                                       baseline_dir, k, tuple(tier_thresholds), block, work, sample)
        result = ranking_job.read_summaries(work, rankers, k)
        tf.io.gfile.rmtree(work)
    else:
        def top(signatures):
            return lambda users, seen, histories: ranking_job.model_top(signatures, users, seen, k, histories)

        result = ranking.evaluate(
            ranking_job.read_files(training_files),
            ranking_job.read_interactions(examples.uri, choices.EVAL),
            top(candidate), top(baseline) if baseline is not None else None, k, tuple(tier_thresholds), sample,
        )
    evaluation.set_string_custom_property(mlmd_names.RANKED_ON, "beam" if on_beam else "process")
    overall = result[ranking.OVERALL]
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, mlmd_names.RANKING_FILE), "w") as f:
        json.dump({"k": k, "sample": sample, "slices": result}, f, indent=1, sort_keys=True)
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
            served = judged.get(ranking.BASELINE, {}).get(key)
            failures = [f"{gate.slice}: {failure}" if gate.slice != ranking.OVERALL else failure
                        for failure in gate.failures(judged[ranking.MODEL][key], served, k)]
    evaluation.set_float_custom_property(mlmd_names.RANKING_SAMPLE, sample)
    evaluation.set_int_custom_property(mlmd_names.BLESSED, int(not failures))
    evaluation.set_string_custom_property(mlmd_names.RANKING_FAILURES, json.dumps(failures))
