"""Hyperparameter search the TFX way: KerasTuner's random search scores each trial by the
Trainer's own first fit on the validation rows, and the Trainer fits the best values."""

import json

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration.metadata import sqlite_metadata_connection_config

from components.trainer import SearchSpaceTuner, tuned_config
from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import PipelineConfig
from recommender import features, heads
from recommender.config import ModelConfig, TuningConfig
from recommender.training import first_fit, validation_loss
from run_local import run
from tests.support import LOOSE_THRESHOLDS

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)
SIZES = {features.USER_ID: 32, features.ITEM_ID: 22}


def _columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, (rows, 1)), rng.integers(0, 20, (rows, 1))
    # Labels that users and items explain: the search has something to find.
    score = np.sin(users) + np.cos(items) + 0.3 * rng.normal(size=(rows, 1))
    return {
        USER: users.astype(np.int64), ITEM: items.astype(np.int64),
        features.BINARY_RATING: (score > 0).astype(np.float32),
        features.PURCHASE_PROBABILITY: (1 / (1 + np.exp(-score))).astype(np.float32),
    }


def test_the_search_keeps_the_trial_with_the_lowest_validation_loss(tmp_path):
    config = ModelConfig(
        embedding_dim=4, epochs=6, batch_size=64, early_stopping_patience=2, refit=False, seed=5,
        tuning=TuningConfig(max_trials=3, search_space={"l2": [0.0, 10.0], "learning_rate": [1e-4, 2e-2]}),
    )
    train, validation = _columns(1_500, seed=1), _columns(300, seed=2)
    tuner = SearchSpaceTuner(config, directory=str(tmp_path), project_name="search")
    tuner.search(train_columns=train, validation=validation, sizes=SIZES, verbose=0)
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    assert len(trials) == 3
    for trial in trials:
        assert trial.hyperparameters.values["l2"] in (0.0, 10.0)
        assert trial.hyperparameters.values["learning_rate"] in (1e-4, 2e-2)
    best = tuner.get_best_hyperparameters()[0]
    assert best.values == min(trials, key=lambda t: t.score).hyperparameters.values
    # A trial's score is the Trainer's first fit with its values, scored as the Trainer scores it.
    chosen = tuned_config(config, best.get_config())
    assert chosen.tuning is None and chosen.l2 == best.values["l2"]
    assert chosen.learning_rate == best.values["learning_rate"]
    _, fitted = first_fit(train, validation, SIZES, chosen, verbose=0)
    assert validation_loss(fitted, chosen) == pytest.approx(min(t.score for t in trials), rel=1e-5)
    # Without the Tuner, the Trainer fits the config as it is.
    assert tuned_config(config, None) is config


@pytest.mark.slow
def test_a_tuned_pipeline_run_trains_and_exports_the_best_trials_values(tmp_path):
    data = write_csv(SyntheticSpec(num_users=200, num_items=150, num_interactions=6_000),
                     tmp_path / "data" / "interactions.csv")
    config = PipelineConfig(
        data_path=data, output_dir=tmp_path / "out", thresholds=LOOSE_THRESHOLDS,
        model=ModelConfig(epochs=3, tuning=TuningConfig(max_trials=2, search_space={"embedding_dim": [4, 12]})),
    )
    _, error = run(config)
    assert error is None, error
    store = metadata_store.MetadataStore(sqlite_metadata_connection_config(str(config.metadata_path)))
    (hyperparameters,) = store.get_artifacts_by_type("HyperParameters")
    best = json.loads(tf.io.gfile.GFile(f"{hyperparameters.uri}/best_hyperparameters.txt").read())["values"]
    (results,) = store.get_artifacts_by_type("TunerResults")
    trials = json.loads(tf.io.gfile.GFile(f"{results.uri}/tuner_results.json").read())
    assert len(trials) == 2 and {t["embedding_dim"] for t in trials} <= {4, 12}
    assert best["embedding_dim"] == min(trials, key=lambda t: t["score"])["embedding_dim"]
    # The model the Trainer exported has the best trial's embedding width.
    (model,) = store.get_artifacts_by_type("Model")
    loaded = tf.saved_model.load(f"{model.uri}/Format-Serving")
    (user_embedding,) = [v for v in loaded.variables if "user_embedding" in v.name]
    assert user_embedding.shape[1] == best["embedding_dim"]
    outputs = loaded.signatures[features.SERVING_DEFAULT](
        user_id=tf.constant(["u1", "nobody"]), item_id=tf.constant(["i1", "i2"])
    )
    assert set(outputs) == set(heads.NAMES)
