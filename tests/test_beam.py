"""Beam settings: the arguments per runner, and the data components on the
DirectRunner in multi-processing mode with 2 workers (separate processes
that import the installed `components` package), writing the same files as in memory."""

import os
import tempfile

import pytest
from ml_metadata.metadata_store import metadata_store
from tensorflow_data_validation import load_stats_binary
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from components import choices
from components.data_validation import STATISTICS_FILE
from components.publish import tree_digest
from data.synthetic import SyntheticSpec, write_csv
from pipeline import beam
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_data_validation_pipeline


def test_arguments_per_runner():
    assert beam.beam_pipeline_args(beam.MULTI_PROCESSING, workers=2) == (
        "--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2",
        f"--setup_file={beam.SETUP_FILE}",
    )
    dataflow = beam.beam_pipeline_args(
        beam.DATAFLOW, project="p", region="europe-west4", temp_location="gs://b/tmp", workers=8
    )
    assert "--runner=DataflowRunner" in dataflow and "--max_num_workers=8" in dataflow
    assert f"--setup_file={beam.SETUP_FILE}" in dataflow and beam.SETUP_FILE.is_file()
    assert "--flink_master=localhost:8081" in beam.beam_pipeline_args(beam.FLINK, flink_master="localhost:8081")
    assert "--runner=SparkRunner" in beam.beam_pipeline_args(beam.SPARK, spark_master="spark://h:7077")
    with pytest.raises(ValueError, match=r"needs \['project', 'temp_location'\]"):
        beam.beam_pipeline_args(beam.DATAFLOW, region="r")
    with pytest.raises(ValueError, match="unknown Beam runner"):
        beam.beam_pipeline_args("local-cluster")


def test_large_input_defaults_to_multi_processing(tmp_path, monkeypatch):
    data = tmp_path / "i.csv"
    data.write_text("x" * 1000)
    assert beam.default_runner(data) == beam.IN_MEMORY
    monkeypatch.setattr(beam, "LARGE_INPUT_BYTES", 1000)
    assert beam.default_runner(data) == beam.MULTI_PROCESSING
    assert beam.default_runner(tmp_path) == beam.MULTI_PROCESSING  # a folder: its *.csv files
    (tmp_path / "i.csv").rename(tmp_path / "i.txt")
    assert beam.default_runner(tmp_path) == beam.IN_MEMORY


def _example_counts(config):
    store = metadata_store.MetadataStore(config.metadata_connection())
    (statistics,) = store.get_artifacts_by_type("ExampleStatistics")
    (examples,) = store.get_artifacts_by_type("Examples")
    counts = {}
    for split in choices.SPLITS:
        stats = load_stats_binary(os.path.join(statistics.uri, f"Split-{split}", STATISTICS_FILE))
        # The written files too: the seeded order must not depend on the runner.
        counts[split] = stats.datasets[0].num_examples, tree_digest(os.path.join(examples.uri, f"Split-{split}"))
    return counts


@pytest.mark.slow
def test_data_components_run_on_two_worker_processes(tmp_path, monkeypatch):
    data = write_csv(SyntheticSpec(num_users=150, num_items=100, num_interactions=5_000), tmp_path / "d" / "i.csv")
    # TFX packs its own sources into a temporary folder for every Beam component
    # unless the Beam arguments name the dependencies; the local runners stage nothing.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    counts = {}
    for runner in (beam.IN_MEMORY, beam.MULTI_PROCESSING):
        config = PipelineConfig(
            data_path=data, output_dir=tmp_path / runner,
            beam_pipeline_args=beam.beam_pipeline_args(runner, workers=2),
        )
        config.output_dir.mkdir(parents=True)
        LocalDagRunner().run(
            create_data_validation_pipeline(config, config.metadata_connection())
        )
        counts[runner] = _example_counts(config)
    assert counts[beam.MULTI_PROCESSING] == counts[beam.IN_MEMORY]
    assert not list(temp.rglob("*ephemeral*"))
    assert sum(rows for rows, _ in counts[beam.IN_MEMORY].values()) == 5_000


def test_the_local_runner_is_the_one_chosen_and_prism_is_never_tried(caplog):
    """Beam 2.77's "DirectRunner" tries to download Prism and runs there when it can; ours names FnApiRunner."""
    import logging

    import apache_beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    caplog.set_level(logging.INFO)
    for runner in (beam.IN_MEMORY, beam.MULTI_PROCESSING):
        args = beam.beam_pipeline_args(runner, workers=2)
        with apache_beam.Pipeline(argv=list(args)) as p:
            assert type(p.runner) is FnApiRunner
            _ = p | apache_beam.Create([1, 2, 3]) | apache_beam.Map(lambda x: x * 2)
    assert "Prism" not in caplog.text
    with apache_beam.Pipeline(argv=["--direct_num_workers=1"]) as p:  # what an unnamed runner does
        _ = p | apache_beam.Create([1])
    assert "Running pipeline with PrismRunner" in caplog.text
    assert PipelineConfig(data_path=".", output_dir="o").beam_pipeline_args[0] == "--runner=FnApiRunner"
