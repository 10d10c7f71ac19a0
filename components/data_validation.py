"""The data gate: stop the run when ExampleValidator found anomalies.

TFX 1.21's ExampleValidator records anomalies (and a `blessed` property on its
artifact) but lets the run go on. `DataValidationGate` runs after it and fails
with every anomaly spelled out, so Transform and Trainer never see bad data,
while the anomalies artifact stays recorded in ML Metadata.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

# Where ExampleValidator 1.21 writes each split's anomalies, under the split's folder.
ANOMALIES_FILE = "SchemaDiff.pb"


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


def check(anomalies_uri: str, split_names: list[str], data_source: str) -> None:
    """Raises DataValidationError listing every anomaly of every split, if any."""
    problems = []
    for split in split_names:
        for line in describe(read_anomalies(os.path.join(anomalies_uri, f"Split-{split}"))):
            problems.append(f"  split '{split}', {line}")
    if problems:
        raise DataValidationError(
            f"Input data {data_source} does not match the curated schema; "
            f"the run stops before Transform. Anomalies:\n" + "\n".join(problems)
        )


@tfx.dsl.components.component
def DataValidationGate(  # pylint: disable=invalid-name
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    data_source: tfx.dsl.components.Parameter[str],
) -> None:
    """Fails the run if `anomalies` holds any anomaly; `data_source` names the input in the message."""
    check(
        anomalies.uri,
        artifact_utils.decode_split_names(anomalies.split_names),
        data_source,
    )
