"""Ranking metrics by hand-computed cases; the evaluation's users, exclusions, slices and gate."""

import math
from collections import Counter

import numpy as np
import pytest

from components import ranking
from components.ranking import MODEL, POPULARITY, evaluate
from recommender import features


def test_recall_ndcg_and_hit_rate_match_hand_computed_values():
    # User a: liked {x, y}; top 3 = [x, q, y]: hits at ranks 1 and 3.
    # User b: liked {z}; top 3 = [q, r, s]: no hit.
    values = ranking.per_user([["x", "q", "y"], ["q", "r", "s"]], [{"x", "y"}, {"z"}], 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    np.testing.assert_allclose(values[0], [1.0, dcg / ideal, 1.0])
    np.testing.assert_allclose(values[1], [0.0, 0.0, 0.0])
    summary = ranking.summarize(values, 3)
    assert summary == pytest.approx({"recall_at_3": 0.5, "ndcg_at_3": dcg / ideal / 2, "hit_rate_at_3": 0.5, "users": 2})
    # More liked items than k: recall is bounded by k / liked, NDCG's ideal has k terms.
    (many,) = ranking.per_user([["a", "b"]], [{"a", "b", "c", "d"}], 2)
    np.testing.assert_allclose(many, [0.5, 1.0, 1.0])


def test_popularity_leaves_each_users_own_items_out_and_breaks_ties_by_item():
    counts = Counter({"i1": 5, "i2": 5, "i3": 2, "i4": 1})
    top = ranking.popularity_top(ranking.by_popularity(counts), {"u": {"i1"}}, ["u", "new"], 2)
    assert top == [["i2", "i3"], ["i1", "i2"]]
    assert ranking.unseen_top([b"a", b"b", b"", b"c"], {b"b"}, 5) == [b"a", b"c"]


def test_the_gate_needs_the_bound_and_no_large_drop_from_the_baseline():
    gate = ranking.RankingThreshold(ranking.NDCG, bound=0.1, max_regression=0.01)
    assert gate.failures(0.2, 0.205, 10) == []
    assert gate.failures(0.2, None, 10) == []
    (drop,) = gate.failures(0.2, 0.25, 10)
    assert drop == "ndcg_at_10 0.2000 is more than 0.0100 below the baseline's 0.2500"
    assert len(gate.failures(0.05, 0.25, 10)) == 2
    with pytest.raises(ValueError, match="not one of"):
        ranking.RankingThreshold("auc", 0.1, 0.0)
    with pytest.raises(ValueError, match="bound"):
        ranking.RankingThreshold(ranking.RECALL, 1.5, 0.0)


def test_evaluate_judges_users_with_a_liked_new_item_and_slices_them_by_activity():
    train = [(b"heavy", f"i{n}".encode(), 1, 0) for n in range(12)] + [(b"light", b"i0", 1, 0)]
    eval_rows = [
        (b"heavy", b"i20", 1, 5), (b"heavy", b"i21", 0, 6),
        (b"light", b"i1", 1, 5),
        (b"light", b"i0", 1, 6),  # liked again, but a training item: never recommendable
        (b"cold", b"i0", 1, 7),
        (b"disliker", b"i3", 0, 5),  # no liked item: not judged
    ]
    asked = {}

    def oracle(users, seen, histories):
        # A known user's history is its distinct training items, oldest first (all at time 0 here:
        # ties go by item ID, whatever the rows' order); "cold" has none.
        assert set(histories) == {u for u in users if u != b"cold"}
        assert all(histories[u] == sorted(seen[u]) for u in histories)
        asked.update({u: set(seen.get(u, ())) for u in users})
        return [sorted({b"heavy": [b"i20"], b"light": [b"i1"], b"cold": [b"i0"]}[u]) for u in users]

    result = evaluate(train, eval_rows, oracle, None, 10, features.DEFAULT_TIER_THRESHOLDS)
    assert sorted(asked) == [b"cold", b"heavy", b"light"]
    assert asked[b"light"] == {b"i0"} and asked[b"cold"] == set()
    overall = result[ranking.OVERALL]
    assert overall[MODEL] == pytest.approx({"recall_at_10": 1.0, "ndcg_at_10": 1.0, "hit_rate_at_10": 1.0, "users": 3})
    # Popularity: i0 (2 interactions) first, then i1..i11 by name; heavy had them all in training.
    assert overall[POPULARITY]["hit_rate_at_10"] == pytest.approx(2 / 3)
    assert result[ranking.KNOWN][MODEL]["users"] == 2
    assert result["user_activity:unseen"][MODEL]["users"] == 1
    assert result["user_activity:few"][MODEL]["users"] == 1
    assert result["user_activity:some"][MODEL]["users"] == 1
    # "cold" has one eval interaction: no first half to fold in.
    assert ranking.FOLD_IN not in result


def test_the_fold_in_slice_gives_new_users_their_first_half_by_time_and_judges_the_rest():
    train = [(b"old", b"a", 1, 0), (b"old", b"b", 1, 0)]
    eval_rows = [
        (b"new", b"c", 1, 30), (b"new", b"a", 0, 10), (b"new", b"b", 1, 20), (b"new", b"d", 1, 40),
        (b"new2", b"c", 0, 1), (b"new2", b"d", 0, 2),  # nothing liked after its history: not judged
        (b"old", b"c", 1, 50),  # a known user: never in the fold-in slice
    ]
    calls = []

    def ranker(users, left_out, histories):
        calls.append((users, {u: set(v) for u, v in left_out.items() if u in users}, histories))
        return [[b"d", b"x"] for _ in users]

    result = evaluate(train, eval_rows, ranker, None, 2, features.DEFAULT_TIER_THRESHOLDS)
    users, left_out, histories = calls[-1]
    assert users == [b"new"] and histories == {b"new": [b"a", b"b"]} and left_out == {b"new": {b"a", b"b"}}
    # Judged on c and d, liked after the history: d found at rank 1.
    assert result[ranking.FOLD_IN][MODEL] == pytest.approx(
        {"recall_at_2": 0.5, "ndcg_at_2": 1 / (1 + 1 / np.log2(3)), "hit_rate_at_2": 1.0, "users": 1}
    )
    # Popularity leaves the history out: a and b (the only trained items) are gone.
    assert result[ranking.FOLD_IN][POPULARITY]["hit_rate_at_2"] == 0.0


def test_a_ranking_threshold_on_a_slice_gates_on_that_slice_only():
    gate = ranking.RankingThreshold(ranking.RECALL, bound=0.6, max_regression=0.0, slice=ranking.FOLD_IN)
    assert gate.failures(0.5, None, 10) == ["recall_at_10 0.5000 is below the bound 0.6000"]
    assert ranking.RankingThreshold(ranking.RECALL, 0.1, 0.0).slice == ranking.OVERALL


def test_top_k_unseen_keeps_the_users_order_and_asks_each_chunk_for_what_its_users_need():
    """A ranker that does not leave seen items out: each user still gets k unseen items, in
    the callers' order, and a chunk of light users is not asked for a heavy user's history."""
    catalogue = [f"i{n}".encode() for n in range(50)]
    seen = {b"heavy": set(catalogue[:30]), b"light1": {catalogue[0]}, b"light2": set(), b"light3": {catalogue[1]}}
    users = [b"light1", b"heavy", b"light2", b"light3"]
    asked = []

    def ranked_fn(chunk, n):
        asked.append((list(chunk), n))
        return [catalogue[:n] for _ in chunk]

    top = ranking.top_k_unseen(ranked_fn, users, seen, 3, users_per_call=2)
    assert top == [catalogue[1:4], catalogue[30:33], catalogue[0:3], [catalogue[0], *catalogue[2:4]]]
    # Sorted by history length: the two lightest together, then light3 with heavy.
    assert asked == [([b"light2", b"light1"], 4), ([b"light3", b"heavy"], 33)]


def test_a_known_users_history_is_its_distinct_training_items_oldest_first():
    train = [(b"u", b"late", 1, 30), (b"u", b"early", 0, 10), (b"u", b"mid", 1, 20), (b"u", b"early", 1, 40)]
    eval_rows = [(b"u", b"new", 1, 50)]
    calls = []

    def ranker(users, left_out, histories):
        calls.append(histories)
        return [[b"new"] for _ in users]

    evaluate(train, eval_rows, ranker, None, 1, features.DEFAULT_TIER_THRESHOLDS)
    assert calls[0] == {b"u": [b"early", b"mid", b"late"]}


def test_the_summary_says_when_the_ranking_judged_a_sample_of_the_users():
    from results.summary import format_ranking

    metrics = {"recall_at_10": 0.1, "ndcg_at_10": 0.2, "hit_rate_at_10": 0.5, "users": 40}
    everyone = {"k": 10, "sample": 1.0, "slices": {ranking.OVERALL: {MODEL: metrics}}}
    assert "sample" not in format_ranking(everyone)[0]
    (header, line) = format_ranking({**everyone, "sample": 0.25})
    assert header.endswith("40 users with a liked eval item; a sample of 25% of the users, by a keyed hash):")
    assert line == "  model: hit_rate_at_10=0.5000, ndcg_at_10=0.2000, recall_at_10=0.1000"
