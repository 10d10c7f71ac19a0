"""The pipeline as an Apache Airflow 2 DAG (TFX's AirflowDagRunner): one task per component.

Deploy: install this project into the Python that runs Airflow (`pip install .`
with requirements/airflow.lock), then copy this file and a config into the DAGs
folder, the config named like this file with `.json` (`airflow_dag.json`; see
configs/airflow_dag.json):

    {"dag_id": ..., "schedule": "@daily", "start_date": "2026-01-01",
     "pipeline": {PipelineConfig fields: "data_path", "output_dir", "model", ...}}

The DAG file reads only that config file, never the environment.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from pipeline.config import pipeline_config_from_dict
from pipeline.pipeline import create_pipeline

CONFIG_FILE = Path(__file__).with_suffix(".json")


def build_dag(config_file: Path):
    """The Airflow DAG for the pipeline and schedule that `config_file` describes."""
    settings = json.loads(Path(config_file).read_text())
    # The DAG's id is the pipeline's name.
    named = {"pipeline_name": settings["dag_id"]} if "dag_id" in settings else {}
    config = pipeline_config_from_dict({**settings["pipeline"], **named})
    config.output_dir.mkdir(parents=True, exist_ok=True)
    airflow_config = {
        "schedule_interval": settings.get("schedule", "@daily"),
        "start_date": datetime.datetime.fromisoformat(settings.get("start_date", "2026-01-01")),
        "catchup": False,
    }
    runner = AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config=airflow_config))
    return runner.run(create_pipeline(config, config.metadata_connection()))


DAG = build_dag(CONFIG_FILE)
