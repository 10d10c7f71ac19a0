"""Benchmark: both heads' quality on MovieLens, with the pipeline's own code.

    python benchmarks/model_quality.py --movielens ../shared/datasets/ml-100k
    python benchmarks/model_quality.py --movielens PATH --split temporal
    python benchmarks/model_quality.py --movielens PATH --config '{"l2": 1e-4}'
    python benchmarks/model_quality.py --movielens PATH --config '[{"l2": 1e-4}, {"l2": 1e-3}]'
    python benchmarks/model_quality.py --movielens PATH --config configs/ml-100k-model.json
    python benchmarks/model_quality.py --movielens PATH --ablation

The ratings go through `data.ratings` (labels: liked = rating >= 4,
purchase_probability = rating / 5), the IDs through the pipeline's
`preprocessing_fn` on tf.Transform, and the model through
`components.model.build_model` and `train`: the code the Trainer runs.

Split: "random" is a seeded 80/20 permutation (as published ML-100K numbers);
"temporal" holds out the most recent 20%. With early stopping, a seeded 10% of
the training rows is the validation set; the test rows are never seen before
the final evaluation. Prints JSON: RMSE on the star scale, like-AUC, log loss
and training seconds per configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from sklearn.metrics import log_loss, roc_auc_score  # noqa: E402
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io  # noqa: E402

from components import example_gen, features  # noqa: E402
from components.model import ModelConfig, TrainingData, build_model, train  # noqa: E402
from components.preprocessing import (
    DEFAULT_TIER_THRESHOLDS,
    NUM_OOV_BUCKETS,
    TIER_THRESHOLDS,
    preprocessing_fn,
)  # noqa: E402
from components.trainer import split_labels, vocabulary_sizes  # noqa: E402
from data import ratings  # noqa: E402
from pipeline.config import DEFAULT_SCHEMA  # noqa: E402

NUM_OOV = 10

# The ablation: each step adds its settings to all the steps before it,
# starting from the original design.
ABLATION_STEPS = (
    ("original (concat embeddings, Dense 64, 5 epochs)", {}),
    ("+ user/item bias terms", {"use_bias_terms": True}),
    ("+ dot-product interaction", {"use_dot_product": True}),
    # The purchase MSE on the [0, 1] scale (~0.035) is small next to the like
    # BCE (~0.5): unweighted, the shared embeddings serve mostly the binary head.
    ("+ purchase_probability loss weight 100",
     {"loss_weights": {features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 100.0}}),
    ("+ per-example L2 0.5, early stopping",
     {"l2": 0.5, "epochs": 60, "early_stopping_patience": 3}),
    ("+ factorised purchase head, no MLP", {"factorized_purchase_head": True, "hidden_units": []}),
    ("+ heads start at base rates, N(0, 0.01) embeddings",
     {"base_rate_init": True, "embedding_init_stddev": 0.01}),
    ("+ implicit feedback (SVD++-style histories)", {"implicit_feedback": True}),
    ("+ learning rate 5e-4", {"learning_rate": 5e-4}),
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


def split(frame: pd.DataFrame, how: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """80/20: a seeded permutation, or the most recent 20% by timestamp."""
    if how == "random":
        order = np.random.default_rng(seed).permutation(len(frame))
    else:
        order = np.argsort(frame[features.TIMESTAMP].to_numpy(), kind="stable")
    cut = int(0.8 * len(frame))
    return frame.iloc[order[:cut]], frame.iloc[order[cut:]]


def _instances(frame: pd.DataFrame) -> list[dict]:
    columns = {c: frame[c].to_numpy() for c in features.COLUMNS}
    return [
        {c: [columns[c][i].encode() if c in features.ID_FEATURES else columns[c][i]] for c in columns}
        for i in range(len(frame))
    ]


def transform(train_rows, test_rows, workdir: Path):
    """The pipeline's preprocessing_fn, analysed on the training rows only."""
    schema = example_gen.load_schema(str(DEFAULT_SCHEMA))
    metadata = dataset_metadata.DatasetMetadata(schema)
    with tft_beam.Context(temp_dir=str(workdir / "tft-tmp")):
        (train_t, _), transform_fn = (_instances(train_rows), metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(
                inputs, {NUM_OOV_BUCKETS: NUM_OOV, TIER_THRESHOLDS: DEFAULT_TIER_THRESHOLDS}
            )
        )
        test_t, _ = ((_instances(test_rows), metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(workdir / "transform"))
    # As the Transform component does: the raw metadata beside the graph (export reads it).
    metadata_io.write_metadata(metadata, str(workdir / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    sizes = vocabulary_sizes(tft.TFTransformOutput(str(workdir / "transform")), NUM_OOV)

    def columns(rows):
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}

    return columns(train_t), columns(test_t), sizes


def _dataset(columns: dict, rows: np.ndarray, config: ModelConfig, shuffle: bool) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices({k: v[rows] for k, v in columns.items()})
    if shuffle:
        data = data.shuffle(len(rows), seed=config.seed, reshuffle_each_iteration=True)
    return data.batch(config.batch_size).map(split_labels)


def evaluate(config: ModelConfig, train_cols: dict, test_cols: dict, sizes: dict, scale_max: float) -> dict:
    n = len(train_cols[features.BINARY_RATING])
    rows = np.arange(n)
    if config.early_stopping_patience is not None:
        order = np.random.default_rng(config.seed).permutation(n)
        validation, fit_rows = order[: n // 10], order[n // 10:]
    else:
        validation, fit_rows = rows, rows  # validation only logs; nothing is selected on it
    model = build_model(
        sizes[features.USER_ID], sizes[features.ITEM_ID], config,
        TrainingData.from_batches(_dataset(train_cols, fit_rows, config, shuffle=False)),
    )
    started = time.perf_counter()
    history = train(
        model,
        _dataset(train_cols, fit_rows, config, shuffle=True),
        _dataset(train_cols, validation, config, shuffle=False),
        config,
        verbose=0,  # stdout carries the JSON only
    )
    seconds = time.perf_counter() - started
    test_inputs, test_labels = split_labels({k: tf.constant(v) for k, v in test_cols.items()})
    predicted = model.predict(test_inputs, batch_size=4096, verbose=0)
    liked = test_labels[features.BINARY_RATING].numpy().ravel()
    p_liked = predicted[features.BINARY_RATING].ravel()
    target = test_labels[features.PURCHASE_PROBABILITY].numpy().ravel()
    p_target = np.clip(predicted[features.PURCHASE_PROBABILITY].ravel(), 0.0, 1.0)
    rmse = float(np.sqrt(np.mean((p_target - target) ** 2)))
    return {
        "rmse_stars": round(rmse * scale_max, 4),
        "rmse": round(rmse, 4),
        "like_auc": round(float(roc_auc_score(liked, p_liked)), 4),
        "like_log_loss": round(float(log_loss(liked, np.clip(p_liked, 1e-7, 1 - 1e-7))), 4),
        "epochs_run": len(history.history["loss"]),
        "train_seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=("random", "temporal"), default="random")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--config", default=None,
        help="JSON overrides of ModelConfig.original() (or a JSON file of them, e.g. "
        "configs/ml-100k-model.json), or a list of them (one result each)",
    )
    parser.add_argument("--ablation", action="store_true", help="run the ablation table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        frame, scale_max = load(args.movielens, workdir)
        train_rows, test_rows = split(frame, args.split, args.seed)
        started = time.perf_counter()
        train_cols, test_cols, sizes = transform(train_rows, test_rows, workdir)
        transform_seconds = time.perf_counter() - started
        if args.ablation:
            runs = ablation()
        else:
            text = Path(args.config).read_text() if args.config and Path(args.config).is_file() else args.config
            overrides = json.loads(text) if text else {}
            listed = overrides if isinstance(overrides, list) else [overrides]
            runs = {json.dumps(o, sort_keys=True): o for o in listed}
        results = []
        for name, overrides in runs.items():
            config = ModelConfig.original(seed=args.seed, **overrides)
            results.append({
                "name": name,
                "config": config.to_json_dict(),
                **evaluate(config, train_cols, test_cols, sizes, scale_max),
            })
    print(json.dumps({
        "dataset": str(args.movielens), "split": args.split, "seed": args.seed,
        "train_rows": len(train_rows), "test_rows": len(test_rows),
        "transform_seconds": round(transform_seconds, 1), "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
