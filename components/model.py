"""The multi-task recommender: shared ID embeddings, two heads.

Plain tf_keras code with no TFX dependency, so it can be built, trained and
tested on its own. The Trainer module (`components.trainer`) adapts it to TFX.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from components import features
from components.autoencoder import AutoencoderBlend
from components.choices import Optimizer
from components.heads import BINARY, HEADS, REGRESSION, BaseRate, Head
from components.heads import NAMES as HEAD_NAMES
from components.lazy_adam import LazyAdam
from components.model_config import ModelConfig

OPTIMIZERS = {Optimizer.ADAM: tf_keras.optimizers.Adam, Optimizer.LAZY_ADAM: LazyAdam}


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the model needs to know about its training examples before fitting.

    `users`, `items`: int64 vocabulary indices of every training example (in
    the same order); `labels`: each head's label of every training example.
    """

    users: np.ndarray
    items: np.ndarray
    labels: Mapping[str, np.ndarray]

    @property
    def label_means(self) -> dict[str, float]:
        """Each head's mean training label."""
        return {head: float(np.mean(values, dtype=np.float64)) for head, values in self.labels.items()}

    @classmethod
    def from_batches(cls, batches) -> TrainingData:
        """From one pass of (inputs, labels) batches, as `components.trainer.batches` makes them."""
        columns: dict[str, list[np.ndarray]] = {}
        label_names: list[str] = []
        for inputs, batch_labels in batches:
            label_names = list(batch_labels)
            for name, values in {**inputs, **batch_labels}.items():
                columns.setdefault(name, []).append(np.asarray(values))
        if not columns:
            raise ValueError("the training data is empty")
        return cls.from_columns({name: np.concatenate(parts) for name, parts in columns.items()}, label_names)

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], label_names: Iterable[str] = HEAD_NAMES) -> TrainingData:
        """From every training row's transformed columns: the ID inputs and the label of each of `label_names`."""
        users = np.asarray(columns[features.transformed_name(features.USER_ID)]).ravel().astype(np.int64)
        if not len(users):
            raise ValueError("the training data is empty")
        return cls(
            users=users,
            items=np.asarray(columns[features.transformed_name(features.ITEM_ID)]).ravel().astype(np.int64),
            labels={head: np.asarray(columns[head], np.float32).ravel() for head in label_names},
        )


