import dataclasses

import numpy as np
import pytest

from components import features, heads
from components.autoencoder import Autoencoder, Blend
from components.model import ModelConfig, TrainingData, build_model
from components.model_config import preset

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
    embedding_dim=4, hidden_units=(8,), learning_rate=3e-3, use_bias_terms=False, use_dot_product=False,
    factorized_purchase_head=False, autoencoder_units=0, l2=0.0, user_id_dropout=0.0, early_stopping_patience=None,
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


def test_bias_dot_and_regularisation_options_build_what_they_say():
    inputs, labels = _batch(n=4)
    plain = build_model(10, 8, preset("original", embedding_dim=4))
    rich = build_model(10, 8, mlp(use_bias_terms=True, use_dot_product=True, l2=1e-3, dropout=0.2),
                       _training(inputs, labels))
    plain(inputs, training=True), rich(inputs, training=True)
    def has(model, name):
        return any(f"/{name}/" in v.name for v in model.trainable_variables)

    assert has(rich, "user_bias") and has(rich, "item_bias")
    assert not has(plain, "user_bias") and not has(plain, "item_bias")
    # Head input: last hidden layer (8) + dot product (1) + two biases (2).
    assert rich.heads[features.BINARY_RATING].kernel.shape == (11, 1)
    assert plain.heads[features.BINARY_RATING].kernel.shape == (64, 1)
    assert len(rich.losses) > 0 and len(plain.losses) == 0  # L2 penalties only when asked
    rich(inputs)
    assert len(rich.losses) == 0  # and only while training
    for head in heads.NAMES:  # dropout is off at inference: predictions are repeatable
        np.testing.assert_array_equal(rich(inputs)[head].numpy(), rich(inputs)[head].numpy())


def test_early_stopping_restores_the_best_epoch():
    import tensorflow as tf

    from components.model import train

    config = mlp(epochs=40, learning_rate=0.05, early_stopping_patience=2)
    inputs, labels = _batch(n=64, num_users=50, num_items=50, seed=1)
    model = build_model(50, 50, config, _training(inputs, labels))
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


FACTORIZED = dict(
    embedding_dim=4, use_bias_terms=True, use_dot_product=True, factorized_purchase_head=True,
    user_id_dropout=0.0,
)


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
    model = build_model(10, 8, ModelConfig(embedding_dim=4, hidden_units=(), **{
        k: v for k, v in FACTORIZED.items() if k != "embedding_dim"
    }), training)
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
    model = build_model(10, 8, ModelConfig(hidden_units=(), **FACTORIZED), _training(inputs, labels))
    predicted = model(inputs)[features.PURCHASE_PROBABILITY].numpy().ravel()
    user, item = inputs[USER].ravel(), inputs[ITEM].ravel()
    p, q = model.user_embedding.embeddings.numpy()[user], model.item_embedding.embeddings.numpy()[item]
    b_user = model.biases[0].embeddings.numpy()[user, 0]
    b_item = model.biases[1].embeddings.numpy()[item, 0]
    mu = model.heads[features.PURCHASE_PROBABILITY].bias.numpy()[0]
    np.testing.assert_allclose(predicted, mu + b_user + b_item + np.sum(p * q, axis=1), rtol=1e-5)
    with pytest.raises(ValueError, match="needs use_bias_terms"):
        ModelConfig(factorized_purchase_head=True, use_bias_terms=False)


def test_implicit_feedback_adds_the_scaled_sum_of_training_partners():
    import tensorflow as tf

    # Training interactions: user 0 saw items 1, 2, 3; user 1 saw item 1; user 2 none.
    train_inputs = {USER: np.array([[0], [0], [0], [1]]), ITEM: np.array([[1], [2], [3], [1]])}
    train_labels = {head: np.ones((4, 1), np.float32) * 0.5 for head in heads.NAMES}
    config = ModelConfig(hidden_units=(), implicit_feedback=True, **FACTORIZED)
    model = build_model(3, 5, config, _training(train_inputs, train_labels))
    model({USER: np.array([0]), ITEM: np.array([0])})
    users_of_item = {0: [], 1: [0, 1], 2: [0], 3: [0], 4: []}
    items_of_user = {0: [1, 2, 3], 1: [1], 2: []}
    history = model.implicit[0].embedding.embeddings.numpy()  # item rows, summed per user
    for user, items in items_of_user.items():
        got = model.implicit[0](tf.constant([user])).numpy()[0]
        expected = history[items].sum(axis=0) / np.sqrt(len(items)) if items else np.zeros(4)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    item_history = model.implicit[1].embedding.embeddings.numpy()
    got = model.implicit[1](tf.constant([1])).numpy()[0]
    np.testing.assert_allclose(got, item_history[users_of_item[1]].sum(axis=0) / np.sqrt(2), rtol=1e-5)
    # The partner lists are saved state, not trainable parameters.
    assert all("partners" not in v.name and "row_splits" not in v.name for v in model.trainable_variables)
    with pytest.raises(ValueError, match="interactions"):
        build_model(3, 5, dataclasses.replace(config, base_rate_init=False))


