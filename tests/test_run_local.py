from pathlib import Path

import pytest

from pipeline.runner_options import OptionError
from recommender.config import TuningConfig
from run_local import config_from_args, parse_args


def test_options_reach_the_config(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("user_id,item_id,timestamp,binary_rating,purchase_probability\n")
    args = parse_args([
        "--data", str(data), "--output", str(tmp_path / "o"), "--epochs", "3",
        "--steps-per-epoch", "7", "--batch-size", "32",
        "--model-config", '{"embedding_init_stddev": 0.1, "l2": 0.001}', "--beam-arg=--direct_num_workers=2",
    ])
    config = config_from_args(args)
    assert config.data_path == data
    assert config.output_dir == tmp_path / "o"
    assert config.model.epochs == 3 and config.model.batch_size == 32
    assert config.model.steps_per_epoch == 7
    assert config.model.embedding_init_stddev == 0.1 and config.model.l2 == 0.001
    assert config.model.tuning is None  # no Tuner unless asked
    assert config.beam_pipeline_args == ("--direct_num_workers=2",)


def test_without_data_the_synthetic_set_is_generated_under_the_output(tmp_path):
    config = config_from_args(parse_args(["--output", str(tmp_path / "o"), "--epochs", "1"]))
    assert config.data_path == tmp_path / "o" / "data" / "interactions.csv"
    assert config.data_path.read_text().startswith("user_id,item_id,timestamp,")
    assert parse_args([]).output == Path("outputs")


def test_a_model_config_file_is_read_and_flags_override_it(tmp_path):
    shipped = Path(__file__).resolve().parent.parent / "configs" / "original-model.json"
    data = tmp_path / "mine.csv"
    data.write_text("user_id,item_id,timestamp,binary_rating,purchase_probability\n")
    common = ["--data", str(data), "--output", str(tmp_path / "o"), "--model-config", str(shipped)]
    config = config_from_args(parse_args(common)).model
    assert not config.factorized and config.hidden_units == (64,) and config.learning_rate == 1e-3
    assert config_from_args(parse_args(common + ["--learning-rate", "0.01"])).model.learning_rate == 0.01
    with pytest.raises(OptionError, match="no-such-file.json: neither inline JSON nor a readable file"):
        config_from_args(parse_args(common[:-1] + ["no-such-file.json"]))
    with pytest.raises(OptionError, match="inline JSON is not valid JSON"):
        config_from_args(parse_args(common[:-1] + ['{"l2": }']))


def test_tune_adds_the_default_search_unless_the_config_has_its_own(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("user_id,item_id,timestamp,binary_rating,purchase_probability\n")
    common = ["--data", str(data), "--output", str(tmp_path / "o"), "--tune"]
    assert config_from_args(parse_args(common)).model.tuning == TuningConfig()
    own = config_from_args(parse_args(common + ["--model-config", '{"tuning": {"max_trials": 2}}'])).model
    assert own.tuning.max_trials == 2
    with pytest.raises(OptionError, match=r"--model-config: unknown tuning field\(s\) \['trial'\]"):
        config_from_args(parse_args(common + ["--model-config", '{"tuning": {"trial": 2}}']))


def test_inline_json_longer_than_a_file_name_is_read_as_json(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("user_id,item_id,timestamp,binary_rating,purchase_probability\n")
    inline = '{"l2": 0.25, "factorized": false, "hidden_units": [' + ", ".join(["8"] * 120) + "]}"
    assert len(inline) > 300  # past NAME_MAX: looking it up as a path fails with "File name too long"
    args = parse_args(["--data", str(data), "--output", str(tmp_path / "o"), "--model-config", inline])
    model = config_from_args(args).model
    assert model.l2 == 0.25 and model.hidden_units == (8,) * 120


def test_a_canonical_parquet_file_is_read_without_a_column_mapping(tmp_path):
    import pandas as pd

    data = tmp_path / "mine.parquet"
    pd.DataFrame({
        "user_id": [1, 2], "item_id": ["7", "8"], "timestamp": [10, 11],
        "binary_rating": [1.0, 0.0], "purchase_probability": [0.5, 0.25],
    }).to_parquet(data)
    config = config_from_args(parse_args(["--data", str(data), "--output", str(tmp_path / "o")]))
    assert config.data_path == tmp_path / "o" / "data" / "mine" / "interactions.csv"
    assert config.data_path.read_text().splitlines() == [
        "user_id,item_id,timestamp,binary_rating,purchase_probability", "1,7,10,1,0.5", "2,8,11,0,0.25",
    ]
    assert config.rating_scale_max is None
