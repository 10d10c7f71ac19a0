"""Spans end to end: a folder that grows span by span, a rolling window of two spans,
the analyzer cache fed back, and a drifted span stopped before training."""

import csv

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.metadata import sqlite_metadata_connection_config

from components.resolvers import span_of
from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import PipelineConfig
from recommender import features
from recommender.model import ModelConfig
from run_local import run
from tests.support import LOOSE_THRESHOLDS, served_versions

pytestmark = pytest.mark.slow



def _add_span(root, number, seed, liked_override=None):
    path = write_csv(
        SyntheticSpec(num_interactions=2_500, seed=seed, start_timestamp=1_600_000_000 + number * 10**7),
        root / f"span-{number}" / "interactions.csv",
    )
    if liked_override is not None:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        for i, row in enumerate(rows):
            # Every 50th row keeps its label: an eval split of one label is refused by ExampleGen.
            if i % 50:
                row[features.BINARY_RATING] = str(liked_override)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=features.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


def _store(config):
    return metadata_store.MetadataStore(
        sqlite_metadata_connection_config(str(config.metadata_path))
    )


def _latest_inputs(store, node, key_type):
    """Artifacts of type `key_type` that the newest execution of `node` read."""
    context = store.get_context_by_type_and_name("node", f"multitask-recommender.{node}")
    execution = max(store.get_executions_by_context(context.id), key=lambda e: e.id)
    events = store.get_events_by_execution_ids([execution.id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.INPUT]
    type_id = store.get_artifact_type(key_type).id
    from tfx.types import artifact_utils
    return [
        artifact_utils.deserialize_artifact(store.get_artifact_type(key_type), a)
        for a in store.get_artifacts_by_id(ids) if a.type_id == type_id
    ]


@pytest.fixture(scope="module")
def spans(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    config = PipelineConfig(
        data_path=root / "data", output_dir=root / "out", model=ModelConfig(epochs=2),
        thresholds=LOOSE_THRESHOLDS, window_spans=2,
    )
    _add_span(config.data_path, 1, seed=1)
    first, error = run(config)
    assert error is None, error
    _add_span(config.data_path, 2, seed=2)
    second, error = run(config)
    assert error is None, error
    return config, first, second


def test_each_run_ingests_the_newest_span(spans):
    config, _, _ = spans
    examples = _store(config).get_artifacts_by_type("Examples")
    ingested = [a for a in examples if "ExampleGen" in a.uri]
    assert [a.custom_properties["span"].int_value for a in ingested] == [1, 2]


def test_transform_reads_the_window_of_two_spans_and_the_previous_cache(spans):
    config, _, _ = spans
    store = _store(config)
    assert sorted(span_of(a) for a in _latest_inputs(store, "Transform", "Examples")) == [1, 2]
    caches = store.get_artifacts_by_type("TransformCache")
    (fed,) = _latest_inputs(store, "Transform", "TransformCache")
    assert fed.id == min(c.id for c in caches)  # the cache the first run wrote




def test_a_drifted_span_stops_before_transform(spans):
    config, _, second = spans
    assert second.pushed_to  # a model is being served
    served = served_versions(config.serving_dir)
    _add_span(config.data_path, 3, seed=3, liked_override=1)  # suddenly (almost) everyone likes everything
    summary, error = run(config)
    assert error is not None
    assert served_versions(config.serving_dir) == served
    message = str(error)
    assert str(config.data_path) in message
    assert "span 2 -> span 3" in message
    assert "column 'binary_rating': drift" in message
    states = {c.component_id: c.state for c in summary.components}
    assert states["DataValidationGate"] == "FAILED"
    assert "Transform" not in states
