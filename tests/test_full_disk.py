"""A full disk while the run lock or ML Metadata is written (a real RLIMIT_FSIZE in a real
`run_local.py` process, SIGXFSZ ignored so writes fail with EFBIG as on a full disk): the run
fails naming what it could not write, the served model and the store stay readable, and the next
run works."""

import subprocess
import sys
from pathlib import Path

import pytest

from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import PipelineConfig
from recommender.model import ModelConfig
from results.metadata import MetadataReader
from run_local import run
from tests.support import LOOSE_THRESHOLDS, served_versions

pytestmark = pytest.mark.slow

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
import run_local
sys.exit(run_local.main(["--data", sys.argv[2], "--output", sys.argv[3], "--epochs", "2"]))
"""


def _config(data: Path, output: Path) -> PipelineConfig:
    return PipelineConfig(data_path=data, output_dir=output, model=ModelConfig(epochs=2), thresholds=LOOSE_THRESHOLDS)


def _store_runs(config: PipelineConfig) -> list[str]:
    from ml_metadata.metadata_store import metadata_store

    reader = MetadataReader(metadata_store.MetadataStore(config.metadata_connection()))
    return [context.name for context in reader.run_contexts(config.pipeline_name)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(config, data) of an output root whose serving directory already holds a blessed model."""
    root = tmp_path_factory.mktemp("full-disk")
    data = write_csv(SyntheticSpec(num_interactions=3_000), root / "data" / "interactions.csv")
    config = _config(data, root / "out")
    summary, error = run(config)
    assert error is None and summary.pushed_to, error
    return config, data


@pytest.mark.parametrize(("limit", "message"), [
    # Smaller than the lock's record: the first write of the run fails.
    (64, "cannot write the run lock {output}/.run.lock: File too large"),
    # The record fits; SQLite's journal for ML Metadata's first insert does not.
    (4096, "ML Metadata ({output}/metadata.sqlite) could not be written"),
], ids=["run-lock", "ml-metadata"])
def test_a_full_disk_fails_the_run_clearly_and_loses_nothing(served, limit, message):
    config, data = served
    before = served_versions(config.serving_dir)
    runs = _store_runs(config)
    assert runs

    # Pipes, not files, for its output: the limit is on the files it writes.
    limited = subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), str(data), str(config.output_dir)],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent,
    )
    assert limited.returncode == 1, limited.stderr[-2000:]
    assert message.format(output=config.output_dir) in limited.stderr, limited.stderr[-2000:]
    assert "is the disk full, or a file size limit reached?" in limited.stderr
    # Nothing served changed, and the store still answers.
    assert served_versions(config.serving_dir) == before
    assert set(runs) <= set(_store_runs(config))

    summary, error = run(config)
    assert error is None and summary.pushed_to, error
    assert not any("took over" in note for note in summary.notes), summary.notes
    assert len(served_versions(config.serving_dir)) == len(before) + 1
