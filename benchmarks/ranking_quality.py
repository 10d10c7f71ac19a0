"""Benchmark: top-10 ranking quality on MovieLens, per ranking score, against popularity.

    python -m benchmarks.ranking_quality --movielens ../shared/datasets/ml-100k [--split temporal|random|u1]
        [--seeds 42 43 44] [--k 10] [--judge validation] [--config '{"batch_size": 1024}']

For each seed: the pipeline's three splits (benchmarks/splits.py), the
pipeline's preprocessing_fn analysed on the training rows, the retrieval
preset (`configs/retrieval-model.json`, with `--config`'s JSON overrides on
top) trained with early stopping on the validation rows, then every user with
a liked test item the user did not have in training is ranked over the whole
catalogue (training items left out) by `recommender.recommend` with each blend
of BLENDS, and scored by `components.ranking.evaluate`, the
RankingEvaluator's own code, with the popularity baseline on the same rows.
Prints JSON: each blend's Recall, NDCG and HitRate at k (mean and standard
deviation over seeds), per user activity tier too, and popularity's; the fits'
seconds (tf.Transform's analysis left out) and epochs per seed.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import tensorflow as tf
import tensorflow_transform as tft

from benchmarks import model_quality, splits
from components import ranking
from components.ranking import MODEL, POPULARITY, evaluate
from pipeline.runner_options import json_value
from recommender import features, recommend
from recommender.config import ModelConfig, RankingConfig, preset
from recommender.model import MultiTaskRecommender, TrainingData
from recommender.training import fit

# name -> RankingConfig fields (the log-space blend of recommender.recommend); the first is the
# retrieval preset's, the last the default's (which has no retrieval task).
_LIKE, _PURCHASE = features.BINARY_RATING, features.PURCHASE_PROBABILITY
BLENDS = {
    "retrieval + log P(like) + log purchase (retrieval preset)": {},
    "retrieval alone": {"weights": {_LIKE: 0.0, _PURCHASE: 0.0}},
    "retrieval + 0.5 log P(like)": {"weights": {_LIKE: 0.5, _PURCHASE: 0.0}},
    "retrieval + log P(like)": {"weights": {_LIKE: 1.0, _PURCHASE: 0.0}},
    "popularity x P(like) x purchase (the default, no retrieval)": {
        "retrieval_weight": 0.0, "popularity_weight": 1.0, "weights": {_LIKE: 1.0, _PURCHASE: 1.0},
    },
}


class Trained(NamedTuple):
    model: MultiTaskRecommender
    training: TrainingData
    tft_output: tft.TFTransformOutput
    fit_seconds: float  # the fits alone (refit included), not tf.Transform's analysis
    epochs_run: tuple[int, ...]


def trained(train_rows, validation_rows, workdir: Path, config: ModelConfig) -> Trained:
    """The model as the Trainer makes it (refit included, when configured), with what it cost."""
    (train_cols, validation_cols), sizes = model_quality.transform_splits(config, [train_rows, validation_rows], workdir)
    start = time.perf_counter()
    fitted = fit(train_cols, validation_cols, sizes, config, verbose=0)
    seconds = time.perf_counter() - start
    return Trained(fitted.model, fitted.training, tft.TFTransformOutput(str(workdir / "transform")), seconds,
                   fitted.epochs_run)


def top_fn(model, tables: recommend.RecommendTables, user_index: dict, num_users: int, k: int,
           item_index: dict | None = None):
    """The RankingEvaluator's top function over `recommend.recommend`, in process: `recommend`
    without histories, `recommend_from_history`'s body with them (`item_index` maps their items;
    a user they do not list has none)."""
    def top(users, seen, histories):
        def ranked(chunk, n):
            # An unknown user gets an OOV index.
            indices = tf.constant([user_index.get(u, num_users) for u in chunk], tf.int64)
            history = None
            if histories is not None:
                history = tf.ragged.constant(
                    [[item_index[i] for i in histories.get(u, ()) if i in item_index] for u in chunk], dtype=tf.int64,
                    ragged_rank=1,
                )
            return recommend.recommend(model, tables, indices, tf.constant(n, tf.int32), history)[
                features.ITEM_ID].numpy()

        return ranking.top_k_unseen(ranked, users, seen, k, recommend.users_per_call(int(tables.items.shape[0])))

    return top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=splits.HOW, default="temporal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--k", type=int, default=ranking.DEFAULT_K)
    parser.add_argument(
        "--judge", choices=("validation", "test"), default="test",
        help="validation: fit on train only (no refit) and judge on the validation rows, to choose a blend",
    )
    parser.add_argument("--config", default=None, help="JSON overrides of ModelConfig() (or a JSON file of them)")
    args = parser.parse_args()
    overrides = json_value(args.config, "--config") if args.config else {}
    per_seed: dict[str, list[dict]] = {}
    costs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        frame, _ = model_quality.load(args.movielens, Path(tmp))
        for seed in args.seeds:
            train_rows, validation_rows, test_rows = splits.split(frame, args.split, seed)
            config = preset("retrieval", **{**overrides, "seed": seed, "refit": args.judge == "test"})
            if args.judge == "validation":
                test_rows = validation_rows
            model, training, tft_output, seconds, epochs = trained(
                train_rows, validation_rows, Path(tmp) / f"seed-{seed}", config)
            costs.append({"fit_seconds": seconds, "epochs_run": list(epochs)})
            print(json.dumps({"seed": seed, **costs[-1]}), file=sys.stderr)
            users = tft_output.vocabulary_by_name(features.vocabulary_name(features.USER_ID))
            user_index = {u: i for i, u in enumerate(users)}
            catalogue = list(tft_output.vocabulary_by_name(features.vocabulary_name(features.ITEM_ID)))
            average = recommend.average_user(model, len(user_index), len(catalogue), seed)
            # As the RankingEvaluator: the rows the model learnt from are left out of its rankings.
            judged = (splits.interaction_rows(model_quality.analysed_rows(config, train_rows, validation_rows)),
                      splits.interaction_rows(test_rows))
            for name, blend in BLENDS.items():
                tables = recommend.RecommendTables(
                    catalogue, training.counts(len(catalogue)), len(user_index), average, RankingConfig(**blend),
                    config.retrieval.max_history,
                )
                result = evaluate(
                    *judged,
                    top_fn(model, tables, user_index, len(user_index), args.k, {i: n for n, i in enumerate(catalogue)}),
                    None,
                    args.k, features.DEFAULT_TIER_THRESHOLDS,
                )
                per_seed.setdefault(name, []).append({s: r[MODEL] for s, r in result.items()})
                print(json.dumps({"seed": seed, "name": name, **result[ranking.OVERALL][MODEL]}), file=sys.stderr)
            # Popularity ranks the same rows whatever the blend: once per seed.
            per_seed.setdefault("popularity baseline", []).append({s: r[POPULARITY] for s, r in result.items()})

    def averaged(results: list[dict]) -> dict:
        return {
            slice_name: {
                key: splits.mean_and_std([r[slice_name][key] for r in results if slice_name in r])
                for key in results[0][slice_name]
            }
            for slice_name in results[0]
        }

    print(json.dumps({
        "dataset": str(args.movielens), "split": args.split, "seeds": args.seeds, "k": args.k,
        "judged_on": args.judge, "overrides": overrides,
        "results": {name: averaged(results) for name, results in per_seed.items()},
        "fit_seconds": splits.mean_and_std([c["fit_seconds"] for c in costs]),
        "per_seed_costs": costs,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
