"""The item autoencoder beside the factorised model (`ModelConfig.autoencoder_units`):
it learns the ratings, stops early on the validation rows, reproduces from its seed,
and its blend is fitted on the validation pairs and applied only to pairs both of
whose IDs trained it."""

import numpy as np
import pytest
import tensorflow as tf

from components import autoencoder, features
from components.autoencoder import Autoencoder, AutoencoderBlend, Blend, BlendForm, fit_autoencoder, fit_blend
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


def _logit(p):
    return np.log(p / (1 - p))


def test_the_blend_recovers_the_mix_and_the_like_model_it_was_made_from():
    rng = np.random.default_rng(3)
    factorised, estimate = rng.normal(size=20_000), rng.normal(size=20_000)
    label = factorised + 0.3 * (estimate - factorised)
    probability = 1 / (1 + np.exp(-rng.normal(size=20_000)))
    logit = 0.8 * _logit(probability) + 1.5 * estimate - 0.5
    liked = (rng.random(20_000) < 1 / (1 + np.exp(-logit))).astype(float)
    blend = fit_blend(factorised, {"like": probability}, estimate, label, {"like": liked})
    assert blend.forms == {"regression": BlendForm.FLAT, "like": BlendForm.FLAT}
    # Without support features every weight sits on the constant one.
    assert blend.alpha == pytest.approx((0.3, 0.0, 0.0), abs=1e-6) and blend.shift == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(blend.like["like"], [(0.8, 0, 0), (1.5, 0, 0), (-0.5, 0, 0)], atol=0.1)
    # An estimate that errs against the label earns the regression no weight: the head is left alone.
    against = factorised - 2 * (label - factorised) + 0.1 * rng.normal(size=20_000)
    declined = fit_blend(factorised, {}, against, label, {})
    assert declined.forms == {"regression": BlendForm.NONE} and declined.alpha == (0.0, 0.0, 0.0)
    # No validation pair known to the autoencoder, or too few to cross-validate: nothing to blend.
    assert fit_blend(np.array([]), {}, np.array([]), np.array([]), {}) == Blend()
    few = slice(autoencoder.FOLDS - 1)
    assert fit_blend(factorised[few], {}, estimate[few], label[few], {}) == Blend()


def _support_dependent_pairs(n: int, seed: int):
    """(support, factorised, estimate, label, probability, liked, logit) for `n` pairs whose
    blend weights are linear in their support."""
    rng = np.random.default_rng(seed)
    support = np.stack([np.ones(n), np.log1p(rng.integers(1, 500, n)), np.log1p(rng.integers(1, 500, n))], axis=1)
    factorised, estimate = rng.normal(size=n), rng.normal(size=n)
    label = factorised + (support @ SUPPORT_ALPHA) * (estimate - factorised) + support @ SUPPORT_SHIFT
    probability = 1 / (1 + np.exp(-rng.normal(size=n)))
    logit = (support @ SUPPORT_LIKE[0]) * _logit(probability) + (support @ SUPPORT_LIKE[1]) * estimate
    logit += support @ SUPPORT_LIKE[2]
    liked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return support, factorised, estimate, label, probability, liked, logit


SUPPORT_ALPHA, SUPPORT_SHIFT = np.array([-0.2, 0.08, 0.06]), np.array([0.05, -0.01, 0.002])
SUPPORT_LIKE = np.array([(0.9, 0.02, 0.0), (0.2, 0.1, 0.05), (-0.5, 0.0, 0.0)])


def test_the_blend_by_support_recovers_weights_that_grow_with_the_pairs_user_and_item_have():
    support, factorised, estimate, label, probability, liked, logit = _support_dependent_pairs(40_000, seed=5)
    blend = fit_blend(factorised, {"like": probability}, estimate, label, {"like": liked}, support)
    assert blend.forms == {"regression": BlendForm.BY_SUPPORT, "like": BlendForm.BY_SUPPORT}
    np.testing.assert_allclose(blend.alpha, SUPPORT_ALPHA, atol=1e-4)
    np.testing.assert_allclose(blend.shift, SUPPORT_SHIFT, atol=1e-4)
    # The like weights trade off against each other (the support features correlate),
    # so the test reads the logit they give each pair, not each weight.
    fitted_like = np.array(blend.like["like"])
    fitted_logit = (support @ fitted_like[0]) * _logit(probability) + (support @ fitted_like[1]) * estimate
    fitted_logit += support @ fitted_like[2]
    assert np.sqrt(np.mean((fitted_logit - logit) ** 2)) < 0.05 * np.std(logit)
    # The support-blind fit of the same rows cannot follow the support: a larger error.
    flat = fit_blend(factorised, {}, estimate, label, {})
    flat_error = label - factorised - flat.alpha[0] * (estimate - factorised)
    fitted_error = label - factorised - (support @ blend.alpha) * (estimate - factorised) - support @ blend.shift
    assert np.mean(fitted_error**2) < 0.01 * np.mean(flat_error**2)


