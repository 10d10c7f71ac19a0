"""An item-based autoencoder (I-AutoRec) beside the factorised model, and the blend of the two.

Plain TensorFlow and numpy functions, no TFX. The autoencoder reads each
item's training ratings (its users' regression labels) and reconstructs them
through one sigmoid layer; its reconstruction at a user is its estimate of that
pair. Once trained, an item's hidden code depends only on the training rows,
so the model keeps the codes and the decoder, not the ratings: an estimate is
a dot product of an item code and a user's decoder row, and the cost of
serving grows with the IDs, not with the rows. It covers at most `max_users`
users and `max_items` items (those with the most training pairs, where there
are more), so each training step and the tables it leaves cost the same
however many rows and IDs the data has.

Two different model families err differently, so the pipeline blends them:
the blend's few weights are fitted on the validation rows (see `fit_blend`).
Each weight may vary with the pair's support, how many training pairs its user
and its item have (feature-weighted linear stacking, Sill et al. 2009): the
autoencoder's estimate deserves more trust for a well-rated item than for a
rarely-rated one. Such weights need many pairs to fit, so they replace one
weight per input only where the pairs are many, and cross-validation on the
same pairs decides whether each head blends at all.
"""

from __future__ import annotations

import dataclasses
import enum
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
# Probabilities are clipped this far from 0 and 1 before their logit is taken.
EPSILON = 1e-6
# A pair's support features: 1, log(1 + its user's pairs), log(1 + its item's pairs).
SUPPORT_FEATURES = 3
# Folds of the cross-validation that decides whether each head blends at all;
# the folds are a fixed permutation of the pairs, so the choice is reproducible.
FOLDS = 5
# Weights by support need many pairs: a head fits them only with at least this
# many validation pairs per weight, else one weight per input (README: the blend).
MIN_PAIRS_PER_WEIGHT = 500

Weights = tuple[float, float, float]


class BlendForm(enum.StrEnum):
    """How one head's blend weights are shaped, simplest first."""

    # The head passes unchanged: the autoencoder does not help it.
    NONE = "none"
    # One weight per input, whatever the pair's support.
    FLAT = "flat"
    # Every weight linear in the pair's support features.
    BY_SUPPORT = "by_support"


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """A trained autoencoder, as the model carries it.

    `user_rows` [num_users], `item_rows` [num_items]: each ID's row in the
    tables, -1 for an ID that trained nothing (no training rating, or not
    covered). `user_pairs` [num_users], `item_pairs` [num_items]: how many
    distinct pairs of each ID trained it (0 where its row is -1). `item_codes` [covered items, units], `decoder` [covered users,
    units], `decoder_bias` [covered users]: the estimate for (user, item) is
    item_codes[item_rows[item]] . decoder[user_rows[user]] + decoder_bias[user_rows[user]],
    meaningful only where both rows are >= 0. `steps`: the Adam steps whose
    weights these are.
    """

    item_codes: np.ndarray
    decoder: np.ndarray
    decoder_bias: np.ndarray
    user_rows: np.ndarray
    item_rows: np.ndarray
    user_pairs: np.ndarray
    item_pairs: np.ndarray
    steps: int

    @property
    def known_users(self) -> np.ndarray:
        """[num_users] bool: which users trained the autoencoder."""
        return self.user_rows >= 0

    @property
    def known_items(self) -> np.ndarray:
        """[num_items] bool: which items trained the autoencoder."""
        return self.item_rows >= 0

    @property
    def user_support(self) -> np.ndarray:
        """[num_users]: each user's support feature, log(1 + its pairs)."""
        return np.log1p(self.user_pairs)

    @property
    def item_support(self) -> np.ndarray:
        """[num_items]: each item's support feature, log(1 + its pairs)."""
        return np.log1p(self.item_pairs)


@dataclasses.dataclass(frozen=True)
class Blend:
    """How the model's heads combine with the autoencoder's estimate `a` on a known pair.

    Every weight is a vector w over the pair's support features s (`support`)
    and counts as the dot product w.s. Regression: m + (alpha.s) (a - m) +
    shift.s, for the factorised estimate m. Each binary head h:
    sigmoid((like[h][0].s) logit(p) + (like[h][1].s) a + like[h][2].s), for
    its probability p; a head `like` does not name passes unchanged. Weights
    on the first feature only (the constant) make a blend that ignores support.
    `forms` names the BlendForm each head's weights took (a record for the
    logs and the tests; the weights alone define the blend). `Blend()`
    changes nothing.
    """

    alpha: Weights = (0.0, 0.0, 0.0)
    shift: Weights = (0.0, 0.0, 0.0)
    like: Mapping[str, tuple[Weights, Weights, Weights]] = dataclasses.field(default_factory=dict)
    forms: Mapping[str, BlendForm] = dataclasses.field(default_factory=dict)