def test_rating_weighted_history_leaves_the_scored_pair_out():
    """User 0 rated items 1, 2, 3 (purchase labels 0.2, 0.6, 1.0): the user's sum weights
    each item by its label; scoring (0, 2) leaves item 2 out, scoring an unseen pair leaves nothing out."""
    import tensorflow as tf

    train_inputs = {USER: np.array([[0], [0], [0], [1]]), ITEM: np.array([[1], [2], [3], [1]])}
    rating = np.array([[0.2], [0.6], [1.0], [0.4]], np.float32)
    train_labels = {features.BINARY_RATING: (rating > 0.5).astype(np.float32), features.PURCHASE_PROBABILITY: rating}
    config = ModelConfig(
        hidden_units=(), implicit_feedback=True, implicit_feedback_ratings=True, implicit_leave_one_out=True,
        **FACTORIZED,
    )
    model = build_model(3, 5, config, _training(train_inputs, train_labels))
    model({USER: np.array([0]), ITEM: np.array([0])})
    history = model.implicit[0].embedding.embeddings.numpy()

    def items_of_user_0(scored_item):
        return model.implicit[0](tf.constant([0]), tf.constant([scored_item])).numpy()[0]

    np.testing.assert_allclose(  # item 4: not one of the user's, so all three count
        items_of_user_0(4), (0.2 * history[1] + 0.6 * history[2] + 1.0 * history[3]) / np.sqrt(3), rtol=1e-5
    )
    np.testing.assert_allclose(  # the training pair (0, 2): its own rating is not read
        items_of_user_0(2), (0.2 * history[1] + 1.0 * history[3]) / np.sqrt(2), rtol=1e-5
    )
    # The item's sum leaves the scored user out the same way: item 1 without user 1 is user 0 alone.
    users = model.implicit[1].embedding.embeddings.numpy()
    got = model.implicit[1](tf.constant([1]), tf.constant([1])).numpy()[0]
    np.testing.assert_allclose(got, 0.2 * users[0], rtol=1e-5)
    # In the model's own call, a training pair's prediction cannot depend on its own label.
    before = model({USER: np.array([0]), ITEM: np.array([2])})[features.PURCHASE_PROBABILITY].numpy()
    weights = model.implicit[0].partner_weights
    labels = weights.numpy()
    weights.assign(np.where(np.isclose(labels, 0.6), 0.0, labels))
    after = model({USER: np.array([0]), ITEM: np.array([2])})[features.PURCHASE_PROBABILITY].numpy()
    np.testing.assert_allclose(after, before, rtol=1e-6)


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
    # With an autoencoder blended in (user 11 and item 8 unknown to it), still cell for cell.
    blended = build_model(12, 9, ModelConfig(embedding_dim=4, epochs=1, autoencoder_units=3), _training(inputs, labels))
    blended.fit(inputs, labels, epochs=1, batch_size=32, verbose=0)
    assert blended.separable
    rng = np.random.default_rng(1)
    blended.autoencoder.assign(
        Autoencoder(
            item_codes=rng.random((9, 3)), decoder=rng.normal(size=(12, 3)), decoder_bias=rng.normal(size=12),
            user_rows=np.append(np.arange(11), -1), item_rows=np.append(np.arange(8), -1),
            user_pairs=np.append(rng.integers(1, 50, 11), 0), item_pairs=np.append(rng.integers(1, 90, 8), 0), steps=1,
        ),
        Blend(
            alpha=(0.5, 0.02, -0.03), shift=(0.01, -0.002, 0.004),
            like={features.BINARY_RATING: ((0.5, 0.01, 0.0), (1.0, 0.0, -0.05), (-0.2, 0.02, 0.01))},
        ),
    )
    grid = blended.score_grid(tf.constant(users), tf.constant(items))
    pairs = blended({USER: np.repeat(users, len(items)), ITEM: np.tile(items, len(users))})
    for head in heads.NAMES:
        np.testing.assert_allclose(
            grid[head].numpy(), pairs[head].numpy().reshape(len(users), len(items)), rtol=0, atol=1e-6
        )
    for config in (
        mlp(), ModelConfig(embedding_dim=4, implicit_feedback=True), ModelConfig(embedding_dim=4, tower_units=(4,)),
    ):
        other = build_model(12, 9, config, _training(inputs, labels))
        assert not other.separable
        with pytest.raises(ValueError, match="score_grid"):
            other.score_grid(tf.constant(users), tf.constant(items))


def _zero_layers(model, prefix):
    """Sets every weight of the model's layers named `prefix`* to zero; returns how many layers."""
    layers = [layer for layer in model._flatten_layers() if layer.name.startswith(prefix) and layer.weights]
    for layer in layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return len(layers)


