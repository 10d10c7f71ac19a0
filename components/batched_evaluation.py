"""The Evaluator's metrics a batch at a time: TFMA's computations, fed by numpy instead of per example.

TFMA reads, transforms and scores the eval split in batches, then unbatches
it and feeds every example, once per slice it falls in, model and metric, to
a Python combiner: at scale that is most of the Evaluator's time. Here the
same TFMA pipeline stops before unbatching: `batched_metrics_evaluator` slices
each batch with numpy masks (TFMA's slicing rules, raw and transformed
features), adds each batch's sums into one accumulator per (slice,
computation), and hands TFMA's own combiners those sums once per slice
(`extract_output`). TFMA's derived computations, baseline diffs, validation
against the thresholds and writers run unchanged, so the files, the metrics
and the blessing are TFMA's.

Only the combiners below have a batched form; `unsupported` names what else
a config asks for, and `Executor` then runs TFX's own Evaluator unchanged.
This module relies on TFMA 0.52 internals (combiner attributes, the
evaluator's private helpers); `tests/test_blessing.py` compares its output
with TFX's own executor's on the same inputs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from absl import logging
from tensorflow_model_analysis.contrib.aggregates import binary_confusion_matrices as aggregates
from tensorflow_model_analysis.evaluators import evaluator as tfma_evaluator
from tensorflow_model_analysis.evaluators import metrics_plots_and_validations_evaluator as tfma_mpv
from tensorflow_model_analysis.evaluators import metrics_validator
from tensorflow_model_analysis.extractors import predictions_extractor
from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    calibration,
    calibration_histogram,
    cross_entropy_metrics,
    example_count,
    mean_regression_error,
    metric_specs,
    metric_types,
    tf_metric_wrapper,
)
from tensorflow_model_analysis.utils import model_util
from tfx.components.evaluator import component as tfx_evaluator_component
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils, path_utils, proto_utils

# Rows per batch read from the eval split (TFMA's reading, transform graph and inference run per batch).
BATCH_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """One batch's labels and predictions of one (model, output), as float64 vectors."""

    labels: np.ndarray
    predictions: np.ndarray


def _fractional(labels: np.ndarray, predictions: np.ndarray, fractional: bool):
    """(labels, predictions, weights) as TFMA's fractional labels split them: a label l becomes
    (0, weight 1 - l) and (1, weight l); zero weights drop out of every sum, so they are kept."""
    if not fractional:
        return labels, predictions, np.ones_like(labels)
    if len(labels) and (labels.min() < 0.0 or labels.max() > 1.0):
        raise ValueError(f"fractional labels must be within [0, 1], got [{labels.min()}, {labels.max()}]")
    return (np.concatenate([np.zeros_like(labels), np.ones_like(labels)]), np.concatenate([predictions, predictions]),
            np.concatenate([1.0 - labels, labels]))


class _Histogram:
    """`calibration_histogram._CalibrationHistogramCombiner`: per bucket, summed labels, predictions, examples."""

    def __init__(self, combiner):
        self.combiner, self.key = combiner, combiner._key
        self.size = combiner._num_buckets + 2
        if not combiner._prediction_based_bucketing:
            raise NotImplementedError("label-based bucketing")

    def add(self, inputs: _Inputs) -> np.ndarray:
        c = self.combiner
        labels, predictions, weights = _fractional(inputs.labels, inputs.predictions, c._fractional_labels)
        if np.isnan(predictions).any():  # TFMA fails on them too (int(nan))
            raise ValueError(f"{self.key.model_name or 'the model'}'s {self.key.output_name} predicted NaN")
        # TFMA's own arithmetic and truncation; below `left` is bucket 0, from `right` on bucket n + 1.
        position = (predictions - c._left) / c._range * c._num_buckets + 1
        bucket = np.clip(np.trunc(position), 0, c._num_buckets + 1).astype(np.int64)
        present = weights > 0
        sums = np.zeros((4, self.size))
        for row, values in enumerate((labels * weights, predictions * weights, weights, present)):
            sums[row] = np.bincount(bucket[present], weights=values[present], minlength=self.size)
        return sums

    def output(self, sums: np.ndarray) -> dict:
        accumulator = {
            int(i): calibration_histogram.Bucket(int(i), float(sums[0, i]), float(sums[1, i]), float(sums[2, i]))
            for i in np.flatnonzero(sums[3])
        }
        return self.combiner.extract_output(accumulator)


