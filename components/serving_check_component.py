"""`ServingCheck`: the pipeline's InfraValidator, between the Evaluator and the Pusher.

It checks the trained model where the Trainer wrote it (inside the pipeline
root, where no server looks) with `components.serving_check` in a fresh,
isolated process with a timeout. Its `InfraBlessing` records the digest of
the exact bytes it checked; the Pusher publishes only a model whose staged
copy has that digest. A model the Evaluator did not bless is not checked
(blessing 0, with the reason), nor is one the ranking gate refused; a blessed model that fails the check fails
the component, and so the run, before anything reaches the serving folder.
"""

import json
from pathlib import Path

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components import mlmd_names
from components.publish import tree_digest
from components.ranking_evaluator import RankingEvaluation
from components.serving_check import ServingCheckError, check_in_fresh_process


def check_model(model_dir: str, timeout_s: float) -> dict:
    """The fresh-process check of `model_dir`, plus the digest of the bytes it checked.

    Raises ServingCheckError if the check fails or the files changed while it ran.
    """
    before = tree_digest(Path(model_dir))
    result = check_in_fresh_process(model_dir, timeout_s)
    if tree_digest(Path(model_dir)) != before:
        raise ServingCheckError(f"{model_dir}: the model's files changed during the serving check")
    return {**result, "digest": before}


@component
def ServingCheck(  # pylint: disable=invalid-name
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    timeout_seconds: Parameter[float],
    ranking: InputArtifact[RankingEvaluation] = None,
) -> None:
    """Checks a blessed `model` as TF Serving would load it; `blessing` is 1 only if it passed.

    A model the Evaluator did not bless, or whose `ranking` (RankingEvaluator)
    the ranking gate refused, is not checked. Raises ServingCheckError (naming
    the model, the signature and the problem) when a blessed model fails, so
    the Pusher never runs.
    """
    refused = None
    if not model_blessing.get_int_custom_property(mlmd_names.BLESSED):
        refused = "the Evaluator did not bless the model"
    elif ranking is not None and not ranking.get_int_custom_property(mlmd_names.BLESSED):
        refused = "the ranking gate refused the model: " + "; ".join(
            json.loads(ranking.get_string_custom_property(mlmd_names.RANKING_FAILURES) or "[]")
        )
    if refused:
        blessing.set_int_custom_property(mlmd_names.BLESSED, 0)
        blessing.set_string_custom_property(mlmd_names.NOT_CHECKED_REASON, refused)
        return
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    result = check_model(model_dir, timeout_seconds)
    blessing.set_int_custom_property(mlmd_names.BLESSED, 1)
    blessing.set_string_custom_property(mlmd_names.CHECKED_MODEL, model_dir)
    blessing.set_string_custom_property(mlmd_names.CHECKED_DIGEST, result["digest"])
    blessing.set_int_custom_property(mlmd_names.CHECKED_REQUESTS, int(result["requests"]))
    blessing.set_float_custom_property(mlmd_names.CHECK_SECONDS, float(result["seconds"]))
