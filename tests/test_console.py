"""What a person sees when the pipeline runs: one line per component, the rest in the log."""

import subprocess
import sys
from pathlib import Path

import pytest

from data.synthetic import SyntheticSpec, write_csv

REPO_ROOT = Path(__file__).resolve().parent.parent

# A stand-in for a run: LocalDagRunner's records around a node, a progress
# record, and the noise TensorFlow, absl, Beam and child processes write.
NOISY_RUN = r"""
import logging, os, subprocess, sys
from absl import logging as absl_logging
from pipeline.console import QuietConsole
from recommender.features import PROGRESS_LOGGER

logging.basicConfig(level=logging.WARNING)
with QuietConsole(__import__("pathlib").Path(sys.argv[1])) as console:
    print("python stdout noise")
    os.write(2, b"C++ stderr noise\n")
    subprocess.run([sys.executable, "-c", "print('child noise')"], check=True)
    logging.getLogger("apache_beam").warning("beam noise")
    absl_logging.info("Component %s is running.", "Trainer")
    logging.getLogger(PROGRESS_LOGGER).info("epoch %d/%d: %s", 1, 2, "loss 0.5")
    absl_logging.info("Component %s is finished.", "Trainer")
    absl_logging.info("Component %s is running.", "Evaluator")
    console.failed("ValueError: the eval split is empty\nsecond line")
print("after the console")
"""


def test_the_console_shows_component_lines_and_the_log_keeps_everything_else(tmp_path):
    log = tmp_path / "logs" / "run.log"
    out = subprocess.run([sys.executable, "-c", NOISY_RUN, str(log)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout
    assert lines[0].split() == ["Trainer", "complete", lines[0].split()[2], "s", "epoch", "1/2:", "loss", "0.5"]
    assert lines[1].split()[:2] == ["Evaluator", "FAILED"] and lines[1].endswith("ValueError: the eval split is empty")
    assert lines[2] == "after the console"
    assert out.stderr == ""
    kept = log.read_text()
    for noise in ("python stdout noise", "C++ stderr noise", "child noise", "beam noise",
                  "Component Trainer is running."):
        assert noise in kept


@pytest.mark.slow
def test_make_run_prints_a_line_per_component_and_names_the_failure_and_the_log(tmp_path):
    data = write_csv(SyntheticSpec(num_interactions=3_000), tmp_path / "data" / "interactions.csv")
    good = subprocess.run(
        [
            sys.executable, "run_local.py", "--data", str(data), "--output", str(tmp_path / "out"), "--epochs", "2",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert good.returncode == 0, good.stderr[-3000:]
    lines = good.stdout.splitlines()
    log = Path(lines[0].rsplit(" ", 1)[-1])
    assert lines[0].startswith("Run ") and log.parent == tmp_path / "out" / "logs" and log.is_file()
    components = [line.split() for line in lines if line.startswith("  ") and " s" in line and "rows" not in line]
    assert [c[0] for c in components][:2] == ["ExampleGen", "ImportSchemaGen"]
    assert {"Transform", "Trainer", "Evaluator", "ServingCheck", "Pusher"} <= {c[0] for c in components}
    assert all(c[1] == "complete" for c in components)
    assert any(line.startswith("Blessing: ") for line in lines) and lines[-1].startswith("Report: ")
    assert len(lines) < 45 and good.stderr == ""  # TensorFlow's, absl's and Beam's lines are in the log
    kept = log.read_text()
    assert "Component Trainer is running." in kept and "Epoch 2/2" in kept

    bad = tmp_path / "bad.csv"
    rows = data.read_text().splitlines()
    rows[5] += ",extra"
    bad.write_text("\n".join(rows) + "\n")
    failed = subprocess.run(
        [sys.executable, "run_local.py", "--data", str(bad), "--output", str(tmp_path / "out2")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert failed.returncode == 1
    console = failed.stdout.splitlines()
    assert any(line.split()[:2] == ["ExampleGen", "FAILED"] and "a row has 6 fields" in line for line in console)
    last = failed.stderr.strip().splitlines()
    assert last[-2].startswith("The run failed in ExampleGen: ") and "bad.csv" in last[-2]
    assert last[-1].startswith("Full log: ") and Path(last[-1].split(": ", 1)[1]).is_file()