class _ConfusionMatrices:
    """`binary_confusion_matrices._BinaryConfusionMatrixCombiner`: tp, tn, fp, fn per threshold."""

    def __init__(self, combiner):
        self.combiner, self.key = combiner, combiner._key
        matrices = combiner._binary_confusion_matrices
        self.thresholds = list(matrices._thresholds)
        self.fractional = matrices._enable_fractional_labels
        if combiner._example_id_key:
            raise NotImplementedError("example ids")

    def add(self, inputs: _Inputs) -> np.ndarray:
        labels, predictions, weights = _fractional(inputs.labels, inputs.predictions, self.fractional)
        sums = np.zeros((len(self.thresholds), 4))
        for i, threshold in enumerate(self.thresholds):
            positive = labels == 1.0 if self.fractional else labels > threshold
            above = predictions > threshold
            sums[i] = [weights[positive & above].sum(), weights[~positive & ~above].sum(),
                       weights[~positive & above].sum(), weights[positive & ~above].sum()]
        return sums

    def output(self, sums: np.ndarray) -> dict:
        accumulator = {
            threshold: aggregates._ThresholdEntry(aggregates.Matrix(*map(float, sums[i])), [], [], [], [])
            for i, threshold in enumerate(self.thresholds)
        }
        return self.combiner.extract_output(accumulator)


class _WeightedLabelsPredictions:
    """`calibration._WeightedLabelsPredictionsExamplesCombiner`: summed labels, predictions, examples."""

    def __init__(self, combiner):
        self.combiner, self.key = combiner, combiner._key
        if self.key.sub_key is not None:
            raise NotImplementedError("sub keys")

    def add(self, inputs: _Inputs) -> np.ndarray:
        return np.array([inputs.labels.sum(), inputs.predictions.sum(), len(inputs.labels)], dtype=np.float64)

    def output(self, sums: np.ndarray) -> dict:
        accumulator = self.combiner.create_accumulator()
        (accumulator.total_weighted_labels, accumulator.total_weighted_predictions,
         accumulator.total_weighted_examples) = map(float, sums)
        return self.combiner.extract_output(accumulator)


class _ExampleCount:
    """`example_count._ExampleCountCombiner`: examples (unweighted)."""

    def __init__(self, combiner):
        self.combiner = combiner
        self.key = metric_types.MetricKey(name="", model_name=combiner._model_name, output_name=combiner._output_name)

    def add(self, inputs: _Inputs) -> np.ndarray:
        return np.array([len(inputs.labels)], dtype=np.float64)

    def output(self, sums: np.ndarray) -> dict:
        return self.combiner.extract_output(float(sums[0]))


class _MeanError:
    """`mean_regression_error` and `cross_entropy_metrics` combiners: summed error and examples.

    Their own `merge_accumulators` counts the first accumulator twice, so the
    sums are merged here and only `extract_output` is theirs.
    """

    def __init__(self, combiner):
        self.combiner = combiner
        self.key = combiner._metric_key
        self.error = self._error(combiner)

    @staticmethod
    def _error(combiner):
        if isinstance(combiner, mean_regression_error._MeanAbsoluteErrorCombiner):
            return lambda y, p: np.abs(y - p)
        if isinstance(combiner, mean_regression_error._MeanSquaredErrorCombiner):
            return lambda y, p: (y - p) ** 2
        if isinstance(combiner, cross_entropy_metrics._BinaryCrossEntropyCombiner) and not combiner._from_logits:
            def cross_entropy(y, p):
                y = y * (1.0 - combiner._label_smoothing) + 0.5 * combiner._label_smoothing
                with np.errstate(divide="ignore", invalid="ignore"):
                    return -y * np.log(p) - (1 - y) * np.log(1 - p)
            return cross_entropy
        raise NotImplementedError(type(combiner).__name__)

    def add(self, inputs: _Inputs) -> np.ndarray:
        error = self.error(inputs.labels, inputs.predictions)
        if isinstance(self.combiner, mean_regression_error._MeanRegressionErrorCombiner):
            error = error[~np.isnan(error)]  # TFMA skips NaN errors here, not in cross entropy
        return np.array([error.sum(), len(error)], dtype=np.float64)

    def output(self, sums: np.ndarray) -> dict:
        accumulator = self.combiner.create_accumulator()
        if isinstance(self.combiner, mean_regression_error._MeanRegressionErrorCombiner):
            accumulator.total_regression_error, accumulator.total_example_weights = map(float, sums)
        else:
            accumulator.total_cross_entropy, accumulator.total_example_weights = map(float, sums)
        return self.combiner.extract_output(accumulator)