def _pairs(users: np.ndarray, items: np.ndarray, labels: np.ndarray, num_users: int):
    """(item, user, label) once per distinct pair (a repeated pair's labels averaged)."""
    key = items.astype(np.int64) * num_users + users.astype(np.int64)
    unique, inverse = np.unique(key, return_inverse=True)
    mean = np.bincount(inverse, weights=labels) / np.bincount(inverse)
    return unique // num_users, unique % num_users, mean.astype(np.float32)


def covered_rows(counts: np.ndarray, cap: int) -> np.ndarray:
    """Each ID's row in tables of at most `cap` rows, given its training pairs `counts`; -1 for none.

    Every ID keeps its own index when there are at most `cap` of them (so the
    tables do not depend on the cap until it binds); otherwise the `cap` IDs
    with the most pairs (ties to the lower ID) take rows 0..cap-1 in ID order.
    """
    if len(counts) <= cap:
        return np.arange(len(counts))
    chosen = np.sort(np.argsort(-counts, kind="stable")[:cap])
    rows = np.full(len(counts), -1, np.int64)
    rows[chosen] = np.arange(cap)
    return rows


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
    max_users: int,
    max_items: int,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Autoencoder:
    """An item autoencoder fitted on the pairs (`users`, `items`) with regression `labels`.

    Minimises the squared reconstruction error over the observed pairs plus
    `l2` / 2 times the squared weights, with full-batch Adam (step size
    `learning_rate`) seeded by `seed`.
    With `validation` (users, items, labels), stops once the validation RMSE
    has not improved for PATIENCE steps and keeps the best checked weights;
    without, runs `max_steps`. It learns from the pairs of at most `max_users`
    users and `max_items` items (`covered_rows`); each step costs covered items
    x covered users x `units`, and the fit holds two such matrices.
    """
    item_of, user_of, value = _pairs(users, items, labels, num_users)
    user_slot = covered_rows(np.bincount(user_of, minlength=num_users), max_users)
    item_slot = covered_rows(np.bincount(item_of, minlength=num_items), max_items)
    kept = (user_slot[user_of] >= 0) & (item_slot[item_of] >= 0)
    item_of, user_of, value = item_slot[item_of[kept]], user_slot[user_of[kept]], value[kept]
    num_rows_users, num_rows_items = min(num_users, max_users), min(num_items, max_items)
    # The autoencoder works on unit-variance labels (its l2 and the sigmoid's
    # range then mean the same whatever the labels' scale) and answers on theirs.
    scale = (float(np.std(value)) if len(value) else 0.0) or 1.0
    value = value / scale
    # Dense: two matrix products per step ran faster than sparse gathers on ML-100K.
    ratings = np.zeros([num_rows_items, num_rows_users], np.float32)
    ratings[item_of, user_of] = value
    observed = np.zeros([num_rows_items, num_rows_users], np.float32)
    observed[item_of, user_of] = 1.0
    ratings, observed = tf.constant(ratings), tf.constant(observed)
    tf_keras.utils.set_random_seed(seed)
    init = tf_keras.initializers.GlorotUniform(seed=seed)
    encoder = tf.Variable(init((num_rows_users, units)))
    encoder_bias = tf.Variable(tf.zeros([units]))
    decoder = tf.Variable(init((num_rows_users, units)))
    decoder_bias = tf.Variable(tf.zeros([num_rows_users]))
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
    def rmse(user_row, item_row, label):
        error = label - estimate(codes(), decoder, decoder_bias, user_row, item_row)
        return tf.sqrt(tf.reduce_mean(error * error))

    user_rows = np.where(np.isin(user_slot, user_of), user_slot, -1)
    item_rows = np.where(np.isin(item_slot, item_of), item_slot, -1)
    # Pairs per table row, read back per ID (an ID without a row: 0).
    user_pairs = np.where(user_rows >= 0, np.bincount(user_of, minlength=num_rows_users)[user_rows], 0)
    item_pairs = np.where(item_rows >= 0, np.bincount(item_of, minlength=num_rows_items)[item_rows], 0)
    if validation is not None:
        v_users, v_items, v_labels = validation
        v_user_rows, v_item_rows = user_rows[v_users], item_rows[v_items]
        scored = (v_user_rows >= 0) & (v_item_rows >= 0)
        v_users, v_items, v_labels = (
            tf.constant(v_user_rows[scored]), tf.constant(v_item_rows[scored]),
            tf.constant(v_labels[scored] / scale, tf.float32),
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
        user_rows=user_rows,
        item_rows=item_rows,
        user_pairs=user_pairs,
        item_pairs=item_pairs,
        steps=best_step if validation is not None else max_steps,
    )


