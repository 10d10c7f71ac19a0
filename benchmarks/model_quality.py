"""Benchmark: both heads' quality on MovieLens, with the pipeline's own code.

    python -m benchmarks.model_quality --movielens ../shared/datasets/ml-100k
    python -m benchmarks.model_quality --movielens PATH --split random --seeds 42 43 44
    python -m benchmarks.model_quality --movielens PATH --split u1
    python -m benchmarks.model_quality --movielens PATH --config '{"l2": 1e-4}'
    python -m benchmarks.model_quality --movielens PATH --config '[{"l2": 1e-4}, {"l2": 1e-3}]'
    python -m benchmarks.model_quality --movielens PATH --config configs/original-model.json
    python -m benchmarks.model_quality --movielens PATH --ablation
    python -m benchmarks.model_quality --movielens PATH --split u1 --ensemble 3 --config FILE

The ratings go through `data.ratings` (labels: liked = rating >= 4,
purchase_probability = rating / 5), the IDs through the pipeline's
`preprocessing_fn` on tf.Transform (analysed on the training rows only), and
the model through `recommender.model.build_model` and `train`: the code the
Trainer runs. `--config` overrides the default ModelConfig (the pipeline's);
`--ablation` starts from configs/original-model.json and adds one step at a time.

Splits are the pipeline's three (see `benchmarks.splits.split`): the model fits the train rows,
validates and early-stops on the validation rows, and is scored on the test
rows, which nothing before saw. Each seed splits (random, u1), initialises and
shuffles anew. Prints JSON: per configuration, RMSE on the star scale,
like-AUC, log loss and training seconds, as mean and standard deviation over
the seeds and per seed; progress goes to stderr. `--ensemble N` scores the
mean prediction of N models per configuration and seed, each with its own
seed: what averaging buys, measured rather than guessed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from sklearn.metrics import log_loss, roc_auc_score
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from benchmarks import splits
from benchmarks.splits import HOW, split
from components import example_gen
from components.custom_config import NUM_OOV_BUCKETS, TIER_THRESHOLDS
from components.preprocessing import (
    preprocessing_fn,
)
from components.trainer import vocabulary_sizes
from data import ratings
from pipeline.config import DEFAULT_SCHEMA
from pipeline.runner_options import json_value
from recommender import features
from recommender.config import preset
from recommender.model import ModelConfig
from recommender.training import fit, split_labels

NUM_OOV = 10
# Seed offset between ensemble members (`--ensemble`), far from the split seeds.
MEMBER_SEED_STRIDE = 1000

# The ablation: each step adds its settings to all the steps before it,
# starting from the original design and ending at the default ModelConfig.
ABLATION_STEPS = (
    ("original (concat embeddings, Dense 64, 5 epochs)", {}),
    # The purchase MSE on the [0, 1] scale (~0.035) is small next to the like
    # BCE (~0.5): unweighted, the shared embeddings serve mostly the binary head.
    ("+ factorised heads (mu + b_user + b_item + u . v), purchase loss weight 100",
     {"factorized": True, "hidden_units": [],
      "loss_weights": {features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 100.0}}),
    ("+ per-example L2 2.0, early stopping on the validation split",
     {"l2": 2.0, "epochs": 30, "early_stopping_patience": 3}),
    ("+ heads start at base rates, N(0, 0.01) embeddings",
     {"base_rate_init": True, "embedding_init_stddev": 0.01}),
    ("+ LazyAdam, learning rate 2e-3", {"optimizer": "lazy_adam", "learning_rate": 2e-3}),
    ("+ refit on train + validation (the default)", {"refit": True, "loss_weights": None}),
)


def ablation() -> dict[str, dict]:
    """Step name -> the accumulated ModelConfig overrides."""
    runs, accumulated = {}, {}
    for name, added in ABLATION_STEPS:
        accumulated = {**accumulated, **added}
        runs[name] = accumulated
    return runs


def load(movielens: Path, workdir: Path) -> tuple[pd.DataFrame, float]:
    source = ratings.movielens_source(movielens)
    path = workdir / "interactions.csv"
    ratings.convert(source, path)
    frame = pd.read_csv(path, dtype={features.USER_ID: str, features.ITEM_ID: str})
    return frame, source.scale_max


def _instances(frame: pd.DataFrame) -> list[dict]:
    columns = {c: frame[c].to_numpy() for c in features.COLUMNS}
    return [
        {c: [columns[c][i].encode() if c in features.ID_FEATURES else columns[c][i]] for c in columns}
        for i in range(len(frame))
    ]


def transform(train_rows, other_rows: list, workdir: Path):
    """The pipeline's preprocessing_fn, analysed on `train_rows` only; returns
    (train columns, [columns of each of other_rows], sizes)."""
    schema = example_gen.load_schema(str(DEFAULT_SCHEMA))
    metadata = dataset_metadata.DatasetMetadata(schema)
    with tft_beam.Context(temp_dir=str(workdir / "tft-tmp")):
        (train_t, _), transform_fn = (_instances(train_rows), metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(
                inputs, {NUM_OOV_BUCKETS: NUM_OOV, TIER_THRESHOLDS: features.DEFAULT_TIER_THRESHOLDS}
            )
        )
        others = [
            (((_instances(rows), metadata), transform_fn) | f"Transform{i}" >> tft_beam.TransformDataset())[0]
            for i, rows in enumerate(other_rows)
        ]
        _ = transform_fn | tft_beam.WriteTransformFn(str(workdir / "transform"))
    # As the Transform component does: the raw metadata beside the graph (export reads it).
    metadata_io.write_metadata(metadata, str(workdir / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    sizes = vocabulary_sizes(tft.TFTransformOutput(str(workdir / "transform")), NUM_OOV)

    def columns(rows):
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}

    return columns(train_t), [columns(rows) for rows in others], sizes


def analysed_rows(config: ModelConfig, train_rows: pd.DataFrame, validation_rows: pd.DataFrame) -> pd.DataFrame:
    """The rows Transform's analyzers read for `config`, as the pipeline sets its splits_config:
    the validation rows too when the model is refitted on them."""
    return pd.concat([train_rows, validation_rows]) if config.refit else train_rows


def transform_splits(config: ModelConfig, parts: list[pd.DataFrame], workdir: Path) -> tuple[list[dict], dict]:
    """([columns of each of `parts`], sizes): `parts` (train, validation, then any others)
    through the pipeline's preprocessing_fn, analysed on `analysed_rows`."""
    if not config.refit:  # the analysed rows are the train rows: their transformed columns come with the analysis
        train_cols, others, sizes = transform(parts[0], parts[1:], workdir)
        return [train_cols, *others], sizes
    _, columns, sizes = transform(analysed_rows(config, *parts[:2]), parts, workdir)
    return columns, sizes


