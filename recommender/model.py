"""The multi-task recommender: shared ID embeddings, two heads.

Plain tf_keras code with no TFX dependency, so it can be built, trained and
tested on its own. The Trainer module (`components.trainer`) adapts it to TFX.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tf_keras

from recommender import features
from recommender.config import ModelConfig, Optimizer, RetrievalConfig
from recommender.heads import BINARY, HEADS, REGRESSION, BaseRate, Head
from recommender.heads import NAMES as HEAD_NAMES
from recommender.optimizer import LazyAdam
from recommender.recommend import user_histories

OPTIMIZERS = {Optimizer.ADAM: tf_keras.optimizers.Adam, Optimizer.LAZY_ADAM: LazyAdam}

# Training steps per call of Keras's compiled train function. The model's steps are small,
# and one Python round trip per step (Keras's loop, its callbacks) cost as much as the step
# itself; the batches and updates are the same whatever the value.
STEPS_PER_EXECUTION = 64


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the model needs to know about its training examples before fitting.

    `label_means`: each head's mean training label (the heads' base rates);
    `item_counts`: training examples per item index (index i counts item i; an
    index past the end counts none), the popularity `recommend` ranks by.
    Only the retrieval task's inputs (RetrievalInputs) need the examples themselves: `users`, `items`,
    int64 vocabulary indices of every training example (in the same order),
    and `times`, each example's timestamp where the rows carry one; a summary
    from tf.Transform's analyzers (`components.trainer.summarizer`) has
    none of them, so its size does not grow with the rows.
    """

    label_means: Mapping[str, float]
    item_counts: np.ndarray
    users: np.ndarray | None = None
    items: np.ndarray | None = None
    times: np.ndarray | None = None

    @classmethod
    def from_batches(cls, batches) -> TrainingData:
        """From one pass of (inputs, labels) batches, as `recommender.training.batches` makes them."""
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
        items = np.asarray(columns[features.transformed_name(features.ITEM_ID)]).ravel().astype(np.int64)
        times = columns.get(features.TIMESTAMP)
        return cls(
            label_means={head: float(np.mean(np.asarray(columns[head], np.float32), dtype=np.float64))
                         for head in label_names},
            item_counts=np.bincount(items),
            users=users,
            items=items,
            times=None if times is None else np.asarray(times).ravel().astype(np.int64),
        )

    def counts(self, num_items: int) -> np.ndarray:
        """`item_counts` for item indices 0..num_items-1."""
        counts = np.zeros(num_items, np.int64)
        known = self.item_counts[:num_items]
        counts[: len(known)] = known
        return counts


@dataclasses.dataclass(frozen=True)
class RetrievalInputs:
    """What the retrieval loss reads of its training rows beyond a batch, added to each batch by
    the input pipeline (`add`), so the traced training step holds nothing of the rows and a refit
    on other rows reuses it.

    `splits`, `values`: every user's history as `recommend.user_histories`
    gives it (the latest `RetrievalConfig.max_history` distinct items);
    `share`: each item index's share of the training pairs, an item no pair
    holds (an OOV bucket) counting as one pair; `draws`: the history items
    drawn per example (`RetrievalConfig.history_sample`).
    """

    splits: np.ndarray
    values: np.ndarray
    share: np.ndarray
    draws: int

    @classmethod
    def of(cls, training: TrainingData, num_users: int, num_items: int, config: RetrievalConfig) -> RetrievalInputs:
        """From the TrainingData of the rows a model fits (their ID pairs, and times where the rows carry them)."""
        if training.users is None:
            raise ValueError("the retrieval task needs the training data's pairs (TrainingData.users, items)")
        splits, values = user_histories(training.users, training.items, num_users, num_items,
                                        config.max_history, training.times)
        counts = training.counts(num_items)
        share = (np.maximum(counts, 1) / max(counts.sum(), 1)).astype(np.float32)
        return cls(splits, values, share, config.history_sample)

    def added_to(self, dataset: tf.data.Dataset, seed: int, stream: int = 0) -> tf.data.Dataset:
        """`dataset`'s (inputs, labels) batches with `add`'s inputs, drawn from `seed`, `stream`
        (e.g. a worker's shard) and each batch's number: the same for every dataset made alike."""
        key = tf.constant([seed, stream], tf.int64)
        return dataset.enumerate().map(
            lambda number, batch: self.add(*batch, seed=key * 2**20 + number),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )

    def add(self, inputs: Mapping[str, tf.Tensor], labels: Mapping[str, tf.Tensor], seed: tf.Tensor):
        """(inputs with HISTORY_DRAWS [batch, draws] and ITEM_SHARE [batch], labels): a tf.data map.

        The draws are with replacement from the example's user's history, so
        their mean estimates the whole history's at a fixed cost per example
        whatever the user's length; -1 where the user has none. `seed` ([2]
        integers, e.g. the config's seed and the batch's number) fixes them,
        whatever order a parallel map runs in.
        """
        users = tf.reshape(inputs[features.transformed_name(features.USER_ID)], [-1])
        items = tf.reshape(inputs[features.transformed_name(features.ITEM_ID)], [-1])
        splits, values = tf.constant(self.splits), tf.constant(self.values)
        starts = tf.gather(splits, users)
        lengths = tf.gather(splits, users + 1) - starts
        uniform = tf.random.stateless_uniform([tf.shape(users)[0], self.draws], seed=seed)
        offsets = tf.cast(tf.floor(uniform * tf.cast(lengths, tf.float32)[:, None]), tf.int64)
        drawn = tf.gather(values, tf.minimum(starts[:, None] + offsets, tf.maximum(tf.size(values, tf.int64) - 1, 0)))
        return {
            **inputs,
            features.HISTORY_DRAWS: tf.where(lengths[:, None] > 0, drawn, tf.constant(-1, tf.int64)),
            features.ITEM_SHARE: tf.gather(tf.constant(self.share), items),
        }, labels


