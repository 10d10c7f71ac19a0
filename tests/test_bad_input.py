"""Bad input, end to end: each case stops before the Trainer with a message naming the
file, the column and the problem; ML Metadata records the failure; the model already
being served stays byte for byte the same. Harmless oddities (non-ASCII or very long
IDs) go through.
"""


import pytest
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration.metadata import sqlite_metadata_connection_config

from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import PipelineConfig
from recommender import features
from recommender.model import ModelConfig
from run_local import run
from tests.support import LOOSE_THRESHOLDS, served_versions

pytestmark = pytest.mark.slow

HEADER = ",".join(features.COLUMNS)




def _config(data, output):
    return PipelineConfig(
        data_path=data, output_dir=output, model=ModelConfig(epochs=2), thresholds=LOOSE_THRESHOLDS
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An output root whose serving directory already holds a blessed model."""
    root = tmp_path_factory.mktemp("bad-input")
    data = write_csv(SyntheticSpec(num_interactions=3_000), root / "good" / "interactions.csv")
    summary, error = run(_config(data, root / "out"))
    assert error is None and summary.pushed_to, (error, summary)
    return root


def _replace_field(line, column, value):
    cells = line.split(",")
    cells[features.COLUMNS.index(column)] = value
    return ",".join(cells)


def _bad_files():
    """(case id, function of good lines -> bad lines, expected fragments, failing component)."""
    return [
        ("wrong-field-count", lambda line: line[:9] + [line[9] + ",extra"] + line[10:],
         ["a row has 6 fields but the header has 5"], "ExampleGen"),
        ("missing-column", lambda line: [",".join(x.split(",")[:4]) for x in line],
         ["missing required column(s) ['purchase_probability']"], "ExampleGen"),
        ("empty-file", lambda line: [], ["file is empty"], "ExampleGen"),
        ("empty-id", lambda line: line[:7] + [_replace_field(line[7], features.USER_ID, "")] + line[8:],
         ["column 'user_id' is empty in 1 of", "Feature shape dropped"], "DataValidationGate"),
        ("non-numeric-label", lambda line: line[:4] + [_replace_field(line[4], features.BINARY_RATING, "yes")] + line[5:],
         ["column 'binary_rating': 'yes' is not an integer"], "ExampleGen"),
        ("out-of-range-label",
         lambda line: line[:4] + [_replace_field(line[4], features.PURCHASE_PROBABILITY, "1.5")] + line[5:],
         ["column 'purchase_probability' is 1.5, above the maximum 1 in 1 of", "Out-of-range"],
         "DataValidationGate"),
        ("nan-label", lambda line: line[:4] + [_replace_field(line[4], features.PURCHASE_PROBABILITY, "nan")] + line[5:],
         ["column 'purchase_probability' is NaN in 1 of", "NaN"], "DataValidationGate"),
        ("repeated-header", lambda line: line[:50] + [HEADER] + line[50:],
         ["appears again inside the data"], "ExampleGen"),
    ]


@pytest.mark.parametrize("case", _bad_files(), ids=lambda c: c[0])
def test_bad_file_stops_before_training_and_keeps_the_served_model(served, case, tmp_path):
    name, corrupt, fragments, failing = case
    good = write_csv(SyntheticSpec(num_interactions=400, seed=3), tmp_path / "good.csv")
    data = tmp_path / f"{name}.csv"
    lines = corrupt(good.read_text().splitlines())
    data.write_text("\n".join(lines) + ("\n" if lines else ""))
    config = _config(data, served / "out")
    before = served_versions(config.serving_dir)

    summary, error = run(config)

    assert error is not None
    message = str(error)
    assert f"{name}.csv" in message
    for fragment in fragments:
        assert fragment in message
    states = {c.component_id: c.state for c in summary.components}
    assert states[failing] == "FAILED"  # recorded in ML Metadata
    assert "Trainer" not in states and "Pusher" not in states
    assert served_versions(config.serving_dir) == before
    if failing == "DataValidationGate":
        store = metadata_store.MetadataStore(
            sqlite_metadata_connection_config(str(config.metadata_path))
        )
        anomalies = store.get_artifacts_by_type("ExampleAnomalies")[-1]
        per_split = anomalies.custom_properties["blessed"].struct_value.fields
        # ExampleValidator recorded the failed validation: some split is not blessed.
        assert any(value.number_value == 0 for value in per_split.values())


def test_non_ascii_and_very_long_ids_are_served(tmp_path):
    good = write_csv(SyntheticSpec(num_interactions=3_000), tmp_path / "good.csv")
    lines = good.read_text().splitlines()
    long_id = "x" * 10_000
    for i in range(1, 200, 3):
        lines[i] = _replace_field(lines[i], features.USER_ID, f"ユーザー-{i % 7}-ñ")
    lines[5] = _replace_field(lines[5], features.ITEM_ID, long_id)
    data = tmp_path / "odd_ids.csv"
    data.write_text("\n".join(lines) + "\n")
    summary, error = run(_config(data, tmp_path / "out"))
    assert error is None, error
    assert {c.state for c in summary.components} == {"complete"}
    assert summary.pushed_to