class _KerasMetrics:
    """`tf_metric_wrapper._CompilableMetricsCombiner`: Keras metrics updated on a whole slice of a batch.

    Their weights (sums such as total and count) add up across batches, as
    TFMA's own accumulator adds them.
    """

    def __init__(self, combiner):
        self.combiner = combiner
        self.key = metric_types.MetricKey(name="", model_name=combiner._model_name)
        if combiner._sub_key or combiner._aggregation_type or combiner._class_weights:
            raise NotImplementedError("sub keys, aggregation or class weights")
        self.outputs = list(combiner._output_names)

    def add_all(self, inputs_by_output: Mapping[str, _Inputs]) -> list:
        self.combiner.setup()
        weights = []
        for output in self.outputs:
            inputs = inputs_by_output[output]
            for metric in self.combiner._metrics[output]:
                metric.reset_states()
                metric.update_state(inputs.labels.reshape(-1, 1).astype(np.float32),
                                    inputs.predictions.reshape(-1, 1).astype(np.float32))
                weights.append([np.asarray(w, np.float64) for w in metric.get_weights()])
        return weights

    def output(self, weights: list) -> dict:
        self.combiner.setup()
        accumulator = self.combiner.create_accumulator()
        flat = iter(weights)
        for output_index, output in enumerate(self.outputs):
            for metric_index in range(len(self.combiner._metrics[output])):
                accumulator.add_weights(output_index, metric_index, next(flat))
        return self.combiner.extract_output(accumulator)


_BATCHED = (
    (calibration_histogram._CalibrationHistogramCombiner, _Histogram),
    (binary_confusion_matrices._BinaryConfusionMatrixCombiner, _ConfusionMatrices),
    (calibration._WeightedLabelsPredictionsExamplesCombiner, _WeightedLabelsPredictions),
    (example_count._ExampleCountCombiner, _ExampleCount),
    (mean_regression_error._MeanRegressionErrorCombiner, _MeanError),
    (cross_entropy_metrics._CrossEntropyCombiner, _MeanError),
    (tf_metric_wrapper._CompilableMetricsCombiner, _KerasMetrics),
)


def _batched(computation):
    # TFMA's standard preprocessor only gathers the labels and predictions read here.
    if any(type(p) is not metric_types.StandardMetricInputsPreprocessor for p in computation.preprocessors or ()):
        raise NotImplementedError("preprocessors")
    combiner = computation.combiner
    if getattr(combiner, "_example_weighted", False):
        raise NotImplementedError("example weights")
    for kind, batched in _BATCHED:
        if isinstance(combiner, kind):
            made = batched(combiner)
            if made.key.sub_key is not None:
                raise NotImplementedError("sub keys")
            return made
    raise NotImplementedError(type(combiner).__name__)


def computations_of(eval_config) -> tuple[list, list]:
    """(the batched forms of TFMA's combiner computations, TFMA's derived computations) for `eval_config`.

    Raises NotImplementedError for a computation this module cannot run:
    one without a batched form, a cross-slice or a confidence-interval one.
    """
    separated = tfma_mpv._filter_and_separate_computations(
        metric_specs.to_computations(eval_config.metrics_specs, eval_config=eval_config)
    )
    if separated.cross_slice_computations or separated.ci_derived_computations:
        raise NotImplementedError("cross-slice or confidence-interval metrics")
    return [_batched(c) for c in separated.non_derived_computations], separated.derived_computations