@pytest.mark.parametrize("config", [
    mlp(tower_units=(16, 8)),
    mlp(hidden_units=(8,), experts=3, tower_units=(8,)),
    ModelConfig(embedding_dim=4, tower_units=(8,)),  # the factorised head's term from its own tower
], ids=["towers", "mmoe", "factorised-towers"])
def test_each_heads_tower_and_gate_feed_that_head_only(config):
    inputs, labels = _batch(n=64)
    model = build_model(10, 8, config, _training(inputs, labels))
    model.fit(inputs, labels, epochs=3, batch_size=16, verbose=0)
    before = {k: v.numpy() for k, v in model(inputs).items()}
    binary, purchase = features.BINARY_RATING, features.PURCHASE_PROBABILITY
    assert _zero_layers(model, f"{binary}_tower") == len(config.tower_units)
    if config.experts:
        assert _zero_layers(model, f"{binary}_gate") == 1
    after = {k: v.numpy() for k, v in model(inputs).items()}
    np.testing.assert_array_equal(after[purchase], before[purchase])
    assert not np.allclose(after[binary], before[binary])


def test_mmoe_gates_mix_the_experts_per_head():
    import tensorflow as tf

    inputs, labels = _batch(n=32)
    config = mlp(hidden_units=(8, 4), experts=3)
    model = build_model(10, 8, config, _training(inputs, labels))
    model.fit(inputs, labels, epochs=3, batch_size=16, verbose=0)
    assert len(model.experts) == 3 and not model.hidden and not model.separable
    x = tf.concat([model.user_embedding(inputs[USER][:, 0]), model.item_embedding(inputs[ITEM][:, 0])], axis=-1)
    experts = []
    for expert in model.experts:
        value = x
        for layer in expert:
            value = layer(value)
        experts.append(value.numpy())
    mixed = model._hidden_per_head(x, training=False)
    for head, gate in model.gates.items():
        weights = gate(x).numpy()
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
        expected = sum(weights[:, [e]] * experts[e] for e in range(3))
        np.testing.assert_allclose(mixed[head].numpy(), expected, rtol=1e-5, atol=1e-6)
    # The two heads' gates differ, so each reads its own mixture.
    assert not np.allclose(*(mixed[head].numpy() for head in heads.NAMES))


def test_implicit_history_is_capped_at_a_seeded_sample_of_each_ids_partners():
    import tensorflow as tf

    # User 0 saw items 1..6, user 1 items 1 and 2; with a cap of 3, user 0 sums three of its six.
    users = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    items = np.array([1, 2, 3, 4, 5, 6, 1, 2])
    train_inputs = {USER: users[:, None], ITEM: items[:, None]}
    train_labels = {head: np.ones((8, 1), np.float32) * 0.5 for head in heads.NAMES}
    config = ModelConfig(hidden_units=(), implicit_feedback=True, implicit_history_cap=3, **FACTORIZED)
    model = build_model(3, 8, config, _training(train_inputs, train_labels))
    model({USER: np.array([0]), ITEM: np.array([0])})
    items_of_user = model.implicit[0]
    assert items_of_user.row_splits.numpy().tolist() == [0, 3, 5, 5]
    sample = items_of_user.partners.numpy()[:3]
    assert set(sample) < set(range(1, 7)) and len(set(sample)) == 3
    assert sorted(items_of_user.partners.numpy()[3:]) == [1, 2]
    history = items_of_user.embedding.embeddings.numpy()
    np.testing.assert_allclose(
        items_of_user(tf.constant([0])).numpy()[0], history[sample].sum(axis=0) / np.sqrt(3), rtol=1e-5
    )
    again = build_model(3, 8, config, _training(train_inputs, train_labels))
    again({USER: np.array([0]), ITEM: np.array([0])})
    assert again.implicit[0].partners.numpy().tolist() == items_of_user.partners.numpy().tolist()


def test_id_dropout_trains_the_out_of_vocabulary_rows():
    """Training rows use users 0..9 of 14 rows (4 OOV buckets): only with ID dropout
    do the OOV rows move from their initial values; serving never drops IDs."""
    inputs, labels = _batch(n=512, num_users=10)
    oov_rows = slice(10, 14)
    moved = {}
    for rate in (0.0, 0.3):
        config = mlp(epochs=2, user_id_dropout=rate, use_bias_terms=True)
        model = build_model(14, 8, config, _training(inputs, labels))
        model(inputs)
        before = model.biases[0].embeddings.numpy()[oov_rows].copy()
        model.fit(inputs, labels, batch_size=64, epochs=2, verbose=0)
        moved[rate] = np.abs(model.biases[0].embeddings.numpy()[oov_rows] - before).max()
        first, second = model(inputs), model(inputs)  # inference: no dropout, so no randomness
        np.testing.assert_array_equal(first[features.PURCHASE_PROBABILITY], second[features.PURCHASE_PROBABILITY])
    assert moved[0.0] == 0.0 and moved[0.3] > 1e-4
    with pytest.raises(ValueError, match="needs OOV buckets"):
        build_model(10, 8, mlp(user_id_dropout=0.3), _training(inputs, labels))
