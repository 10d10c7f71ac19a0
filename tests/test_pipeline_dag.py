"""The DAG builds and compiles with the expected components and wiring, without running."""

from tfx.dsl.compiler import compiler

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

EXPECTED_IDS = {
    "ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "DataValidationGate",
    "Transform", "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher",
}
EXPECTED_UPSTREAM = {
    "ExampleGen": set(),
    "ImportSchemaGen": set(),
    "StatisticsGen": {"ExampleGen"},
    "ExampleValidator": {"StatisticsGen", "ImportSchemaGen"},
    "DataValidationGate": {"ExampleValidator"},
    "Transform": {"ExampleGen", "ImportSchemaGen", "DataValidationGate"},
    "Trainer": {"Transform", "ImportSchemaGen"},
    "latest_blessed_model_resolver": set(),
    "Evaluator": {"ExampleGen", "Trainer", "latest_blessed_model_resolver"},
    "Pusher": {"Trainer", "Evaluator"},
}


def _compiled(tmp_path):
    config = PipelineConfig(data_path=tmp_path / "data.csv", output_dir=tmp_path / "out")
    return config, compiler.Compiler().compile(create_pipeline(config))


def test_components_and_dependencies(tmp_path):
    _, ir = _compiled(tmp_path)
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    assert set(nodes) == EXPECTED_IDS
    assert {k: set(v.upstream_nodes) for k, v in nodes.items()} == EXPECTED_UPSTREAM


def test_inputs_are_wired_to_the_right_outputs(tmp_path):
    _, ir = _compiled(tmp_path)
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}

    def producer(node, key):
        (channel,) = nodes[node].inputs.inputs[key].channels
        return channel.producer_node_query.id, channel.output_key

    assert producer("Trainer", "examples") == ("Transform", "transformed_examples")
    assert producer("Evaluator", "baseline_model") == ("latest_blessed_model_resolver", "model")
    assert producer("Pusher", "model_blessing") == ("Evaluator", "blessing")
    assert producer("Evaluator", "examples") == ("ExampleGen", "examples")


def test_outputs_and_metadata_live_under_the_output_root(tmp_path):
    config, ir = _compiled(tmp_path)
    assert str(config.pipeline_root) in str(ir.runtime_spec)
    pusher = next(n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "Pusher")
    assert str(config.serving_dir) in str(pusher.parameters)
