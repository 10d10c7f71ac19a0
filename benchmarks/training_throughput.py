"""Benchmark: the Trainer's examples per second against a plain Keras loop, on a run a pipeline already made.

    python -m benchmarks.training_throughput --output outputs [--epochs 5]

Finds the latest Trainer execution in `<output>/metadata.sqlite` and rebuilds
its inputs as TFX gave them to `run_fn` (the raw examples it reads through the
transform graph, that graph, the recorded model configuration). Then, in this process and
one after the other, on the same model configuration and batch size, both
validating on the validation split every epoch and neither stopping early:

- trainer: `components.trainer`'s input pipeline (reading the splits
  included) and `recommender.model.train`, as `run_fn` runs them;
- plain_keras: the same model, built afresh, fitted by `model.fit` on numpy
  arrays already in memory (`shuffle=True`), the floor any input pipeline is
  measured against.

Each side runs `--repeats` times, alternating, and its fastest run counts.
Model building and reading the plain loop's arrays are not timed; the
trainer's reading of both splits is. Prints JSON:
each side's seconds and training examples per second, and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    fn_args.transform_output = input_dict["transform_graph"][0].uri  # as TFX's GenericExecutor sets it
    return fn_args


def measure(output: Path, epochs: int, repeats: int) -> dict:
    import tensorflow_transform as tft

    from components import trainer
    from components.custom_config import NUM_OOV_BUCKETS
    from recommender import features
    from recommender.model import ModelConfig, build_model, train

    fn_args = fn_args_of(output)
    custom = fn_args.custom_config
    config = dataclasses.replace(
        ModelConfig.from_json_dict(custom[trainer.MODEL_CONFIG]), epochs=epochs, early_stopping_patience=None,
        refit=False,
    )
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    sizes = trainer.vocabulary_sizes(tft_output, int(custom[NUM_OOV_BUCKETS]))

    def model(training):
        return build_model(sizes[features.USER_ID], sizes[features.ITEM_ID], config, training)

    def trainer_side():
        started = time.perf_counter()
        training, train_data, validation_data = trainer.datasets(fn_args, tft_output, config)
        read = time.perf_counter() - started
        trained = model(training)
        started = time.perf_counter()
        train(trained, train_data, validation_data, config, verbose=0)
        return read + time.perf_counter() - started, read

    training = trainer.datasets(fn_args, tft_output, config)[0]
    # The same rows as the Trainer's first fit (a refit's train_args also name the validation split).
    train_columns, validation_columns = trainer.read_splits(fn_args, tft_output)
    x, y = trainer.split_labels(train_columns)
    validation = trainer.split_labels(validation_columns)

    def plain_side():
        plain = model(training)
        started = time.perf_counter()
        plain.fit(x, y, batch_size=config.batch_size, epochs=epochs, shuffle=True, validation_data=validation,
                  verbose=0)
        return time.perf_counter() - started

    # Alternating, so that neither side alone pays the process's first-run costs.
    trainer_runs, plain_runs = [], []
    for _ in range(repeats):
        trainer_runs.append(trainer_side())
        plain_runs.append(plain_side())
    trainer_seconds, read_seconds = min(trainer_runs)
    plain_seconds = min(plain_runs)
    rows = len(training.users)

    def side(seconds):
        return {"seconds": round(seconds, 2), "examples_per_second": round(rows * epochs / seconds)}

    return {
        "train_rows": rows,
        "validation_rows": len(next(iter(validation[1].values()))),
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": config.batch_size,
        "trainer": {**side(trainer_seconds), "of_which_reading_seconds": round(read_seconds, 2)},
        "plain_keras": side(plain_seconds),
        "trainer_vs_plain_keras": round(plain_seconds / trainer_seconds, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a pipeline output root (its metadata.sqlite)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating; the fastest counts")
    args = parser.parse_args()
    print(json.dumps(measure(args.output, args.epochs, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
