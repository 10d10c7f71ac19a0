import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from components.choices import DriftComparator, SplitKind
from pipeline.config import DriftThreshold, HeadThreshold, PipelineConfig, VocabularyCaps
from recommender import features
from recommender.config import ModelConfig, Optimizer, RankingConfig, RetrievalConfig, TuningConfig, preset


def test_model_config_json_round_trip():
    config = ModelConfig(
        factorized=False, hidden_units=[32, 16], loss_weights={"binary_rating": 2.0, "purchase_probability": 0.5},
        ranking=RankingConfig(popularity_weight=0.5), tuning=TuningConfig(max_trials=2, search_space={"l2": [1, 2]}),
    )
    values = config.to_json_dict()
    assert json.loads(json.dumps(values)) == values  # plain JSON, nested sub-configs as objects
    assert values["ranking"]["popularity_weight"] == 0.5 and values["tuning"]["search_space"] == {"l2": [1, 2]}
    restored = ModelConfig.from_json_dict(values)
    assert restored == config
    assert restored.hidden_units == (32, 16) and restored.tuning.search_space["l2"] == (1, 2)
    assert dict(restored.loss_weights) == {"binary_rating": 2.0, "purchase_probability": 0.5}
    # A tuner's values go on top of the config they were searched for.
    assert config.with_values({"l2": 4.0, "tuning": None}) == dataclasses.replace(config, l2=4.0, tuning=None)


def test_the_core_config_stays_small_and_its_optional_parts_are_nested():
    fields = dataclasses.fields(ModelConfig)
    nested = [f for f in fields if f.name in ("retrieval", "ranking", "tuning", "input")]
    assert len(fields) - len(nested) <= 15 and len(nested) == 4
    assert ModelConfig().tuning is None and isinstance(ModelConfig().ranking, RankingConfig)
    assert ModelConfig().retrieval is None and preset("original").retrieval is None
    assert preset("retrieval").retrieval == RetrievalConfig() and preset("retrieval").ranking.popularity_weight == 0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": "0.003"}, "learning_rate: expected float, got '0.003'"),
        ({"ranking": {"popularity_weight": "1"}}, "ranking field popularity_weight: expected float"),
        ({"tuning": {"max_trials": 2.0}}, "tuning field max_trials: expected int"),
        ({"epochs": 2.5}, "epochs: expected int, got 2.5"),
        ({"epochs": True}, "epochs: expected int, got True"),
        ({"refit": 1}, "refit: expected bool, got 1"),
        ({"embedding_init_stddev": "small"}, "embedding_init_stddev: expected float or null"),
    ],
)
def test_a_config_file_value_of_the_wrong_type_is_refused_naming_its_field(values, message):
    with pytest.raises(TypeError, match=message):
        ModelConfig.from_json_dict(values)
    # JSON's integers are numbers too, and null is a value where the field allows None.
    assert ModelConfig.from_json_dict({"learning_rate": 1, "steps_per_epoch": None}).learning_rate == 1


