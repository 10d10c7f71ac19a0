"""The Kubeflow Pipelines v2 / Vertex AI definition compiled from create_pipeline."""

import json

import pytest

from components import example_gen
from pipeline.config import PipelineConfig, VertexTraining
from pipeline.pipeline import PREPROCESSING_FN, RUN_FN, create_pipeline
from run_kubeflow import compile_pipeline, main

IMAGE = "us-docker.pkg.dev/my-project/ml/recommender:1.0"
# Vertex runs TFX's built-in resolvers only: the blessed-model resolver splits in two tasks.
EXPECTED_UPSTREAM = {
    "ExampleGen": set(),
    "StatisticsGen": {"ExampleGen"},
    "ImportSchemaGen": set(),
    "ExampleValidator": {"StatisticsGen", "ImportSchemaGen"},
    "DataValidationGate": {"ExampleGen", "ExampleValidator", "StatisticsGen", "ImportSchemaGen"},
    "Transform": {"ExampleGen", "ImportSchemaGen", "DataValidationGate"},
    "Trainer": {"ExampleGen", "Transform", "ImportSchemaGen"},  # raw rows, read through the transform graph
    "latest_blessed_model_resolver-model-resolver": set(),
    "latest_blessed_model_resolver-model-blessing-resolver": set(),
    "Evaluator": {"ExampleGen", "Trainer", "latest_blessed_model_resolver-model-resolver"},
    "RankingEvaluator": {"ExampleGen", "Trainer", "latest_blessed_model_resolver-model-resolver"},
    "ServingCheck": {"Trainer", "Evaluator", "RankingEvaluator"},
    "Pusher": {"Trainer", "Evaluator", "ServingCheck"},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp")
    config = PipelineConfig(data_path="/gcs/bucket/data/interactions.csv", output_dir="/gcs/bucket/recommender")
    path = compile_pipeline(config, IMAGE, root / "pipeline.json")
    return json.loads(path.read_text())


def _constant(task, name):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def test_one_task_per_component_with_the_pipelines_dependencies(spec):
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()} == EXPECTED_UPSTREAM


def test_every_executor_runs_in_the_image(spec):
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert len(containers) == 11  # the eleven components; the resolvers run in Vertex itself
    assert {c["image"] for c in containers} == {IMAGE}


def test_module_paths_and_config_reach_the_tasks(spec):
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert _constant(tasks["Transform"], "preprocessing_fn") == PREPROCESSING_FN
    assert _constant(tasks["Trainer"], "run_fn") == RUN_FN
    assert json.loads(_constant(tasks["Trainer"], "custom_config"))["model"]["embedding_dim"] == 32
    assert _constant(tasks["ExampleGen"], "input_base") == "/gcs/bucket/data"
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "/gcs/bucket/recommender/pipeline"


def test_the_command_line_writes_the_file(tmp_path, capsys):
    target = tmp_path / "out" / "p.json"
    main(["--image", IMAGE, "--data", "/gcs/b/d", "--output", "/gcs/b/o", "--file", str(target),
          "--model-config", '{"epochs": 3}'])
    tasks = json.loads(target.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]
    assert json.loads(_constant(tasks["Trainer"], "custom_config"))["model"]["epochs"] == 3


def test_vertex_training_options_make_the_trainer_a_vertex_job_of_chief_and_workers(tmp_path):
    target = tmp_path / "p.json"
    assert main(["--image", IMAGE, "--data", "/gcs/b/d", "--output", "/gcs/b/o", "--file", str(target),
                 "--vertex-training-project", "my-project", "--vertex-training-region", "europe-west4",
                 "--training-workers", "3", "--training-machine-type", "n1-highmem-8"]) == 0
    spec = json.loads(target.read_text())
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    trainer = json.loads(_constant(tasks["Trainer"], "custom_config"))
    assert trainer["model"]["embedding_dim"] == 32  # the model's config travels beside the job's
    assert trainer["ai_platform_enable_vertex"] is True and trainer["ai_platform_vertex_region"] == "europe-west4"
    job = trainer["ai_platform_training_args"]
    assert job["project"] == "my-project"
    pools = job["job_spec"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 2]
    assert {pool["container_spec"]["image_uri"] for pool in pools} == {IMAGE}
    assert {pool["machine_spec"]["machine_type"] for pool in pools} == {"n1-highmem-8"}
    # The Trainer task submits the job: TFX's Vertex AI executor runs in the image.
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    (trainer_executor,) = [e for name, e in executors.items() if name.startswith("Trainer")]
    assert "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor" in json.dumps(trainer_executor)
    # At least one file per split and worker, so each worker reads its own.
    assert json.loads(_constant(tasks["ExampleGen"], "custom_config"))[example_gen.MIN_FILES] == 3


def test_training_workers_need_vertex_and_as_many_example_files(tmp_path, capsys):
    assert main(["--image", IMAGE, "--data", "/gcs/b/d", "--output", "/gcs/b/o", "--file", str(tmp_path / "p.json"),
                 "--training-workers", "2"]) == 2
    assert "--training-workers needs --vertex-training-project" in capsys.readouterr().err
    with pytest.raises(ValueError, match="example_files >= the workers"):
        PipelineConfig(data_path=tmp_path, output_dir=tmp_path / "o",
                       vertex_training=VertexTraining("p", "r", IMAGE, workers=2))


def test_span_windows_need_the_span_resolvers(tmp_path):
    config = PipelineConfig(data_path=tmp_path, output_dir=tmp_path / "o", window_spans=3)
    with pytest.raises(ValueError, match="window_spans must be 1"):
        create_pipeline(config, span_resolvers=False)


def test_a_definition_compiled_elsewhere_holds_no_path_of_that_machine_and_loads_in_vertex(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    repo = Path(__file__).resolve().parent.parent
    unusual = tmp_path / "a very unusual place-31337" / "checkout copy"
    shutil.copytree(repo, unusual, ignore=shutil.ignore_patterns(
        ".venv", ".git", "outputs", "__pycache__", "*.egg-info", ".ruff_cache", ".pytest_cache"))
    target = tmp_path / "definition.json"
    subprocess.run(
        [sys.executable, "run_kubeflow.py", "--image", IMAGE, "--data", "/gcs/b/d", "--output", "/gcs/b/o",
         "--file", str(target), "--beam-runner", "flink", "--flink-master", "flink:8081"],
        cwd=unusual, check=True, capture_output=True, text=True, timeout=600,
    )
    text = target.read_text()
    assert "very unusual place-31337" not in text and str(repo) not in text
    doc = json.loads(text)
    tasks = doc["pipelineSpec"]["root"]["dag"]["tasks"]
    assert _constant(tasks["ImportSchemaGen"], "schema_file") == "/pipeline/schemas/interactions.pbtxt"
    assert json.loads(_constant(tasks["ExampleGen"], "custom_config"))["schema_path"] == (
        "/pipeline/schemas/interactions.pbtxt")
    assert "--setup_file=/pipeline/setup.py" in text
    spec = json_format.Parse(json.dumps(doc["pipelineSpec"]), pipeline_spec_pb2.PipelineSpec())  # strict
    assert spec.pipeline_info.name == "multitask-recommender"
    job = aiplatform.PipelineJob(
        display_name="recommender", template_path=str(target), pipeline_root="gs://bucket/root",
        project="my-project", location="us-central1", credentials=AnonymousCredentials(), enable_caching=False,
    )
    assert job._gca_resource.display_name == "recommender" and job._gca_resource.pipeline_spec
