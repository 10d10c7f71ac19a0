"""Benchmark: the pipeline's top-10 lists against standard top-N recommenders, by the RankingEvaluator's protocol.

    python -m benchmarks.ranking_peers --movielens ../shared/datasets/ml-100k [--split temporal|random]
        [--seeds 42 43 44] [--k 10] [--peers ease puresvd ...]

For each seed, on the pipeline's splits (benchmarks/splits.py), every ranker
is judged by `components.ranking.evaluate`, the RankingEvaluator's
own code: the same judged users, the same liked items, the same items left
out, and the `fold_in` slice, where a new user's first eval interactions are
the request's history. Peers (popularity is the evaluator's own baseline):

- EASE (Steck 2019), closed form; PureSVD (sklearn's randomized SVD);
  RP3beta; ItemKNN (cosine with shrinkage, top neighbours): these score a
  user's interaction row, so a history is folded in by adding it to the row;
- ALS and BPR from `implicit`: ALS folds a history in with
  `recalculate_user`; BPR has no fold-in, so a history's user vector is the
  mean of its items' factors.

Each peer's settings, and whether its positives are every training pair or
only liked ones, are chosen by NDCG@k on the validation split (fitted on the
train split); the chosen peer is refitted on train + validation and judged on
the test split, as the pipeline's models are (the default ModelConfig and the
retrieval preset, refit included). A user with no training row and no history
gets popularity's ranking from every peer. Prints JSON: per ranker, the overall, known-user and fold-in
metrics (mean and standard deviation over seeds) and the chosen settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from benchmarks import splits
from benchmarks.model_quality import load
from components import ranking
from components.ranking import evaluate
from recommender import features

# Each peer's settings to try on validation.
GRIDS: dict[str, dict[str, Sequence]] = {
    "ease": {"l2": (100.0, 200.0, 400.0, 800.0)},
    "puresvd": {"factors": (16, 32, 64, 128)},
    "rp3beta": {"alpha": (0.6, 1.0), "beta": (0.2, 0.4, 0.6)},
    "itemknn": {"neighbours": (50, 100, 200), "shrink": (0.0, 10.0)},
    "als": {"factors": (32, 64), "regularization": (0.01, 0.1), "alpha": (1.0, 10.0)},
    "bpr": {"factors": (32, 64), "learning_rate": (0.01, 0.05)},
}
POSITIVES = ("all", "liked")


class Peer:
    """A top-N recommender over item indices: `fit` on a user x item 0/1 matrix, then `scores`."""

    def __init__(self, name: str, settings: Mapping, seed: int):
        self.name, self.settings, self.seed = name, dict(settings), seed

    def fit(self, matrix: sp.csr_matrix) -> Peer:
        s, x = self.settings, matrix.astype(np.float64)
        if self.name == "ease":
            gram = (x.T @ x).toarray()
            gram[np.diag_indices_from(gram)] += s["l2"]
            inverse = np.linalg.inv(gram)
            self.weights = inverse / -np.diag(inverse)
            self.weights[np.diag_indices_from(self.weights)] = 0.0
        elif self.name == "puresvd":
            _, _, vt = randomized_svd(x, n_components=s["factors"], random_state=self.seed)
            self.weights = vt.T @ vt
        elif self.name == "rp3beta":
            user_to_item = _row_normalised(x).power(s["alpha"])
            item_to_user = _row_normalised(x.T.tocsr()).power(s["alpha"])
            popularity = np.asarray(x.sum(axis=0)).ravel()
            weights = (item_to_user @ user_to_item).toarray()
            weights /= np.power(np.maximum(popularity, 1.0), s["beta"])[None, :]
            np.fill_diagonal(weights, 0.0)
            self.weights = weights
        elif self.name == "itemknn":
            counts = (x.T @ x).toarray()
            norms = np.sqrt(np.diag(counts))
            similarity = counts / (np.outer(norms, norms) + s["shrink"] + 1e-9)
            np.fill_diagonal(similarity, 0.0)
            cut = np.argsort(-similarity, axis=0)[s["neighbours"]:]
            np.put_along_axis(similarity, cut, 0.0, axis=0)
            self.weights = similarity
        else:
            from implicit.cpu.als import AlternatingLeastSquares
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            cls = AlternatingLeastSquares if self.name == "als" else BayesianPersonalizedRanking
            kwargs = dict(s)
            alpha = kwargs.pop("alpha", 1.0)
            self.model = cls(**kwargs, random_state=self.seed, num_threads=1)
            self.model.fit((x * alpha).tocsr().astype(np.float32), show_progress=False)
            self.alpha = alpha
        return self

    def scores(self, rows: sp.csr_matrix, known: Sequence[int | None]) -> np.ndarray:
        """[len(rows), items]: each user's scores from the interaction row (training items plus any
        history); `known`: each user's training index (None: no training row)."""
        if hasattr(self, "weights"):
            return np.asarray(rows @ self.weights)
        items = self.model.item_factors
        out = np.zeros((rows.shape[0], items.shape[0]))
        for row, user in enumerate(known):
            history = rows[row]
            if self.name == "als" and (user is not None or history.nnz):
                vector = self.model.recalculate_user(0, (history * self.alpha).astype(np.float32))
            elif user is not None:
                vector = self.model.user_factors[user]
            elif history.nnz:
                vector = items[history.indices].mean(axis=0)
            else:
                continue
            out[row] = items @ np.ravel(vector)
        return out


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(sums, 1e-12)) @ matrix