def unsupported(eval_config) -> str | None:
    """Why the batched metrics cannot serve `eval_config` (TFMA's evaluator then runs), or None."""
    options = eval_config.options
    if options.compute_confidence_intervals.value or options.min_slice_size.value > 1:
        return "confidence intervals or a minimum slice size"
    if eval_config.cross_slicing_specs:
        return "cross-slice comparisons"
    if any(spec.example_weight_key or spec.example_weight_keys for spec in eval_config.model_specs):
        return "example weights"
    for spec in eval_config.slicing_specs:
        if spec.feature_values or spec.slice_keys_sql or len(spec.feature_keys) > 1:
            return f"the slicing spec {spec}"
    try:
        computations_of(eval_config)
    except NotImplementedError as error:
        return f"a metric computation without a batched form ({error})"
    return None


def _by_model(extract: Mapping[str, Any], key: str, model_name: str, multi: bool):
    value = extract[key]
    if multi and isinstance(value, Mapping) and model_name in value:
        value = value[model_name]
    return value


def _vector(values) -> np.ndarray:
    array = np.asarray(values)
    return array.reshape(len(array), -1)[:, 0].astype(np.float64) if array.ndim > 1 else array.astype(np.float64)


def _slice_masks(extract: Mapping[str, Any], eval_config) -> dict[tuple, np.ndarray]:
    """Slice key -> rows of the batch in that slice, as TFMA's SliceKeyExtractor slices.

    A feature is looked up in every model's transformed features first (with a
    baseline, a row is in each slice any model's value puts it in), and in the
    raw features only where no model transforms it.
    """
    rows = len(extract[tfma.constants.INPUT_KEY])
    transformed = extract.get(tfma.constants.TRANSFORMED_FEATURES_KEY)
    dicts = []
    if transformed:
        if len(eval_config.model_specs) == 1:
            dicts = [transformed]
        else:
            dicts = [transformed[spec.name] for spec in eval_config.model_specs if spec.name in transformed]
    masks: dict[tuple, np.ndarray] = {}
    for spec in eval_config.slicing_specs:
        if not spec.feature_keys:
            masks[()] = np.ones(rows, dtype=bool)
            continue
        (feature,) = spec.feature_keys
        columns = [d[feature] for d in dicts if d.get(feature) is not None] or [
            extract[tfma.constants.FEATURES_KEY][feature]
        ]
        columns = [np.asarray(column).reshape(rows, -1) for column in columns]
        for value in np.unique(np.concatenate([column.ravel() for column in columns])):
            inside = np.zeros(rows, dtype=bool)
            for column in columns:
                inside |= (column == value).any(axis=1)
            # TFMA's slice values: text for bytes (UTF-8 or refused), Python scalars otherwise.
            if isinstance(value, bytes):
                try:
                    key_value = value.decode()
                except UnicodeDecodeError as error:
                    raise ValueError(f'Found non-UTF8 feature value {value} in column "{feature}"') from error
            else:
                key_value = value.item() if isinstance(value, np.generic) else value
            masks[((feature, key_value),)] = inside
    return masks


class _WithComputations(beam.DoFn):
    """A DoFn holding `eval_config`'s batched computations (built on each worker)."""

    def __init__(self, eval_config):
        self._eval_config = eval_config
        self._batched = None

    def setup(self):
        self._batched = computations_of(self._eval_config)[0]


class _AccumulateBatches(_WithComputations):
    """Per batch of extracts: (slice key, [sums per computation]) for every slice with rows in it."""

    def process(self, extract):
        config = self._eval_config
        multi = len(config.model_specs) > 1
        masks = _slice_masks(extract, config)
        vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

        def inputs(model_name, output_name, mask):
            if (model_name, output_name) not in vectors:  # once per batch, not once per slice and metric
                labels = _by_model(extract, tfma.constants.LABELS_KEY, model_name, multi)
                predictions = _by_model(extract, tfma.constants.PREDICTIONS_KEY, model_name, multi)
                if output_name:
                    labels, predictions = labels[output_name], predictions[output_name]
                vectors[model_name, output_name] = _vector(labels), _vector(predictions)
            labels, predictions = vectors[model_name, output_name]
            return _Inputs(labels[mask], predictions[mask])

        for slice_key, mask in masks.items():
            if not mask.any():
                continue
            sums = []
            for batched in self._batched:
                if isinstance(batched, _KerasMetrics):
                    sums.append(batched.add_all({o: inputs(batched.key.model_name, o, mask) for o in batched.outputs}))
                else:
                    sums.append(batched.add(inputs(batched.key.model_name, batched.key.output_name, mask)))
            yield slice_key, sums