class MultiTaskRecommender(tf_keras.Model):
    """Shared user and item embeddings feeding shared hidden layers and one output per head.

    Input: a dict with `transformed_name(USER_ID)` and `transformed_name(ITEM_ID)`,
    int64 vocabulary indices of shape [batch, 1] or [batch].
    Output: {head name: [batch, 1]} for each of `heads` (components.heads), with
    its kind's activation: `{'binary_rating': sigmoid, 'purchase_probability': linear}`
    for the declared heads.
    Each head reads the last hidden layer and, as configured, the user and item
    biases and the embeddings' dot product. With `factorized_purchase_head`, the
    first regression head is the factorised estimate and every other head also
    reads it; see ModelConfig for that, implicit feedback and the autoencoder,
    whose blend applies outside training once the trainer has assigned it
    (`components.autoencoder.AutoencoderBlend`). `training` summarises the training
    data (see TrainingData); its interactions are required with implicit
    feedback, its label means with base-rate initialisation.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: ModelConfig,
        training: TrainingData | None = None,
        heads: tuple[Head, ...] = HEADS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.factorized_head = next((h.name for h in heads if h.kind == REGRESSION), None)
        if config.factorized_purchase_head and self.factorized_head is None:
            raise ValueError("factorized_purchase_head needs a regression head")
        self.num_users = num_users
        self.num_items = num_items
        self.l2 = config.l2
        self.factorized = config.factorized_purchase_head
        self.use_dot_product = config.use_dot_product
        # (share, first OOV index, table rows) per ID; the training rows use
        # exactly the vocabulary 0..V-1 (Transform analyses them), the rest are OOV buckets.
        self.id_dropout = []
        for rate, ids, rows in (
            (config.user_id_dropout, "users", num_users), (config.item_id_dropout, "items", num_items)
        ):
            if rate and training is None:
                raise ValueError("ID dropout needs the training data's IDs")
            known = int(getattr(training, ids).max()) + 1 if rate else rows
            if rate and known >= rows:
                raise ValueError(f"ID dropout needs OOV buckets: the training {ids} use all {rows} rows")
            self.id_dropout.append((rate, known, rows))

        seeds = itertools.count(config.seed)

        def embedding(rows: int, dim: int, name: str, initializer=None) -> tf_keras.layers.Embedding:
            if initializer is None and config.embedding_init_stddev:
                # One seeded initializer per table: a shared one would repeat its values.
                initializer = tf_keras.initializers.RandomNormal(
                    stddev=config.embedding_init_stddev, seed=next(seeds)
                )
            return tf_keras.layers.Embedding(
                rows, dim, embeddings_initializer=initializer or "uniform", name=name
            )

        dim = config.embedding_dim
        self.user_embedding = embedding(num_users, dim, "user_embedding")
        self.item_embedding = embedding(num_items, dim, "item_embedding")
        self.biases = (
            [embedding(num_users, 1, "user_bias", "zeros"), embedding(num_items, 1, "item_bias", "zeros")]
            if config.use_bias_terms else []
        )
        self.implicit = []
        if config.implicit_feedback:
            if training is None:
                raise ValueError("implicit_feedback needs the training data's interactions")
            users, items = training.users, training.items
            weights = None
            if config.implicit_feedback_ratings:
                if self.factorized_head is None:
                    raise ValueError("implicit_feedback_ratings needs a regression head")
                weights = training.labels[self.factorized_head]
            # (who interacted, with whom, their embeddings, how many rows they index)
            self.implicit = [
                _Neighbours(users, items, weights, num_users, embedding(num_items, dim, "user_history"),
                            "items_of_user", config),
                _Neighbours(items, users, weights, num_items, embedding(num_users, dim, "item_history"),
                            "users_of_item", config),
            ]

        def stack(units: tuple[int, ...], prefix: str) -> list[tf_keras.layers.Layer]:
            layers = []
            for i, width in enumerate(units):
                layers.append(tf_keras.layers.Dense(width, activation="relu", name=f"{prefix}_{i}"))
                if config.dropout:
                    layers.append(tf_keras.layers.Dropout(config.dropout, name=f"{prefix}_dropout_{i}"))
            return layers

        # One shared stack of hidden layers, or with MMoE one per expert and a gate per head.
        self.hidden = stack(config.hidden_units, "shared_hidden") if not config.experts else []
        self.experts = [stack(config.hidden_units, f"expert_{e}_hidden") for e in range(config.experts)]
        self.gates = {
            head.name: tf_keras.layers.Dense(config.experts, activation="softmax", name=f"{head.name}_gate")
            for head in heads
        } if config.experts else {}
        self.towers = {
            head.name: stack(config.tower_units, f"{head.name}_tower") for head in heads
        } if config.tower_units else {}
        if config.base_rate_init and training is None:
            raise ValueError("base_rate_init needs the training data's label means")
        self.heads = {
            head.name: tf_keras.layers.Dense(
                1, activation=head.kind.activation, name=head.name,
                bias_initializer=_base_rate(head, training) if config.base_rate_init else "zeros",
            )
            for head in heads
        }
        # Empty until the trainer assigns a fitted autoencoder and blend.
        self.autoencoder = AutoencoderBlend(
            num_users, num_items, config.autoencoder_units, self.factorized_head,
            tuple(head.name for head in heads if head.kind == BINARY),
            max_users=config.autoencoder_max_users, max_items=config.autoencoder_max_items,
        ) if config.autoencoder_units else None

    def call(self, inputs, training=None):
        user = tf.reshape(inputs[features.transformed_name(features.USER_ID)], [-1])
        item = tf.reshape(inputs[features.transformed_name(features.ITEM_ID)], [-1])
        if training:
            user, item = (_drop_ids(ids, *spec) for ids, spec in zip((user, item), self.id_dropout))
        user_vector, item_vector = self.user_embedding(user), self.item_embedding(item)
        if self.implicit:
            user_vector += self.implicit[0](user, item)
            item_vector += self.implicit[1](item, user)
        biases = [bias(ids) for bias, ids in zip(self.biases, (user, item))]
        if training and self.l2:
            used = [user_vector, item_vector, *biases]
            self.add_loss(self.l2 * tf.reduce_mean(sum(tf.reduce_sum(v * v, axis=-1) for v in used)))
        dot = (
            [tf.reduce_sum(user_vector * item_vector, axis=-1, keepdims=True)]
            if self.use_dot_product else []
        )
        # The default (factorised) model has no layers to feed: no concatenation on its hot path.
        hidden = (
            self._hidden_per_head(tf.concat([user_vector, item_vector], axis=-1), training)
            if self.hidden or self.experts or self.towers else {}
        )
        outputs = self._heads_of(hidden, dot, biases)
        # Training never blends (nothing is known to the blend while the factorised model trains).
        if self.autoencoder is not None and not training:
            outputs = self.autoencoder(outputs, user, item)
        return outputs

    def _hidden_per_head(self, x: tf.Tensor, training) -> dict[str, tf.Tensor]:
        """What each head reads from the concatenated embeddings `x`: the shared hidden
        layers' output (or each head's gated mixture of the experts), then its tower.
        Empty for a model with none of these (only the factorised head allows that)."""

        def run(layers: list, value: tf.Tensor) -> tf.Tensor:
            for layer in layers:
                value = layer(value, training=training)
            return value

        if self.experts:
            experts = tf.stack([run(expert, x) for expert in self.experts], axis=1)  # [batch, experts, units]
            hidden = {
                name: tf.reduce_sum(gate(x)[:, :, None] * experts, axis=1) for name, gate in self.gates.items()
            }
        elif self.hidden or self.towers:
            shared = run(self.hidden, x)
            hidden = {name: shared for name in self.heads}
        else:
            return {}
        return {name: run(self.towers.get(name, []), value) for name, value in hidden.items()}

    @property
    def separable(self) -> bool:
        """Whether `score_grid` can score this model: the factorised head, no hidden layers
        (shared, experts or towers) and no history sums (which leave the scored pair
        out), so a pair's score is a user side met by an item side (the autoencoder's
        estimate is one too, and its blend works cell by cell)."""
        return self.factorized and not (self.hidden or self.experts or self.towers or self.implicit)

    def score_grid(self, users: tf.Tensor, items: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every head's prediction for every (user, item) pair: {head: [len(users), len(items)]}.

        The predictions `call` gives those pairs (to float rounding), from one
        embedding lookup per user and per item and one matrix product rather
        than one lookup per pair. Needs `separable`.
        """
        if not self.separable:
            raise ValueError("score_grid needs a factorised model without hidden layers or implicit feedback")
        if not all(head.built for head in self.heads.values()):
            raise ValueError("score_grid reads the heads' weights: call or train the model first")
        users, items = tf.reshape(users, [-1]), tf.reshape(items, [-1])
        user_vector, item_vector = self.user_embedding(users), self.item_embedding(items)
        user_bias = self.biases[0](users)  # [users, 1]
        item_bias = tf.reshape(self.biases[1](items), [1, -1])  # [1, items]
        # With no hidden layers the factorised head's Dense is just the global mean mu.
        mu = self.heads[self.factorized_head](tf.zeros([1, 1]))
        dot = tf.matmul(user_vector, item_vector, transpose_b=True)
        estimate = dot + (mu + user_bias) + item_bias  # mu + b_user + b_item + u . v
        out = {}
        for name, head in self.heads.items():
            if name == self.factorized_head:
                out[name] = estimate
                continue
            # The head's Dense over [estimate, u . v, b_user, b_item] (`_heads_of`'s order) is
            # linear before its activation: each input's weight folds into the dot product's,
            # the user term or the item term, so each head costs a few passes over the grid.
            w = head.kernel[:, 0]
            user_term = w[0] * (mu + user_bias) + w[2] * user_bias + head.bias
            out[name] = head.activation((w[0] + w[1]) * dot + user_term + (w[0] + w[3]) * item_bias)
        return out if self.autoencoder is None else self.autoencoder.grid(out, users, items)

    def _heads_of(self, hidden: Mapping[str, tf.Tensor], dot: list, biases: list) -> dict[str, tf.Tensor]:
        """Each head's output from its hidden representation (`_hidden_per_head`), the dot
        product and the biases (any leading shape)."""

        def own(name: str) -> list:
            return [hidden[name]] if hidden else []

        if not self.factorized:
            return {name: head(tf.concat(own(name) + dot + biases, axis=-1)) for name, head in self.heads.items()}
        factorized_head = self.heads[self.factorized_head]
        # With no hidden layers the head's Dense is just the global mean mu.
        mlp_term = factorized_head(hidden[self.factorized_head]) if hidden else factorized_head(tf.zeros_like(dot[0]))
        estimate = mlp_term + dot[0] + biases[0] + biases[1]
        return {
            name: estimate if name == self.factorized_head else head(tf.concat(own(name) + [estimate] + dot + biases, axis=-1))
            for name, head in self.heads.items()
        }