def peer_top(peer_name: str, settings: Mapping, positives: str, train: list[tuple], k: int, seed: int) -> Callable:
    """The RankingEvaluator's top function for one peer fitted on `train` rows."""
    users = sorted({u for u, *_ in train})
    items = sorted({i for _, i, *_ in train})
    user_index, item_index = {u: n for n, u in enumerate(users)}, {i: n for n, i in enumerate(items)}
    kept = [r for r in train if positives == "all" or r[2]]
    matrix = sp.csr_matrix(
        (np.ones(len(kept)), ([user_index[r[0]] for r in kept], [item_index[r[1]] for r in kept])),
        shape=(len(users), len(items)),
    )
    matrix.data[:] = 1.0
    peer = Peer(peer_name, settings, seed).fit(matrix)
    popularity = np.bincount([item_index[r[1]] for r in train], minlength=len(items)).astype(float)

    def top(chunk_users, left_out, histories):
        out = []
        for start in range(0, len(chunk_users), 256):
            chunk = chunk_users[start:start + 256]
            known = [user_index.get(u) for u in chunk]
            rows = sp.lil_matrix((len(chunk), len(items)))
            for row, user in enumerate(chunk):
                if known[row] is not None:
                    # A known user's request history is its training items: the peer's own
                    # fitted row already holds them, as its positives (every pair or liked pairs).
                    rows[row] = matrix[known[row]]
                    continue
                for item in (histories or {}).get(user, ()):
                    if item in item_index:
                        rows[row, item_index[item]] = 1.0
            rows = rows.tocsr()
            scores = peer.scores(rows, known)
            empty = np.asarray(rows.sum(axis=1)).ravel() == 0
            scores[empty] = popularity  # neither a training row nor a history
            for row, user in enumerate(chunk):
                for item in left_out.get(user, ()):
                    if item in item_index:
                        scores[row, item_index[item]] = -np.inf
            best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            out.extend([items[j] for j in row if np.isfinite(scores[r, j])] for r, row in enumerate(best))
        return out

    return top


def judged(result: dict) -> dict:
    """The figures reported per ranker: overall, known users, fold-in."""
    out = {}
    for ranker in result[ranking.OVERALL]:
        out[ranker] = {name: result[key][ranker] for name, key in (
            ("all users", ranking.OVERALL), ("known users", ranking.KNOWN), ("fold-in", ranking.FOLD_IN),
        ) if key in result and ranker in result[key]}
    return out


