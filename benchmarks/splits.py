"""The benchmarks' train/validation/test splits and their per-seed statistics (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender import features

# Shares of the rows, as the pipeline's default PipelineConfig splits them.
VALIDATION_SHARE, TEST_SHARE = 0.1, 0.2
# ML-100K's u1.test: the first 20,000 lines of u.data (the release's mku.sh).
U1_TEST_ROWS = 20_000
HOW = ("temporal", "random", "u1")


def split(frame: pd.DataFrame, how: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, test) as the pipeline splits: 70/10/20.

    "temporal": oldest 70%, the next 10%, the most recent 20% (the pipeline's
    default), by the `features.TIMESTAMP` column. "random": a seeded permutation
    (the hash split's kind). "u1": ML-100K's u1.test (the frame's first rows, in
    u.data's order) as the test rows, a seeded eighth of u1.base as validation.
    """
    n = len(frame)
    if how == "u1":
        if n != 100_000:
            raise ValueError("--split u1 is ML-100K's: expected its 100,000 ratings")
        base = U1_TEST_ROWS + np.random.default_rng(seed).permutation(n - U1_TEST_ROWS)
        cut = len(base) // 8
        return frame.iloc[base[cut:]], frame.iloc[base[:cut]], frame.iloc[:U1_TEST_ROWS]
    if how == "random":
        order = np.random.default_rng(seed).permutation(n)
    else:
        order = np.argsort(frame[features.TIMESTAMP].to_numpy(), kind="stable")
    train_end = int((1 - VALIDATION_SHARE - TEST_SHARE) * n)
    test_start = int((1 - TEST_SHARE) * n)
    return frame.iloc[order[:train_end]], frame.iloc[order[train_end:test_start]], frame.iloc[order[test_start:]]


def interaction_rows(frame: pd.DataFrame) -> list[tuple[bytes, bytes, int, int]]:
    """(user_id, item_id, binary_rating, timestamp) per row, as the RankingEvaluator reads its splits."""
    return list(zip(
        frame[features.USER_ID].astype(str).str.encode("utf-8"), frame[features.ITEM_ID].astype(str).str.encode("utf-8"),
        frame[features.BINARY_RATING].astype(int), frame[features.TIMESTAMP].astype(np.int64),
    ))


def mean_and_std(values) -> dict[str, float]:
    """{"mean", "std"} of one figure over seeds (sample standard deviation; 0 for one seed), to 4 places."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": round(float(values.mean()), 4), "std": round(std, 4)}