def _base_rate(head: Head, training: TrainingData) -> tf_keras.initializers.Initializer:
    """A head's bias start: its training labels' mean, as the kind's activation needs it."""
    mean = training.label_means[head.name]
    if head.kind.base_rate == BaseRate.LOGIT:
        mean = float(np.clip(mean, 1e-4, 1 - 1e-4))
        return tf_keras.initializers.Constant(np.log(mean / (1 - mean)))
    return tf_keras.initializers.Constant(mean)


def _drop_ids(ids: tf.Tensor, rate: float, known: int, rows: int) -> tf.Tensor:
    """`ids` with a `rate` share replaced by an OOV bucket (known..rows-1), chosen by the ID."""
    if not rate:
        return ids
    dropped = tf.random.uniform(tf.shape(ids)) < rate
    return tf.where(dropped, known + ids % (rows - known), ids)


class _Neighbours(tf_keras.layers.Layer):
    """Per row, 1/sqrt(n) times the (weighted) sum of the embeddings of its n training partners.

    A row with more than `cap` partners keeps a seeded sample of `cap`. The
    partner lists (and their weights) are constant, non-trainable weights, so
    they are saved with the model; a row with no partners (an unseen ID) gets
    zeros. With `implicit_leave_one_out`, the pair being scored is left out of
    the sum: a training example then sees what an unseen pair sees, the other
    interactions only (with rating weights it would otherwise read its own label).
    """

    def __init__(self, rows: np.ndarray, partners: np.ndarray, weights: np.ndarray | None, num_rows: int,
                 embedding: tf_keras.layers.Embedding, name: str, config: ModelConfig):
        super().__init__(name=name)
        cap = config.implicit_history_cap
        self.leave_one_out = config.implicit_leave_one_out
        # Sorted by row, then by a random key: each row's first `cap` are a uniform sample.
        order = np.lexsort((np.random.default_rng(config.seed).random(len(rows)), rows))
        counts = np.bincount(rows, minlength=num_rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        kept = np.arange(len(rows)) - starts[rows[order]] < cap
        self.row_splits = tf.Variable(
            np.concatenate([[0], np.cumsum(np.minimum(counts, cap))]).astype(np.int64),
            trainable=False, name="row_splits",
        )
        self.partners = tf.Variable(partners[order][kept], trainable=False, name="partners")
        self.partner_weights = None if weights is None else tf.Variable(
            weights[order][kept].astype(np.float32), trainable=False, name="partner_weights"
        )
        self.embedding = embedding

    def call(self, ids, other=None):
        """The sums for rows `ids`; `other` is each scored pair's other side (left out with leave-one-out)."""
        lists = tf.gather(tf.RaggedTensor.from_row_splits(self.partners, self.row_splits), ids)
        count = tf.cast(lists.row_lengths(), tf.float32)
        scale = None
        if self.partner_weights is not None:
            scale = tf.gather(
                tf.RaggedTensor.from_row_splits(self.partner_weights, self.row_splits), ids
            ).flat_values
        if self.leave_one_out and other is not None:
            own = tf.repeat(tf.cast(other, lists.dtype), lists.row_lengths())
            kept = tf.cast(lists.flat_values != own, tf.float32)
            scale = kept if scale is None else scale * kept
            count = tf.reduce_sum(lists.with_flat_values(kept), axis=1)
        vectors = self.embedding(lists.flat_values)
        if scale is not None:
            vectors *= scale[:, None]
        summed = tf.reduce_sum(lists.with_flat_values(vectors), axis=1)
        return summed * tf.math.rsqrt(tf.maximum(count, 1.0))[:, None]


def build_model(
    num_users: int,
    num_items: int,
    config: ModelConfig,
    training: TrainingData | None = None,
    heads: tuple[Head, ...] = HEADS,
) -> MultiTaskRecommender:
    """Builds and compiles the model, one output per head; `num_*` count vocabulary plus OOV buckets.

    `training` is needed with `config.implicit_feedback` or `config.base_rate_init`.
    """
    loss_weights = config.weights_for(heads)
    tf_keras.utils.set_random_seed(config.seed)
    model = MultiTaskRecommender(num_users, num_items, config, training, heads)
    model.compile(
        optimizer=OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate),
        loss={head.name: getattr(tf_keras.losses, head.kind.keras_loss)() for head in heads},
        loss_weights=loss_weights,
        metrics={
            head.name: [getattr(tf_keras.metrics, head.kind.keras_metric)(name=head.kind.keras_metric_name)]
            for head in heads
        },
    )
    return model


