"""The project installed as a package (`pip install .`, not editable) runs the pipeline from
another folder: the curated schema and the presets come with the packages, not from a checkout."""

import json
import os
import subprocess

import pytest

from data.synthetic import SyntheticSpec, write_csv
from tests.support import installed_project

pytestmark = pytest.mark.slow


def test_an_installed_project_runs_the_pipeline_from_another_folder(tmp_path):
    env = installed_project(tmp_path / "install")
    site = next((env / "lib").glob("python3*/site-packages"))
    data = write_csv(SyntheticSpec(num_users=150, num_items=100, num_interactions=3_000), tmp_path / "data" / "i.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python = str(env / "bin" / "python")
    preset = subprocess.run(
        [python, "-c", "from recommender.config import preset; print(preset('original').epochs)"],
        cwd=elsewhere, env=clean, check=True, capture_output=True, text=True,
    )
    assert preset.stdout.strip() == "5"
    out = tmp_path / "out"
    run = subprocess.run(
        [
            python, "-m", "run_local", "--data", str(data), "--output", str(out), "--epochs", "2", "--json",
        ],
        cwd=elsewhere, env=clean, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert {c["state"] for c in summary["components"]} == {"complete"}
    runs = subprocess.run([python, "-m", "inspect_metadata", "runs", "--output", str(out), "--json"],
                          cwd=elsewhere, env=clean, check=True, capture_output=True, text=True)
    (recorded,) = json.loads(runs.stdout)
    assert recorded["run_id"] == summary["run_id"]
    # The schema ExampleGen and ImportSchemaGen read is the installed one.
    from ml_metadata.metadata_store import metadata_store

    from results.metadata import MetadataReader, properties, sqlite_readonly

    store = metadata_store.MetadataStore(sqlite_readonly(str(out / "metadata.sqlite")))
    reader = MetadataReader(store)
    recorded_paths = {}
    for execution in store.get_executions():
        node = reader.node_id(execution.id)
        if node == "ExampleGen":
            recorded_paths[node] = json.loads(properties(execution)["custom_config"])["schema_path"]
        elif node == "ImportSchemaGen":
            recorded_paths[node] = properties(execution)["schema_file"]
    assert recorded_paths == {name: str(site / "schemas" / "interactions.pbtxt")
                              for name in ("ExampleGen", "ImportSchemaGen")}
