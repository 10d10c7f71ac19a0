"""Benchmark: the Trainer's examples per second against a plain Keras loop, on a run a pipeline already made.

    python -m benchmarks.training_throughput --output outputs

Finds the latest Trainer execution in `<output>/metadata.sqlite` and rebuilds
its inputs as TFX gave them to `run_fn` (the raw examples it reads through the
transform graph, that graph, the recorded model configuration). Then, in this
process and one after the other, on the same model configuration:

- trainer: what `run_fn` runs before the export: `components.trainer.read_splits`
  (reading both splits through the transform graph) and
  `recommender.training.fit` (the first fit, early-stopped on the validation
  split, then the refit on both splits);
- plain_keras: the same two models, built afresh, fitted by `model.fit` on
  numpy arrays already in memory (`shuffle=True`) for the same epochs (the
  first fit validating every epoch), the floor any input pipeline is measured
  against.

Each side runs `--repeats` times, alternating, and its fastest run counts.
Model building and reading the plain loop's arrays are not timed; the
trainer's reading of both splits is. Prints JSON: each side's seconds and
training examples per second (rows x epochs of both fits), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from benchmarks.recorded import latest_inputs, tfx_artifacts
from results.metadata import sqlite_readonly


def fn_args_of(output: Path):
    """The FnArgs TFX built for the latest Trainer execution under `output`."""
    from tfx.components.trainer import fn_args_utils
    from tfx.types import standard_artifacts

    store = metadata_store.MetadataStore(sqlite_readonly(str(output / "metadata.sqlite")))
    recorded, inputs = latest_inputs(store, "Trainer")
    kinds = {"examples": standard_artifacts.Examples, "transform_graph": standard_artifacts.TransformGraph}
    input_dict = tfx_artifacts(inputs, kinds)
    fn_args = fn_args_utils.get_common_fn_args(input_dict, recorded)
    return fn_args


def measure(output: Path, repeats: int) -> dict:
    import numpy as np
    import tensorflow_transform as tft

    from components import trainer
    from components.custom_config import MODEL, NUM_OOV_BUCKETS
    from recommender import features
    from recommender.model import ModelConfig, TrainingData, build_model
    from recommender.training import fit, model_columns, split_labels

    fn_args = fn_args_of(output)
    custom = fn_args.custom_config
    config = ModelConfig.from_json_dict(custom[MODEL])
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    sizes = trainer.vocabulary_sizes(tft_output, int(custom[NUM_OOV_BUCKETS]))

    def trainer_side():
        started = time.perf_counter()
        train_columns, validation_columns = trainer.read_splits(fn_args, tft_output, config)
        read = time.perf_counter() - started
        fitted = fit(train_columns, validation_columns, sizes, config, verbose=0)
        return time.perf_counter() - started, read, fitted.epochs_run

    train_columns, validation_columns = trainer.read_splits(fn_args, tft_output, config)
    both = {name: np.concatenate([train_columns[name], validation_columns[name]]) for name in model_columns()}
    fits = [(train_columns, validation_columns), (both, None)]

    def plain_side(epochs):
        started, build = time.perf_counter(), 0.0
        for (columns, validation), count in zip(fits, epochs):
            built = time.perf_counter()
            model = build_model(
                sizes[features.USER_ID], sizes[features.ITEM_ID], config, TrainingData.from_columns(columns)
            )
            build += time.perf_counter() - built
            model.fit(*split_labels(columns), batch_size=config.batch_size, epochs=count, shuffle=True,
                      validation_data=split_labels(validation) if validation else None, verbose=0)
        return time.perf_counter() - started - build

    # Alternating, so that neither side alone pays the process's first-run costs.
    trainer_runs, plain_runs = [], []
    for _ in range(repeats):
        trainer_runs.append(trainer_side())
        plain_runs.append(plain_side(trainer_runs[-1][2]))
    trainer_seconds, read_seconds, epochs = min(trainer_runs)
    plain_seconds = min(plain_runs)
    examples = sum(len(columns[model_columns()[0]]) * count for (columns, _), count in zip(fits, epochs))

    def side(seconds):
        return {"seconds": round(seconds, 2), "examples_per_second": round(examples / seconds)}

    return {
        "train_rows": len(train_columns[model_columns()[0]]),
        "validation_rows": len(validation_columns[model_columns()[0]]),
        "epochs": {"first_fit": epochs[0], "refit": epochs[1] if len(epochs) > 1 else 0},
        "repeats": repeats,
        "batch_size": config.batch_size,
        "trainer": {**side(trainer_seconds), "of_which_reading_seconds": round(read_seconds, 2)},
        "plain_keras": side(plain_seconds),
        "trainer_vs_plain_keras": round(plain_seconds / trainer_seconds, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a pipeline output root (its metadata.sqlite)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating; the fastest counts")
    args = parser.parse_args()
    print(json.dumps(measure(args.output, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