def evaluate(
    config: ModelConfig, train_cols: dict, validation_cols: dict, test_cols: dict, sizes: dict, scale_max: float,
    members: int = 1,
) -> dict:
    """Trains on `train_cols`, validating (and early-stopping) on `validation_cols`, as the
    Trainer does (`recommender.training.fit`, with its refit when configured); scores
    `test_cols`, which nothing before saw.

    With `members` > 1, that many models are fitted, member m with seed
    `config.seed + MEMBER_SEED_STRIDE * m` (the first is the config's own), and the
    mean of their predictions is scored: what a seed ensemble of the configuration
    would buy. Each member's own RMSE is reported beside it; seconds are the members' fits.
    """
    test_inputs, test_labels = split_labels({k: tf.constant(v) for k, v in test_cols.items()})
    liked = test_labels[features.BINARY_RATING].numpy().ravel()
    target = test_labels[features.PURCHASE_PROBABILITY].numpy().ravel()

    def rmse(predicted_target: np.ndarray) -> float:  # on the [0, 1] label scale
        return float(np.sqrt(np.mean((predicted_target - target) ** 2)))

    seconds, epochs, p_liked, p_target, member_rmse, validation = 0.0, [], [], [], [], []
    for member in range(members):
        started = time.perf_counter()
        fitted = fit(  # stdout carries the JSON only
            train_cols, validation_cols, sizes,
            dataclasses.replace(config, seed=config.seed + MEMBER_SEED_STRIDE * member), verbose=0,
        )
        seconds += time.perf_counter() - started
        epochs.append(fitted.epochs_run)
        validation.append(fitted.validation_loss)
        predicted = fitted.model.predict(test_inputs, batch_size=4096, verbose=0)
        del fitted  # the next member need not train beside this one's weights
        p_liked.append(predicted[features.BINARY_RATING].ravel())
        p_target.append(np.clip(predicted[features.PURCHASE_PROBABILITY].ravel(), 0.0, 1.0))
        member_rmse.append(round(rmse(p_target[-1]) * scale_max, 4))
    mean_liked = np.mean(p_liked, axis=0)
    ensemble_rmse = rmse(np.mean(p_target, axis=0))
    return {
        "rmse_stars": round(ensemble_rmse * scale_max, 4),
        "rmse": round(ensemble_rmse, 4),
        "like_auc": round(float(roc_auc_score(liked, mean_liked)), 4),
        "like_log_loss": round(float(log_loss(liked, np.clip(mean_liked, 1e-7, 1 - 1e-7))), 4),
        "epochs_run": float(np.mean([e[0] for e in epochs])),
        "refit_epochs": float(np.mean([e[1] for e in epochs])) if config.refit else None,
        "train_seconds": round(seconds, 1),
        # Every epoch run: the first fit's, then the refit's.
        "seconds_per_epoch": round(seconds / sum(sum(e) for e in epochs), 2),
        # The first fit's weighted validation loss (what the Tuner compares), per member.
        "validation_loss": [round(v, 5) for v in validation],
        **({"member_rmse_stars": member_rmse} if members > 1 else {}),
    }


