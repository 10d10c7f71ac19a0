"""The multi-task recommender: shared ID embeddings, two heads.

Plain tf_keras code with no TFX dependency, so it can be built, trained and
tested on its own. The Trainer module (`components.trainer`) adapts it to TFX.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

import tensorflow as tf
import tf_keras

from components import features


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the model and its training loop.

    `loss_weights` maps every head in `features.HEADS` to the weight of its loss
    in the total: total = sum(weight[head] * loss[head]).
    """

    embedding_dim: int = 32
    hidden_units: tuple[int, ...] = (64,)
    learning_rate: float = 3e-3
    batch_size: int = 256
    epochs: int = 10
    # Training steps per epoch; None means one full pass over the train split.
    steps_per_epoch: int | None = None
    seed: int = 42
    # Beside the shared MLP, the heads also see a per-user and a per-item bias
    # (the classic matrix-factorisation baseline terms) and the dot product of
    # the two embeddings (the factorisation interaction).
    use_bias_terms: bool = False
    use_dot_product: bool = False
    # L2 penalty on embedding tables and dense kernels; dropout after each hidden layer.
    l2: float = 0.0
    dropout: float = 0.0
    # Stop when the validation loss has not improved for this many epochs and
    # keep the best epoch's weights; None trains all `epochs`.
    early_stopping_patience: int | None = None
    loss_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({h: 1.0 for h in features.HEADS})
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
        if self.l2 < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need l2 >= 0 and 0 <= dropout < 1, got {self.l2}, {self.dropout}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0 or None, got {self.steps_per_epoch}")
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")

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
            embedding_dim=32, hidden_units=(64,), learning_rate=1e-3, epochs=5,
            use_bias_terms=False, use_dot_product=False, l2=0.0, dropout=0.0,
            early_stopping_patience=None,
        )
        return cls(**{**values, **overrides})


class MultiTaskRecommender(tf_keras.Model):
    """Shared user and item embeddings feeding shared hidden layers and two heads.

    Input: a dict with `transformed_name(USER_ID)` and `transformed_name(ITEM_ID)`,
    int64 vocabulary indices of shape [batch, 1] or [batch].
    Output: `{'binary_rating': sigmoid [batch, 1],
              'purchase_probability': linear [batch, 1]}`.
    Each head reads the last hidden layer and, as configured, the user and item
    biases and the embeddings' dot product.
    """

    def __init__(self, num_users: int, num_items: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.num_users = num_users
        self.num_items = num_items
        regularizer = tf_keras.regularizers.l2(config.l2) if config.l2 else None

        def embedding(rows: int, dim: int, name: str) -> tf_keras.layers.Embedding:
            return tf_keras.layers.Embedding(rows, dim, embeddings_regularizer=regularizer, name=name)

        self.user_embedding = embedding(num_users, config.embedding_dim, "user_embedding")
        self.item_embedding = embedding(num_items, config.embedding_dim, "item_embedding")
        self.biases = (
            [embedding(num_users, 1, "user_bias"), embedding(num_items, 1, "item_bias")]
            if config.use_bias_terms else []
        )
        self.use_dot_product = config.use_dot_product
        self.hidden = []
        for i, units in enumerate(config.hidden_units):
            self.hidden.append(tf_keras.layers.Dense(
                units, activation="relu", kernel_regularizer=regularizer, name=f"shared_hidden_{i}"
            ))
            if config.dropout:
                self.hidden.append(tf_keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
        self.heads = {
            features.BINARY_RATING: tf_keras.layers.Dense(
                1, activation="sigmoid", name=features.BINARY_RATING
            ),
            features.PURCHASE_PROBABILITY: tf_keras.layers.Dense(
                1, activation=None, name=features.PURCHASE_PROBABILITY
            ),
        }

    def call(self, inputs, training=None):
        user = tf.reshape(inputs[features.transformed_name(features.USER_ID)], [-1])
        item = tf.reshape(inputs[features.transformed_name(features.ITEM_ID)], [-1])
        user_vector, item_vector = self.user_embedding(user), self.item_embedding(item)
        x = tf.concat([user_vector, item_vector], axis=-1)
        for layer in self.hidden:
            x = layer(x, training=training)
        parts = [x]
        if self.use_dot_product:
            parts.append(tf.reduce_sum(user_vector * item_vector, axis=-1, keepdims=True))
        parts.extend(bias(ids) for bias, ids in zip(self.biases, (user, item)))
        x = tf.concat(parts, axis=-1)
        return {name: head(x) for name, head in self.heads.items()}


def build_model(num_users: int, num_items: int, config: ModelConfig) -> MultiTaskRecommender:
    """Builds and compiles the model; `num_*` count vocabulary plus OOV buckets."""
    tf_keras.utils.set_random_seed(config.seed)
    model = MultiTaskRecommender(num_users, num_items, config)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate),
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
