
import numpy as np
import pytest
import tensorflow as tf

from recommender import features, heads
from recommender.config import preset
from recommender.model import ModelConfig, RetrievalInputs, TrainingData, build_model

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)


def _batch(n=16, num_users=10, num_items=8, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        USER: rng.integers(0, num_users, (n, 1)).astype(np.int64),
        ITEM: rng.integers(0, num_items, (n, 1)).astype(np.int64),
    }
    labels = {
        features.BINARY_RATING: rng.integers(0, 2, (n, 1)).astype(np.float32),
        features.PURCHASE_PROBABILITY: rng.random((n, 1)).astype(np.float32),
    }
    return inputs, labels


def _training(inputs, labels):
    return TrainingData.from_batches([(inputs, labels)])


# A plain MLP model: the structure these tests check, whatever the defaults are.
MLP = dict(
    embedding_dim=4, factorized=False, hidden_units=(8,), learning_rate=3e-3, l2=0.0, early_stopping_patience=None,
    refit=False,
    loss_weights={head: 1.0 for head in heads.NAMES},
)


def mlp(**overrides) -> ModelConfig:
    return ModelConfig(**{**MLP, **overrides})


def test_outputs_are_named_after_the_heads_with_batch_by_one_shapes():
    inputs, labels = _batch(n=5)
    model = build_model(10, 8, mlp(), _training(inputs, labels))
    outputs = model(inputs)
    assert set(outputs) == set(heads.NAMES)
    for head in heads.NAMES:
        assert outputs[head].shape == (5, 1)
    liked = outputs[features.BINARY_RATING].numpy()
    assert np.all((liked > 0) & (liked < 1))  # sigmoid head


def test_total_loss_is_the_weighted_sum_of_head_losses():
    weights = {features.BINARY_RATING: 2.0, features.PURCHASE_PROBABILITY: 0.5}
    inputs, labels = _batch()
    model = build_model(
        10, 8, mlp(loss_weights=weights), _training(inputs, labels)
    )
    predicted = {k: v.numpy().astype(np.float64) for k, v in model(inputs).items()}
    p = np.clip(predicted[features.BINARY_RATING], 1e-7, 1 - 1e-7)
    y = labels[features.BINARY_RATING]
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    mse = np.mean((predicted[features.PURCHASE_PROBABILITY] - labels[features.PURCHASE_PROBABILITY]) ** 2)
    result = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(2.0 * bce + 0.5 * mse, rel=1e-4)


def test_training_reduces_the_loss_on_learnable_data():
    inputs, labels = _batch(n=256)
    # Labels that depend on the user only: learnable from the user embedding.
    labels[features.BINARY_RATING] = (inputs[USER] % 2).astype(np.float32)
    model = build_model(10, 8, mlp(epochs=1), _training(inputs, labels))
    before = model.evaluate(inputs, labels, verbose=0, return_dict=True)["loss"]
    model.fit(inputs, labels, epochs=30, batch_size=64, verbose=0)
    after = model.evaluate(inputs, labels, verbose=0, return_dict=True)["loss"]
    assert after < 0.5 * before


def test_factorised_and_dense_forms_build_what_they_say():
    inputs, labels = _batch(n=4)
    plain = build_model(10, 8, preset("original", embedding_dim=4))
    factorised = build_model(10, 8, ModelConfig(embedding_dim=4, l2=1e-3), _training(inputs, labels))
    plain(inputs, training=True), factorised(inputs, training=True)

    def has(model, name):
        return any(f"/{name}/" in v.name for v in model.trainable_variables)

    assert has(factorised, "user_bias") and has(factorised, "item_bias") and not factorised.hidden
    assert not has(plain, "user_bias") and not has(plain, "item_bias")
    # The binary head reads [estimate, dot product, user bias, item bias]; the original its Dense(64).
    assert factorised.heads[features.BINARY_RATING].kernel.shape == (4, 1)
    assert plain.heads[features.BINARY_RATING].kernel.shape == (64, 1)
    assert len(factorised.losses) > 0 and len(plain.losses) == 0  # L2 penalties only when asked
    factorised(inputs)
    assert len(factorised.losses) == 0  # and only while training
    with pytest.raises(ValueError, match="hidden_units contradicts factorized"):
        ModelConfig(hidden_units=(8,))
    with pytest.raises(ValueError, match="needs hidden_units"):
        ModelConfig(factorized=False)


def test_early_stopping_restores_the_best_epoch():
    import tensorflow as tf

    from recommender.model import train

    config = mlp(epochs=40, learning_rate=0.05, early_stopping_patience=2)
    inputs, labels = _batch(n=64, num_users=50, num_items=50, seed=1)
    model = build_model(50, 50, config, _training(inputs, labels))
    held_inputs, held_labels = _batch(n=64, num_users=50, num_items=50, seed=2)  # unrelated: overfits
    fitted = train(
        model,
        tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16),
        tf.data.Dataset.from_tensor_slices((held_inputs, held_labels)).batch(64),
        config,
    )
    losses = fitted.history.history["val_loss"]
    assert len(losses) < 40
    best = min(losses)
    assert fitted.best_epoch == losses.index(best) + 1 < len(losses)
    assert model.evaluate(held_inputs, held_labels, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)


