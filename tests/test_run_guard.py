"""Runs as a platform meets them: two at once on one output root, a killed run, a driver that raises.

Real `run_local.py` processes and a real SIGKILL. Exactly one of two runs
started together runs; the other fails at once naming it. The killed run's
lock is taken over, its unfinished step is recorded as failed, and
`inspect_metadata.py runs` shows it so; so does a step that failed in its
driver (ExampleGen refusing a folder that is not a span).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from components import publish
from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import REPO_ROOT, PipelineConfig
from run_local import run
from tests.support import LOOSE_THRESHOLDS

pytestmark = pytest.mark.slow


def _inspect_runs(output):
    out = subprocess.run(
        [sys.executable, "inspect_metadata.py", "runs", "--output", str(output), "--json"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def processes():
    started = []

    def start(*args, log):
        started.append(subprocess.Popen(
            [sys.executable, "run_local.py", *args], cwd=REPO_ROOT, start_new_session=True,
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        ))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_two_runs_at_once_then_a_kill_then_a_run_that_recovers(tmp_path, processes):
    data = write_csv(SyntheticSpec(num_interactions=3_000), tmp_path / "data" / "interactions.csv")
    output = tmp_path / "out"
    args = ("--data", str(data), "--output", str(output), "--epochs", "2")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    both = [processes(*args, log=logs[0]), processes(*args, log=logs[1])]

    deadline = time.monotonic() + 180
    while all(p.poll() is None for p in both):
        assert time.monotonic() < deadline, "neither run gave way"
        time.sleep(0.2)
    (loser,) = [i for i, p in enumerate(both) if p.poll() is not None]
    winner = both[1 - loser]
    assert both[loser].returncode == 1
    message = logs[loser].read_text()
    assert "is in use by run" in message and f"(pid {winner.pid} on " in message and "started 20" in message

    # Kill the running one in the middle of training.
    trainer = output / "pipeline" / "Trainer"
    while not trainer.exists():
        assert winner.poll() is None, logs[1 - loser].read_text()[-3000:]
        assert time.monotonic() < deadline + 300, "the run never reached the Trainer"
        time.sleep(0.2)
    os.killpg(winner.pid, signal.SIGKILL)
    winner.wait(timeout=30)
    staging = output / "serving" / f"{publish.STAGING_PREFIX}1-2"  # as a publisher killed mid-copy leaves it
    staging.mkdir(parents=True)

    config = PipelineConfig(data_path=data, output_dir=output, thresholds=LOOSE_THRESHOLDS)
    summary, error = run(config)
    assert error is None, error
    notes = "\n".join(summary.notes)
    assert "took over the run lock of run" in notes and f"(pid {winner.pid} on " in notes
    assert "recorded as FAILED" in notes and "Trainer (execution" in notes
    assert f"removed stale staging folder {staging}" in notes and not staging.exists()
    assert summary.pushed_to is not None

    runs = _inspect_runs(output)
    assert [r["run_id"] for r in runs][-1] == summary.run_id
    killed = {c["node"]: c for c in runs[0]["components"]}
    assert killed["Trainer"]["state"] == "FAILED"
    assert "abandoned" in killed["Trainer"]["failure_reason"]
    assert "running" not in {c["state"] for r in runs for c in r["components"]}


def test_a_step_that_fails_in_its_driver_is_recorded_as_failed(tmp_path):
    data = tmp_path / "spans"
    write_csv(SyntheticSpec(num_interactions=500), data / "span-1" / "part.csv")
    write_csv(SyntheticSpec(num_interactions=500), data / "span-old" / "part.csv")
    config = PipelineConfig(data_path=data, output_dir=tmp_path / "out", thresholds=LOOSE_THRESHOLDS)
    summary, error = run(config)
    assert error is not None
    (example_gen,) = [c for c in summary.components if c.component_id == "ExampleGen"]
    assert example_gen.state == "FAILED" and "span-old" in example_gen.failure_reason
    (recorded,) = [c for c in _inspect_runs(config.output_dir)[0]["components"] if c["node"] == "ExampleGen"]
    assert recorded["state"] == "FAILED" and "span-old" in recorded["failure_reason"]