def estimate(item_codes, decoder, decoder_bias, user_row, item_row) -> tf.Tensor:
    """The estimate of each (user_row[k], item_row[k]) pair of table rows: [len(user_row)]."""
    return (
        tf.reduce_sum(tf.gather(item_codes, item_row) * tf.gather(decoder, user_row), axis=-1)
        + tf.gather(decoder_bias, user_row)
    )


def estimates(autoencoder: Autoencoder, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The autoencoder's estimate of each (user, item) pair of IDs (meaningful where both are known)."""
    user_row, item_row = np.maximum(autoencoder.user_rows[users], 0), np.maximum(autoencoder.item_rows[items], 0)
    return estimate(autoencoder.item_codes, autoencoder.decoder, autoencoder.decoder_bias, user_row, item_row).numpy()


def support(autoencoder: Autoencoder, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[len(users), SUPPORT_FEATURES]: each pair's (1, log(1 + user's pairs), log(1 + item's pairs))."""
    return np.stack([np.ones(len(users)), autoencoder.user_support[users], autoencoder.item_support[items]], axis=1)


def fit_blend(
    factorised: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    autoencoded: np.ndarray,
    label: np.ndarray,
    liked: Mapping[str, np.ndarray],
    support_features: np.ndarray | None = None,
    *,
    regression: str = "regression",
) -> Blend:
    """The Blend that best combines, on known validation pairs, the factorised estimate
    and each binary head's probability with the autoencoder's estimate.

    Each head's blend takes one form. By support, with `support_features`
    ([pairs, SUPPORT_FEATURES], from `support`) and at least
    MIN_PAIRS_PER_WEIGHT pairs per weight: the regression's `alpha` and
    `shift` by least squares of `label` - factorised on (a - m) s and s, a
    binary head's `like[h]` by logistic regression of `liked[h]` (0/1) on
    logit(p) s, a s and s. Else flat: `alpha` one least-squares weight clipped
    to [0, 1] and no shift, `like[h]` a logistic regression on (logit(p), a,
    1). Both with a small ridge. A head blends only if that form, fitted on
    FOLDS - 1 folds of the pairs, has a lower error on the held-out fold than
    the head alone, summed over the folds (squared error for the regression,
    log loss for a binary head); the weights are then refitted on every pair.
    `forms` records each head's outcome (NONE where it does not blend), the
    regression's under `regression`. With fewer pairs than FOLDS, `Blend()`.
    """
    if len(label) < FOLDS:
        return Blend()
    by_support = support_features is not None
    s = support_features if by_support else np.ones([len(label), 1])
    fold = np.random.default_rng(0).permutation(len(label)) % FOLDS
    gap = autoencoded - factorised
    supported = np.concatenate([gap[:, None] * s, s], axis=1)

    def enough(weights):  # whether the pairs can fit `weights` weights per support feature, by support
        return by_support and len(label) >= MIN_PAIRS_PER_WEIGHT * weights * SUPPORT_FEATURES

    def flat_alpha(rows):
        alpha = np.dot(gap[rows], label[rows] - factorised[rows]) / max(np.dot(gap[rows], gap[rows]), EPSILON)
        return np.clip([alpha], 0.0, 1.0), np.zeros(1)

    def support_alpha(rows):
        x = supported[rows]
        w = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ (label[rows] - factorised[rows]))
        return w[:SUPPORT_FEATURES], w[SUPPORT_FEATURES:]

    def squared_error(weights, rows):
        alpha, shift = (_weights(w) for w in weights)
        x = _padded(s[rows])
        return np.sum((factorised[rows] + (x @ alpha) * gap[rows] + x @ shift - label[rows]) ** 2)

    # Weights by support for alpha and shift, where the pairs are enough.
    blended = {BlendForm.BY_SUPPORT: support_alpha} if enough(2) else {BlendForm.FLAT: flat_alpha}
    form, (alpha, shift) = _choose(
        {BlendForm.NONE: lambda rows: (np.zeros(1), np.zeros(1)), **blended}, squared_error, fold
    )
    forms, like = {regression: form}, {}
    for name, probability in probabilities.items():
        p = np.clip(probability, EPSILON, 1 - EPSILON)
        inputs = np.stack([np.log(p / (1 - p)), autoencoded, np.ones_like(p)], axis=1)
        y = liked[name]

        def logistic(columns, inputs=inputs, y=y):
            return lambda rows: _logistic(inputs[rows], y[rows], s[rows, :columns])

        def log_loss(weights, rows, inputs=inputs, y=y):
            logit = np.sum(inputs[rows] * (_padded(s[rows]) @ np.array(weights).T), axis=1)
            return np.sum(np.logaddexp(0.0, np.where(y[rows] > 0.5, -logit, logit)))

        # Weights by support for logit(p), a and 1, where the pairs are enough.
        blended = {BlendForm.BY_SUPPORT: logistic(SUPPORT_FEATURES)} if enough(3) else {BlendForm.FLAT: logistic(1)}
        forms[name], like[name] = _choose({BlendForm.NONE: lambda rows: _UNCHANGED, **blended}, log_loss, fold)
    return Blend(alpha=_weights(alpha), shift=_weights(shift), like=like, forms=forms)


def _choose(forms: Mapping[BlendForm, object], loss, fold: np.ndarray):
    """(form, its weights fitted on every row): the form of `forms` (simplest first; each maps a
    boolean row mask to weights) with the lowest `loss(weights, rows)` summed over held-out folds."""
    every = np.ones(len(fold), bool)
    scores = [sum(loss(fit(fold != k), fold == k) for k in range(FOLDS)) for fit in forms.values()]
    form, fit = list(forms.items())[int(np.argmin(scores))]  # the first of equal scores: the simplest
    return form, fit(every)


def _weights(weights: np.ndarray) -> Weights:
    """Weights on the first support features, as Blend holds them: on every feature (the rest 0)."""
    return tuple(float(v) for v in np.concatenate([weights, np.zeros(SUPPORT_FEATURES - len(weights))]))


def _padded(s: np.ndarray) -> np.ndarray:
    """Support features `s` on their first columns, as every weight reads them: on every feature (the rest 0)."""
    return np.pad(s, ((0, 0), (0, SUPPORT_FEATURES - s.shape[1])))


# The like weights that leave a head as it is: logit(p) at weight one.
_UNCHANGED = (_weights(np.ones(1)), _weights(np.zeros(1)), _weights(np.zeros(1)))


def _logistic(inputs: np.ndarray, liked: np.ndarray, s: np.ndarray) -> tuple[Weights, Weights, Weights]:
    """Weight vectors (over the columns of `s`, padded to every support feature) of
    each column of `inputs` (logit(p), a, 1) in a logistic regression of `liked`."""
    x = (inputs[:, :, None] * s[:, None, :]).reshape(len(inputs), -1).astype(np.float64)
    w = np.zeros(x.shape[1])
    w[0] = 1.0  # logit(p) at weight one on the constant: the head as it is
    for _ in range(NEWTON_STEPS):
        q = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (q - liked) + RIDGE * w
        hessian = (x * (q * (1 - q))[:, None]).T @ x + RIDGE * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return tuple(_weights(row) for row in w.reshape(3, s.shape[1]))


class AutoencoderBlend(tf_keras.layers.Layer):
    """The autoencoder's tables and the Blend, as non-trainable weights saved with the model.

    `call(outputs, user, item)` returns `outputs` ({head: [batch, 1]}) with the
    factorised head `regression` and every head in `binary` blended on pairs
    whose IDs both trained the autoencoder; other pairs and heads pass
    unchanged. `grid` does the same for every pair of a users x items grid.
    The tables hold at most `max_users` users and `max_items` items. Until
    `assign` no ID has a row, so nothing is blended (the factorised model
    trains and validates as it would alone).
    """

    def __init__(
        self, num_users: int, num_items: int, units: int, regression: str, binary: tuple[str, ...],
        *, max_users: int, max_items: int,
    ):
        super().__init__(name="item_autoencoder")
        self.regression, self.binary = regression, binary

        def table(name, shape, dtype=tf.float32, initializer="zeros"):
            return self.add_weight(name=name, shape=shape, dtype=dtype, initializer=initializer, trainable=False)

        self.item_codes = table("item_codes", [min(num_items, max_items), units])
        self.decoder = table("decoder", [min(num_users, max_users), units])
        self.decoder_bias = table("decoder_bias", [min(num_users, max_users)])
        no_row = tf_keras.initializers.Constant(-1)
        self.user_rows = table("user_rows", [num_users], tf.int64, no_row)
        self.item_rows = table("item_rows", [num_items], tf.int64, no_row)
        # Each ID's log(1 + pairs that trained it), its part of a pair's support features.
        self.user_support = table("user_support", [num_users])
        self.item_support = table("item_support", [num_items])
        self.alpha = table("alpha", [SUPPORT_FEATURES])
        self.shift = table("shift", [SUPPORT_FEATURES])
        # Per binary head, the weight vectors of logit(p), a and 1; zeros until assigned.
        self.like = table("like", [len(binary), 3, SUPPORT_FEATURES])

    def assign(self, autoencoder: Autoencoder, blend: Blend) -> None:
        """Loads a trained autoencoder (fitted with this layer's ID counts and caps, so its tables
        have this layer's shapes) and its blend."""
        self.item_codes.assign(autoencoder.item_codes)
        self.decoder.assign(autoencoder.decoder)
        self.decoder_bias.assign(autoencoder.decoder_bias)
        self.user_rows.assign(autoencoder.user_rows)
        self.item_rows.assign(autoencoder.item_rows)
        self.user_support.assign(autoencoder.user_support)
        self.item_support.assign(autoencoder.item_support)
        self.alpha.assign(blend.alpha)
        self.shift.assign(blend.shift)
        self.like.assign([blend.like.get(name, _UNCHANGED) for name in self.binary])

    def call(self, outputs, user, item):
        user_row, item_row = tf.gather(self.user_rows, user), tf.gather(self.item_rows, item)
        pair = estimate(
            self.item_codes, self.decoder, self.decoder_bias, tf.maximum(user_row, 0), tf.maximum(item_row, 0)
        )
        return self._blend(
            outputs, pair[:, None], ((user_row >= 0) & (item_row >= 0))[:, None],
            tf.gather(self.user_support, user)[:, None], tf.gather(self.item_support, item)[:, None],
        )

    def grid(self, outputs, users, items):
        """`outputs` ({head: [len(users), len(items)]}, every pair's prediction) blended as `call` blends each pair."""
        user_row, item_row = tf.gather(self.user_rows, users), tf.gather(self.item_rows, items)
        user_side = tf.maximum(user_row, 0)
        # One product with the covered item codes (at most max_items of them), then one column
        # per item: a catalogue larger than the tables costs a gather, not a row of codes per item.
        covered = tf.matmul(tf.gather(self.decoder, user_side), self.item_codes, transpose_b=True)
        pair = tf.gather(covered, tf.maximum(item_row, 0), axis=1) + tf.gather(self.decoder_bias, user_side)[:, None]
        return self._blend(
            outputs, pair, (user_row >= 0)[:, None] & (item_row >= 0)[None, :],
            tf.gather(self.user_support, users)[:, None], tf.gather(self.item_support, items)[None, :],
        )

    def _blend(self, outputs, pair, known, user_support, item_support):
        """`outputs` with the blended heads where `known`; the user's and the item's
        support broadcast to the shape of the other tensors."""

        def weight(w):  # w . s, for every pair
            return w[0] + w[1] * user_support + w[2] * item_support

        blended = dict(outputs)
        factorised = outputs[self.regression]
        mixed = factorised + weight(self.alpha) * (pair - factorised) + weight(self.shift)
        blended[self.regression] = tf.where(known, mixed, factorised)
        for name, like in zip(self.binary, tf.unstack(self.like)):
            p = tf.clip_by_value(outputs[name], EPSILON, 1 - EPSILON)
            logit = weight(like[0]) * tf.math.log(p / (1 - p)) + weight(like[1]) * pair + weight(like[2])
            blended[name] = tf.where(known, tf.sigmoid(logit), outputs[name])
        return blended
