"""Benchmark: what one epoch of training costs, per model configuration, side by side in one process.

    python -m benchmarks.training_step --movielens ../shared/datasets/ml-100k
    python -m benchmarks.training_step --movielens PATH --config '[{}, {"retrieval": {}}]' --epochs 3

The split's train rows (`benchmarks.splits`, `--split`, `--seed`) go through
the pipeline's `preprocessing_fn`; then, for each configuration (JSON
overrides of ModelConfig, the first being what the others are compared
against), the Trainer's own training batches (`recommender.training.batches`,
with the retrieval task's inputs where configured) are timed two ways, each
over `--epochs` passes of the train split after one untimed pass:

- reading: iterating the batches alone, no model;
- training: `model.fit` on them, as the Trainer trains (no validation).

Each configuration runs `--repeats` times, the configurations alternating,
and its fastest run counts (this machine's seconds vary from run to run).
`--intra-op-threads` sets TensorFlow's threads within one op for the whole
process, before anything runs: compare it with a run without, one after the other.
Prints JSON: per configuration, seconds per epoch for each and the ratio of
`training` to the first configuration's. Epoch counts are not here:
`benchmarks.model_quality` times whole fits, early stopping included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from benchmarks import model_quality, splits
from pipeline.runner_options import json_value
from recommender import features
from recommender.config import ModelConfig
from recommender.model import TrainingData, build_model
from recommender.training import batches, epoch_loop, retrieval_inputs


def epoch_seconds(columns: dict, sizes: dict, config: ModelConfig, epochs: int) -> dict[str, float]:
    """{reading, training}: seconds per epoch of `config`'s training batches of `columns`."""
    training = TrainingData.from_columns(columns)
    model = build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training)
    loop = epoch_loop(columns, config)
    steps = loop.steps_per_epoch
    dataset = batches(columns, loop, shuffle=True, repeat=True, retrieval=retrieval_inputs(training, sizes, config))

    batch_iterator = iter(dataset)
    for _ in range(steps):
        next(batch_iterator)
    start = time.perf_counter()
    for _ in range(steps * epochs):
        next(batch_iterator)
    reading = (time.perf_counter() - start) / epochs
    del batch_iterator

    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)  # traces Keras's training step
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return {"reading": reading, "training": (time.perf_counter() - start) / epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movielens", type=Path, required=True)
    parser.add_argument("--split", choices=splits.HOW, default="temporal")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per measure (after one untimed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, alternating")
    parser.add_argument(
        "--intra-op-threads", type=int, default=None,
        help="TensorFlow's threads within one op, set before anything runs (default: TensorFlow's choice)",
    )
    parser.add_argument(
        "--config", default='[{}, {"retrieval": {}}]',
        help="a JSON list of ModelConfig overrides (or a file of it); the first is the reference",
    )
    args = parser.parse_args()
    if args.epochs < 1 or args.repeats < 1:
        parser.error(f"--epochs and --repeats must be >= 1, got {args.epochs}, {args.repeats}")
    if args.intra_op_threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    overrides = json_value(args.config, "--config")
    listed = overrides if isinstance(overrides, list) else [overrides]
    runs: list[list[dict[str, float]]] = [[] for _ in listed]
    with tempfile.TemporaryDirectory() as tmp:
        frame, _ = model_quality.load(args.movielens, Path(tmp))
        parts = splits.split(frame, args.split, args.seed)
        # The train rows' columns as the default's Transform makes them (analysed on train + validation).
        (columns, *_), sizes = model_quality.transform_splits(ModelConfig(), list(parts), Path(tmp) / "transform")
        for _ in range(args.repeats):
            for override, seconds in zip(listed, runs):
                seconds.append(epoch_seconds(columns, sizes, ModelConfig(**{"seed": args.seed, **override}), args.epochs))
                print(json.dumps({"overrides": override, "seconds_per_epoch": seconds[-1]}), file=sys.stderr)
    fastest = [{key: min(run[key] for run in seconds) for key in seconds[0]} for seconds in runs]
    results = [
        {"overrides": override, "seconds_per_epoch": best, "training_against_first": best["training"] / fastest[0]["training"]}
        for override, best in zip(listed, fastest)
    ]
    print(json.dumps({
        "dataset": str(args.movielens), "split": args.split, "seed": args.seed, "epochs": args.epochs,
        "repeats": args.repeats,
        "intra_op_threads": args.intra_op_threads, "train_rows": len(parts[0]), "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
