"""The DAG builds and compiles with the expected components and wiring, without running."""

import dataclasses

import pytest
from tfx.dsl.compiler import compiler

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline
from tests.support import COMPONENT_IDS

EXPECTED_UPSTREAM = {
    "ExampleGen": set(),
    "ImportSchemaGen": set(),
    "StatisticsGen": {"ExampleGen"},
    "ExampleValidator": {"StatisticsGen", "ImportSchemaGen"},
    "previous_span_statistics_resolver": {"StatisticsGen"},
    "DataValidationGate": {
        "ExampleGen", "ExampleValidator", "StatisticsGen", "ImportSchemaGen",
        "previous_span_statistics_resolver",
    },
    "span_window_resolver": {"ExampleGen"},
    "analyzer_cache_resolver": set(),
    "Transform": {
        "span_window_resolver", "ImportSchemaGen", "DataValidationGate", "analyzer_cache_resolver"
    },
    "Trainer": {"Transform", "ImportSchemaGen", "span_window_resolver"},
    "latest_served_model_resolver": set(),
    "Evaluator": {"ExampleGen", "Trainer", "latest_served_model_resolver"},
    "RankingEvaluator": {"ExampleGen", "Trainer", "latest_served_model_resolver"},
    "ServingCheck": {"Trainer", "Evaluator", "RankingEvaluator"},
    "Pusher": {"Trainer", "Evaluator", "ServingCheck"},
}


def _compiled(tmp_path):
    config = PipelineConfig(data_path=tmp_path / "data.csv", output_dir=tmp_path / "out")
    return config, compiler.Compiler().compile(create_pipeline(config))


def test_components_and_dependencies(tmp_path):
    _, ir = _compiled(tmp_path)
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    assert set(nodes) == COMPONENT_IDS
    assert {k: set(v.upstream_nodes) for k, v in nodes.items()} == EXPECTED_UPSTREAM


def test_inputs_are_wired_to_the_right_outputs(tmp_path):
    _, ir = _compiled(tmp_path)
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}

    def producer(node, key):
        (channel,) = nodes[node].inputs.inputs[key].channels
        return channel.producer_node_query.id, channel.output_key

    # The Trainer reads the raw rows of Transform's window through the transform graph.
    assert producer("Trainer", "examples") == ("span_window_resolver", "examples")
    assert producer("Trainer", "transform_graph") == ("Transform", "transform_graph")
    assert producer("Transform", "examples") == ("span_window_resolver", "examples")
    assert producer("Transform", "analyzer_cache") == ("analyzer_cache_resolver", "cache")
    assert producer("DataValidationGate", "previous_statistics") == (
        "previous_span_statistics_resolver", "statistics"
    )
    assert producer("Evaluator", "baseline_model") == ("latest_served_model_resolver", "model")
    assert producer("ServingCheck", "model") == ("Trainer", "model")
    assert producer("ServingCheck", "model_blessing") == ("Evaluator", "blessing")
    assert producer("Pusher", "model_blessing") == ("Evaluator", "blessing")
    assert producer("Pusher", "infra_blessing") == ("ServingCheck", "blessing")
    assert producer("Evaluator", "examples") == ("ExampleGen", "examples")
    assert producer("RankingEvaluator", "baseline_model") == ("latest_served_model_resolver", "model")
    assert producer("ServingCheck", "ranking") == ("RankingEvaluator", "evaluation")


def test_batch_recommendations_follow_the_publication(tmp_path):
    config = PipelineConfig(data_path=tmp_path / "d.csv", output_dir=tmp_path / "out", batch_recommendations_k=5)
    ir = compiler.Compiler().compile(create_pipeline(config))
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    assert set(nodes) == COMPONENT_IDS | {"BatchRecommender"}
    (channel,) = nodes["BatchRecommender"].inputs.inputs["pushed_model"].channels
    assert (channel.producer_node_query.id, channel.output_key) == ("Pusher", "pushed_model")
    assert str(config.recommendations_dir) in str(nodes["BatchRecommender"].parameters)
    on_storage = dataclasses.replace(config, recommendations_uri="gs://bucket/recommendations")
    ir = compiler.Compiler().compile(create_pipeline(on_storage))
    (node,) = [n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "BatchRecommender"]
    assert "gs://bucket/recommendations" in str(node.parameters)
    with pytest.raises(ValueError, match="recommendations_uri must be a URI"):
        dataclasses.replace(config, recommendations_uri="/local/folder")


def test_span_folders_are_read_as_spans(tmp_path):
    from pipeline.pipeline import _input_split

    (tmp_path / "span-1").mkdir()
    assert _input_split(tmp_path) == (str(tmp_path), "span-{SPAN}/*.csv")
    assert _input_split(tmp_path / "span-1") == (str(tmp_path / "span-1"), "*.csv")
    assert _input_split(tmp_path / "x.csv") == (str(tmp_path), "x.csv")


def test_outputs_and_metadata_live_under_the_output_root(tmp_path):
    config, ir = _compiled(tmp_path)
    assert str(config.pipeline_root) in str(ir.runtime_spec)
    pusher = next(n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "Pusher")
    assert str(config.serving_dir) in str(pusher.parameters)


def test_tuning_adds_the_tuner_whose_best_values_the_trainer_reads(tmp_path):
    import json

    from recommender.config import ModelConfig, TuningConfig

    config = PipelineConfig(
        data_path=tmp_path / "data.csv", output_dir=tmp_path / "out", model=ModelConfig(tuning=TuningConfig())
    )
    ir = compiler.Compiler().compile(create_pipeline(config))
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    assert set(nodes) == COMPONENT_IDS | {"Tuner"}
    assert set(nodes["Tuner"].upstream_nodes) == {"Transform", "ImportSchemaGen", "span_window_resolver"}
    (channel,) = nodes["Trainer"].inputs.inputs["hyperparameters"].channels
    assert (channel.producer_node_query.id, channel.output_key) == ("Tuner", "best_hyperparameters")

    def parameter(node, name):
        return json.loads(nodes[node].parameters.parameters[name].field_value.string_value)

    # Trials learn from the train split and are judged on the validation split: never the eval split.
    assert parameter("Tuner", "train_args") == {"splits": ["train"]}
    assert parameter("Tuner", "eval_args") == {"splits": ["validation"]}
    assert parameter("Trainer", "train_args") == {"splits": ["train", "validation"]}
    assert "Tuner" not in {n.pipeline_node.node_info.id for n in _compiled(tmp_path)[1].nodes}
