"""The Trainer's refit (`ModelConfig.refit`): early stopping on the validation rows picks
the epochs, then a fresh model learns from the training and validation rows together."""

import numpy as np
import pytest

from recommender import features, heads
from recommender.model import ModelConfig, build_model
from recommender.training import fit

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)
# Users 0..29 train; the validation rows also hold users 30..39, who never train
# before the refit. 40 known users and 2 out-of-vocabulary buckets.
SIZES = {features.USER_ID: 42, features.ITEM_ID: 22}
VALIDATION_ONLY = slice(30, 40)


def _columns(users: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Random labels: nothing generalises, so the validation loss soon rises and early stopping ends the fit.
    columns = {
        USER: users.reshape(-1, 1).astype(np.int64),
        ITEM: rng.integers(0, 20, (len(users), 1)).astype(np.int64),
        features.BINARY_RATING: rng.integers(0, 2, (len(users), 1)).astype(np.float32),
        features.PURCHASE_PROBABILITY: rng.random((len(users), 1)).astype(np.float32),
    }
    assert set(columns) == {USER, ITEM, *heads.NAMES}
    return columns


TRAIN = _columns(np.repeat(np.arange(30), 20), seed=1)
VALIDATION = _columns(np.concatenate([np.arange(40), np.arange(30, 40)]), seed=2)


def _config(**overrides) -> ModelConfig:
    return ModelConfig(**{
        "embedding_dim": 4, "epochs": 40, "learning_rate": 0.05, "batch_size": 32, "l2": 0.0,
        "early_stopping_patience": 2, "seed": 3, **overrides,
    })


def _user_biases(model) -> np.ndarray:
    return model.biases[0].embeddings.numpy()


def _initial_user_biases(config: ModelConfig, fitted) -> np.ndarray:
    fresh = build_model(SIZES[features.USER_ID], SIZES[features.ITEM_ID], config, fitted.training)
    fresh({USER: TRAIN[USER][:1], ITEM: TRAIN[ITEM][:1]})
    return _user_biases(fresh)


def test_refit_fits_a_fresh_model_on_both_splits_for_the_epochs_early_stopping_kept():
    config = _config()
    assert config.refit  # the default
    fitted = fit(TRAIN, VALIDATION, SIZES, config, verbose=0)
    ran, refit_epochs = fitted.epochs_run
    assert ran < config.epochs  # early stopping ended the first fit...
    assert refit_epochs == ran - config.early_stopping_patience  # ...and its best epoch sets the refit's
    rows = len(TRAIN[USER]) + len(VALIDATION[USER])
    assert len(fitted.training.users) == len(fitted.training.items) == rows
    for head in heads.NAMES:
        both = np.concatenate([TRAIN[head], VALIDATION[head]]).mean(dtype=np.float64)
        assert fitted.training.label_means[head] == pytest.approx(both)
    # Users seen only in the validation rows learnt something: their rows left their initial values.
    moved = np.abs(_user_biases(fitted.model) - _initial_user_biases(config, fitted))[VALIDATION_ONLY]
    assert moved.min() > 1e-4


def test_without_refit_the_validation_rows_only_validate():
    config = _config(refit=False)
    fitted = fit(TRAIN, VALIDATION, SIZES, config, verbose=0)
    assert len(fitted.epochs_run) == 1
    assert len(fitted.training.users) == len(TRAIN[USER])
    unchanged = _user_biases(fitted.model) - _initial_user_biases(config, fitted)
    assert np.abs(unchanged[VALIDATION_ONLY]).max() == 0.0


def test_refit_needs_early_stopping():
    with pytest.raises(ValueError, match="refit needs early_stopping_patience"):
        ModelConfig(early_stopping_patience=None)


def _initial_retrieval_users(config: ModelConfig, fitted) -> np.ndarray:
    fresh = build_model(SIZES[features.USER_ID], SIZES[features.ITEM_ID], config, fitted.training)
    fresh.build_weights()
    return fresh.retrieval_user.embeddings.numpy()


@pytest.mark.parametrize("refit", [True, False])
def test_the_retrieval_task_learns_the_validation_only_users_in_the_refit_alone(refit):
    """The refit restarts the first fit's model (its traced step kept): its retrieval inputs are
    then drawn from both splits' rows, so users seen only in validation learn their vectors."""
    config = _config(retrieval={"history_sample": 2}, refit=refit)
    fitted = fit(TRAIN, VALIDATION, SIZES, config, verbose=0)
    assert len(fitted.epochs_run) == (2 if refit else 1)
    moved = np.linalg.norm(fitted.model.retrieval_user.embeddings.numpy() - _initial_retrieval_users(config, fitted),
                           axis=1)
    assert moved[: VALIDATION_ONLY.start].min() > 1e-4  # training users learnt in either case
    if refit:
        assert moved[VALIDATION_ONLY].min() > 1e-4
    else:
        assert moved[VALIDATION_ONLY].max() == 0.0