def tuned_peer(name: str, train: list[tuple], validation: list[tuple], k: int, seed: int) -> tuple[dict, str]:
    """The settings and positives with the best validation NDCG@k."""
    best, best_score = None, -1.0
    grid = GRIDS[name]
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        for positives in POSITIVES:
            result = evaluate(train, validation, peer_top(name, settings, positives, train, k, seed), None, k,
                              features.DEFAULT_TIER_THRESHOLDS)
            score = result[ranking.OVERALL][ranking.MODEL][ranking.metric_key(ranking.NDCG, k)]
            if score > best_score:
                best, best_score = (settings, positives), score
    return best


# Ranker name -> the model config's preset (None: the default ModelConfig).
MODELS = {"model": None, "model, retrieval preset": "retrieval"}


def model_top(train_rows: pd.DataFrame, validation_rows: pd.DataFrame, workdir: Path, k: int, seed: int,
              preset_name: str | None = None):
    """The pipeline's model (default, or the preset `preset_name`), trained as the Trainer trains it,
    as a top function."""
    from benchmarks.ranking_quality import top_fn, trained
    from recommender import recommend
    from recommender.config import ModelConfig, preset

    config = preset(preset_name, seed=seed) if preset_name else ModelConfig(seed=seed)
    model, training, tft_output, *_ = trained(train_rows, validation_rows, workdir, config)
    users = tft_output.vocabulary_by_name(features.vocabulary_name(features.USER_ID))
    catalogue = list(tft_output.vocabulary_by_name(features.vocabulary_name(features.ITEM_ID)))
    tables = recommend.build_tables(model, catalogue, len(users), training, config)
    return top_fn(model, tables, {u: i for i, u in enumerate(users)}, len(users), k,
                  {item: i for i, item in enumerate(catalogue)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=("temporal", "random"), default="temporal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--k", type=int, default=ranking.DEFAULT_K)
    parser.add_argument("--peers", nargs="+", choices=sorted(GRIDS), default=sorted(GRIDS))
    parser.add_argument("--no-model", action="store_true", help="judge the peers only")
    args = parser.parse_args()
    per_seed: dict[str, list[dict]] = {}
    chosen: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        frame, _ = load(args.movielens, Path(tmp))
        for seed in args.seeds:
            train_frame, validation_frame, test_frame = splits.split(frame, args.split, seed)
            train, validation, test = (splits.interaction_rows(f) for f in (train_frame, validation_frame, test_frame))
            both = train + validation
            for name in args.peers:
                settings, positives = tuned_peer(name, train, validation, args.k, seed)
                chosen.setdefault(name, []).append({**settings, "positives": positives})
                result = evaluate(both, test, peer_top(name, settings, positives, both, args.k, seed), None, args.k,
                                  features.DEFAULT_TIER_THRESHOLDS)
                figures = judged(result)
                per_seed.setdefault(name, []).append(figures[ranking.MODEL])
                if name == args.peers[0]:  # popularity ranks the same rows for every peer
                    per_seed.setdefault("popularity", []).append(figures[ranking.POPULARITY])
                print(json.dumps({"seed": seed, "ranker": name, **figures[ranking.MODEL]}), file=sys.stderr)
            for ranker, preset_name in ({} if args.no_model else MODELS).items():
                top = model_top(train_frame, validation_frame, Path(tmp) / f"{ranker}-{seed}", args.k, seed, preset_name)
                result = evaluate(both, test, top, None, args.k, features.DEFAULT_TIER_THRESHOLDS)
                per_seed.setdefault(ranker, []).append(judged(result)[ranking.MODEL])
                print(json.dumps({"seed": seed, "ranker": ranker, **judged(result)[ranking.MODEL]}), file=sys.stderr)

    def averaged(results: list[dict]) -> dict:
        return {
            group: {key: splits.mean_and_std([r[group][key] for r in results]) for key in results[0][group]}
            for group in results[0]
        }

    print(json.dumps({
        "dataset": str(args.movielens), "split": args.split, "seeds": args.seeds, "k": args.k,
        "results": {name: averaged(results) for name, results in per_seed.items()},
        "chosen_on_validation": chosen,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
