"""Ranking quality: Recall, NDCG and HitRate at k over the whole catalogue, and the gate on them.

Plain Python and NumPy, no TensorFlow. For each user with at least one liked
item among the judged rows (`relevant`), the model's top k of the catalogue,
with the user's training items left out, is compared with those liked items:

- Recall@k: liked items in the top k / liked items;
- NDCG@k: sum over hits of 1 / log2(rank + 1) (rank from 1), divided by the
  same sum for a perfect top k;
- HitRate@k: 1 if any liked item is in the top k.

Each is the mean over users. The popularity baseline ranks every item by its
number of training interactions, with the same items left out.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

RECALL, NDCG, HIT_RATE = "recall", "ndcg", "hit_rate"
METRICS = (RECALL, NDCG, HIT_RATE)
DEFAULT_K = 10
# The slice of every judged user, and that of new users judged given their first interactions.
OVERALL, FOLD_IN = "overall", "fold_in"
# The judged users with a training row.
KNOWN = "known_users"
# Who ranked: the candidate model, the popularity baseline, the model being served.
MODEL, POPULARITY, BASELINE = "model", "popularity", "baseline_model"


def metric_key(metric: str, k: int) -> str:
    """The name a metric at k is recorded under: "ndcg_at_10"."""
    return f"{metric}_at_{k}"


def per_user(top: Sequence[Sequence], relevant: Sequence[set], k: int) -> np.ndarray:
    """[users, 3]: each user's Recall, NDCG and HitRate at k (columns in METRICS order)."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values = np.zeros((len(relevant), len(METRICS)))
    for row, (items, liked) in enumerate(zip(top, relevant)):
        hits = np.array([item in liked for item in list(items)[:k]], dtype=bool)
        found = int(hits.sum())
        ideal = discount[: min(len(liked), k)].sum()
        values[row] = (found / len(liked), float(discount[: len(hits)][hits].sum() / ideal), float(found > 0))
    return values


def summarize(values: np.ndarray, k: int) -> dict[str, float]:
    """Means of `per_user`'s columns, keyed by `metric_key`, plus the number of users."""
    out = {metric_key(m, k): float(values[:, i].mean()) if len(values) else math.nan for i, m in enumerate(METRICS)}
    out["users"] = len(values)
    return out


def popularity_top(counts: Counter, seen: Mapping[object, set], users: Iterable, k: int) -> list[list]:
    """Each user's k most interacted-with training items (ties by item), the user's own left out."""
    ranked = sorted(counts, key=lambda item: (-counts[item], item))
    out = []
    for user in users:
        own = seen.get(user, set())
        top = []
        for item in ranked:
            if item not in own:
                top.append(item)
                if len(top) == k:
                    break
        out.append(top)
    return out


def unseen_top(ranked: Sequence, own: set, k: int) -> list:
    """The first k of `ranked` (best first; "" is padding) that are not in `own`."""
    return list(itertools.islice((item for item in ranked if item and item not in own), k))


def top_k_unseen(ranked_fn: Callable[[list, int], Sequence[Sequence]], users: list, seen: Mapping[object, set],
                 k: int, users_per_call: int) -> list[list]:
    """Each user's top k with their `seen` items left out, asking `ranked_fn(users, n)` for each
    user's best n in chunks of `users_per_call` users.

    It asks for enough to fill k after leaving the seen items out, whether or
    not the ranker leaves them out itself. Chunks hold users of similar
    history length, so a chunk asks for about what its own users need rather
    than what its most active user does; the result is in `users`' order.
    """
    order = sorted(range(len(users)), key=lambda i: len(seen.get(users[i], ())))
    out: list[list] = [[] for _ in users]
    for start in range(0, len(order), users_per_call):
        rows = order[start:start + users_per_call]
        chunk = [users[i] for i in rows]
        ranked = ranked_fn(chunk, k + max(len(seen.get(u, ())) for u in chunk))
        for i, user, row in zip(rows, chunk, ranked):
            out[i] = unseen_top(row, seen.get(user, set()), k)
    return out


@dataclasses.dataclass(frozen=True)
class RankingThreshold:
    """When the model ranks well enough to bless: `metric` (one of METRICS, at the evaluation's k)
    on the users of `slice` (OVERALL, KNOWN, FOLD_IN or "user_activity:<tier>") must reach `bound` and be
    at most `max_regression` below the baseline model's. A slice with no judged user fails."""

    metric: str
    bound: float
    max_regression: float
    slice: str = OVERALL

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"ranking threshold metric {self.metric!r} is not one of {list(METRICS)}")
        if not 0.0 <= self.bound <= 1.0 or self.max_regression < 0:
            raise ValueError(
                f"ranking threshold needs 0 <= bound <= 1 and max_regression >= 0, got {self.bound}, {self.max_regression}"
            )

    def failures(self, value: float, baseline: float | None, k: int) -> list[str]:
        """Why `value` (and `baseline`, the baseline model's, if any) fails the gate; empty if it passes."""
        name = metric_key(self.metric, k)
        out = []
        if not value >= self.bound:
            out.append(f"{name} {value:.4f} is below the bound {self.bound:.4f}")
        if baseline is not None and not value >= baseline - self.max_regression:
            out.append(f"{name} {value:.4f} is more than {self.max_regression:.4f} below the baseline's {baseline:.4f}")
        return out
