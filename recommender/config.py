"""The model's hyperparameters: a frozen config that imports no TensorFlow.

Runners, the pipeline config and `inspect_metadata.py` validate it without
loading the model code (`recommender.model`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recommender.heads import HEADS, Head, check_names


def parse(choice: type[enum.StrEnum], value: str, field: str) -> enum.StrEnum:
    """`value` as a member of `choice`; a ValueError naming `field` and the choices otherwise."""
    try:
        return choice(value)
    except ValueError:
        raise ValueError(f"{field} must be one of {[c.value for c in choice]}, got {value!r}") from None


class Optimizer(enum.StrEnum):
    """The Trainer's optimizer."""

    # Keras's Adam: every step updates every row of every embedding table.
    ADAM = "adam"
    # Updates only the embedding rows a batch uses (recommender.optimizer).
    LAZY_ADAM = "lazy_adam"


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """The retrieval task: which items a user would choose, out of the whole catalogue.

    The user's vector (query) is the user's own retrieval embedding, for a
    known user, plus the mean of the user's history items' embeddings (as
    SVD++ and YouTube's candidate generator form it); an item's vector is its
    retrieval embedding. Every training pair is a positive, a pair the user
    did not like (binary label 0) weighted `unliked_weight` (1: every pair
    alike; 0: liked pairs only; it stays in the user's history either way);
    the loss is the softmax over the batch's distinct items of
    query . item / `temperature`,
    less the log of the chance that a batch holds each item (the correction
    for popular items, which a batch holds more often). Its weight in the
    total loss is `weight`. A user's history is the user's latest
    `max_history` distinct training items (by the time the user first had
    each; where the rows carry no time, the first by index); in training, each example's history mean is estimated from
    `history_sample` items drawn from it, less the example's own item.
    """

    weight: float = 1.0
    temperature: float = 0.5
    max_history: int = 256
    history_sample: int = 8
    unliked_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight > 0 or not self.temperature > 0:
            raise ValueError(f"retrieval.weight and retrieval.temperature must be > 0, got {self.weight}, {self.temperature}")
        if self.max_history < 1 or self.history_sample < 1:
            raise ValueError(
                f"retrieval.max_history and retrieval.history_sample must be >= 1, got {self.max_history}, "
                f"{self.history_sample}"
            )
        if not 0.0 <= self.unliked_weight <= 1.0:
            raise ValueError(f"retrieval.unliked_weight must be in [0, 1], got {self.unliked_weight}")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How the Trainer reads its splits.

    Where the files of both (gzipped tf.Examples) take at most
    `max_in_memory_mib`, they are read once and trained from memory; larger
    splits stream from their files each epoch, `shuffle_buffer` records
    shuffled at a time, so the Trainer's memory stays within what these two
    settings allow whatever the rows. 0 always streams.
    """

    max_in_memory_mib: float = 16.0
    shuffle_buffer: int = 65536

    def __post_init__(self) -> None:
        if self.max_in_memory_mib < 0:
            raise ValueError(f"input.max_in_memory_mib must be >= 0, got {self.max_in_memory_mib}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"input.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """How the `recommend` signature ranks the catalogue (recommender.recommend).

    An item's score is, in log space, `retrieval_weight` x the retrieval
    logit (a model with the retrieval task) + `popularity_weight` x
    log(popularity) + the sum over heads of weight x log(max(prediction, 0));
    `weights` maps every head to its weight, None takes each head's declared
    `ranking_weight` (recommender.heads). The items to leave out of a user's
    list come with the request (`recommend_from_history`'s history).
    """

    weights: Mapping[str, float] | None = None
    popularity_weight: float = 1.0
    retrieval_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.weights is not None:
            object.__setattr__(self, "weights", types.MappingProxyType(dict(self.weights)))
            if any(w < 0 for w in self.weights.values()):
                raise ValueError(f"ranking.weights must be >= 0, got {dict(self.weights)}")
        if self.popularity_weight < 0 or self.retrieval_weight < 0:
            raise ValueError(
                "ranking.popularity_weight and ranking.retrieval_weight must be >= 0, "
                f"got {self.popularity_weight}, {self.retrieval_weight}"
            )

    def weights_for(self, heads: tuple[Head, ...] = HEADS) -> dict[str, float]:
        """Each head's exponent in the ranking score: `weights` if set, else the declared ones."""
        if self.weights is None:
            return {head.name: head.ranking_weight for head in heads}
        check_names(self.weights, "ranking.weights", heads)
        return dict(self.weights)


# The ModelConfig fields a search may vary, and the default search: the
# penalty, the step size and the embedding width, the three settings the
# default's quality moves with most.
TUNABLE = ("embedding_dim", "l2", "learning_rate", "batch_size", "embedding_init_stddev")
DEFAULT_SEARCH_SPACE: Mapping[str, tuple] = types.MappingProxyType({
    "l2": (0.5, 1.0, 2.0, 4.0),
    "learning_rate": (5e-4, 1e-3, 2e-3),
    "embedding_dim": (16, 32, 64),
})


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """TFX's Tuner component (KerasTuner random search), which the Trainer then follows.

    Each of `max_trials` trials draws one value per field of `search_space`
    (a ModelConfig field of TUNABLE -> the values to try), fits the model on
    the train split, early-stopped on the validation split, and is scored by
    its validation loss (each head's loss weighted by the loss weights); the
    best trial's values go over the ModelConfig the Trainer fits. The eval
    split is never read.
    """

    max_trials: int = 6
    search_space: Mapping[str, tuple] = dataclasses.field(default_factory=lambda: DEFAULT_SEARCH_SPACE)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "search_space", types.MappingProxyType({k: tuple(v) for k, v in dict(self.search_space).items()})
        )
        if self.max_trials < 1:
            raise ValueError(f"tuning.max_trials must be >= 1, got {self.max_trials}")
        unknown = sorted(set(self.search_space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"tuning.search_space names field(s) {unknown} that cannot be tuned; use {list(TUNABLE)}")
        for name, values in self.search_space.items():
            if not values:
                raise ValueError(f"tuning.search_space[{name!r}] lists no values")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the model and its training loop.

    The default is biased matrix factorisation: the purchase head predicts
    mu + b_user + b_item + user . item, and the binary head reads that estimate,
    the dot product and the biases. Each example's embedding rows carry an L2
    penalty; the heads start at the labels' base rates; LazyAdam updates the
    rows a batch uses; early stopping on the validation split picks the epoch
    count, and a refit on the training and validation rows for that many
    epochs is the model exported. `configs/original-model.json` is the first
    design (`preset("original")`): concatenated embeddings through Dense
    layers (`factorized` false, `hidden_units`).
    `loss_weights` maps every head to the weight of its loss in the total,
    total = sum(weight[head] * loss[head]); None takes each head's declared
    `loss_weight` (recommender.heads). `retrieval`, when set (as in
    `configs/retrieval-model.json`), adds the retrieval task beside the heads
    (see RetrievalConfig), whose score `recommend` ranks by and which gives
    the `recommend_from_history` signature; None (the default) leaves it
    out. `tuning`, when set, adds TFX's Tuner to the pipeline (see
    TuningConfig). `input`: how the Trainer reads its splits (InputConfig).
    """

    embedding_dim: int = 32
    # Embeddings start N(0, stddev); None keeps Keras's uniform(-0.05, 0.05).
    # Small starts matter for the dot product, which multiplies two of them.
    embedding_init_stddev: float | None = 0.01
    # True: the factorised heads above. False: the heads read the concatenated
    # embeddings through `hidden_units` Dense layers (relu).
    factorized: bool = True
    hidden_units: tuple[int, ...] = ()
    # Start each head's bias at the training labels' base rate (the mean for the
    # purchase head, the like rate's logit for the binary head), so the first
    # epochs fit interactions rather than a global offset.
    base_rate_init: bool = True
    # L2 penalty on the embedding rows each example uses (as in SGD matrix
    # factorisation: frequent IDs are regularised more), averaged over the batch.
    l2: float = 2.0
    optimizer: Optimizer = Optimizer.LAZY_ADAM
    learning_rate: float = 2e-3
    batch_size: int = 256
    # A cap on the cost: early stopping ends every fit measured on MovieLens well
    # before it; on data that keeps improving by a hair it bounds the run.
    epochs: int = 30
    # Training steps per epoch; None means one full pass over the train split.
    steps_per_epoch: int | None = None
    # Stop when the validation loss has not improved for this many epochs and
    # keep the best epoch's weights (Keras's EarlyStopping); None trains all `epochs`.
    early_stopping_patience: int | None = 3
    # Once early stopping has chosen the epoch count, a fresh model is fitted
    # on the training and validation rows together for that many epochs, and
    # that model ships. The Evaluator's rows stay unseen; Transform's analyzers
    # then read both splits. Needs early stopping.
    refit: bool = True
    seed: int = 42
    loss_weights: Mapping[str, float] | None = None
    retrieval: RetrievalConfig | None = None
    ranking: RankingConfig = RankingConfig()
    tuning: TuningConfig | None = None
    input: InputConfig = InputConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(self, "optimizer", parse(Optimizer, self.optimizer, "optimizer"))
        if isinstance(self.ranking, Mapping):
            object.__setattr__(self, "ranking", _sub_config(RankingConfig, self.ranking, "ranking"))
        if isinstance(self.input, Mapping):
            object.__setattr__(self, "input", _sub_config(InputConfig, self.input, "input"))
        if isinstance(self.retrieval, Mapping):
            object.__setattr__(self, "retrieval", _sub_config(RetrievalConfig, self.retrieval, "retrieval"))
        if isinstance(self.tuning, Mapping):
            object.__setattr__(self, "tuning", _sub_config(TuningConfig, self.tuning, "tuning"))
        if self.loss_weights is not None:
            object.__setattr__(self, "loss_weights", types.MappingProxyType(dict(self.loss_weights)))
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
        if self.refit and self.early_stopping_patience is None:
            raise ValueError(
                "refit needs early_stopping_patience: early stopping chooses the refit's epochs "
                "(set refit false to train without early stopping)"
            )
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0 or None, got {self.steps_per_epoch}")
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.factorized and self.hidden_units:
            raise ValueError(
                "hidden_units contradicts factorized: the factorised heads read no hidden layers "
                "(set factorized false for the Dense-layer model)"
            )
        if not self.factorized and not self.hidden_units:
            raise ValueError("factorized false needs hidden_units: the heads read the Dense layers")
        ranked_by = [self.ranking.popularity_weight, *self.ranking.weights_for().values()]
        if self.retrieval is not None:
            ranked_by.append(self.ranking.retrieval_weight)
        if not any(ranked_by):
            raise ValueError(
                "ranking gives every term weight 0 (the retrieval task, popularity and each head): "
                "recommend would have nothing to rank by"
            )
        if self.tuning is not None:
            for name, values in self.tuning.search_space.items():
                for value in values:
                    try:
                        self.with_values({name: value, "tuning": None})
                    except (TypeError, ValueError) as error:
                        raise type(error)(f"tuning.search_space[{name!r}] value {value!r}: {error}") from None

    def with_values(self, values: Mapping[str, Any]) -> ModelConfig:
        """This config with `values` (field -> JSON value, e.g. a tuner's best hyperparameters) on top."""
        return ModelConfig.from_json_dict({**self.to_json_dict(), **values})

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for TFX `custom_config` and config files."""
        return _jsonable(self)

    @classmethod
    def from_json_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """From `to_json_dict`'s form (or a config file's subset of it); unknown names are errors."""
        _check_fields(cls, values, "ModelConfig")
        return cls(**values)

    def weights_for(self, heads: tuple[Head, ...] = HEADS) -> dict[str, float]:
        """Each head's loss weight: `loss_weights` if set (naming exactly `heads`), else the declared ones."""
        if self.loss_weights is None:
            return {head.name: head.loss_weight for head in heads}
        check_names(self.loss_weights, "loss_weights", heads)
        return dict(self.loss_weights)


