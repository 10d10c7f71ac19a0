"""Deterministic synthetic interactions with learnable structure.

Each user and item has latent factors and a bias; an interaction's affinity is
their dot product plus biases. The labels are noisy functions of the affinity,
so a model that learns the factors beats a constant predictor, and the same
`SyntheticSpec` always produces the same file (byte for byte).

IDs are written as digit strings ("17") on purpose: the curated schema, not
the values' look, decides that they are strings.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from recommender import features


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    num_users: int = 600
    num_items: int = 400
    num_interactions: int = 30_000
    latent_dim: int = 4
    seed: int = 0
    start_timestamp: int = 1_600_000_000

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "num_interactions", "latent_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def _popularity(n: int, rng: np.random.Generator) -> np.ndarray:
    # Long-tailed activity/popularity, as in real logs; shuffled so ID order means nothing.
    weights = 1.0 / np.power(np.arange(n) + 10.0, 0.8)
    rng.shuffle(weights)
    return weights / weights.sum()


def generate_rows(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """The interactions as columns keyed by `features.COLUMNS`, oldest first."""
    rng = np.random.default_rng(spec.seed)
    scale = 1.5 / np.sqrt(spec.latent_dim)
    user_factors = rng.normal(0.0, 1.0, (spec.num_users, spec.latent_dim)) * np.sqrt(scale)
    item_factors = rng.normal(0.0, 1.0, (spec.num_items, spec.latent_dim)) * np.sqrt(scale)
    user_bias = rng.normal(0.0, 0.5, spec.num_users)
    item_bias = rng.normal(0.0, 0.5, spec.num_items)

    n = spec.num_interactions
    users = rng.choice(spec.num_users, size=n, p=_popularity(spec.num_users, rng))
    items = rng.choice(spec.num_items, size=n, p=_popularity(spec.num_items, rng))
    affinity = (
        np.einsum("nd,nd->n", user_factors[users], item_factors[items])
        + user_bias[users]
        + item_bias[items]
    )
    liked = (affinity + rng.normal(0.0, 0.5, n) > 0.0).astype(np.int64)
    purchase = 1.0 / (1.0 + np.exp(-(affinity + rng.normal(0.0, 0.25, n))))
    timestamps = spec.start_timestamp + np.cumsum(rng.integers(1, 600, n))
    return {
        features.USER_ID: (users + 1).astype(str),
        features.ITEM_ID: (items + 1).astype(str),
        features.TIMESTAMP: timestamps.astype(np.int64),
        features.BINARY_RATING: liked,
        features.PURCHASE_PROBABILITY: np.round(purchase, 5),
    }


def write_csv(spec: SyntheticSpec, path: Path) -> Path:
    """Writes the interactions of `spec` as a CSV with a header; returns `path`."""
    rows = generate_rows(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(features.COLUMNS)
        writer.writerows(zip(*(rows[c].tolist() for c in features.COLUMNS)))
    return path