def _add(left, right):
    if isinstance(left, list):
        return [_add(a, b) for a, b in zip(left, right)]
    return left + right


class _SumAccumulators(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, sums):
        return sums if accumulator is None else _add(accumulator, sums)

    def merge_accumulators(self, accumulators):
        result = None
        for accumulator in accumulators:
            if accumulator is not None:
                result = accumulator if result is None else _add(result, accumulator)
        return result

    def extract_output(self, accumulator):
        return accumulator


class _CombinerOutputs(_WithComputations):
    """(slice key, summed sums) -> (slice key, {key: TFMA combiner output}) for every computation."""

    def process(self, element):
        slice_key, sums = element
        metrics = {}
        for batched, summed in zip(self._batched, sums):
            metrics.update(batched.output(summed))
        yield slice_key, metrics


@beam.ptransform_fn
def _EvaluateBatched(extracts, eval_config):
    derived = computations_of(eval_config)[1]
    baseline = model_util.get_baseline_model_spec(eval_config)
    everything = (
        extracts
        | "AccumulatePerSlice" >> beam.ParDo(_AccumulateBatches(eval_config))
        | "SumPerSlice" >> beam.CombinePerKey(_SumAccumulators())
        | "CombinerOutputs" >> beam.ParDo(_CombinerOutputs(eval_config))
        | "AddDerivedAndDiffMetrics" >> tfma_mpv._AddDerivedCrossSliceAndDiffMetrics(
            derived, [], [], baseline.name if baseline else None
        )
        | "RemovePrivateMetrics" >> beam.MapTuple(tfma_mpv._remove_private_metrics)
    )
    metrics = everything | "Metrics" >> beam.Map(tfma_mpv._filter_by_key_type, metric_types.MetricKey)
    plots = everything | "Plots" >> beam.Map(tfma_mpv._filter_by_key_type, metric_types.PlotKey)
    attributions = everything | "Attributions" >> beam.Map(
        tfma_mpv._filter_by_key_type, metric_types.AttributionsKey
    )
    return {
        tfma.constants.METRICS_KEY: metrics,
        tfma.constants.PLOTS_KEY: plots,
        tfma.constants.ATTRIBUTIONS_KEY: attributions,
        tfma.constants.VALIDATIONS_KEY: metrics | "Validate" >> beam.Map(metrics_validator.validate_metrics, eval_config),
    }


def batched_metrics_evaluator(eval_config) -> tfma_evaluator.Evaluator:
    """A TFMA Evaluator computing `eval_config`'s metrics, plots and validations from batched extracts.

    It runs after the predictions extractor, on batches (the extractor list
    must not unbatch them), in place of TFMA's MetricsPlotsAndValidationsEvaluator.
    """
    return tfma_evaluator.Evaluator(
        stage_name="EvaluateMetricsPlotsAndValidationsInBatches",
        run_after=predictions_extractor.PREDICTIONS_EXTRACTOR_STAGE_NAME,
        ptransform=_EvaluateBatched(eval_config=eval_config),  # pylint: disable=no-value-for-parameter
    )


def batched_extractors(eval_shared_model, eval_config) -> list:
    """TFMA's default extractors up to the predictions, without unbatching or slicing."""
    return [
        extractor for extractor in tfma.default_extractors(eval_shared_model=eval_shared_model, eval_config=eval_config)
        if extractor.stage_name not in ("ExtractUnbatchedInputs", "ExtractSliceKeys")
    ]