class _EpochProgress(tf_keras.callbacks.Callback):
    """Logs "<label> i/n" and the losses to `features.PROGRESS_LOGGER` after each epoch."""

    def __init__(self, epochs: int, label: str):
        super().__init__()
        self.epochs, self.label = epochs, label

    def on_epoch_end(self, epoch, logs=None):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "val_loss"))
        logging.getLogger(features.PROGRESS_LOGGER).info("%s %d/%d: %s", self.label, epoch + 1, self.epochs, losses)


def train(
    model: MultiTaskRecommender,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset | None,
    config: ModelConfig,
    verbose: int = 2,
    label: str = "epoch",
) -> tf_keras.callbacks.History:
    """Fits `model` on (inputs, labels) batches, validating each epoch (Keras `verbose`);
    progress is logged as "<label> i/n".

    With `config.early_stopping_patience`, stops once the validation loss has not
    improved for that many epochs and restores the best epoch's weights.
    Without `validation_data` (a refit), trains all `config.epochs` and must
    not be asked to stop early.
    """
    callbacks = [_EpochProgress(config.epochs, label)]
    if config.early_stopping_patience is not None:
        if validation_data is None:
            raise ValueError("early stopping needs validation data")
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
        ))
    return model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=verbose,
    )


def best_epoch(history: tf_keras.callbacks.History) -> int:
    """The epoch (1-based) whose weights early stopping kept.

    Keras's own rule: the first epoch whose validation loss beats every earlier
    one; a NaN loss never does (np.argmin would pick it), and when none is a
    number the first epoch's weights are the ones kept.
    """
    best, kept = np.inf, 0
    for epoch, loss in enumerate(history.history["val_loss"]):
        if loss < best:
            best, kept = loss, epoch
    return kept + 1