class MultiTaskRecommender(tf_keras.Model):
    """Shared user and item embeddings feeding one output per head.

    Input: a dict with `transformed_name(USER_ID)` and `transformed_name(ITEM_ID)`,
    int64 vocabulary indices of shape [batch, 1] or [batch].
    Output: {head name: [batch, 1]} for each of `heads` (recommender.heads), with
    its kind's activation: `{'binary_rating': sigmoid, 'purchase_probability': linear}`
    for the declared heads.
    Factorised (`ModelConfig.factorized`): the first regression head is
    mu + b_user + b_item + user . item, and every other head a Dense layer over
    [that estimate, user . item, b_user, b_item]. Otherwise every head is a
    Dense layer over the concatenated embeddings passed through `hidden_units`.
    `training` summarises the training data (see TrainingData); its label
    means are required with base-rate initialisation. With the retrieval task
    (`ModelConfig.retrieval`, see RetrievalConfig) `compute_loss` adds its
    loss to the heads', reading the inputs RetrievalInputs adds to each
    training batch, and `retrieval_scores` gives its scores.
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
        # The binary head's labels say which pairs the user liked (RetrievalConfig.unliked_weight).
        self.liked_head = next((h.name for h in heads if h.kind == BINARY), None)
        if config.factorized and self.factorized_head is None:
            raise ValueError("a factorised model needs a regression head")
        self.num_users = num_users
        self.num_items = num_items
        self.l2 = config.l2
        self.factorized = config.factorized
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
            if config.factorized else []
        )
        self.hidden = [
            tf_keras.layers.Dense(width, activation="relu", name=f"shared_hidden_{i}")
            for i, width in enumerate(config.hidden_units)
        ]
        if config.base_rate_init and training is None:
            raise ValueError("base_rate_init needs the training data's label means")
        self.retrieval = config.retrieval
        if self.retrieval is not None:
            self.retrieval_user = embedding(num_users, dim, "retrieval_user")
            self.retrieval_item = embedding(num_items, dim, "retrieval_item")
            self.history_item = embedding(num_items, dim, "history_item")
            self.retrieval_tracker = tf_keras.metrics.Mean(name="retrieval_loss")
        self.heads = {
            head.name: tf_keras.layers.Dense(
                1, activation=head.kind.activation, name=head.name,
                bias_initializer=base_rate(head, training) if config.base_rate_init else "zeros",
            )
            for head in heads
        }

    def call(self, inputs, training=None):
        user = tf.reshape(inputs[features.transformed_name(features.USER_ID)], [-1])
        item = tf.reshape(inputs[features.transformed_name(features.ITEM_ID)], [-1])
        user_vector, item_vector = self.user_embedding(user), self.item_embedding(item)
        biases = [bias(ids) for bias, ids in zip(self.biases, (user, item))]
        if training and self.l2:
            used = [user_vector, item_vector, *biases]
            self.add_loss(self.l2 * tf.reduce_mean(sum(tf.reduce_sum(v * v, axis=-1) for v in used)))
        if not self.factorized:
            hidden = tf.concat([user_vector, item_vector], axis=-1)
            for layer in self.hidden:
                hidden = layer(hidden)
            return {name: head(hidden) for name, head in self.heads.items()}
        dot = tf.reduce_sum(user_vector * item_vector, axis=-1, keepdims=True)
        # With no inputs of its own the factorised head's Dense is just the global mean mu.
        estimate = self.heads[self.factorized_head](tf.zeros_like(dot)) + dot + biases[0] + biases[1]
        return {
            name: estimate if name == self.factorized_head else head(tf.concat([estimate, dot, *biases], axis=-1))
            for name, head in self.heads.items()
        }

    def build_weights(self) -> None:
        """Creates every weight, the retrieval task's tables too, as training would."""
        self(sample_inputs())
        if self.retrieval is not None:
            for table in (self.retrieval_user, self.retrieval_item, self.history_item):
                table(tf.zeros([1], tf.int64))

    def query(self, users: tf.Tensor, known: tf.Tensor, history: tf.RaggedTensor) -> tf.Tensor:
        """The retrieval task's user vectors [batch, dim] (see RetrievalConfig).

        `users`: [batch] indices; `known`: [batch] bool, whether each user's own
        embedding counts; `history`: ragged [batch, None] item indices, whose
        embeddings' mean joins it (nothing for an empty history).
        """
        rows = history.value_rowids()
        batch = tf.shape(users, out_type=rows.dtype)[0]
        summed = tf.math.unsorted_segment_sum(self.history_item(history.flat_values), rows, batch)
        count = tf.cast(history.row_lengths(), tf.float32)
        own = self.retrieval_user(users) * tf.cast(known, tf.float32)[:, None]
        return own + summed / tf.maximum(count, 1.0)[:, None]

    def retrieval_scores(self, queries: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """[len(queries), len(items)]: the retrieval logits, query . item / temperature."""
        return tf.matmul(queries, self.retrieval_item(items), transpose_b=True) / self.retrieval.temperature

    def retrieval_loss(self, users: tf.Tensor, items: tf.Tensor, drawn: tf.Tensor, share: tf.Tensor,
                       liked: tf.Tensor | None = None) -> tf.Tensor:
        """The in-batch softmax loss of the training pairs (users[i], items[i]) (see RetrievalConfig).

        `drawn`: [batch, draws] items of each user's history (-1: none), and
        `share`: [batch] each item's share of the training pairs, as
        RetrievalInputs adds them; `liked`: each pair's binary label,
        weighting the pairs by `unliked_weight` (None: all 1).
        """
        # The example's own item is what the history must predict, so it is left out of it.
        # A dense [batch, draws] mean, not `query` over a ragged batch: the ragged path made
        # the whole training step about twice as slow.
        keep = tf.cast((drawn >= 0) & tf.not_equal(drawn, items[:, None]), tf.float32)
        mean = tf.reduce_sum(self.history_item(tf.maximum(drawn, 0)) * keep[..., None], axis=1) / tf.maximum(
            tf.reduce_sum(keep, axis=1), 1.0)[:, None]
        # The candidates are the batch's distinct items, each once: another row of the
        # same item is then no negative for this one, with no [batch, batch] mask to build.
        candidates, positive = tf.unique(items)
        logits = self.retrieval_scores(self.retrieval_user(users) + mean, candidates)
        # Each distinct item is a candidate once, so the correction is the log of the chance
        # that a batch holds the item at all, 1 - (1 - share)^batch (as TensorFlow's unique
        # candidate samplers count it), not of its share.
        rows = tf.cast(tf.shape(items)[0], tf.float32)
        share = tf.math.unsorted_segment_max(share, positive, tf.size(candidates))
        logits -= tf.math.log(-tf.math.expm1(rows * tf.math.log1p(-share)))[None, :]
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits)
        if liked is None or self.retrieval.unliked_weight == 1.0:
            return tf.reduce_mean(losses)
        weights = tf.where(tf.reshape(liked, [-1]) > 0.5, 1.0, self.retrieval.unliked_weight)
        return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """The heads' weighted losses (and the L2 penalty), plus the retrieval task's weighted loss."""
        loss = super().compute_loss(x, y, y_pred, sample_weight)
        if self.retrieval is None:
            return loss
        retrieval = self.retrieval_loss(
            tf.reshape(x[features.transformed_name(features.USER_ID)], [-1]),
            tf.reshape(x[features.transformed_name(features.ITEM_ID)], [-1]),
            x[features.HISTORY_DRAWS], x[features.ITEM_SHARE],
            None if self.liked_head is None else tf.cast(y[self.liked_head], tf.float32),
        )
        self.retrieval_tracker.update_state(retrieval)
        return loss + self.retrieval.weight * retrieval

    @property
    def separable(self) -> bool:
        """Whether `score_grid` can score this model: a factorised model's score is a
        user side met by an item side."""
        return self.factorized

    def score_grid(self, users: tf.Tensor, items: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every head's prediction for every (user, item) pair: {head: [len(users), len(items)]}.

        The predictions `call` gives those pairs (to float rounding), from one
        embedding lookup per user and per item and one matrix product rather
        than one lookup per pair. Needs `separable`.
        """
        if not self.separable:
            raise ValueError("score_grid needs a factorised model")
        if not all(head.built for head in self.heads.values()):
            raise ValueError("score_grid reads the heads' weights: call or train the model first")
        users, items = tf.reshape(users, [-1]), tf.reshape(items, [-1])
        user_vector, item_vector = self.user_embedding(users), self.item_embedding(items)
        user_bias = self.biases[0](users)  # [users, 1]
        item_bias = tf.reshape(self.biases[1](items), [1, -1])  # [1, items]
        mu = self.heads[self.factorized_head](tf.zeros([1, 1]))
        dot = tf.matmul(user_vector, item_vector, transpose_b=True)
        estimate = dot + (mu + user_bias) + item_bias  # mu + b_user + b_item + u . v
        out = {}
        for name, head in self.heads.items():
            if name == self.factorized_head:
                out[name] = estimate
                continue
            # The head's Dense over [estimate, u . v, b_user, b_item] (`call`'s order) is
            # linear before its activation: each input's weight folds into the dot product's,
            # the user term or the item term, so each head costs a few passes over the grid.
            w = head.kernel[:, 0]
            user_term = w[0] * (mu + user_bias) + w[2] * user_bias + head.bias
            out[name] = head.activation((w[0] + w[1]) * dot + user_term + (w[0] + w[3]) * item_bias)
        return out


def sample_inputs(rows: int = 1) -> dict[str, tf.Tensor]:
    """`rows` pairs of index 0 as model inputs: calling the model on them builds its layers."""
    zeros = tf.zeros([rows], tf.int64)
    return {features.transformed_name(features.USER_ID): zeros, features.transformed_name(features.ITEM_ID): zeros}


def base_rate(head: Head, training: TrainingData) -> tf_keras.initializers.Initializer:
    """A head's bias start: its training labels' mean, as the kind's activation needs it."""
    mean = training.label_means[head.name]
    if head.kind.base_rate == BaseRate.LOGIT:
        mean = float(np.clip(mean, 1e-4, 1 - 1e-4))
        return tf_keras.initializers.Constant(np.log(mean / (1 - mean)))
    return tf_keras.initializers.Constant(mean)


def build_model(
    num_users: int,
    num_items: int,
    config: ModelConfig,
    training: TrainingData | None = None,
    heads: tuple[Head, ...] = HEADS,
) -> MultiTaskRecommender:
    """Builds and compiles the model, one output per head; `num_*` count vocabulary plus OOV buckets.

    `training` is needed with `config.base_rate_init`.
    """
    loss_weights = config.weights_for(heads)
    tf_keras.utils.set_random_seed(config.seed)
    model = MultiTaskRecommender(num_users, num_items, config, training, heads)
    model.compile(
        optimizer=OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate),
        steps_per_execution=STEPS_PER_EXECUTION,
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


class Training(NamedTuple):
    history: tf_keras.callbacks.History
    # The epoch (1-based) whose weights the model holds: early stopping's best, else the last.
    best_epoch: int


def train(
    model: MultiTaskRecommender,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset | None,
    config: ModelConfig,
    verbose: int = 2,
    label: str = "epoch",
    validation_steps: int | None = None,
) -> Training:
    """Fits `model` on (inputs, labels) batches, validating each epoch (Keras `verbose`);
    progress is logged as "<label> i/n".

    With `config.early_stopping_patience`, Keras's EarlyStopping stops once the
    validation loss has not improved for that many epochs and restores the
    best epoch's weights (a NaN loss is never the best). Without
    `validation_data` (a refit), trains all `config.epochs` and must not be
    asked to stop early. `validation_steps`: each validation's batches, where
    `validation_data` is endless.
    """
    callbacks = [_EpochProgress(config.epochs, label)]
    stopping = None
    if config.early_stopping_patience is not None:
        if validation_data is None:
            raise ValueError("early stopping needs validation data")
        stopping = tf_keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(stopping)
    history = model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_data,
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=verbose,
    )
    best = stopping.best_epoch + 1 if stopping is not None else len(history.history["loss"])
    return Training(history, best)