class Executor(tfx_evaluator.Executor):
    """TFX's Evaluator executor, with metrics computed a batch at a time where the config allows.

    Same inputs, outputs, files and blessing as TFX's. Where `unsupported`
    names a reason (or the config has no thresholds, or a custom module), TFX's
    own executor runs instead.
    """

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        config_json = exec_properties.get(standard_component_specs.EVAL_CONFIG_KEY)
        reason = "no eval config" if not config_json else None
        if exec_properties.get(standard_component_specs.MODULE_PATH_KEY) or exec_properties.get(
            standard_component_specs.MODULE_FILE_KEY
        ):
            reason = "a custom module"
        if reason is None:
            has_baseline = bool(input_dict.get(standard_component_specs.BASELINE_MODEL_KEY))
            eval_config = tfma.EvalConfig()
            proto_utils.json_to_proto(config_json, eval_config)
            # As TFX's executor: change thresholds are ignored without a baseline.
            eval_config = tfma.utils.update_eval_config_with_defaults(
                eval_config, has_baseline=has_baseline, rubber_stamp=True
            )
            tfma.utils.verify_eval_config(eval_config)
            reason = unsupported(eval_config)
            if reason is None and not tfma.metrics.metric_thresholds_from_metrics_specs(
                eval_config.metrics_specs, eval_config=eval_config
            ):
                reason = "no thresholds"
        if reason is not None:
            logging.info("Evaluator: TFMA's own metrics evaluator (%s)", reason)
            super().Do(input_dict, output_dict, exec_properties)
            return
        self._evaluate(input_dict, output_dict, exec_properties, eval_config)

    def _evaluate(self, input_dict, output_dict, exec_properties, eval_config) -> None:
        output_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.EVALUATION_KEY])
        models = []
        for spec in eval_config.model_specs:
            key = standard_component_specs.BASELINE_MODEL_KEY if spec.is_baseline else standard_component_specs.MODEL_KEY
            artifact = artifact_utils.get_single_instance(input_dict[key])
            path = path_utils.serving_model_path(artifact.uri, path_utils.is_old_model_artifact(artifact))
            logging.info("Using %s as %s model.", path, spec.name)
            models.append(tfma.default_eval_shared_model(
                eval_saved_model_path=path, model_name=spec.name, eval_config=eval_config
            ))
        shared = models[0] if len(models) == 1 else models
        splits = json_utils.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY, "null")) or ["eval"]
        examples = input_dict[standard_component_specs.EXAMPLES_KEY]
        factory = tfxio_utils.get_tfxio_factory_from_artifact(
            examples=examples, telemetry_descriptors=["Evaluator"],
            raw_record_column_name=tfma.constants.ARROW_INPUT_COLUMN,
        )
        with self._make_beam_pipeline() as pipeline:
            read = []
            for split in splits:
                for index, uri in enumerate(artifact_utils.get_split_uris(examples, split)):
                    source = factory(io_utils.all_files_pattern(uri)).BeamSource(batch_size=BATCH_SIZE)
                    read.append(pipeline | f"Read[{split}][{index}]" >> source)
            _ = (
                read
                | "FlattenExamples" >> beam.Flatten()
                | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
                    eval_shared_model=shared,
                    eval_config=eval_config,
                    extractors=batched_extractors(shared, eval_config),
                    evaluators=[batched_metrics_evaluator(eval_config)],
                    output_path=output_uri,
                )
            )
        logging.info("Evaluation complete. Results written to %s.", output_uri)
        self._bless(input_dict, output_dict, exec_properties, output_uri)

    @staticmethod
    def _bless(input_dict, output_dict, exec_properties, output_uri: str) -> None:
        """The blessing as TFX's executor writes it: BLESSED or NOT_BLESSED, and the models' properties."""
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        model = input_dict[standard_component_specs.MODEL_KEY][0]
        blessing.set_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if input_dict.get(standard_component_specs.BASELINE_MODEL_KEY):
            baseline = input_dict[standard_component_specs.BASELINE_MODEL_KEY][0]
            blessing.set_string_custom_property(
                evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri
            )
            blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
        if "current_component_id" in exec_properties:
            blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
        ok = tfma.load_validation_result(output_uri).validation_ok
        name = evaluator_constants.BLESSED_FILE_NAME if ok else evaluator_constants.NOT_BLESSED_FILE_NAME
        io_utils.write_string_file(os.path.join(blessing.uri, name), "")
        blessing.set_int_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
            evaluator_constants.BLESSED_VALUE if ok else evaluator_constants.NOT_BLESSED_VALUE,
        )
        logging.info("Blessing result %s written to %s.", ok, blessing.uri)


class Evaluator(tfx_evaluator_component.Evaluator):
    """TFX's Evaluator component (same spec, inputs, outputs and id), running `Executor`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