def test_with_few_pairs_the_blend_keeps_one_weight_per_input_and_predicts_fresh_pairs_better():
    # The true weights do not depend on support. Fitted by support on 60 noisy pairs, 6 regression
    # and 9 like weights would follow the noise; below MIN_PAIRS_PER_WEIGHT the blend keeps one per input.
    def pairs(n, seed):
        rng = np.random.default_rng(seed)
        support = np.stack([np.ones(n), np.log1p(rng.integers(1, 500, n)), np.log1p(rng.integers(1, 500, n))], 1)
        factorised, estimate = rng.normal(size=n), rng.normal(size=n)
        label = factorised + 0.3 * (estimate - factorised) + 0.5 * rng.normal(size=n)
        probability = 1 / (1 + np.exp(-rng.normal(size=n)))
        logit = 0.8 * _logit(probability) + 0.5 * estimate
        liked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
        return support, factorised, estimate, label, probability, liked

    support, factorised, estimate, label, probability, liked = pairs(60, seed=6)
    blend = fit_blend(factorised, {"like": probability}, estimate, label, {"like": liked}, support)
    assert BlendForm.BY_SUPPORT not in blend.forms.values()
    x = np.concatenate([(estimate - factorised)[:, None] * support, support], axis=1)
    forced = np.linalg.lstsq(x, label - factorised, rcond=None)[0]
    fresh_support, fresh_factorised, fresh_estimate, fresh_label, *_ = pairs(20_000, seed=7)
    gap = fresh_estimate - fresh_factorised
    chosen_error = fresh_label - fresh_factorised - (fresh_support @ blend.alpha) * gap - fresh_support @ blend.shift
    forced_error = fresh_label - fresh_factorised - np.concatenate([gap[:, None] * fresh_support, fresh_support], 1) @ forced
    assert np.mean(chosen_error**2) < np.mean(forced_error**2)


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
        item_rows=np.array([0, 1]), user_pairs=np.array([4, 30, 0]), item_pairs=np.array([9, 200]), steps=1,
    )
    blend = Blend(
        alpha=(0.25, 0.01, -0.02), shift=(0.01, 0.0, 0.003),
        like={"like": ((0.5, 0.0, 0.1), (2.0, -0.1, 0.0), (-1.0, 0.0, 0.05))},
    )
    layer.assign(fitted, blend)
    blended = {name: value.numpy().ravel() for name, value in layer(outputs, user, item).items()}
    estimate = autoencoder.estimates(fitted, np.array([0, 1]), np.array([0, 1]))
    s = autoencoder.support(fitted, np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_allclose(s[:, 1:], np.log1p([[4, 9], [30, 200]]))
    rating, like = outputs["rating"].numpy().ravel(), outputs["like"].numpy().ravel()
    np.testing.assert_allclose(
        blended["rating"][:2],
        rating[:2] + (s @ blend.alpha) * (estimate - rating[:2]) + s @ blend.shift, rtol=1e-5,
    )
    weights = np.array(blend.like["like"])
    logit = (s @ weights[0]) * _logit(like[:2]) + (s @ weights[1]) * estimate + s @ weights[2]
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


@pytest.mark.parametrize(("refit", "by_support"), [(False, False), (False, True), (True, True)])
def test_the_trainer_fits_the_autoencoder_and_the_model_blends_it_on_known_pairs(refit, by_support, monkeypatch):
    # The test's few hundred validation pairs stand for the many a release has, so weights by support compete.
    monkeypatch.setattr(autoencoder, "MIN_PAIRS_PER_WEIGHT", 10)
    sizes = {features.USER_ID: USERS + 2, features.ITEM_ID: ITEMS + 2}
    # Validation-only user USERS - 1 trains the refit's autoencoder only.
    train = [part[TRAIN[0] != USERS - 1] for part in TRAIN]
    config = ModelConfig(
        embedding_dim=4, learning_rate=0.05, batch_size=64, epochs=30, l2=0.1, early_stopping_patience=2,
        refit=refit, autoencoder_units=16, autoencoder_l2=1.0, autoencoder_max_steps=1_000, seed=5,
        blend_by_support=by_support,
    )
    fitted = fit(_columns(*train), _columns(*VALIDATION), sizes, config, verbose=0)
    layer = fitted.model.autoencoder
    # The layer holds the blend the fit chose, and only the switch lets a form follow the support.
    blend = fitted.blend
    assert set(blend.forms) == {features.PURCHASE_PROBABILITY, features.BINARY_RATING}
    assert by_support or autoencoder.BlendForm.BY_SUPPORT not in blend.forms.values()
    np.testing.assert_allclose(layer.alpha.numpy(), blend.alpha, rtol=1e-6)
    np.testing.assert_allclose(layer.shift.numpy(), blend.shift, rtol=1e-6)
    np.testing.assert_allclose(layer.like.numpy()[0], blend.like[features.BINARY_RATING], rtol=1e-6)
    # The support the layer reads is that of the autoencoder it holds (the refit's, after a refit).
    seen = [np.concatenate([t, v]) for t, v in zip(train, VALIDATION)] if refit else train
    pairs = len(np.unique(seen[0] * ITEMS + seen[1]))
    assert np.expm1(layer.user_support.numpy()).sum() == pytest.approx(pairs, rel=1e-4)
    known_users = layer.user_rows.numpy() >= 0
    assert bool(known_users[USERS - 1]) == refit
    assert not known_users[USERS:].any()
    inputs = {USER: VALIDATION[0].reshape(-1, 1), ITEM: VALIDATION[1].reshape(-1, 1)}
    outputs = {name: value.numpy().ravel() for name, value in fitted.model(inputs, training=False).items()}
    # The factorised model alone: its own heads, with the blend layer bypassed.
    layer_call, fitted.model.autoencoder = fitted.model.autoencoder, None
    try:
        factorised = {name: value.numpy().ravel() for name, value in fitted.model(inputs, training=False).items()}
    finally:
        fitted.model.autoencoder = layer_call
    blended = outputs[features.PURCHASE_PROBABILITY]
    assert np.abs(blended - factorised[features.PURCHASE_PROBABILITY]).max() > 1e-3
    if not refit:
        # The blend is the one fit_blend gives on the validation pairs both IDs of which the
        # autoencoder knows, read from the layer's own tables (support features only when switched on).
        user_row, item_row = layer.user_rows.numpy()[VALIDATION[0]], layer.item_rows.numpy()[VALIDATION[1]]
        known = (user_row >= 0) & (item_row >= 0)
        estimate = autoencoder.estimate(
            layer.item_codes, layer.decoder, layer.decoder_bias, user_row[known], item_row[known]
        ).numpy()
        support = np.stack([
            np.ones(known.sum()), layer.user_support.numpy()[VALIDATION[0][known]],
            layer.item_support.numpy()[VALIDATION[1][known]],
        ], axis=1)
        labels = _columns(*VALIDATION)
        again = fit_blend(
            factorised[features.PURCHASE_PROBABILITY][known],
            {features.BINARY_RATING: factorised[features.BINARY_RATING][known]}, estimate,
            labels[features.PURCHASE_PROBABILITY].ravel()[known],
            {features.BINARY_RATING: labels[features.BINARY_RATING].ravel()[known]},
            support if by_support else None, regression=features.PURCHASE_PROBABILITY,
        )
        assert again.forms == blend.forms
        np.testing.assert_allclose(again.alpha, blend.alpha, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(again.shift, blend.shift, rtol=1e-4, atol=1e-6)
        # On the rows the blend was fitted on, it is no worse than the factorised model.
        labels = VALIDATION[2]
        assert np.mean((blended - labels) ** 2) <= np.mean((factorised[features.PURCHASE_PROBABILITY] - labels) ** 2) + 1e-6


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
    # Each covered ID counts its distinct pairs with covered IDs: users 0-9 x items 0-4.
    np.testing.assert_array_equal(fitted.user_pairs, np.where(np.arange(USERS) < 10, 5, 0))
    np.testing.assert_array_equal(fitted.item_pairs, np.where(np.arange(ITEMS) < 5, 10, 0))
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
    layer.assign(fitted, Blend(alpha=(1.0, 0.0, 0.0), like={"like": ((0, 0, 0), (1, 0, 0), (0, 0, 0))}))
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
