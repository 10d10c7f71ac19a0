"""The whole pipeline on Beam's portable Job API: a job server and an external
worker pool in separate processes, the workers importing this project from a
wheel built from setup.py (not from the checkout). What Dataflow, Flink and
Spark share, run here."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ml_metadata.metadata_store import metadata_store

from data.synthetic import SyntheticSpec, write_csv
from pipeline import beam
from pipeline.config import PipelineConfig
from recommender.config import ModelConfig
from results.evaluation import OVERALL, candidate_metrics, evaluation_metrics
from run_local import run
from tests.support import LOOSE_THRESHOLDS, installed_project

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listened on port {port}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
    """The workers' environment: the project installed from its wheel."""
    return installed_project(tmp_path_factory.mktemp("worker-env"))


@pytest.fixture(scope="module")
def job_server(worker_env, tmp_path_factory):
    """(job endpoint, worker pool address, worker pool log); both processes are stopped afterwards."""
    root = tmp_path_factory.mktemp("portable")
    job_port, pool_port = _free_port(), _free_port()
    started = []
    try:
        with open(root / "job-server.log", "w") as log:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                 "--port", str(job_port)], cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(job_port, started[-1], root / "job-server.log")
        # The pool starts each worker as the `python` on its PATH: the worker environment's.
        env = {**os.environ, "PATH": f"{worker_env / 'bin'}:{os.environ['PATH']}"}
        env.pop("PYTHONPATH", None)
        with open(root / "worker-pool.log", "w") as log:
            started.append(subprocess.Popen(
                [str(worker_env / "bin" / "python"), "-m", "apache_beam.runners.worker.worker_pool_main",
                 "--service_port", str(pool_port)],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(pool_port, started[-1], root / "worker-pool.log")
        yield f"localhost:{job_port}", f"localhost:{pool_port}", root / "worker-pool.log"
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)


def _outcome(config: PipelineConfig):
    """(rows per split, vocabularies, overall metrics, component states) of the latest run."""
    summary, error = run(config)
    assert error is None, error
    store = metadata_store.MetadataStore(config.metadata_connection())
    (graph,) = store.get_artifacts_by_type("TransformGraph")
    assets = Path(graph.uri) / "transform_fn" / "assets"
    vocabularies = {p.name: p.read_bytes() for p in sorted(assets.iterdir())}
    metrics = candidate_metrics(evaluation_metrics(summary.evaluation_uri).get(OVERALL, {}))
    recommendations = pq.read_table(summary.recommendations_at).to_pandas().sort_values(["user_id", "rank"])
    return (
        {s.name: s.rows for s in summary.splits}, vocabularies, metrics,
        {c.component_id: c.state for c in summary.components}, recommendations.reset_index(drop=True),
    )


def test_the_pipeline_on_the_portable_runner_matches_the_direct_runner(job_server, tmp_path):
    endpoint, pool, pool_log = job_server
    data = write_csv(SyntheticSpec(num_users=200, num_items=150, num_interactions=4_000), tmp_path / "data" / "i.csv")
    base = PipelineConfig(data_path=data, output_dir=tmp_path / "direct", thresholds=LOOSE_THRESHOLDS,
                          model=ModelConfig(epochs=2), batch_recommendations_k=3)
    direct = _outcome(base)
    portable_args = beam.beam_pipeline_args(
        beam.PORTABLE, job_endpoint=endpoint, environment_type="EXTERNAL", environment_config=pool)
    assert portable_args[0] == "--runner=PortableRunner"
    portable = _outcome(dataclasses.replace(base, output_dir=tmp_path / "portable", beam_pipeline_args=portable_args))
    assert set(portable[3].values()) == {"complete"}
    assert portable[0] == direct[0] and sum(direct[0].values()) == 4_000  # split counts
    assert portable[1] == direct[1] and portable[1]  # vocabularies, byte for byte
    for head, values in direct[2].items():
        for name, value in values.items():
            assert portable[2][head][name] == pytest.approx(value, abs=1e-6), (head, name)
    # The batch recommendations too: the same top 3 for every training user.
    assert len(portable[4]) == len(direct[4]) > 0
    assert list(portable[4]["item_id"]) == list(direct[4]["item_id"])
    np.testing.assert_allclose(portable[4]["score"], direct[4]["score"], rtol=1e-5)
    # ExampleGen, StatisticsGen, Transform, the Evaluator and the BatchRecommender ran on the pool's workers.
    assert pool_log.read_text().count("Starting worker") >= 5
