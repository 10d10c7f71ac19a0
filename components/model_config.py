"""The model's hyperparameters: a frozen config that imports no TensorFlow.

Runners, the pipeline config and `inspect_metadata.py` validate it without
loading the model code (`components.model`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.choices import Optimizer, parse
from components.heads import HEADS, Head, check_names

# The autoencoder holds two covered items x covered users float32 matrices
# while it trains (ratings, and which are observed); past this many cells
# they no longer fit a worker.
AUTOENCODER_MAX_CELLS = 2**28


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the model and its training loop.

    The defaults are the configuration chosen on MovieLens 100K's temporal,
    random and u1 splits (see benchmarks/model_quality.py and the README):
    biased matrix factorisation as the purchase head, the binary head reading
    its estimate, per-example L2, early stopping on the validation split, an
    alternative with implicit feedback under a lighter L2 kept where the
    validation rows prefer it, an item autoencoder blended in, then a refit on
    the training and validation rows.
    `configs/original-model.json` is the first design (`preset("original")`).
    `loss_weights` maps every head to the weight of its loss in the total,
    total = sum(weight[head] * loss[head]); None takes each head's declared
    `loss_weight` (components.heads).
    """

    embedding_dim: int = 32
    # Embeddings start N(0, stddev); None keeps Keras's uniform(-0.05, 0.05).
    # Small starts matter for the dot product, which multiplies two of them.
    embedding_init_stddev: float | None = 0.01
    hidden_units: tuple[int, ...] = ()
    learning_rate: float = 1e-3
    optimizer: Optimizer = Optimizer.LAZY_ADAM
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
    # Weight each partner by its regression label (the rating: an item's sum
    # is then what item-based AutoRec's first layer reads), rather than by its
    # presence alone. Uncentred, so a partner still counts whoever rated low.
    implicit_feedback_ratings: bool = False
    # Leave the scored pair out of both sums, so a training example sees what
    # an unseen pair sees (see components.model._Neighbours); False keeps it in.
    implicit_leave_one_out: bool = True
    # Start each head's bias at the training labels' base rate (the mean for the
    # purchase head, the like rate's logit for the binary head), so the first
    # epochs fit interactions rather than a global offset.
    base_rate_init: bool = True
    # L2 penalty on the embedding rows each example uses (as in SGD matrix
    # factorisation: frequent IDs are regularised more), averaged over the
    # batch; dropout after each hidden layer.
    l2: float = 2.0
    dropout: float = 0.0
    # Per-head towers: each head reads its own Dense layers (these units, relu)
    # over the shared representation (the shared hidden layers' output, the
    # mixture of experts, or else the concatenated embeddings), so the heads
    # need not share every nonlinear feature.
    tower_units: tuple[int, ...] = ()
    # Multi-gate mixture of experts (MMoE): this many separate stacks of the
    # `hidden_units` layers, each head mixing their outputs with its own
    # softmax gate over the concatenated embeddings; 0 shares one stack.
    experts: int = 0
    # ID dropout: during training, this share of rows sees its user (item) as
    # unknown, mapped to an out-of-vocabulary bucket, so the OOV rows learn
    # what an unseen ID should predict instead of keeping their initial values.
    user_id_dropout: float = 0.0
    item_id_dropout: float = 0.0
    # An item-based autoencoder (I-AutoRec) with this many sigmoid units, fitted
    # beside the factorised model on the same rows, and blended with it on pairs
    # whose user and item both have training rows (components.autoencoder); 0
    # leaves it out. `autoencoder_l2` penalises its squared weights (its labels
    # scaled to unit variance); it stops early on the validation rows, within
    # `autoencoder_max_steps` full-batch Adam steps of `autoencoder_learning_rate`.
    # Needs the factorised head.
    # It covers at most `autoencoder_max_users` users and `autoencoder_max_items`
    # items (those with the most training pairs), so its cost per step and
    # its tables stay bounded however many rows and IDs the data has.
    autoencoder_units: int = 500
    autoencoder_l2: float = 200.0
    autoencoder_learning_rate: float = 3e-3
    autoencoder_max_steps: int = 4000
    autoencoder_max_users: int = 1024
    autoencoder_max_items: int = 2048
    # Let each blend weight grow or shrink with the pair's support (the log of
    # how many training pairs its user and its item have) where the validation
    # pairs are many enough to fit such weights (MIN_PAIRS_PER_WEIGHT in
    # components.autoencoder); false keeps one weight per input whatever the count.
    blend_by_support: bool = True
    # Stop when the validation loss has not improved for this many epochs and
    # keep the best epoch's weights; None trains all `epochs`.
    early_stopping_patience: int | None = 3
    # Tuned on the validation rows: the first fit also runs once per entry here
    # (the entry's fields over the rest of this config), and the fit whose
    # validation loss at the epoch it keeps (weighted by this config's loss
    # weights) is lowest is the one blended, refitted and exported. Where the
    # data rewards it (many pairs per ID: ML-100K's random and u1 splits)
    # implicit feedback under a lighter L2 wins; where the future is mostly new
    # users (the temporal split) the plain factorisation does.
    alternatives: tuple[Mapping[str, Any], ...] = ({"implicit_feedback": True, "l2": 1.0},)
    # Refit: once early stopping has chosen the epoch count on the validation
    # rows, a fresh model is fitted on the training and validation rows together
    # for that many epochs, and that model ships. The Evaluator's rows stay
    # unseen; Transform's analyzers then read both splits. Needs early stopping
    # (a config without it sets refit false).
    refit: bool = True
    loss_weights: Mapping[str, float] | None = None
    # The `recommend` signature ranks items by popularity ** ranking_popularity_weight
    # x prod(max(head, 0) ** weight) (components.recommend); None takes each
    # head's declared `ranking_weight` (components.heads).
    ranking_weights: Mapping[str, float] | None = None
    ranking_popularity_weight: float = 1.0
    # `recommend` leaves out the items each user interacted with in training.
    exclude_training_items: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(self, "tower_units", tuple(int(u) for u in self.tower_units))
        object.__setattr__(self, "optimizer", parse(Optimizer, self.optimizer, "optimizer"))
        for number, alternative in enumerate(self.alternatives):
            if not isinstance(alternative, Mapping):
                raise TypeError(f"alternatives[{number}] must map ModelConfig fields to values, got {alternative!r}")
        object.__setattr__(
            self, "alternatives", tuple(types.MappingProxyType(dict(a)) for a in self.alternatives)
        )
        for name in ("loss_weights", "ranking_weights"):
            weights = getattr(self, name)
            if weights is not None:
                object.__setattr__(self, name, types.MappingProxyType(dict(weights)))
                if any(w < 0 for w in weights.values()):
                    raise ValueError(f"{name} must be >= 0, got {dict(weights)}")
        if self.ranking_popularity_weight < 0:
            raise ValueError(f"ranking_popularity_weight must be >= 0, got {self.ranking_popularity_weight}")
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
        for name in ("hidden_units", "tower_units"):
            if any(u <= 0 for u in getattr(self, name)):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.experts < 0 or (self.experts and not self.hidden_units):
            raise ValueError(f"experts must be >= 0, and > 0 only with hidden_units, got {self.experts}")
        if (
            self.autoencoder_units < 0 or self.autoencoder_l2 < 0 or self.autoencoder_max_steps < 1
            or not self.autoencoder_learning_rate > 0
        ):
            raise ValueError(
                "need autoencoder_units >= 0, autoencoder_l2 >= 0, autoencoder_max_steps >= 1 and "
                f"autoencoder_learning_rate > 0, got {self.autoencoder_units}, {self.autoencoder_l2}, "
                f"{self.autoencoder_max_steps}, {self.autoencoder_learning_rate}"
            )
        cells = self.autoencoder_max_users * self.autoencoder_max_items
        if self.autoencoder_max_users < 1 or self.autoencoder_max_items < 1 or cells > AUTOENCODER_MAX_CELLS:
            raise ValueError(
                "autoencoder_max_users and autoencoder_max_items must be >= 1, and their product (the "
                f"cells of the dense rating matrix the autoencoder trains on) at most {AUTOENCODER_MAX_CELLS}, "
                f"got {self.autoencoder_max_users} x {self.autoencoder_max_items}"
            )
        if self.autoencoder_units and not self.factorized_purchase_head:
            raise ValueError(
                "autoencoder_units needs factorized_purchase_head (the estimate it blends with): "
                "set autoencoder_units to 0 for a model without it"
            )
        if self.factorized_purchase_head and not (self.use_bias_terms and self.use_dot_product):
            raise ValueError("factorized_purchase_head needs use_bias_terms and use_dot_product")
        if not self.hidden_units and not self.tower_units and not self.factorized_purchase_head:
            raise ValueError("hidden_units or tower_units may both be empty only with factorized_purchase_head")
        for number, alternative in enumerate(self.alternatives):
            if "alternatives" in alternative:
                raise ValueError(f"alternatives[{number}] may not set alternatives")
            try:
                self.alternative(alternative)
            except (TypeError, ValueError) as error:
                raise type(error)(f"alternatives[{number}] {dict(alternative)}: {error}") from None

    def alternative(self, overrides: Mapping[str, Any]) -> ModelConfig:
        """This config with `overrides` (an entry of `alternatives`) on top, and no alternatives of its own."""
        return ModelConfig.from_json_dict({**self.to_json_dict(), **overrides, "alternatives": []})

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for TFX `custom_config` and config files."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["hidden_units"] = list(self.hidden_units)
        out["tower_units"] = list(self.tower_units)
        out["optimizer"] = self.optimizer.value
        for name in ("loss_weights", "ranking_weights"):
            out[name] = None if getattr(self, name) is None else dict(getattr(self, name))
        out["alternatives"] = [dict(a) for a in self.alternatives]
        return out

    @classmethod
    def from_json_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """From `to_json_dict`'s form (or a config file's subset of it); unknown names are errors."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}")
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            _check_scalar(name, value, hints[name])
        return cls(**values)

    def weights_for(self, heads: tuple[Head, ...] = HEADS) -> dict[str, float]:
        """Each head's loss weight: `loss_weights` if set (naming exactly `heads`), else the declared ones."""
        if self.loss_weights is None:
            return {head.name: head.loss_weight for head in heads}
        check_names(self.loss_weights, "loss_weights", heads)
        return dict(self.loss_weights)

    def ranking_weights_for(self, heads: tuple[Head, ...] = HEADS) -> dict[str, float]:
        """Each head's exponent in the ranking score: `ranking_weights` if set, else the declared ones."""
        if self.ranking_weights is None:
            return {head.name: head.ranking_weight for head in heads}
        check_names(self.ranking_weights, "ranking_weights", heads)
        return dict(self.ranking_weights)


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
        raise TypeError(f"ModelConfig field {name}: expected {expected}, got {value!r}")


PRESETS = Path(__file__).resolve().parent.parent / "configs"


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig saved as `configs/<name>-model.json`, with `overrides` on top.

    "original" is the first design (concatenated embeddings, one Dense(64),
    Adam, 5 epochs); "ml-100k" the tuned implicit-feedback configuration with
    an item autoencoder blended in.
    """
    values = json.loads((PRESETS / f"{name}-model.json").read_text())
    return ModelConfig.from_json_dict({**values, **overrides})
