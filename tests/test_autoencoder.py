"""The item autoencoder beside the factorised model (`ModelConfig.autoencoder_units`):
it learns the ratings, stops early on the validation rows, reproduces from its seed,
and its blend is fitted on the validation pairs and applied only to pairs both of
whose IDs trained it."""

import numpy as np
import pytest
import tensorflow as tf

from components import autoencoder, features
from components.autoencoder import Autoencoder, AutoencoderBlend, Blend, fit_autoencoder, fit_blend
from components.model import ModelConfig
from components.trainer import fit

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)
USERS, ITEMS = 60, 40


def _low_rank_ratings(rows: int, seed: int):
    """(users, items, labels in [0.2, 1]) drawn from a rank-2 preference model with noise."""
    rng = np.random.default_rng(0)
    user_taste, item_kind = rng.normal(size=(USERS, 2)), rng.normal(size=(ITEMS, 2))
    draw = np.random.default_rng(seed)
    users, items = draw.integers(0, USERS, rows), draw.integers(0, ITEMS, rows)
    score = np.einsum("ij,ij->i", user_taste[users], item_kind[items]) + 0.1 * draw.normal(size=rows)
    return users, items, (0.6 + 0.4 * np.tanh(score)).astype(np.float32)


TRAIN = _low_rank_ratings(1_500, seed=1)
VALIDATION = _low_rank_ratings(300, seed=2)


def _rmse(fitted: Autoencoder, users, items, labels) -> float:
    return float(np.sqrt(np.mean((autoencoder.estimates(fitted, users, items) - labels) ** 2)))


def test_the_autoencoder_learns_the_ratings_and_stops_early_on_the_validation_rows():
    # Wide and barely regularised, so it over-fits and early stopping has work to do.
    fitted = fit_autoencoder(
        *TRAIN, USERS + 2, ITEMS + 2, units=64, l2=0.01, learning_rate=1e-3, seed=7, max_steps=3_000,
        max_users=1024, max_items=1024, validation=VALIDATION,
    )
    # Far better than the training mean on rows it never saw.
    assert _rmse(fitted, *VALIDATION) < 0.6 * np.std(VALIDATION[2] - TRAIN[2].mean())
    assert fitted.steps % autoencoder.CHECK_EVERY == 0 and fitted.steps < 3_000
    # The out-of-vocabulary rows (the last two of each) trained nothing.
    assert fitted.known_users[:USERS].all() and not fitted.known_users[USERS:].any()
    assert fitted.known_items[:ITEMS].all() and not fitted.known_items[ITEMS:].any()


def test_the_same_rows_and_seed_give_the_same_autoencoder_and_another_seed_another():
    first, again, other = (
        fit_autoencoder(
            *TRAIN, USERS, ITEMS, units=8, l2=1.0, learning_rate=1e-3, seed=seed, max_steps=50,
            max_users=USERS, max_items=ITEMS,
        )
        for seed in (7, 7, 8)
    )
    assert first.steps == 50  # no validation: every step runs
    np.testing.assert_array_equal(first.item_codes, again.item_codes)
    np.testing.assert_array_equal(first.decoder, again.decoder)
    assert not np.allclose(first.decoder, other.decoder)


def test_the_blend_recovers_the_mix_and_the_like_model_it_was_made_from():
    rng = np.random.default_rng(3)
    factorised, estimate = rng.normal(size=20_000), rng.normal(size=20_000)
    label = factorised + 0.3 * (estimate - factorised)
    probability = 1 / (1 + np.exp(-rng.normal(size=20_000)))
    logit = 0.8 * np.log(probability / (1 - probability)) + 1.5 * estimate - 0.5
    liked = (rng.random(20_000) < 1 / (1 + np.exp(-logit))).astype(float)
    blend = fit_blend(factorised, {"like": probability}, estimate, label, {"like": liked})
    assert blend.alpha == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(blend.like["like"], (0.8, 1.5, -0.5), atol=0.1)
    # No validation pair known to the autoencoder: nothing to blend.
    assert fit_blend(np.array([]), {}, np.array([]), np.array([]), {}) == Blend()


def test_the_blend_layer_changes_only_known_pairs_and_nothing_before_it_is_assigned():
    layer = AutoencoderBlend(3, 2, 4, "rating", ("like",), max_users=8, max_items=8)
    outputs = {"rating": tf.constant([[0.5], [0.6], [0.7]]), "like": tf.constant([[0.2], [0.5], [0.9]])}
    user, item = tf.constant([0, 1, 2]), tf.constant([0, 1, 1])
    unchanged = layer(outputs, user, item)
    for name in outputs:
        np.testing.assert_array_equal(unchanged[name], outputs[name])
    rng = np.random.default_rng(4)
    fitted = Autoencoder(
        item_codes=rng.random((2, 4)).astype(np.float32), decoder=rng.random((3, 4)).astype(np.float32),
        decoder_bias=rng.random(3).astype(np.float32), user_rows=np.array([0, 1, -1]),
        item_rows=np.array([0, 1]), steps=1,
    )
    layer.assign(fitted, Blend(alpha=0.25, like={"like": (0.5, 2.0, -1.0)}))
    blended = {name: value.numpy().ravel() for name, value in layer(outputs, user, item).items()}
    estimate = autoencoder.estimates(fitted, np.array([0, 1]), np.array([0, 1]))
    rating, like = outputs["rating"].numpy().ravel(), outputs["like"].numpy().ravel()
    np.testing.assert_allclose(blended["rating"][:2], rating[:2] + 0.25 * (estimate - rating[:2]), rtol=1e-6)
    logit = 0.5 * np.log(like[:2] / (1 - like[:2])) + 2.0 * estimate - 1.0
    np.testing.assert_allclose(blended["like"][:2], 1 / (1 + np.exp(-logit)), rtol=1e-5)
    # User 2 never trained the autoencoder: the factorised model answers alone.
    assert blended["rating"][2] == pytest.approx(0.7) and blended["like"][2] == pytest.approx(0.9)


