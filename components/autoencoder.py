"""An item-based autoencoder (I-AutoRec) beside the factorised model, and the blend of the two.

Plain TensorFlow and numpy functions, no TFX. The autoencoder reads each
item's training ratings (its users' regression labels) and reconstructs them
through one sigmoid layer; its reconstruction at a user is its estimate of that
pair. Once trained, an item's hidden code depends only on the training rows,
so the model keeps the codes and the decoder, not the ratings: an estimate is
a dot product of an item code and a user's decoder row, and the cost of
serving grows with the IDs, not with the rows.

Two different model families err differently, so the pipeline blends them:
the blend's few weights are fitted on the validation rows (see `fit_blend`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from components import features

# The validation RMSE is checked every CHECK_EVERY steps, and the fit stops
# once PATIENCE steps bring no better one.
CHECK_EVERY = 25
PATIENCE = 300
# Logistic-regression (Newton) iterations and ridge for the like blend.
NEWTON_STEPS = 25
RIDGE = 1e-3
# The fit holds the items x users rating matrix densely (two of them: ratings
# and which are observed); past this many cells that no longer fits a worker.
MAX_CELLS = 2**28
# Probabilities are clipped this far from 0 and 1 before their logit is taken.
EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """A trained autoencoder, as the model carries it.

    `item_codes` [items, units], `decoder` [users, units], `decoder_bias`
    [users]: the estimate for (user, item) is item_codes[item] . decoder[user]
    + decoder_bias[user]. `known_users`, `known_items`: which IDs had training
    ratings (elsewhere the estimate means nothing). `steps`: the Adam steps
    whose weights these are.
    """

    item_codes: np.ndarray
    decoder: np.ndarray
    decoder_bias: np.ndarray
    known_users: np.ndarray
    known_items: np.ndarray
    steps: int


@dataclasses.dataclass(frozen=True)
class Blend:
    """How the model's heads combine with the autoencoder's estimate `a` on a known pair.

    Regression: m + alpha * (a - m), for the factorised estimate m. Each
    binary head h: sigmoid(like[h][0] * logit(p) + like[h][1] * a + like[h][2]),
    for its probability p; a head `like` does not name passes unchanged.
    `Blend()` changes nothing.
    """

    alpha: float = 0.0
    like: Mapping[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)


def _pairs(users: np.ndarray, items: np.ndarray, labels: np.ndarray, num_users: int):
    """(item, user, label) once per distinct pair (a repeated pair's labels averaged)."""
    key = items.astype(np.int64) * num_users + users.astype(np.int64)
    unique, inverse = np.unique(key, return_inverse=True)
    mean = np.bincount(inverse, weights=labels) / np.bincount(inverse)
    return unique // num_users, unique % num_users, mean.astype(np.float32)


def fit_autoencoder(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    num_users: int,
    num_items: int,
    *,
    units: int,
    l2: float,
    learning_rate: float,
    seed: int,
    max_steps: int,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Autoencoder:
    """An item autoencoder fitted on the pairs (`users`, `items`) with regression `labels`.

    Minimises the squared reconstruction error over the observed pairs plus
    `l2` / 2 times the squared weights, with full-batch Adam (step size
    `learning_rate`) seeded by `seed`.
    With `validation` (users, items, labels), stops once the validation RMSE
    has not improved for PATIENCE steps and keeps the best checked weights;
    without, runs `max_steps`. Each step costs items x users x `units`, and
    the fit holds two items x users matrices: more than MAX_CELLS cells is an error.
    """
    if num_items * num_users > MAX_CELLS:
        raise ValueError(
            f"the item autoencoder needs a dense {num_items} x {num_users} rating matrix, more than "
            f"{MAX_CELLS} cells: set autoencoder_units to 0 for a catalogue and audience this large"
        )
    item_of, user_of, value = _pairs(users, items, labels, num_users)
    # The autoencoder works on unit-variance labels (its l2 and the sigmoid's
    # range then mean the same whatever the labels' scale) and answers on theirs.
    scale = float(np.std(value)) or 1.0
    value = value / scale
    # Dense: two matrix products per step ran faster than sparse gathers on ML-100K.
    ratings = np.zeros([num_items, num_users], np.float32)
    ratings[item_of, user_of] = value
    observed = np.zeros([num_items, num_users], np.float32)
    observed[item_of, user_of] = 1.0
    ratings, observed = tf.constant(ratings), tf.constant(observed)
    tf_keras.utils.set_random_seed(seed)
    init = tf_keras.initializers.GlorotUniform(seed=seed)
    encoder = tf.Variable(init((num_users, units)))
    encoder_bias = tf.Variable(tf.zeros([units]))
    decoder = tf.Variable(init((num_users, units)))
    decoder_bias = tf.Variable(tf.zeros([num_users]))
    weights = [encoder, encoder_bias, decoder, decoder_bias]
    optimizer = tf_keras.optimizers.Adam(learning_rate)

    def codes():
        return tf.sigmoid(tf.matmul(ratings, encoder) + encoder_bias)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            error = observed * (ratings - tf.matmul(codes(), decoder, transpose_b=True) - decoder_bias)
            loss = tf.reduce_sum(error * error) + l2 / 2 * (tf.reduce_sum(encoder**2) + tf.reduce_sum(decoder**2))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

    @tf.function
    def rmse(user, item, label):
        error = label - estimate(codes(), decoder, decoder_bias, user, item)
        return tf.sqrt(tf.reduce_mean(error * error))

    known_users = np.bincount(user_of, minlength=num_users) > 0
    known_items = np.bincount(item_of, minlength=num_items) > 0
    if validation is not None:
        v_users, v_items, v_labels = validation
        scored = known_users[v_users] & known_items[v_items]
        v_users, v_items, v_labels = (
            tf.constant(v_users[scored]), tf.constant(v_items[scored]), tf.constant(v_labels[scored] / scale, tf.float32)
        )
    best, best_step, kept = np.inf, 0, [w.numpy() for w in weights]
    for done in range(1, max_steps + 1):
        step()
        if validation is None or done % CHECK_EVERY:
            continue
        score = float(rmse(v_users, v_items, v_labels))
        if score < best:
            best, best_step, kept = score, done, [w.numpy() for w in weights]
        elif done - best_step >= PATIENCE:
            break
    if validation is not None:
        for variable, value_kept in zip(weights, kept):
            variable.assign(value_kept)
        logging.getLogger(features.PROGRESS_LOGGER).info(
            "autoencoder: validation RMSE %.4f after %d steps", best, best_step
        )
    return Autoencoder(
        item_codes=codes().numpy(),
        decoder=decoder.numpy() * scale,
        decoder_bias=decoder_bias.numpy() * scale,
        known_users=known_users,
        known_items=known_items,
        steps=best_step if validation is not None else max_steps,
    )


def estimate(item_codes, decoder, decoder_bias, user, item) -> tf.Tensor:
    """The estimate of each (user[k], item[k]) pair from an autoencoder's tables: [len(user)]."""
    return tf.reduce_sum(tf.gather(item_codes, item) * tf.gather(decoder, user), axis=-1) + tf.gather(decoder_bias, user)


def estimates(autoencoder: Autoencoder, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The autoencoder's estimate of each (user, item) pair (meaningful where both are known)."""
    return estimate(autoencoder.item_codes, autoencoder.decoder, autoencoder.decoder_bias, users, items).numpy()


def fit_blend(
    factorised: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    autoencoded: np.ndarray,
    label: np.ndarray,
    liked: Mapping[str, np.ndarray],
) -> Blend:
    """The Blend that best combines, on known validation pairs, the factorised estimate
    and each binary head's probability with the autoencoder's estimate.

    `alpha`: least squares against the regression `label`, clipped to [0, 1];
    `like[h]`: logistic regression of `liked[h]` (0/1) on (logit(p), a, 1), by
    Newton's method with a small ridge. With no pairs, `Blend()`.
    """
    if not len(label):
        return Blend()
    gap = autoencoded - factorised
    alpha = float(np.clip(np.dot(gap, label - factorised) / max(np.dot(gap, gap), EPSILON), 0.0, 1.0))
    return Blend(alpha=alpha, like={name: _logistic(p, autoencoded, liked[name]) for name, p in probabilities.items()})


def _logistic(probability: np.ndarray, autoencoded: np.ndarray, liked: np.ndarray) -> tuple[float, float, float]:
    """Weights of logit(probability), `autoencoded` and 1 in a logistic regression of `liked`."""
    p = np.clip(probability, EPSILON, 1 - EPSILON)
    x = np.stack([np.log(p / (1 - p)), autoencoded, np.ones_like(p)], axis=1).astype(np.float64)
    w = np.array([1.0, 0.0, 0.0])
    for _ in range(NEWTON_STEPS):
        q = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (q - liked) + RIDGE * w
        hessian = (x * (q * (1 - q))[:, None]).T @ x + RIDGE * np.eye(3)
        w -= np.linalg.solve(hessian, gradient)
    return tuple(float(v) for v in w)


class AutoencoderBlend(tf_keras.layers.Layer):
    """The autoencoder's tables and the Blend, as non-trainable weights saved with the model.

    `call(outputs, user, item)` returns `outputs` ({head: [batch, 1]}) with the
    factorised head `regression` and every head in `binary` blended on pairs
    whose IDs both had training ratings; other pairs and heads pass unchanged.
    Until `assign` the known sets are empty, so nothing is blended (the
    factorised model trains and validates as it would alone).
    """

    def __init__(self, num_users: int, num_items: int, units: int, regression: str, binary: tuple[str, ...]):
        super().__init__(name="item_autoencoder")
        self.regression, self.binary = regression, binary

        def table(name, shape, dtype=tf.float32):
            return self.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False)

        self.item_codes = table("item_codes", [num_items, units])
        self.decoder = table("decoder", [num_users, units])
        self.decoder_bias = table("decoder_bias", [num_users])
        self.known_users = table("known_users", [num_users], tf.bool)
        self.known_items = table("known_items", [num_items], tf.bool)
        self.alpha = table("alpha", [])
        # One row of logistic weights per binary head; zeros until assigned.
        self.like = table("like", [len(binary), 3])

    def assign(self, autoencoder: Autoencoder, blend: Blend) -> None:
        """Loads a trained autoencoder and its blend."""
        self.item_codes.assign(autoencoder.item_codes)
        self.decoder.assign(autoencoder.decoder)
        self.decoder_bias.assign(autoencoder.decoder_bias)
        self.known_users.assign(autoencoder.known_users)
        self.known_items.assign(autoencoder.known_items)
        self.alpha.assign(blend.alpha)
        self.like.assign([blend.like.get(name, (1.0, 0.0, 0.0)) for name in self.binary])

    def call(self, outputs, user, item):
        pair = estimate(self.item_codes, self.decoder, self.decoder_bias, user, item)[:, None]
        known = (tf.gather(self.known_users, user) & tf.gather(self.known_items, item))[:, None]
        blended = dict(outputs)
        factorised = outputs[self.regression]
        blended[self.regression] = tf.where(known, factorised + self.alpha * (pair - factorised), factorised)
        for name, like in zip(self.binary, tf.unstack(self.like)):
            p = tf.clip_by_value(outputs[name], EPSILON, 1 - EPSILON)
            logit = like[0] * tf.math.log(p / (1 - p)) + like[1] * pair + like[2]
            blended[name] = tf.where(known, tf.sigmoid(logit), outputs[name])
        return blended
