"""The data gate: stop the run when the data is anomalous or has drifted.

TFX 1.21's ExampleValidator records anomalies (and a `blessed` property on its
artifact) but lets the run go on, and it never compares a span with the one
before. `DataValidationGate` runs after it: it adds TFDV's drift comparators
(thresholds from the config) between the new span's statistics and the previous
span's, and fails with every anomaly spelled out, so Transform and Trainer never
see bad data, while the anomalies artifact stays recorded in ML Metadata.
"""

import copy
import json
import os
from typing import Mapping, Sequence

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.resolvers import span_of

# Where ExampleValidator and StatisticsGen 1.21 write each split's results.
ANOMALIES_FILE = "SchemaDiff.pb"
STATISTICS_FILE = "FeatureStats.pb"
# The split whose distribution is compared between spans.
DRIFT_SPLIT = "train"
# TFDV drift comparators: L-infinity distance for categorical (string)
# features, Jensen-Shannon divergence for numeric ones.
INFINITY_NORM = "infinity_norm"
JENSEN_SHANNON = "jensen_shannon_divergence"


class DataValidationError(RuntimeError):
    """Input data violates the curated schema."""


def describe(anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per anomaly: the column and what is wrong with it."""
    lines = []
    for column, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(
            f"{r.short_description}: {r.description}" for r in info.reason
        ) or info.description
        lines.append(f"column '{column}': {reasons}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
        lines.append(f"dataset: {reasons or info.description}")
    return lines


def read_anomalies(split_uri: str) -> anomalies_pb2.Anomalies:
    return anomalies_pb2.Anomalies.FromString(
        io_utils.read_bytes_file(os.path.join(split_uri, ANOMALIES_FILE))
    )


def schema_with_drift(
    schema: schema_pb2.Schema, thresholds: Mapping[str, tuple[str, float]]
) -> schema_pb2.Schema:
    """A copy of `schema` with a drift comparator per feature: {feature: (comparator, threshold)}."""
    out = copy.deepcopy(schema)
    for name, (comparator, threshold) in thresholds.items():
        if comparator not in (INFINITY_NORM, JENSEN_SHANNON):
            raise ValueError(f"drift comparator for '{name}' must be {INFINITY_NORM} or {JENSEN_SHANNON}")
        getattr(tfdv.get_feature(out, name).drift_comparator, comparator).threshold = threshold
    return out


def drift(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    thresholds: Mapping[str, tuple[str, float]],
) -> list[str]:
    """One line per feature whose distribution moved past its threshold."""
    anomalies = tfdv.validate_statistics(
        current, schema_with_drift(schema, thresholds), previous_statistics=previous
    )
    lines = []
    for column, info in sorted(anomalies.anomaly_info.items()):
        reasons = [
            r.description for r in info.reason
            if anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith("COMPARATOR_")
        ]
        if reasons:
            lines.append(f"column '{column}': drift: {'; '.join(reasons)}")
    return lines


def _statistics(uri: str, split: str):
    return tfdv.load_stats_binary(os.path.join(uri, f"Split-{split}", STATISTICS_FILE))


def check(
    anomalies_uri: str,
    split_names: list[str],
    data_source: str,
    drift_problems: Sequence[str] = (),
) -> None:
    """Raises DataValidationError listing every anomaly of every split and every drift, if any."""
    problems = []
    for split in split_names:
        for line in describe(read_anomalies(os.path.join(anomalies_uri, f"Split-{split}"))):
            problems.append(f"  split '{split}', {line}")
    problems.extend(f"  {line}" for line in drift_problems)
    if problems:
        raise DataValidationError(
            f"Input data {data_source} does not match the curated schema; "
            f"the run stops before Transform. Anomalies:\n" + "\n".join(problems)
        )


@tfx.dsl.components.component
def DataValidationGate(  # pylint: disable=invalid-name
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    data_source: tfx.dsl.components.Parameter[str],
    drift_thresholds: tfx.dsl.components.Parameter[str],
    previous_statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
) -> None:
    """Fails the run on any anomaly, or on drift from `previous_statistics` (the previous span).

    `drift_thresholds` is JSON: {feature: [comparator, threshold]}.
    `data_source` names the input in the message.
    """
    drift_problems = []
    if previous_statistics is not None:
        lines = drift(
            _statistics(statistics.uri, DRIFT_SPLIT),
            _statistics(previous_statistics.uri, DRIFT_SPLIT),
            tfdv.load_schema_text(os.path.join(schema.uri, "schema.pbtxt")),
            {name: tuple(value) for name, value in json.loads(drift_thresholds).items()},
        )
        drift_problems = [
            f"span {span_of(previous_statistics)} -> span {span_of(statistics)}, {line}"
            for line in lines
        ]
    check(
        anomalies.uri,
        artifact_utils.decode_split_names(anomalies.split_names),
        data_source,
        drift_problems,
    )
