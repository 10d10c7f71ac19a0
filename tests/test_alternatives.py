"""Configurations tuned on the validation rows (`ModelConfig.alternatives`): the first fit runs
for the config and each alternative, and the one with the lowest validation loss is kept,
blended, refitted and exported."""

import math

import numpy as np
import pytest
import tf_keras

from components import features, heads
from components.model import ModelConfig, build_model, train
from components.trainer import TrainingData, batches, fit, validation_score

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)
USERS, ITEMS = 50, 30
SIZES = {features.USER_ID: USERS + 2, features.ITEM_ID: ITEMS + 2}


def _columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Ratings from a rank-2 preference model with noise: embeddings help, if the L2 lets them."""
    taste = np.random.default_rng(0)
    user_taste, item_kind = taste.normal(size=(USERS, 2)), taste.normal(size=(ITEMS, 2))
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, USERS, rows), rng.integers(0, ITEMS, rows)
    score = np.einsum("ij,ij->i", user_taste[users], item_kind[items]) + 0.1 * rng.normal(size=rows)
    label = (0.5 + 0.4 * np.tanh(score)).astype(np.float32)
    return {
        USER: users.reshape(-1, 1), ITEM: items.reshape(-1, 1),
        features.PURCHASE_PROBABILITY: label.reshape(-1, 1),
        features.BINARY_RATING: (label >= 0.5).astype(np.float32).reshape(-1, 1),
    }


TRAIN, VALIDATION = _columns(3_000, seed=1), _columns(600, seed=2)


def _config(**overrides) -> ModelConfig:
    return ModelConfig(**{
        "embedding_dim": 4, "epochs": 30, "learning_rate": 0.02, "batch_size": 64, "early_stopping_patience": 2,
        "autoencoder_units": 0, "seed": 3, **overrides,
    })


def _score(config: ModelConfig, judge: ModelConfig) -> float:
    """`validation_score` (by `judge`'s loss weights) of `config`'s first fit alone."""
    model = build_model(SIZES[features.USER_ID], SIZES[features.ITEM_ID], config, TrainingData.from_columns(TRAIN))
    history = train(model, batches(TRAIN, config, shuffle=True), batches(VALIDATION, config, shuffle=False), config, 0)
    return validation_score(history, judge)


@pytest.mark.parametrize("order", ["crushing L2 configured", "crushing L2 the alternative"])
def test_the_fit_with_the_lowest_validation_loss_is_kept_refitted_and_reported(order):
    light, crushing = {"l2": 0.01}, {"l2": 50.0}
    configured, alternative = (crushing, light) if order == "crushing L2 configured" else (light, crushing)
    config = _config(**configured, alternatives=[alternative])
    fitted = fit(TRAIN, VALIDATION, SIZES, config, verbose=0)
    # Each candidate's first fit alone, scored by the configured loss weights: the light L2 wins clearly.
    scores = {c["l2"]: _score(config.alternative(c), config) for c in (light, crushing)}
    assert scores[light["l2"]] < 0.9 * scores[crushing["l2"]]
    kept = light if order == "crushing L2 configured" else {}
    assert dict(fitted.alternative) == kept
    assert fitted.config == config.alternative(light) if kept else fitted.config == config
    # The refit and the exported model are the kept config's.
    assert fitted.model.l2 == pytest.approx(light["l2"])
    assert len(fitted.epochs_run) == 2
    # Both first fits ran; the kept one's epochs are the first of epochs_run.
    assert len(fitted.epochs_tried) == 2 and fitted.epochs_run[0] == fitted.epochs_tried[1 if kept else 0]


def test_without_alternatives_the_configured_fit_is_the_only_one():
    config = _config(alternatives=[])
    fitted = fit(TRAIN, VALIDATION, SIZES, config, verbose=0)
    assert dict(fitted.alternative) == {} and fitted.config == config
    assert fitted.epochs_tried == fitted.epochs_run[:1]


def test_the_validation_score_weights_each_heads_loss_at_the_kept_epoch_and_counts_nan_as_worst():
    history = tf_keras.callbacks.History()
    history.history = {
        "loss": [1.0, 0.9, 0.8],
        "val_loss": [2.0, 1.5, 1.7],  # early stopping keeps epoch 2
        f"val_{features.BINARY_RATING}_loss": [0.7, 0.6, 0.65],
        f"val_{features.PURCHASE_PROBABILITY}_loss": [0.05, 0.04, 0.045],
    }
    weights = {features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 100.0}
    assert set(weights) == set(heads.NAMES)
    config = _config(loss_weights=weights)
    assert validation_score(history, config) == pytest.approx(0.6 + 100 * 0.04)
    # Without early stopping the last epoch's weights are the ones kept.
    last = _config(loss_weights=weights, early_stopping_patience=None, refit=False)
    assert validation_score(history, last) == pytest.approx(0.65 + 100 * 0.045)
    history.history[f"val_{features.BINARY_RATING}_loss"][1] = math.nan
    assert validation_score(history, config) == math.inf