# Figures averaged over seeds (the others are reported per seed only).
_AVERAGED = ("rmse_stars", "rmse", "like_auc", "like_log_loss", "epochs_run", "train_seconds", "seconds_per_epoch")


def seed_statistics(per_seed: list[dict]) -> dict:
    """{figure: {"mean", "std"}} over seeds (sample standard deviation; 0 for one seed)."""
    return {name: splits.mean_and_std([r[name] for r in per_seed]) for name in _AVERAGED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=HOW, default="temporal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--config", default=None,
        help="JSON overrides of ModelConfig() (or a JSON file of them), or a list of them (one result each)",
    )
    parser.add_argument("--ablation", action="store_true", help="run the ablation table")
    parser.add_argument(
        "--ensemble", type=int, default=1, metavar="N",
        help="fit N models per configuration and seed (seeds seed + 1000 m) and score their mean prediction",
    )
    args = parser.parse_args()
    if args.ensemble < 1:
        parser.error(f"--ensemble must be >= 1, got {args.ensemble}")
    if args.ablation:
        runs = ablation()
    else:
        overrides = json_value(args.config, "--config") if args.config else {}
        listed = overrides if isinstance(overrides, list) else [overrides]
        runs = {json.dumps(o, sort_keys=True): o for o in listed}
    per_seed: dict[str, list[dict]] = {name: [] for name in runs}
    rows = {}
    # tf.Transform outputs by the split's rows: the temporal split is the same for every seed.
    transformed: dict[tuple[bytes, bool], tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        frame, scale_max = load(args.movielens, workdir)
        for seed in args.seeds:
            parts = split(frame, args.split, seed)
            rows = dict(zip(("train", "validation", "test"), map(len, parts)))
            for name, overrides in runs.items():
                config = preset("original", seed=seed, **overrides) if args.ablation else ModelConfig(
                    **{"seed": seed, **overrides}
                )
                key = (b"|".join(part.index.to_numpy().tobytes() for part in parts), config.refit)
                if key not in transformed:
                    transformed[key] = transform_splits(config, parts, workdir / f"seed-{seed}-{len(transformed)}")
                (train_cols, validation_cols, test_cols), sizes = transformed[key]
                per_seed[name].append({
                    "seed": seed,
                    **evaluate(config, train_cols, validation_cols, test_cols, sizes, scale_max, args.ensemble),
                })
                print(json.dumps({"name": name, **per_seed[name][-1]}), file=sys.stderr)
    print(json.dumps({
        "dataset": str(args.movielens), "split": args.split, "seeds": args.seeds, "ensemble": args.ensemble,
        "rows": rows,
        "results": [
            {"name": name, "overrides": runs[name], **seed_statistics(results), "per_seed": results}
            for name, results in per_seed.items()
        ],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
