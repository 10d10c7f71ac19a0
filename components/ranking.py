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

Who is judged, on what, and in which slices is decided one user at a time
(`judged_requests`), and each slice's figures are sums over its users
(`slice_sums`, `summaries`). `evaluate` puts them together in one process;
`components.ranking_job` does the same on Beam workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from recommender.features import TIERS

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
    return from_sums(values.sum(axis=0), len(values), k)


def from_sums(total: np.ndarray, users: int, k: int) -> dict[str, float]:
    """`summarize` from the column sums of `users` users' `per_user` values."""
    out = {metric_key(m, k): float(total[i] / users) if users else math.nan for i, m in enumerate(METRICS)}
    out["users"] = users
    return out


def by_popularity(counts: Mapping) -> list:
    """The items of `counts` (item -> training interactions), most interacted-with first, ties by item."""
    return sorted(counts, key=lambda item: (-counts[item], item))


def popularity_top(popular: Sequence, seen: Mapping[object, set], users: Iterable, k: int) -> list[list]:
    """Each user's first k of `popular` (`by_popularity`'s order), the user's own left out."""
    return [unseen_top(popular, seen.get(user, set()), k) for user in users]


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


def tier(count: int, some: int, many: int) -> str:
    """A user's activity tier by training interactions, as `components.preprocessing.tiers` names them."""
    unseen, few, mid, top = TIERS
    return unseen if count == 0 else few if count < some else mid if count < many else top


# (users, items each user is judged without, the users' request histories or None) -> each user's top k.
TopFn = Callable[[list[bytes], Mapping[bytes, set], Mapping[bytes, list] | None], list | None]


# The kind of request of a user judged with its own history (fold-in requests are the other kind).
JUDGED = "judged"


@dataclasses.dataclass(frozen=True)
class Judged:
    """One user's ranking request and what it is judged on.

    `kind` is JUDGED (a user with a liked eval item not among its training
    items) or FOLD_IN (a new user given its first eval interactions);
    `slices` are the slices the user counts in; `history` is the request's
    history (empty for a new user outside the fold-in slice); `left_out` are
    the items no ranker may return; `relevant` are the liked items it is judged on.
    """

    kind: str
    user: bytes
    slices: tuple[str, ...]
    history: tuple[bytes, ...]
    left_out: frozenset[bytes]
    relevant: frozenset[bytes]



