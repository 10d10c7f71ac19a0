"""The data gate: stop the run when the data is anomalous or has drifted.

TFX 1.21's ExampleValidator records anomalies (and a `blessed` property on its
artifact) but lets the run go on, and it never compares a span with the one
before. `DataValidationGate` runs after it: it adds TFDV's drift comparators
(thresholds from the config) between the new span's statistics and the previous
span's, and fails with every anomaly spelled out, so Transform and Trainer never
see bad data, while the anomalies artifact stays recorded in ML Metadata.

Its message speaks the user's language: for a column TFDV flags, it counts
the rows of the split that break the schema's rule (empty, out of range, NaN)
and shows one of them, before TFDV's own words.
"""

import copy
import math
import os
from collections.abc import Mapping, Sequence
from typing import Union

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components.choices import DriftComparator, parse
from components.resolvers import span_of

# Where ExampleValidator and StatisticsGen 1.21 write each split's results.
ANOMALIES_FILE = "SchemaDiff.pb"
STATISTICS_FILE = "FeatureStats.pb"
# The split whose distribution is compared between spans.
DRIFT_SPLIT = "train"


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


def row_problem(feature: tf.train.Feature, spec: schema_pb2.Feature) -> str | None:
    """What is wrong with one row's value of a column under the schema's rule, or None."""
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return "is empty" if spec.presence.min_fraction > 0 else None
    if len(values) != 1:
        return f"has {len(values)} values"
    value = values[0]
    domain = None
    if spec.HasField("int_domain"):
        domain = spec.int_domain
    elif spec.HasField("float_domain"):
        domain = spec.float_domain
        if math.isnan(value):
            return "is NaN" if domain.disallow_nan else None
        if math.isinf(value) and domain.disallow_inf:
            return "is infinite"
    if domain is None:
        return None
    low = domain.min if domain.HasField("min") else None
    high = domain.max if domain.HasField("max") else None
    if low is not None and value < low:
        return f"is {value:g}, below the minimum {low:g}"
    if high is not None and value > high:
        return f"is {value:g}, above the maximum {high:g}"
    return None


def _shown(example: tf.train.Example) -> str:
    cells = []
    for name, feature in sorted(example.features.feature.items()):
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        value = values[0] if values else ""
        cells.append(f"{name}={value.decode(errors='replace') if isinstance(value, bytes) else value!r}")
    return ", ".join(cells)


def offending_rows(
    split_uri: str, schema: schema_pb2.Schema, columns: Sequence[str]
) -> dict[str, tuple[str, int, int, str]]:
    """column -> (problem, rows with it, rows in the split, one such row), for `columns` of a split."""
    specs = {f.name: f for f in schema.feature if f.name in columns}
    found: dict[str, list] = {}
    total = 0
    # listdir, not glob: any file system TFX writes to, and no pattern characters in the path.
    files = sorted(os.path.join(split_uri, n) for n in tf.io.gfile.listdir(split_uri) if n.endswith(".gz"))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        total += 1
        example = tf.train.Example.FromString(record)
        for name, spec in specs.items():
            problem = row_problem(example.features.feature[name], spec)
            if problem:
                entry = found.setdefault(name, [problem, 0, _shown(example)])
                entry[1] += 1
    return {name: (problem, rows, total, shown) for name, (problem, rows, shown) in found.items()}


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
        comparator = parse(DriftComparator, comparator, f"drift comparator for '{name}'")
        getattr(tfdv.get_feature(out, name).drift_comparator, comparator.value).threshold = threshold
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


def read_statistics(uri: str, split: str):
    """One split's DatasetFeatureStatisticsList, as StatisticsGen wrote it under `uri`."""
    return tfdv.load_stats_binary(os.path.join(uri, f"Split-{split}", STATISTICS_FILE))


def check(
    anomalies_uri: str,
    split_names: list[str],
    data_source: str,
    drift_problems: Sequence[str] = (),
    examples_uri: str | None = None,
    schema: schema_pb2.Schema | None = None,
) -> None:
    """Raises DataValidationError listing every anomaly of every split and every drift, if any.

    With `examples_uri` and `schema`, each flagged column also gets the number
    of rows of the split that break its rule, and one of them.
    """
    problems = []
    for split in split_names:
        anomalies = read_anomalies(os.path.join(anomalies_uri, f"Split-{split}"))
        rows = {}
        if examples_uri is not None and schema is not None and anomalies.anomaly_info:
            rows = offending_rows(os.path.join(examples_uri, f"Split-{split}"), schema, list(anomalies.anomaly_info))
        for column, line in zip(sorted(anomalies.anomaly_info), describe(anomalies)):
            if column in rows:
                problem, count, total, shown = rows[column]
                problems.append(
                    f"  split '{split}' of {data_source}: column '{column}' {problem} in {count} of "
                    f"{total} rows, e.g. the row {shown} (TFDV: {line.split(': ', 1)[1]})"
                )
            else:
                problems.append(f"  split '{split}', {line}")
        if anomalies.HasField("dataset_anomaly_info"):
            problems.append(f"  split '{split}', {describe(anomalies)[-1]}")
    problems.extend(f"  {line}" for line in drift_problems)
    if problems:
        raise DataValidationError(
            f"Input data {data_source} does not match the curated schema; "
            f"the run stops before Transform. Anomalies:\n" + "\n".join(problems)
        )


@component
def DataValidationGate(  # pylint: disable=invalid-name
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    examples: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],
    data_source: Parameter[str],
    # typing.Union, not "str | float": TFX 1.21 recognises only the former as JSON-compatible.
    drift_thresholds: Parameter[dict[str, list[Union[str, float]]]],  # noqa: UP007
    previous_statistics: InputArtifact[
        standard_artifacts.ExampleStatistics
    ] = None,
) -> None:
    """Fails the run on any anomaly, or on drift from `previous_statistics` (the previous span).

    `drift_thresholds`: {feature: [comparator, threshold]} (see DriftComparator).
    `data_source` names the input in the message.
    """
    drift_problems = []
    curated = tfdv.load_schema_text(os.path.join(schema.uri, "schema.pbtxt"))
    if previous_statistics is not None:
        lines = drift(
            read_statistics(statistics.uri, DRIFT_SPLIT),
            read_statistics(previous_statistics.uri, DRIFT_SPLIT),
            curated,
            {name: tuple(value) for name, value in drift_thresholds.items()},
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
        examples.uri,
        curated,
    )
