"""What the Evaluator wrote: TFMA metrics, plots and the validation result.

TFMA (and with it TensorFlow) is imported by the functions that read its
files, not by this module: `inspect_metadata.py runs` and `lineage`, which
read only ML Metadata, start without it.
"""

from __future__ import annotations

from google.protobuf import text_format

# TFMA's model names: "" when a model is evaluated alone, these with a baseline.
CANDIDATE, BASELINE = "candidate", "baseline"
OVERALL = "overall"


def slice_name(slice_key) -> str:
    """"overall", or "column=value, ..." for a TFMA slice key."""
    keys = slice_key.single_slice_keys
    if not keys:
        return OVERALL
    return ", ".join(
        f"{k.column}={k.bytes_value.decode() if k.bytes_value else k.int64_value}" for k in keys
    )


def evaluation_metrics(evaluation_uri: str) -> dict[str, dict[tuple[str, str, str, bool], float]]:
    """slice -> (model, head, metric, is_diff) -> value, for every scalar TFMA metric."""
    import tensorflow_model_analysis as tfma

    table: dict[str, dict] = {}
    for per_slice in tfma.load_metrics(evaluation_uri):
        for kv in per_slice.metric_keys_and_values:
            if kv.value.HasField("double_value"):
                key = (kv.key.model_name, kv.key.output_name, kv.key.name, kv.key.is_diff)
                table.setdefault(slice_name(per_slice.slice_key), {})[key] = kv.value.double_value.value
    return table


def candidate_metrics(table_slice: dict[tuple[str, str, str, bool], float]) -> dict[str, dict[str, float]]:
    """head -> metric -> value of the evaluated (candidate) model, from one slice of the table."""
    metrics: dict[str, dict[str, float]] = {}
    for (model, head, name, is_diff), value in table_slice.items():
        if not is_diff and model in ("", CANDIDATE):
            metrics.setdefault(head, {})[name] = value
    return metrics


def failed_thresholds(evaluation_uri: str) -> tuple[str, ...]:
    """One line per threshold the candidate failed: head/metric (kind) = value, threshold."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = "change vs baseline" if key.is_diff else "value"
            bound = text_format.MessageToString(failure.metric_threshold, as_one_line=True)
            failures.append(
                f"{key.output_name}/{key.name} ({kind}) = "
                f"{failure.metric_value.double_value.value:.4f}, threshold {bound}"
            )
    return tuple(failures)


def calibration_buckets(evaluation_uri: str, head: str) -> list[tuple[float, float, float]]:
    """Overall slice, candidate model: (mean prediction, mean label, examples) per non-empty bucket."""
    import tensorflow_model_analysis as tfma

    out = []
    for per_slice in tfma.load_plots(evaluation_uri):
        if per_slice.slice_key.single_slice_keys:
            continue
        for kv in per_slice.plot_keys_and_values:
            if kv.key.output_name != head or kv.key.model_name not in ("", CANDIDATE):
                continue
            for bucket in kv.value.calibration_histogram_buckets.buckets:
                n = bucket.num_weighted_examples.value
                if n > 0:
                    out.append((
                        bucket.total_weighted_refined_prediction.value / n,
                        bucket.total_weighted_label.value / n,
                        n,
                    ))
    return out
