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


class MultiTaskRecommender(tf_keras.Model):
    """Shared user and item embeddings feeding shared hidden layers and two heads.

    Input: a dict with `transformed_name(USER_ID)` and `transformed_name(ITEM_ID)`,
    int64 vocabulary indices of shape [batch, 1] or [batch].
    Output: `{'binary_rating': sigmoid [batch, 1],
              'purchase_probability': linear [batch, 1]}`.
    """

    def __init__(self, num_users: int, num_items: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.num_users = num_users
        self.num_items = num_items
        self.user_embedding = tf_keras.layers.Embedding(
            num_users, config.embedding_dim, name="user_embedding"
        )
        self.item_embedding = tf_keras.layers.Embedding(
            num_items, config.embedding_dim, name="item_embedding"
        )
        self.hidden = [
            tf_keras.layers.Dense(units, activation="relu", name=f"shared_hidden_{i}")
            for i, units in enumerate(config.hidden_units)
        ]
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
        x = tf_keras.layers.concatenate([self.user_embedding(user), self.item_embedding(item)])
        for layer in self.hidden:
            x = layer(x)
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