def _jsonable(value: Any) -> Any:
    """`value` (a config, or one of its fields) as plain JSON types."""
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _sub_config(cls: type, values: Mapping[str, Any], name: str):
    """`cls` (a nested config) from its JSON form; unknown or mistyped fields are refused naming `name`."""
    _check_fields(cls, values, name)
    return cls(**values)


def _check_fields(cls: type, values: Mapping[str, Any], what: str) -> None:
    """ValueError naming `what` for fields `cls` lacks; TypeError for a value of the wrong scalar kind."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a JSON object of fields, got {values!r}")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        _check_scalar(f"{what} field {name}", value, hints[name])


# What a JSON value may be for a field of each scalar type (a bool is no number here).
_SCALARS: dict[type, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float)}


def _check_scalar(name: str, value: Any, hint: Any) -> None:
    """TypeError naming `name` unless `value` is of `hint`'s scalar kind (other hints are not checked)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [kind for kind in options if kind in _SCALARS]
    if not kinds or (value is None and type(None) in options):
        return
    if not any(isinstance(value, _SCALARS[k]) and (k is bool or not isinstance(value, bool)) for k in kinds):
        expected = " or ".join(k.__name__ for k in kinds) + (" or null" if type(None) in options else "")
        raise TypeError(f"{name}: expected {expected}, got {value!r}")


PRESETS = Path(__file__).resolve().parent.parent / "configs"


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig saved as `configs/<name>-model.json`, with `overrides` on top.

    "original" is the first design (concatenated embeddings, one Dense(64),
    Adam, 5 epochs).
    """
    values = json.loads((PRESETS / f"{name}-model.json").read_text())
    return ModelConfig.from_json_dict({**values, **overrides})
