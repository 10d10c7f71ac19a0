import numpy as np
import pytest

from components import features
from components.model import ModelConfig, build_model

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


def test_outputs_are_named_after_the_heads_with_batch_by_one_shapes():
    model = build_model(10, 8, ModelConfig(embedding_dim=4, hidden_units=(8,)))
    inputs, _ = _batch(n=5)
    outputs = model(inputs)
    assert set(outputs) == set(features.HEADS)
    for head in features.HEADS:
        assert outputs[head].shape == (5, 1)
    liked = outputs[features.BINARY_RATING].numpy()
    assert np.all((liked > 0) & (liked < 1))  # sigmoid head


def test_total_loss_is_the_weighted_sum_of_head_losses():
    weights = {features.BINARY_RATING: 2.0, features.PURCHASE_PROBABILITY: 0.5}
    model = build_model(10, 8, ModelConfig(embedding_dim=4, hidden_units=(8,), loss_weights=weights))
    inputs, labels = _batch()
    predicted = {k: v.numpy().astype(np.float64) for k, v in model(inputs).items()}
    p = np.clip(predicted[features.BINARY_RATING], 1e-7, 1 - 1e-7)
    y = labels[features.BINARY_RATING]
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    mse = np.mean((predicted[features.PURCHASE_PROBABILITY] - labels[features.PURCHASE_PROBABILITY]) ** 2)
    result = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(2.0 * bce + 0.5 * mse, rel=1e-4)


def test_training_reduces_the_loss_on_learnable_data():
    model = build_model(10, 8, ModelConfig(embedding_dim=4, hidden_units=(8,), epochs=1))
    inputs, labels = _batch(n=256)
    # Labels that depend on the user only: learnable from the user embedding.
    labels[features.BINARY_RATING] = (inputs[USER] % 2).astype(np.float32)
    before = model.evaluate(inputs, labels, verbose=0, return_dict=True)["loss"]
    model.fit(inputs, labels, epochs=30, batch_size=64, verbose=0)
    after = model.evaluate(inputs, labels, verbose=0, return_dict=True)["loss"]
    assert after < 0.5 * before


def test_bias_dot_and_regularisation_options_build_what_they_say():
    plain = build_model(10, 8, ModelConfig.original(embedding_dim=4))
    rich = build_model(10, 8, ModelConfig(
        embedding_dim=4, hidden_units=(8,), use_bias_terms=True, use_dot_product=True,
        l2=1e-3, dropout=0.2,
    ))
    inputs, _ = _batch(n=4)
    plain(inputs), rich(inputs)
    def has(model, name):
        return any(f"/{name}/" in v.name for v in model.trainable_variables)

    assert has(rich, "user_bias") and has(rich, "item_bias")
    assert not has(plain, "user_bias") and not has(plain, "item_bias")
    # Head input: last hidden layer (8) + dot product (1) + two biases (2).
    assert rich.heads[features.BINARY_RATING].kernel.shape == (11, 1)
    assert plain.heads[features.BINARY_RATING].kernel.shape == (64, 1)
    assert len(rich.losses) > 0 and len(plain.losses) == 0  # L2 penalties only when asked
    for head in features.HEADS:  # dropout is off at inference: predictions are repeatable
        np.testing.assert_array_equal(rich(inputs)[head].numpy(), rich(inputs)[head].numpy())


def test_early_stopping_restores_the_best_epoch():
    import tensorflow as tf

    from components.model import train

    config = ModelConfig(embedding_dim=4, hidden_units=(8,), epochs=40, learning_rate=0.05,
                         early_stopping_patience=2)
    model = build_model(50, 50, config)
    inputs, labels = _batch(n=64, num_users=50, num_items=50, seed=1)
    held_inputs, held_labels = _batch(n=64, num_users=50, num_items=50, seed=2)  # unrelated: overfits
    history = train(
        model,
        tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16),
        tf.data.Dataset.from_tensor_slices((held_inputs, held_labels)).batch(64),
        config,
    )
    ran = len(history.history["loss"])
    assert ran < 40
    best = min(history.history["val_loss"])
    assert model.evaluate(held_inputs, held_labels, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)
