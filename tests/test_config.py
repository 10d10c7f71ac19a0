import dataclasses

import pytest

from components import features
from components.model import ModelConfig
from pipeline.config import HeadThreshold, PipelineConfig


def test_model_config_json_round_trip():
    config = ModelConfig(hidden_units=[32, 16], loss_weights={"binary_rating": 2.0, "purchase_probability": 0.5})
    restored = ModelConfig.from_json_dict(config.to_json_dict())
    assert restored == config
    assert restored.hidden_units == (32, 16)
    assert dict(restored.loss_weights) == {"binary_rating": 2.0, "purchase_probability": 0.5}


def test_model_config_is_frozen():
    config = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    with pytest.raises(TypeError):
        config.loss_weights["binary_rating"] = 3.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_weights": {"binary_rating": 1.0}}, "loss_weights must name exactly the heads"),
        ({"loss_weights": {"binary_rating": -1.0, "purchase_probability": 1.0}}, ">= 0"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be > 0 or None"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"hidden_units": (8, 0)}, "hidden_units must be positive"),
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


def test_pipeline_config_needs_a_threshold_per_head(tmp_path):
    only_one = {features.BINARY_RATING: HeadThreshold("AUC", True, 0.7, 0.01)}
    with pytest.raises(ValueError, match="thresholds must name exactly the heads"):
        PipelineConfig(data_path=tmp_path, output_dir=tmp_path, thresholds=only_one)
    with pytest.raises(ValueError, match="max_regression"):
        HeadThreshold("AUC", True, 0.7, -0.1)


def test_pipeline_config_from_plain_json_values(tmp_path):
    from pipeline.config import MySQLMetadata, pipeline_config_from_dict

    config = pipeline_config_from_dict({
        "data_path": str(tmp_path / "d.csv"), "output_dir": str(tmp_path / "o"),
        "model": {"epochs": 3, "hidden_units": [8]},
        "thresholds": {
            "binary_rating": {"metric": "AUC", "higher_is_better": True, "bound": 0.6, "max_regression": 0.1},
            "purchase_probability": {"metric": "RootMeanSquaredError", "higher_is_better": False,
                                     "bound": 0.3, "max_regression": 0.1},
        },
        "beam_pipeline_args": ["--direct_num_workers=2"],
        "metadata_mysql": {"host": "db", "database": "mlmd", "port": 3307},
    })
    assert config.model.epochs == 3 and config.model.hidden_units == (8,)
    assert config.thresholds["binary_rating"].bound == 0.6
    assert config.beam_pipeline_args == ("--direct_num_workers=2",)
    assert config.metadata_mysql == MySQLMetadata(host="db", database="mlmd", port=3307)
    connection = config.metadata_connection()
    assert connection.mysql.host == "db" and connection.mysql.port == 3307
    with pytest.raises(ValueError, match=r"unknown PipelineConfig field\(s\) \['epochs'\]"):
        pipeline_config_from_dict({"data_path": "d", "output_dir": "o", "epochs": 3})