def sampled(user: bytes, fraction: float) -> bool:
    """Whether `user` is among the judged users when a `fraction` of them is judged: a keyed hash of
    the ID, so the same users are chosen on every run, worker and runner."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(user, digest_size=8, key=b"ranking-sample").digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def judged_requests(user: bytes, train_events: Iterable[tuple[int, bytes]],
                    eval_events: Iterable[tuple[int, bytes, int]], tier_thresholds: tuple[int, int],
                    fraction: float = 1.0) -> list[Judged]:
    """The requests one user is judged by, from its training (timestamp, item) and eval (timestamp,
    item, liked) interactions, in any order; none when the user is not `sampled`.

    A known user's history is its distinct training items, each at its first
    time, oldest first; the fold-in history is a new user's first half of eval
    interactions by time. Ties in time go by item ID, so neither depends on how
    the rows were split into files.
    """
    if not sampled(user, fraction):
        return []
    first: dict[bytes, int] = {}
    activity = 0
    for timestamp, item in train_events:
        first[item] = min(timestamp, first.get(item, timestamp))
        activity += 1
    events = sorted(eval_events)
    out = []
    relevant = frozenset(item for _, item, liked in events if liked and item not in first)
    if relevant:
        history = tuple(item for item, _ in sorted(first.items(), key=lambda pair: (pair[1], pair[0])))
        slices = (OVERALL, *((KNOWN,) if first else ()),
                  f"user_activity:{tier(activity, *tier_thresholds)}")
        out.append(Judged(JUDGED, user, slices, history, frozenset(first), relevant))
    if not first:
        cut = len(events) // 2
        history = tuple(item for _, item, _ in events[:cut])
        later = frozenset(item for _, item, liked in events[cut:] if liked and item not in history)
        if history and later:
            out.append(Judged(FOLD_IN, user, (FOLD_IN,), history, frozenset(history), later))
    return out


def ranked(requests: list[Judged], model_top_fn: TopFn, baseline_top_fn: TopFn | None, popular: list[bytes],
           k: int) -> dict[str, np.ndarray]:
    """{ranker: [requests, 3] `per_user` values} for requests of one kind; `popular` is every
    training item, most interacted-with first (`by_popularity`)."""
    users = [r.user for r in requests]
    left_out = {r.user: set(r.left_out) for r in requests}
    histories = {r.user: list(r.history) for r in requests if r.history}
    tops = {MODEL: model_top_fn(users, left_out, histories),
            POPULARITY: popularity_top(popular, left_out, users, k)}
    if baseline_top_fn is not None:
        baseline = baseline_top_fn(users, left_out, histories)
        if baseline is not None:
            tops[BASELINE] = baseline
    relevant = [r.relevant for r in requests]
    return {name: per_user(top, relevant, k) for name, top in tops.items()}


# The sums of one slice and ranker: (per-metric sums of `per_user` values, users).
Sums = tuple[np.ndarray, int]


def slice_sums(requests: list[Judged], values: Mapping[str, np.ndarray]) -> Iterator[tuple[tuple[str, str], Sums]]:
    """((slice, ranker), (values, 1)) for each request, ranker and slice the request counts in."""
    for row, request in enumerate(requests):
        for name, per_ranker in values.items():
            for slice_name in request.slices:
                yield (slice_name, name), (per_ranker[row], 1)


def summaries(sums: Mapping[tuple[str, str], Sums], rankers: Iterable[str], k: int) -> dict:
    """{slice: {ranker: metrics}} from each (slice, ranker)'s summed values; the overall slice is
    there for every ranker in `rankers` even when no user was judged."""
    nobody = np.zeros(len(METRICS))
    result: dict[str, dict] = {OVERALL: {name: from_sums(nobody, 0, k) for name in rankers}}
    for (slice_name, name), (total, users) in sorted(sums.items()):
        result.setdefault(slice_name, {})[name] = from_sums(total, users, k)
    return result


def evaluate(
    train_rows: Iterable[tuple[bytes, bytes, int, int]], eval_rows: Iterable[tuple[bytes, bytes, int, int]],
    model_top_fn: TopFn, baseline_top_fn: TopFn | None, k: int, tier_thresholds: tuple[int, int],
    fraction: float = 1.0,
) -> dict:
    """{slice: {ranker: metrics}} over the users with a liked item among `eval_rows`, and the
    `fold_in` slice of new users (see the module docstring), in this process.

    Rows are (user_id, item_id, liked, timestamp); `*_top_fn(users, items
    left out per user, histories)` gives each user's top k, those items left
    out; `histories` are the requests' histories: a known user's training
    items, a fold-in user's first interactions. `fraction` < 1 judges only the
    `sampled` users. `components.ranking_job` computes the same on Beam.
    """
    events: dict[bytes, tuple[list, list]] = {}
    counts: Counter = Counter()
    for user, item, _, timestamp in train_rows:
        events.setdefault(user, ([], []))[0].append((timestamp, item))
        counts[item] += 1
    for user, item, liked, timestamp in eval_rows:
        events.setdefault(user, ([], []))[1].append((timestamp, item, liked))
    requests = [r for user in sorted(events)
                for r in judged_requests(user, *events[user], tier_thresholds, fraction)]
    popular = by_popularity(counts)
    sums: dict[tuple[str, str], Sums] = {}
    rankers = {MODEL, POPULARITY}
    for kind in (JUDGED, FOLD_IN):
        of_kind = [r for r in requests if r.kind == kind]
        if not of_kind:
            continue
        values = ranked(of_kind, model_top_fn, baseline_top_fn, popular, k)
        rankers.update(values)
        for key, (row, users) in slice_sums(of_kind, values):
            total, counted = sums.get(key, (0.0, 0))
            sums[key] = (total + row, counted + users)
    if not requests and baseline_top_fn is not None and baseline_top_fn([], {}, {}) is not None:
        rankers.add(BASELINE)
    return summaries(sums, sorted(rankers), k)


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
