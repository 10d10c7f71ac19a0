"""Benchmark: does ML-100K's side information predict what IDs cannot?

    python -m benchmarks.side_information --movielens ../shared/datasets/ml-100k
    python -m benchmarks.side_information --movielens PATH --split random --seeds 42 43 44

A linear probe, before any of it is carried through the pipeline: a
regularised bias baseline (global mean + item bias + user bias, the
BaselineOnly peer) fitted on the train rows, then a ridge regression of its
residual on one group of features at a time:

- demographics: u.user's age band, gender and occupation, and age band and
  gender crossed with u.item's genres;
- item: u.item's genres and release decade;
- recency: the user's number of earlier interactions and the time since the
  previous one (both causal: only rows with an earlier timestamp), and the
  item's age at the time of the rating.

The ridge strength is chosen on the validation rows; the test rows score it.
Rows of users the train rows never saw get baseline + probe; others get the
baseline alone (they have a user bias), and `all_rows` adds the probe to every
row. Splits are `benchmarks.splits.split`'s (the pipeline's 70/10/20). Prints JSON:
per feature group, RMSE in stars and like-AUC (rating >= 4), mean and sample
standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from benchmarks.splits import HOW, mean_and_std, split

AGE_BANDS = [0, 18, 25, 35, 45, 50, 56, 200]
RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0)
BIAS_SHRINKAGE = 10.0
LIKE_STARS = 4
GROUPS = ("none", "demographics", "item", "recency", "all")



def load(movielens: Path) -> pd.DataFrame:
    """u.data's rows in file order, joined with u.user and u.item, plus causal recency columns."""
    frame = pd.read_csv(movielens / "u.data", sep="\t", names=["user", "item", "stars", "timestamp"])
    users = pd.read_csv(movielens / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"])
    items = pd.read_csv(movielens / "u.item", sep="|", header=None, encoding="latin-1")
    genres = items.iloc[:, 5:].to_numpy(dtype=float)
    released = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce")
    item_table = pd.DataFrame({
        "item": items[0],
        "released": (released - pd.Timestamp(0)).dt.total_seconds(),
        "genres": list(genres),
    })
    frame = frame.merge(users, on="user", how="left").merge(item_table, on="item", how="left")
    frame = frame.set_index(pd.RangeIndex(len(frame)))
    ordered = frame.sort_values("timestamp", kind="stable")
    earlier = ordered.groupby("user").cumcount()
    gap = ordered["timestamp"] - ordered.groupby("user")["timestamp"].shift(1)
    frame["earlier"] = earlier.reindex(frame.index)
    frame["gap_hours"] = (gap / 3600).reindex(frame.index)
    frame["item_age_years"] = (frame["timestamp"] - frame["released"]) / (365.25 * 86_400)
    return frame


class Baseline:
    """Global mean + shrunk item bias + shrunk user bias (on the item residual), fitted on `train`."""

    def __init__(self, train: pd.DataFrame):
        self.mean = float(train["stars"].mean())
        self.item = self._bias(train, "item", train["stars"] - self.mean)
        self.user = self._bias(train, "user", train["stars"] - self.mean - self._item(train))

    @staticmethod
    def _bias(frame: pd.DataFrame, key: str, residual: pd.Series) -> pd.Series:
        grouped = residual.groupby(frame[key])
        return grouped.sum() / (grouped.count() + BIAS_SHRINKAGE)

    def _item(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["item"].map(self.item).fillna(0.0).to_numpy()

    def item_only(self, frame: pd.DataFrame) -> np.ndarray:
        return self.mean + self._item(frame)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.item_only(frame) + frame["user"].map(self.user).fillna(0.0).to_numpy()

    def knows_user(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["user"].isin(self.user.index).to_numpy()


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    return np.eye(width)[np.clip(codes, 0, width - 1)]


def design(frame: pd.DataFrame, group: str, occupations: list[str]) -> np.ndarray:
    """The probe's inputs for one feature group, with an intercept column."""
    n = len(frame)
    columns = [np.ones((n, 1))]
    genres = np.stack(frame["genres"].to_numpy())
    if group in ("demographics", "all"):
        band = _one_hot(np.searchsorted(AGE_BANDS, frame["age"].to_numpy(), side="right") - 1, len(AGE_BANDS) - 1)
        male = (frame["gender"].to_numpy() == "M").astype(float)[:, None]
        occupation = (frame["occupation"].to_numpy()[:, None] == np.array(occupations)[None, :]).astype(float)
        columns += [band, male, occupation, genres * male, (band[:, :, None] * genres[:, None, :]).reshape(n, -1)]
    if group in ("item", "all"):
        decade = (pd.to_datetime(frame["released"], unit="s").dt.year.fillna(1995).to_numpy() - 1920) // 10
        columns += [genres, _one_hot(decade.astype(int), 8)]
    if group in ("recency", "all"):
        earlier = np.log1p(frame["earlier"].to_numpy(dtype=float))
        gap = np.log1p(frame["gap_hours"].fillna(1e6).to_numpy())
        age = np.clip(frame["item_age_years"].fillna(5.0).to_numpy(), 0.0, 80.0)
        first = (frame["earlier"].to_numpy() == 0).astype(float)
        columns += [np.stack([earlier, earlier**2, gap, gap**2, age, np.log1p(age), first], axis=1)]
    return np.hstack(columns)


def _scores(stars: np.ndarray, predicted: np.ndarray) -> dict:
    return {
        "rmse_stars": float(np.sqrt(np.mean((predicted - stars) ** 2))),
        "like_auc": float(roc_auc_score(stars >= LIKE_STARS, predicted)),
    }


def probe(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, group: str) -> dict:
    """Test scores of baseline + ridge probe, the ridge strength chosen on `validation`."""
    baseline = Baseline(train)
    occupations = sorted(train["occupation"].unique())
    x_train = design(train, group, occupations)
    residual = train["stars"].to_numpy() - baseline.item_only(train)

    def predictions(frame: pd.DataFrame, weights: np.ndarray, every_row: bool) -> np.ndarray:
        side = design(frame, group, occupations) @ weights
        base = baseline.predict(frame)
        return base + side if every_row else np.where(baseline.knows_user(frame), base, base + side)

    out = {}
    for every_row, name in ((False, "new_users"), (True, "all_rows")):
        fits = {
            strength: Ridge(alpha=strength, fit_intercept=False).fit(x_train, residual).coef_
            for strength in RIDGE_STRENGTHS
        }
        chosen = min(fits, key=lambda s: _scores(
            validation["stars"].to_numpy(), predictions(validation, fits[s], every_row))["rmse_stars"])
        out[name] = {**_scores(test["stars"].to_numpy(), predictions(test, fits[chosen], every_row)),
                     "ridge_strength": chosen}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=HOW, default="temporal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    frame = load(args.movielens)
    per_seed = {group: [] for group in GROUPS}
    new_user_share = None
    for seed in args.seeds:
        train, validation, test = split(frame, args.split, seed)
        if new_user_share is None:
            new_user_share = round(float(1 - Baseline(train).knows_user(test).mean()), 4)
        for group in GROUPS:
            per_seed[group].append(probe(train, validation, test, group))
    summary = {}
    for group, runs in per_seed.items():
        summary[group] = {
            rows: {
                figure: mean_and_std([r[rows][figure] for r in runs])
                for figure in ("rmse_stars", "like_auc")
            }
            for rows in ("new_users", "all_rows")
        }
    print(json.dumps({
        "split": args.split,
        "seeds": args.seeds,
        "test_rows_of_users_new_to_train": new_user_share,
        "groups": summary,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
