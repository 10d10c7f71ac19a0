"""The multi-task recommender: shared ID embeddings, two heads.

Plain tf_keras code with no TFX dependency, so it can be built, trained and
tested on its own. The Trainer module (`components.trainer`) adapts it to TFX.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from typing import Any, Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from components import features
from components.lazy_adam import LazyAdam

OPTIMIZERS = {"adam": tf_keras.optimizers.Adam, "lazy_adam": LazyAdam}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the model and its training loop.

    The defaults are the configuration chosen on MovieLens 100K's temporal split
    (see benchmarks/model_quality.py and the README): biased matrix
    factorisation as the purchase head, the binary head reading its estimate,
    per-example L2, early stopping on the validation split.
    `original()` is the first design. `loss_weights` maps every head in
    `features.HEADS` to the weight of its loss in the total:
    total = sum(weight[head] * loss[head]).
    """

    embedding_dim: int = 32
    # Embeddings start N(0, stddev); None keeps Keras's uniform(-0.05, 0.05).
    # Small starts matter for the dot product, which multiplies two of them.
    embedding_init_stddev: float | None = 0.01
    hidden_units: tuple[int, ...] = ()
    learning_rate: float = 1e-3
    # "lazy_adam" updates only the embedding rows a batch uses (see
    # components.lazy_adam); "adam" is Keras's, whose every step touches
    # every row of every table.
    optimizer: str = "lazy_adam"
    batch_size: int = 256
    epochs: int = 40
    # Training steps per epoch; None means one full pass over the train split.
    steps_per_epoch: int | None = None
    seed: int = 42
    # Beside the shared MLP, the heads also see a per-user and a per-item bias
    # (the classic matrix-factorisation baseline terms) and the dot product of
    # the two embeddings (the factorisation interaction).
    use_bias_terms: bool = True
    use_dot_product: bool = True
    # The factorised purchase head predicts mu + b_user + b_item + dot (+ the
    # MLP's term) with every part at weight one, as matrix factorisation does;
    # the binary head then also reads that estimate. Needs bias terms and dot product.
    factorized_purchase_head: bool = True
    # SVD++-style implicit feedback: a user's vector also sums embeddings of
    # the items the user interacted with in training (scaled by 1/sqrt(count)),
    # and an item's vector those of its users. The model carries these
    # interactions, so serving needs only the two IDs.
    implicit_feedback: bool = False
    # At most this many partners per ID in those sums (a seeded sample of a
    # heavier ID's), so an example costs at most this many lookups however
    # active its user or popular its item.
    implicit_history_cap: int = 256
    # Start each head's bias at the training labels' base rate (the mean for the
    # purchase head, the like rate's logit for the binary head), so the first
    # epochs fit interactions rather than a global offset.
    base_rate_init: bool = True
    # L2 penalty on the embedding rows each example uses (as in SGD matrix
    # factorisation: frequent IDs are regularised more), averaged over the
    # batch; dropout after each hidden layer.
    l2: float = 2.0
    dropout: float = 0.0
    # ID dropout: during training, this share of rows sees its user (item) as
    # unknown, mapped to an out-of-vocabulary bucket, so the OOV rows learn
    # what an unseen ID should predict instead of keeping their initial values.
    user_id_dropout: float = 0.0
    item_id_dropout: float = 0.0
    # Stop when the validation loss has not improved for this many epochs and
    # keep the best epoch's weights; None trains all `epochs`.
    early_stopping_patience: int | None = 3
    # The purchase MSE on the [0, 1] scale is ~15 times smaller than the like
    # cross-entropy: unweighted, the shared embeddings would serve mostly the binary head.
    loss_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType(
            {features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 100.0}
        )
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(
            self, "loss_weights", types.MappingProxyType(dict(self.loss_weights))
        )
        if set(self.loss_weights) != set(features.HEADS):
            raise ValueError(
                f"loss_weights must name exactly the heads {list(features.HEADS)}, "
                f"got {sorted(self.loss_weights)}"
            )
        if any(w < 0 for w in self.loss_weights.values()):
            raise ValueError(f"loss_weights must be >= 0, got {dict(self.loss_weights)}")
        positive = {
            "embedding_dim": self.embedding_dim,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or None")
        if not (0.0 <= self.user_id_dropout < 1.0 and 0.0 <= self.item_id_dropout < 1.0):
            raise ValueError(
                f"ID dropout must be in [0, 1), got {self.user_id_dropout}, {self.item_id_dropout}"
            )
        if self.implicit_history_cap < 1:
            raise ValueError(f"implicit_history_cap must be >= 1, got {self.implicit_history_cap}")
        if self.l2 < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need l2 >= 0 and 0 <= dropout < 1, got {self.l2}, {self.dropout}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0 or None, got {self.steps_per_epoch}")
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.factorized_purchase_head and not (self.use_bias_terms and self.use_dot_product):
            raise ValueError("factorized_purchase_head needs use_bias_terms and use_dot_product")
        if not self.hidden_units and not self.factorized_purchase_head:
            raise ValueError("hidden_units may be empty only with factorized_purchase_head")

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for TFX `custom_config`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["hidden_units"] = list(self.hidden_units)
        out["loss_weights"] = dict(self.loss_weights)
        return out

    @classmethod
    def from_json_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        return cls(**values)

    @classmethod
    def original(cls, **overrides: Any) -> "ModelConfig":
        """The original design: concatenated 32-d embeddings, one Dense(64), Adam 1e-3, 5 epochs."""
        values = dict(
            embedding_dim=32, hidden_units=(64,), learning_rate=1e-3, optimizer="adam", epochs=5,
            use_bias_terms=False, use_dot_product=False, factorized_purchase_head=False,
            implicit_feedback=False, base_rate_init=False, embedding_init_stddev=None, l2=0.0, dropout=0.0,
            early_stopping_patience=None, user_id_dropout=0.0, item_id_dropout=0.0,
            loss_weights={head: 1.0 for head in features.HEADS},
        )
        return cls(**{**values, **overrides})


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the model needs to know about its training examples before fitting.

    `users`, `items`: int64 vocabulary indices of every training example (in
    the same order); `label_means`: each head's mean label.
    """

    users: np.ndarray
    items: np.ndarray
    label_means: Mapping[str, float]

    @classmethod
    def from_batches(cls, batches) -> "TrainingData":
        """From one pass of (inputs, labels) batches, as `components.trainer` makes them."""
        users, items, labels = [], [], {head: [] for head in features.HEADS}
        for inputs, batch_labels in batches:
            users.append(np.asarray(inputs[features.transformed_name(features.USER_ID)]).ravel())
            items.append(np.asarray(inputs[features.transformed_name(features.ITEM_ID)]).ravel())
            for head in features.HEADS:
                labels[head].append(np.asarray(batch_labels[head], np.float64).ravel())
        if not users:
            raise ValueError("the training data is empty")
        return cls(
            users=np.concatenate(users).astype(np.int64),
            items=np.concatenate(items).astype(np.int64),
            label_means={head: float(np.concatenate(v).mean()) for head, v in labels.items()},
        )


class MultiTaskRecommender(tf_keras.Model):
    """Shared user and item embeddings feeding shared hidden layers and two heads.

    Input: a dict with `transformed_name(USER_ID)` and `transformed_name(ITEM_ID)`,
    int64 vocabulary indices of shape [batch, 1] or [batch].
    Output: `{'binary_rating': sigmoid [batch, 1],
              'purchase_probability': linear [batch, 1]}`.
    Each head reads the last hidden layer and, as configured, the user and item
    biases and the embeddings' dot product; see ModelConfig for the factorised
    purchase head and implicit feedback. `training` summarises the training
    data (see TrainingData); its interactions are required with implicit
    feedback, its label means with base-rate initialisation.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: ModelConfig,
        training: TrainingData | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
            # (who interacted, with whom, their embeddings, how many rows they index)
            self.implicit = [
                _Neighbours(users, items, num_users, embedding(num_items, dim, "user_history"), "items_of_user",
                            config.implicit_history_cap, config.seed),
                _Neighbours(items, users, num_items, embedding(num_users, dim, "item_history"), "users_of_item",
                            config.implicit_history_cap, config.seed),
            ]
        self.hidden = []
        for i, units in enumerate(config.hidden_units):
            self.hidden.append(tf_keras.layers.Dense(units, activation="relu", name=f"shared_hidden_{i}"))
            if config.dropout:
                self.hidden.append(tf_keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
        start = {head: "zeros" for head in features.HEADS}
        if config.base_rate_init:
            if training is None:
                raise ValueError("base_rate_init needs the training data's label means")
            liked = float(np.clip(training.label_means[features.BINARY_RATING], 1e-4, 1 - 1e-4))
            start = {
                features.BINARY_RATING: tf_keras.initializers.Constant(np.log(liked / (1 - liked))),
                features.PURCHASE_PROBABILITY: tf_keras.initializers.Constant(
                    training.label_means[features.PURCHASE_PROBABILITY]
                ),
            }
        self.heads = {
            features.BINARY_RATING: tf_keras.layers.Dense(
                1, activation="sigmoid", bias_initializer=start[features.BINARY_RATING],
                name=features.BINARY_RATING,
            ),
            features.PURCHASE_PROBABILITY: tf_keras.layers.Dense(
                1, activation=None, bias_initializer=start[features.PURCHASE_PROBABILITY],
                name=features.PURCHASE_PROBABILITY,
            ),
        }

    def call(self, inputs, training=None):
        user = tf.reshape(inputs[features.transformed_name(features.USER_ID)], [-1])
        item = tf.reshape(inputs[features.transformed_name(features.ITEM_ID)], [-1])
        if training:
            user, item = (_drop_ids(ids, *spec) for ids, spec in zip((user, item), self.id_dropout))
        user_vector, item_vector = self.user_embedding(user), self.item_embedding(item)
        if self.implicit:
            user_vector += self.implicit[0](user)
            item_vector += self.implicit[1](item)
        biases = [bias(ids) for bias, ids in zip(self.biases, (user, item))]
        if training and self.l2:
            used = [user_vector, item_vector, *biases]
            self.add_loss(self.l2 * tf.reduce_mean(sum(tf.reduce_sum(v * v, axis=-1) for v in used)))
        x = tf.concat([user_vector, item_vector], axis=-1)
        for layer in self.hidden:
            x = layer(x, training=training)
        hidden = [x] if self.hidden else []  # empty only for the factorised head
        dot = (
            [tf.reduce_sum(user_vector * item_vector, axis=-1, keepdims=True)]
            if self.use_dot_product else []
        )
        if not self.factorized:
            x = tf.concat(hidden + dot + biases, axis=-1)
            return {name: head(x) for name, head in self.heads.items()}
        purchase_head = self.heads[features.PURCHASE_PROBABILITY]
        # With no hidden layers the head's Dense is just the global mean mu.
        mlp_term = purchase_head(hidden[0]) if hidden else purchase_head(tf.zeros_like(dot[0]))
        purchase = mlp_term + dot[0] + biases[0] + biases[1]
        liked = self.heads[features.BINARY_RATING](tf.concat(hidden + [purchase] + dot + biases, axis=-1))
        return {features.BINARY_RATING: liked, features.PURCHASE_PROBABILITY: purchase}


def _drop_ids(ids: tf.Tensor, rate: float, known: int, rows: int) -> tf.Tensor:
    """`ids` with a `rate` share replaced by an OOV bucket (known..rows-1), chosen by the ID."""
    if not rate:
        return ids
    dropped = tf.random.uniform(tf.shape(ids)) < rate
    return tf.where(dropped, known + ids % (rows - known), ids)


class _Neighbours(tf_keras.layers.Layer):
    """Per row, 1/sqrt(n) times the sum of the embeddings of its n training partners.

    A row with more than `cap` partners keeps a seeded sample of `cap`. The
    partner lists are constant, non-trainable weights, so they are saved with
    the model; a row with no partners (an unseen ID) gets zeros.
    """

    def __init__(self, rows: np.ndarray, partners: np.ndarray, num_rows: int,
                 embedding: tf_keras.layers.Embedding, name: str, cap: int, seed: int):
        super().__init__(name=name)
        # Sorted by row, then by a random key: each row's first `cap` are a uniform sample.
        order = np.lexsort((np.random.default_rng(seed).random(len(rows)), rows))
        counts = np.bincount(rows, minlength=num_rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        kept = np.arange(len(rows)) - starts[rows[order]] < cap
        self.row_splits = tf.Variable(
            np.concatenate([[0], np.cumsum(np.minimum(counts, cap))]).astype(np.int64),
            trainable=False, name="row_splits",
        )
        self.partners = tf.Variable(partners[order][kept], trainable=False, name="partners")
        self.embedding = embedding

    def call(self, ids):
        lists = tf.gather(tf.RaggedTensor.from_row_splits(self.partners, self.row_splits), ids)
        summed = tf.reduce_sum(self.embedding(lists), axis=1)
        count = tf.cast(lists.row_lengths(), tf.float32)[:, None]
        return summed * tf.math.rsqrt(tf.maximum(count, 1.0))


def build_model(
    num_users: int,
    num_items: int,
    config: ModelConfig,
    training: TrainingData | None = None,
) -> MultiTaskRecommender:
    """Builds and compiles the model; `num_*` count vocabulary plus OOV buckets.

    `training` is needed with `config.implicit_feedback` or `config.base_rate_init`.
    """
    tf_keras.utils.set_random_seed(config.seed)
    model = MultiTaskRecommender(num_users, num_items, config, training)
    model.compile(
        optimizer=OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate),
        loss={
            features.BINARY_RATING: tf_keras.losses.BinaryCrossentropy(),
            features.PURCHASE_PROBABILITY: tf_keras.losses.MeanSquaredError(),
        },
        loss_weights=dict(config.loss_weights),
        metrics={
            features.BINARY_RATING: [tf_keras.metrics.AUC(name="auc")],
            features.PURCHASE_PROBABILITY: [tf_keras.metrics.RootMeanSquaredError(name="rmse")],
        },
    )
    return model


def train(
    model: MultiTaskRecommender,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset,
    config: ModelConfig,
    verbose: int = 2,
) -> tf_keras.callbacks.History:
    """Fits `model` on (inputs, labels) batches, validating each epoch (Keras `verbose`).

    With `config.early_stopping_patience`, stops once the validation loss has not
    improved for that many epochs and restores the best epoch's weights.
    """
    callbacks = []
    if config.early_stopping_patience is not None:
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
