"""The pipeline's enumerated choices and the split names, importable without TensorFlow.

Each choice is a `StrEnum`: its members compare equal to (and serialise as)
their string values, so configs, TFX `custom_config` JSON and ML Metadata keep
plain strings while the code names members.
"""

from __future__ import annotations

import enum

# The choices here parse as the model's do.
from recommender.config import parse  # noqa: F401


class SplitKind(enum.StrEnum):
    """How ExampleGen cuts the data into train, validation and eval."""

    # By timestamp: the newest rows are eval, the ones before them validation.
    TEMPORAL = "temporal"
    # By a hash of each row: random splits, as published benchmarks use.
    HASH = "hash"


class DriftComparator(enum.StrEnum):
    """TFDV's distance between one feature's distributions in two spans."""

    # L-infinity distance, for string features.
    INFINITY_NORM = "infinity_norm"
    # Jensen-Shannon divergence, for numeric ones.
    JENSEN_SHANNON = "jensen_shannon_divergence"


# ExampleGen's splits, oldest first for the temporal kind.
TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