def _columns(users, items, labels):
    return {
        USER: users.reshape(-1, 1).astype(np.int64),
        ITEM: items.reshape(-1, 1).astype(np.int64),
        features.PURCHASE_PROBABILITY: labels.reshape(-1, 1),
        features.BINARY_RATING: (labels >= 0.7).astype(np.float32).reshape(-1, 1),
    }


@pytest.mark.parametrize("refit", [False, True])
def test_the_trainer_fits_the_autoencoder_and_the_model_blends_it_on_known_pairs(refit):
    sizes = {features.USER_ID: USERS + 2, features.ITEM_ID: ITEMS + 2}
    # Validation-only user USERS - 1 trains the refit's autoencoder only.
    train = [part[TRAIN[0] != USERS - 1] for part in TRAIN]
    config = ModelConfig(
        embedding_dim=4, learning_rate=0.05, batch_size=64, epochs=30, l2=0.1, early_stopping_patience=2,
        refit=refit, autoencoder_units=16, autoencoder_l2=1.0, autoencoder_max_steps=1_000, seed=5,
    )
    fitted = fit(_columns(*train), _columns(*VALIDATION), sizes, config, verbose=0)
    layer = fitted.model.autoencoder
    assert 0 < float(layer.alpha) <= 1
    known_users = layer.user_rows.numpy() >= 0
    assert bool(known_users[USERS - 1]) == refit
    assert not known_users[USERS:].any()
    inputs = {USER: VALIDATION[0].reshape(-1, 1), ITEM: VALIDATION[1].reshape(-1, 1)}
    blended = fitted.model(inputs, training=False)[features.PURCHASE_PROBABILITY].numpy().ravel()
    # The factorised model alone: its own heads, with the blend layer bypassed.
    layer_call, fitted.model.autoencoder = fitted.model.autoencoder, None
    try:
        factorised = fitted.model(inputs, training=False)[features.PURCHASE_PROBABILITY].numpy().ravel()
    finally:
        fitted.model.autoencoder = layer_call
    assert np.abs(blended - factorised).max() > 1e-3
    if not refit:
        # On the rows the blend was fitted on, it is no worse than the factorised model (alpha 0 was a choice).
        labels = VALIDATION[2]
        assert np.mean((blended - labels) ** 2) <= np.mean((factorised - labels) ** 2) + 1e-6


def test_past_its_caps_the_autoencoder_covers_the_ids_with_most_pairs_and_only_their_pairs_blend():
    # Users 0-9 rate every item and items 0-4 are rated by every user: they have the most pairs.
    users = np.concatenate([TRAIN[0], np.repeat(np.arange(10), ITEMS), np.repeat(np.arange(USERS), 5)])
    items = np.concatenate([TRAIN[1], np.tile(np.arange(ITEMS), 10), np.tile(np.arange(5), USERS)])
    labels = np.concatenate([TRAIN[2], np.full(10 * ITEMS + 5 * USERS, 0.8, np.float32)])
    fitted = fit_autoencoder(
        users, items, labels, USERS, ITEMS, units=8, l2=1.0, learning_rate=1e-2, seed=7, max_steps=100,
        max_users=10, max_items=5,
    )
    assert fitted.item_codes.shape == (5, 8) and fitted.decoder.shape == (10, 8)
    np.testing.assert_array_equal(np.flatnonzero(fitted.known_users), np.arange(10))
    np.testing.assert_array_equal(np.flatnonzero(fitted.known_items), np.arange(5))
    # Within the caps every ID keeps its own row.
    whole = fit_autoencoder(
        users, items, labels, USERS, ITEMS, units=8, l2=1.0, learning_rate=1e-2, seed=7, max_steps=1,
        max_users=USERS, max_items=ITEMS,
    )
    np.testing.assert_array_equal(whole.user_rows, np.arange(USERS))
    # The layer holds only the covered rows and blends only pairs of covered IDs.
    layer = AutoencoderBlend(USERS, ITEMS, 8, "rating", ("like",), max_users=10, max_items=5)
    assert layer.item_codes.shape == (5, 8) and layer.decoder.shape == (10, 8)
    layer.assign(fitted, Blend(alpha=1.0, like={"like": (0.0, 1.0, 0.0)}))
    user, item = tf.constant([3, 3, 30]), tf.constant([4, 20, 4])
    outputs = {"rating": tf.fill([3, 1], 0.5), "like": tf.fill([3, 1], 0.5)}
    blended = layer(outputs, user, item)["rating"].numpy().ravel()
    assert blended[0] == pytest.approx(autoencoder.estimates(fitted, np.array([3]), np.array([4]))[0], rel=1e-5)
    assert blended[1] == blended[2] == 0.5


def test_config_checks_the_autoencoder_settings():
    with pytest.raises(ValueError, match="autoencoder_units"):
        ModelConfig(autoencoder_units=-1)
    with pytest.raises(ValueError, match="factorized_purchase_head"):
        ModelConfig(autoencoder_units=8, factorized_purchase_head=False, hidden_units=(8,))
    with pytest.raises(ValueError, match="autoencoder_learning_rate"):
        ModelConfig(autoencoder_units=8, autoencoder_learning_rate=0.0)
    with pytest.raises(ValueError, match="100000 x 5000"):
        ModelConfig(autoencoder_units=8, autoencoder_max_users=100_000, autoencoder_max_items=5_000)
    with pytest.raises(ValueError, match="autoencoder_max_users"):
        ModelConfig(autoencoder_units=8, autoencoder_max_users=0)