def test_training_data_collects_every_interaction_and_the_label_means():
    first, second = _batch(n=5, seed=1), _batch(n=3, seed=2)
    data = TrainingData.from_batches([first, second])
    np.testing.assert_array_equal(data.users, np.concatenate([first[0][USER], second[0][USER]]).ravel())
    np.testing.assert_array_equal(data.items, np.concatenate([first[0][ITEM], second[0][ITEM]]).ravel())
    for head in heads.NAMES:
        expected = np.concatenate([first[1][head], second[1][head]]).mean()
        assert data.label_means[head] == pytest.approx(expected)
    with pytest.raises(ValueError, match="empty"):
        TrainingData.from_batches([])


def test_heads_start_at_the_training_base_rates():
    inputs, labels = _batch(n=64)
    training = _training(inputs, labels)
    model = build_model(10, 8, ModelConfig(embedding_dim=4), training)
    liked = training.label_means[features.BINARY_RATING]
    model(inputs)
    bias = model.heads[features.BINARY_RATING].bias.numpy()[0]
    assert bias == pytest.approx(np.log(liked / (1 - liked)), rel=1e-5)
    assert model.heads[features.PURCHASE_PROBABILITY].bias.numpy()[0] == pytest.approx(
        training.label_means[features.PURCHASE_PROBABILITY], rel=1e-5
    )
    with pytest.raises(ValueError, match="label means"):
        build_model(10, 8, mlp())


def test_factorized_purchase_head_is_mean_plus_biases_plus_dot():
    inputs, labels = _batch(n=6)
    model = build_model(10, 8, ModelConfig(embedding_dim=4), _training(inputs, labels))
    predicted = model(inputs)[features.PURCHASE_PROBABILITY].numpy().ravel()
    user, item = inputs[USER].ravel(), inputs[ITEM].ravel()
    p, q = model.user_embedding.embeddings.numpy()[user], model.item_embedding.embeddings.numpy()[item]
    b_user = model.biases[0].embeddings.numpy()[user, 0]
    b_item = model.biases[1].embeddings.numpy()[item, 0]
    mu = model.heads[features.PURCHASE_PROBABILITY].bias.numpy()[0]
    np.testing.assert_allclose(predicted, mu + b_user + b_item + np.sum(p * q, axis=1), rtol=1e-5)


def test_score_grid_gives_every_pair_the_prediction_call_gives_it():
    """The default (factorised) model scores a users x items grid from one lookup per ID;
    each cell is what the model's own call predicts for that pair."""
    import tensorflow as tf

    inputs, labels = _batch(n=256, num_users=12, num_items=9)
    model = build_model(12, 9, ModelConfig(embedding_dim=4, epochs=1), _training(inputs, labels))
    model.fit(inputs, labels, epochs=2, batch_size=32, verbose=0)
    assert model.separable
    users, items = np.array([0, 3, 11, 5]), np.arange(9)
    grid = model.score_grid(tf.constant(users), tf.constant(items))
    pairs = model({USER: np.repeat(users, len(items)), ITEM: np.tile(items, len(users))})
    for head in heads.NAMES:
        assert grid[head].shape == (len(users), len(items))
        np.testing.assert_allclose(
            grid[head].numpy(), pairs[head].numpy().reshape(len(users), len(items)), rtol=0, atol=1e-6
        )
        assert np.ptp(grid[head].numpy()) > 0  # a trained model: the cells differ
    other = build_model(12, 9, mlp(), _training(inputs, labels))
    assert not other.separable
    with pytest.raises(ValueError, match="score_grid"):
        other.score_grid(tf.constant(users), tf.constant(items))


def test_the_retrieval_loss_weights_each_unliked_pair_by_unliked_weight():
    """With each pair's loss l_j (the same history draws: one seed), the loss is
    sum(w_j l_j) / sum(w_j), w_j = 1 for a liked pair and `unliked_weight` otherwise."""
    inputs, labels = _batch(n=12)
    users, items = (tf.constant(inputs[key].ravel()) for key in (USER, ITEM))

    def loss(unliked_weight, liked):
        config = ModelConfig(embedding_dim=4, retrieval={"unliked_weight": unliked_weight, "history_sample": 3})
        model = build_model(10, 8, config, _training(inputs, labels))
        added, _ = RetrievalInputs.of(_training(inputs, labels), 10, 8, config.retrieval).add(inputs, labels, [7, 0])
        return float(model.retrieval_loss(users, items, added[features.HISTORY_DRAWS], added[features.ITEM_SHARE],
                                          tf.constant(liked, tf.float32)))

    each = np.array([loss(0.0, np.eye(12)[j]) for j in range(12)])
    assert len(set(np.round(each, 6))) > 1  # the pairs' losses differ: the weights below matter
    liked = labels[features.BINARY_RATING].ravel()
    assert 0 < liked.sum() < 12
    assert loss(1.0, liked) == pytest.approx(each.mean(), rel=1e-5)
    assert loss(0.0, liked) == pytest.approx(each[liked == 1].mean(), rel=1e-5)
    weights = np.where(liked == 1, 1.0, 0.25)
    assert loss(0.25, liked) == pytest.approx((weights * each).sum() / weights.sum(), rel=1e-5)
    assert loss(0.0, np.zeros(12)) == 0.0  # no liked pair: nothing to learn from this batch