def test_model_config_is_frozen():
    config = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    with pytest.raises(TypeError):
        config.loss_weights["binary_rating"] = 3.0
    with pytest.raises(TypeError):
        ModelConfig(tuning=TuningConfig()).tuning.search_space["l2"] = (1.0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_weights": {"binary_rating": -1.0, "purchase_probability": 1.0}}, ">= 0"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be > 0 or None"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"hidden_units": (8, 0)}, "hidden_units must be positive"),
        ({"l2": -1.0}, "l2 must be >= 0"),
        ({"hidden_units": (8,)}, "hidden_units contradicts factorized"),
        ({"factorized": False}, "factorized false needs hidden_units"),
        ({"refit": True, "early_stopping_patience": None}, "refit needs early_stopping_patience"),
        ({"ranking": {"popularity_weight": -1.0}}, "ranking.popularity_weight and ranking.retrieval_weight must be >= 0"),
        ({"retrieval": {"temperature": 0.0}}, "retrieval.weight and retrieval.temperature must be > 0"),
        ({"retrieval": {"max_history": 0}}, "retrieval.max_history and retrieval.history_sample must be >= 1"),
        ({"retrieval": {"positives": "liked"}}, r"unknown retrieval field\(s\) \['positives'\]"),
        ({"retrieval": None, "ranking": {"weights": {"binary_rating": 0.0, "purchase_probability": 0.0},
                                         "popularity_weight": 0.0}},
         "recommend would have nothing to rank by"),
        ({"ranking": {"weight": 1.0}}, r"unknown ranking field\(s\) \['weight'\]"),
        ({"tuning": {"max_trials": 0}}, "tuning.max_trials must be >= 1"),
        ({"tuning": {"search_space": {"epochs": [1, 2]}}}, r"search_space names field\(s\) \['epochs'\]"),
        ({"tuning": {"search_space": {"l2": []}}}, r"search_space\['l2'\] lists no values"),
        ({"tuning": {"search_space": {"l2": [1.0, -2.0]}}}, r"search_space\['l2'\] value -2.0: l2 must be >= 0"),
        ({"tuning": {"trials": 2}}, r"unknown tuning field\(s\) \['trials'\]"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_pipeline_config_puts_every_output_under_the_output_root(tmp_path):
    config = PipelineConfig(data_path=tmp_path / "d.csv", output_dir=tmp_path / "out")
    for path in (config.pipeline_root, config.metadata_path, config.serving_dir):
        assert path.is_relative_to(tmp_path / "out")
    assert config.schema_path.is_file()


def test_pipeline_config_needs_a_threshold_and_any_loss_weight_per_head(tmp_path):
    only_one = {features.BINARY_RATING: HeadThreshold("AUC", True, 0.7, 0.01)}
    with pytest.raises(ValueError, match="thresholds must name exactly the heads"):
        PipelineConfig(data_path=tmp_path, output_dir=tmp_path, thresholds=only_one)
    with pytest.raises(ValueError, match="model.loss_weights must name exactly the heads"):
        PipelineConfig(data_path=tmp_path, output_dir=tmp_path, model=ModelConfig(loss_weights={"binary_rating": 1.0}))
    with pytest.raises(ValueError, match="max_regression"):
        HeadThreshold("AUC", True, 0.7, -0.1)


@pytest.mark.parametrize(("metric", "higher_is_better", "message"), [
    ("AUC", False, "higher AUC is better: the gate would bless the worse model"),
    ("RootMeanSquaredError", True, "lower RootMeanSquaredError is better"),
    ("Accuracyish", True, "has no known direction"),
])
def test_a_threshold_with_the_wrong_or_an_unknown_direction_is_refused(metric, higher_is_better, message):
    with pytest.raises(ValueError, match=message):
        HeadThreshold(metric, higher_is_better, 0.5, 0.01)


def test_choices_are_enums_that_read_and_write_plain_strings(tmp_path):
    config = PipelineConfig(data_path=tmp_path, output_dir=tmp_path, split="hash",
                            model=ModelConfig(optimizer="adam"))
    assert config.split is SplitKind.HASH and config.model.optimizer is Optimizer.ADAM
    assert json.loads(json.dumps(config.model.to_json_dict()))["optimizer"] == "adam"
    assert DriftThreshold("infinity_norm", 0.1).comparator is DriftComparator.INFINITY_NORM
    for wrong, message in (
        (lambda: PipelineConfig(data_path=tmp_path, output_dir=tmp_path, split="random"),
         r"split must be one of \['temporal', 'hash'\], got 'random'"),
        (lambda: DriftThreshold("l1", 0.1), "drift comparator must be one of"),
        (lambda: ModelConfig(optimizer="sgd"), "optimizer must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            wrong()


def test_the_config_layer_imports_no_tensorflow_tfx_or_beam():
    code = (
        "import sys, time; started = time.perf_counter(); import pipeline.config, recommender.config; "
        "print(time.perf_counter() - started); "
        "print(sorted(m for m in ('tensorflow', 'tfx', 'apache_beam', 'tf_keras', 'tensorflow_model_analysis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.splitlines()[1] == "[]", out.stdout


def _imported(statements: list[str], modules: tuple[str, ...]) -> list[list[str]]:
    """Which of `modules` one fresh interpreter has loaded after each of `statements`, run in order."""
    marker = "imported: "
    code = "import json, sys\n" + "".join(
        f"{statement}\nprint({marker!r} + json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n"
        for statement in statements
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return [json.loads(line.removeprefix(marker)) for line in out.stdout.splitlines() if line.startswith(marker)]


def test_the_model_library_imports_no_tfx():
    assert _imported(["import recommender.export, recommender.training"], ("tfx", "components")) == [[]]


def test_the_dag_imports_no_model_code_and_only_a_vertex_ai_training_job_imports_the_vertex_ai_client():
    # One interpreter, in order: what a later statement imports cannot hide in an earlier check.
    vertex = "tfx.extensions.google_cloud_ai_platform.trainer.executor"
    build = ("from pipeline.config import PipelineConfig, VertexTraining; from pipeline.pipeline import create_pipeline; "
             "create_pipeline(PipelineConfig(data_path='d.csv', output_dir='o'{}))")
    with_vertex = ", example_files=2, vertex_training=VertexTraining('p', 'r', 'img', workers=2)"
    statements = ["import pipeline.pipeline", build.format(""), build.format(with_vertex)]
    assert _imported(statements, ("recommender.model", "components.trainer", vertex)) == [[], [], [vertex]]


def test_the_original_design_is_a_preset_file():
    original = preset("original")
    assert original.hidden_units == (64,) and original.epochs == 5 and original.optimizer is Optimizer.ADAM
    assert dict(original.loss_weights) == {"binary_rating": 1.0, "purchase_probability": 1.0}
    assert preset("original", epochs=2).epochs == 2
    assert not original.factorized and original.tuning is None
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['epoch'\]"):
        preset("original", epoch=2)


@pytest.mark.parametrize(("fields", "message"), [
    ({"top_k": 0}, r"vocabulary.top_k must be >= 1 \(or None: no cap\), got 0"),
    ({"min_count": 0}, "vocabulary.min_count must be >= 1, got 0"),
])
def test_vocabulary_caps_refuse_values_that_would_keep_nothing(fields, message):
    with pytest.raises(ValueError, match=message):
        VocabularyCaps(**fields)


def test_a_split_is_written_in_at_least_one_file(tmp_path):
    with pytest.raises(ValueError, match="example_files must be >= 1, got 0"):
        PipelineConfig(data_path=tmp_path / "d.csv", output_dir=tmp_path / "o", example_files=0)


@pytest.mark.parametrize(("fields", "message"), [
    ({"ranking_sample": 0.0}, r"ranking_sample must be in \(0, 1\]"),
    ({"ranking_sample": 1.5}, r"ranking_sample must be in \(0, 1\]"),
    ({"ranking_in_process_mib": -1.0}, "ranking_in_process_mib must be >= 0"),
])
def test_ranking_sample_and_in_process_size_refuse_values_that_mean_nothing(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(data_path=tmp_path / "d.csv", output_dir=tmp_path / "o", **fields)


def test_pipeline_config_from_plain_json_values(tmp_path):
    from pipeline.config import MySQLMetadata, VertexTraining, pipeline_config_from_dict

    config = pipeline_config_from_dict({
        "data_path": str(tmp_path / "d.csv"), "output_dir": str(tmp_path / "o"),
        "model": {"epochs": 3, "factorized": False, "hidden_units": [8]},
        "thresholds": {
            "binary_rating": {"metric": "AUC", "higher_is_better": True, "bound": 0.6, "max_regression": 0.1},
            "purchase_probability": {"metric": "RootMeanSquaredError", "higher_is_better": False,
                                     "bound": 0.3, "max_regression": 0.1},
        },
        "beam_pipeline_args": ["--direct_num_workers=2"],
        "metadata_mysql": {"host": "db", "database": "mlmd", "port": 3307},
        "vocabulary": {"top_k": 1000, "min_count": 2},
        "example_files": 4,
        "vertex_training": {"project": "p", "region": "us-central1", "image": "img:1", "workers": 4},
        "ranking_sample": 0.25,
    })
    assert config.vocabulary == VocabularyCaps(top_k=1000, min_count=2)
    assert config.vertex_training == VertexTraining("p", "us-central1", "img:1", workers=4)
    assert [pool["replica_count"] for pool in config.vertex_training.worker_pool_specs()] == [1, 3]
    assert config.ranking_sample == 0.25
    assert config.model.epochs == 3 and config.model.hidden_units == (8,)
    assert config.thresholds["binary_rating"].bound == 0.6
    assert config.beam_pipeline_args == ("--direct_num_workers=2",)
    assert config.metadata_mysql == MySQLMetadata(host="db", database="mlmd", port=3307)
    connection = config.metadata_connection()
    assert connection.mysql.host == "db" and connection.mysql.port == 3307
    with pytest.raises(ValueError, match=r"unknown PipelineConfig field\(s\) \['epochs'\]"):
        pipeline_config_from_dict({"data_path": "d", "output_dir": "o", "epochs": 3})


def test_a_mysql_password_comes_from_the_environment_or_a_file_never_from_the_config(tmp_path, monkeypatch):
    from pipeline.config import MySQLMetadata, pipeline_config_from_dict

    monkeypatch.setenv("MLMD_TEST_PASSWORD", "from-env")
    by_env = MySQLMetadata(host="db", database="m", password_env="MLMD_TEST_PASSWORD")
    assert by_env.connection_config().mysql.password == "from-env" and "from-env" not in repr(by_env)
    (tmp_path / "pw").write_text("from-file\n")
    by_file = MySQLMetadata(host="db", database="m", password_file=tmp_path / "pw")
    assert by_file.connection_config().mysql.password == "from-file"
    monkeypatch.delenv("MLMD_TEST_PASSWORD")
    with pytest.raises(ValueError, match="environment variable MLMD_TEST_PASSWORD is not set"):
        by_env.connection_config()
    with pytest.raises(ValueError, match=r"password file .*missing: No such file"):
        MySQLMetadata(host="db", database="m", password_file=tmp_path / "missing").connection_config()
    with pytest.raises(ValueError, match="metadata_mysql.password: a password is never read from a config file"):
        pipeline_config_from_dict({"data_path": "d", "output_dir": "o",
                                   "metadata_mysql": {"host": "db", "database": "m", "password": "x"}})
    with pytest.raises(TypeError):
        MySQLMetadata(host="db", database="m", password="x")


def test_log_records_are_redacted_while_a_secret_is_in_use(caplog):
    from pipeline.console import redacting

    # Its own logger: other tests leave absl's at WARNING, and redaction does not depend on the logger.
    logger = logging.getLogger("tests.redaction")
    caplog.set_level(logging.INFO, logger=logger.name)
    with redacting(["hunter2"]):
        logger.info("Using connection config:\n %s", 'mysql { password: "hunter2" }')
    logger.info("after: %s", "hunter2")
    assert 'password: "***"' in caplog.text and caplog.text.count("hunter2") == 1  # only the line logged after
