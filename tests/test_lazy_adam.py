"""LazyAdam: Keras's Adam for dense gradients, Adam on the used rows only for sparse ones."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from recommender.config import preset
from recommender.model import ModelConfig, build_model
from recommender.optimizer import LazyAdam

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7


def _sparse_step(optimizer, table, ids, weights):
    """One step on loss = sum(weights * table[ids]): an IndexedSlices gradient."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, ids) * weights)
    (grad,) = tape.gradient(loss, [table])
    assert isinstance(grad, tf.IndexedSlices)
    optimizer.apply_gradients([(grad, table)])


def test_dense_gradients_get_exactly_keras_adam():
    start = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    results = []
    for optimizer in (LazyAdam(LR), tf_keras.optimizers.Adam(LR)):
        var = tf.Variable(start)
        for step in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(var * var) * (step + 1)
            optimizer.apply_gradients([(tape.gradient(loss, var), var)])
        results.append(var.numpy())
    np.testing.assert_array_equal(results[0], results[1])


def test_sparse_gradients_update_only_the_rows_used_as_adam_would_on_them():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(6, 2)).astype(np.float32)
    lazy, keras = tf.Variable(start), tf.Variable(start)
    lazy_opt, keras_opt = LazyAdam(LR), tf_keras.optimizers.Adam(LR)
    # Row 1 twice in step one (its gradients add up); rows 0 and 4 only in step two.
    steps = [([1, 1, 3], rng.normal(size=(3, 2))), ([0, 4, 3], rng.normal(size=(3, 2)))]
    m, v, expected = np.zeros_like(start), np.zeros_like(start), start.astype(np.float64)
    for t, (ids, weights) in enumerate(steps, start=1):
        weights = tf.constant(weights, tf.float32)
        _sparse_step(lazy_opt, lazy, tf.constant(ids), weights)
        _sparse_step(keras_opt, keras, tf.constant(ids), weights)
        grad = np.zeros_like(start, dtype=np.float64)
        np.add.at(grad, ids, weights.numpy())
        used = np.unique(ids)
        m[used] = B1 * m[used] + (1 - B1) * grad[used]
        v[used] = B2 * v[used] + (1 - B2) * grad[used] ** 2
        alpha = LR * np.sqrt(1 - B2**t) / (1 - B1**t)
        expected[used] -= alpha * m[used] / (np.sqrt(v[used]) + EPS)
        np.testing.assert_allclose(lazy.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Rows never used keep their values; row 1, unused in step two, did not move then.
    np.testing.assert_array_equal(lazy.numpy()[[2, 5]], start[[2, 5]])
    # Keras's Adam moves row 1 again in step two (its momentum): the difference LazyAdam makes.
    assert not np.allclose(keras.numpy()[1], lazy.numpy()[1])


def test_amsgrad_is_refused():
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(LR, amsgrad=True)


def test_model_config_chooses_the_optimizer():
    assert isinstance(build_model(10, 8, ModelConfig(base_rate_init=False, retrieval=None)).optimizer, LazyAdam)
    original = build_model(10, 8, preset("original"))
    assert type(original.optimizer) is tf_keras.optimizers.Adam
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ModelConfig(optimizer="sgd")
