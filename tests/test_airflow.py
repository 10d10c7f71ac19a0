"""The Airflow DAG against a real Airflow 2 (the optional group `make test` installs),
deployed as the README says: the project installed as a package (from its wheel, not
the checkout), the DAG file and its config copied into a DAGs folder elsewhere. It
imports with no DagBag errors, has one task per component with the pipeline's
dependencies, and `airflow dags test` runs it to success on small data with SQLite."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ml_metadata.metadata_store import metadata_store

from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import pipeline_config_from_dict
from results.summary import summarize
from tests.support import COMPONENT_IDS, LOOSE_THRESHOLDS, installed_project
from tests.test_pipeline_dag import EXPECTED_UPSTREAM

airflow = pytest.importorskip("airflow", reason="the Airflow group is not installed (make test installs it)")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
DAG_ID = "recommender-test"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """An Airflow home with the DAG file and its config in the DAGs folder, as the README deploys it."""
    root = tmp_path_factory.mktemp("airflow")
    python = str(installed_project(root / "install") / "bin" / "python")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(REPO / "airflow_dag.py", dags / "airflow_dag.py")
    data = write_csv(SyntheticSpec(num_users=150, num_items=100, num_interactions=5_000), root / "data" / "i.csv")
    thresholds = {
        head: {"metric": t.metric, "higher_is_better": t.higher_is_better, "bound": t.bound,
               "max_regression": t.max_regression}
        for head, t in LOOSE_THRESHOLDS.items()
    }
    (dags / "airflow_dag.json").write_text(json.dumps({
        "dag_id": DAG_ID, "schedule": "@daily", "start_date": "2026-01-01",
        "pipeline": {"data_path": str(data), "output_dir": str(root / "out"),
                     "model": {"epochs": 2}, "thresholds": thresholds},
    }))
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'home' / 'airflow.db'}",
        # The DAG file imports TFX (tens of seconds on a loaded 2-core machine);
        # Airflow's default 30 s import timeout would report that as a DAG error.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
    }
    airflow_cli = [python, "-m", "airflow"]
    subprocess.run([*airflow_cli, "db", "migrate"], env=env, cwd=root, check=True, capture_output=True)
    return root, dags, env, airflow_cli, python


def _dagbag(deployed):
    root, dags, env, _, python = deployed
    script = (
        "import json, sys\n"
        "from airflow.models import DagBag\n"
        f"bag = DagBag(dag_folder={str(dags)!r}, include_examples=False)\n"
        f"dag = bag.get_dag({DAG_ID!r})\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'tasks': {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else None,\n"
        "  'schedule': str(dag.schedule_interval) if dag else None}))\n"
    )
    out = subprocess.run([python, "-c", script], env=env, cwd=root, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_dag_imports_with_one_task_per_component_and_the_dependencies(deployed):
    bag = _dagbag(deployed)
    assert bag["errors"] == {}
    assert bag["schedule"] == "@daily"
    assert set(bag["tasks"]) == COMPONENT_IDS
    assert {task: set(up) for task, up in bag["tasks"].items()} == EXPECTED_UPSTREAM


def test_airflow_dags_test_runs_the_pipeline_to_success(deployed):
    root, _, env, airflow_cli, python = deployed
    run = subprocess.run(
        [*airflow_cli, "dags", "test", DAG_ID, "2026-01-02"], env=env, cwd=root, capture_output=True, text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # What the run did, from the ML Metadata the DAG's tasks wrote.
    config = pipeline_config_from_dict({"data_path": str(root / "data" / "i.csv"), "output_dir": str(root / "out")})
    summary = summarize(metadata_store.MetadataStore(config.metadata_connection()), DAG_ID)
    states = {c.component_id: c.state for c in summary.components}
    # The legacy launcher records resolver nodes as "cached" (they produce no new artifact).
    assert states == {n: "cached" if n.endswith("_resolver") else "complete" for n in COMPONENT_IDS}
    assert summary.blessed is True
    versions = [p for p in (root / "out" / "serving").iterdir() if p.name.isdigit()]
    assert len(versions) == 1 and summary.pushed_to.rstrip("/") == str(versions[0])
    # The inspection tool reads the store the Airflow tasks wrote.
    out = subprocess.run(
        [python, "-m", "inspect_metadata", "models", "--sqlite", str(config.metadata_path), "--json"],
        env=env, cwd=root, check=True, capture_output=True, text=True,
    )
    (model,) = json.loads(out.stdout)
    assert model["blessed"] is True and model["pushed_to"] == summary.pushed_to
