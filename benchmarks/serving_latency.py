"""Benchmark: in-process serving latency of the exported model's signatures.

    python -m benchmarks.serving_latency [--batch-sizes 1 32 1024] [--calls 300]
    python -m benchmarks.serving_latency --model-config configs/original-model.json

Trains a model on generated interactions with the pipeline's own code
(`preprocessing_fn` on tf.Transform, `components.trainer.fit`,
`export.export_model`), loads the export with `tf.saved_model.load` and times,
side by side in one process, for each batch size:

- `keras`: the trained Keras model on already-transformed indices, in a
  tf.function: the floor, with no parsing and no vocabulary lookup;
- `serving_default`: raw string IDs in, through the transform graph;
- `serving_tf_example`: serialized tf.Examples in (parse + transform + model).

Then, per catalogue size (`--catalogues`, generated data with that many
items), the latency of `recommend` and `recommend_from_history` (5 history
items per user) for the top `--k` of the whole catalogue; with
`--memory-catalogue N`, how much one call of `--memory-batch` users over N
items raises the process's peak RSS.

Each call gets a different batch (drawn from the data's IDs, 5% unknown);
latencies are wall-clock per call after warm-up. Prints JSON: p50/p99 ms,
rows per second, and each signature's p50 as a multiple of the floor's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_transform as tft

from benchmarks import model_quality  # its transform(): the pipeline's preprocessing_fn
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.runner_options import model_config_fields
from recommender import export, features, heads, recommend, warmup
from recommender.model import ModelConfig, TrainingData, build_model, sample_inputs
from recommender.training import fit


def _trained_export(workdir: Path, config: ModelConfig, rows: int, spec: SyntheticSpec | None = None):
    """Generated interactions (every item of `spec` at least once), a model trained on them, its export."""
    spec = spec or SyntheticSpec(num_interactions=rows, seed=11)
    frame = pd.DataFrame(generate_rows(spec))
    # The generator numbers items 1..num_items.
    missing = np.setdiff1d(np.arange(1, spec.num_items + 1), frame[features.ITEM_ID].astype(int).unique())
    if len(missing):
        # The long tail leaves some items unseen; one copied row each puts them in the catalogue.
        extra = frame.iloc[np.random.default_rng(spec.seed).integers(0, len(frame), len(missing))].copy()
        extra[features.ITEM_ID] = missing
        frame = pd.concat([frame, extra], ignore_index=True)
    frame[features.USER_ID] = frame[features.USER_ID].astype(str)
    frame[features.ITEM_ID] = frame[features.ITEM_ID].astype(str)
    train_cols, _, sizes = model_quality.transform(frame, [frame.iloc[:1]], workdir)
    # Every row trains and validates: latency needs a trained model, not a held-out score.
    fitted = fit(train_cols, train_cols, sizes, config, verbose=0)
    model, training = fitted.model, fitted.training
    path = str(workdir / "model")
    tft_output = tft.TFTransformOutput(str(workdir / "transform"))
    export.export_model(model, tft_output, path, training, config)
    return frame, model, tft_output, path


def _requests(frame: pd.DataFrame, batch: int, count: int, seed: int):
    """`count` batches of (user ids, item ids) as bytes; 5% of IDs unknown."""
    rng = np.random.default_rng(seed)
    users = frame[features.USER_ID].to_numpy().astype(bytes)
    items = frame[features.ITEM_ID].to_numpy().astype(bytes)
    out = []
    for _ in range(count):
        u = users[rng.integers(0, len(users), batch)].copy()
        i = items[rng.integers(0, len(items), batch)].copy()
        unknown = rng.random(batch) < 0.05
        u[unknown] = b"unknown-user"
        out.append((u, i))
    return out


def _serialized(users, items) -> list[bytes]:
    return warmup.id_examples({features.USER_ID: list(users), features.ITEM_ID: list(items)})


def _time(call, inputs: list, warmup: int) -> list[float]:
    for x in inputs[:warmup]:
        call(x)
    seconds = []
    for x in inputs[warmup:]:
        started = time.perf_counter()
        out = call(x)
        _ = out[features.BINARY_RATING].numpy()  # wait for the result
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(frame, model, tft_output, path, batch_sizes, calls: int, warmup: int = 20) -> list[dict]:
    loaded = tf.saved_model.load(path)
    by_ids = loaded.signatures[features.SERVING_DEFAULT]
    by_examples = loaded.signatures[features.SERVING_TF_EXAMPLE]
    tft_layer = tft_output.transform_features_layer()
    keras_call = tf.function(lambda inputs: model(inputs, training=False))
    results = []
    for batch in batch_sizes:
        requests = _requests(frame, batch, calls + warmup, seed=batch)
        raw = [{"user_id": tf.constant(u), "item_id": tf.constant(i)} for u, i in requests]
        examples = [tf.constant(_serialized(u, i)) for u, i in requests]
        # The floor's inputs are transformed before the clock starts.
        indices = []
        for x in raw:
            t = tft_layer({k: tf.reshape(v, [-1, 1]) for k, v in x.items()})
            indices.append({features.transformed_name(k): t[features.transformed_name(k)] for k in features.ID_FEATURES})
        timings = {
            "keras": _time(keras_call, indices, warmup),
            features.SERVING_DEFAULT: _time(lambda x: by_ids(**x), raw, warmup),
            features.SERVING_TF_EXAMPLE: _time(lambda x: by_examples(examples=x), examples, warmup),
        }
        floor = float(np.percentile(timings["keras"], 50))
        for name, seconds in timings.items():
            p50 = float(np.percentile(seconds, 50))
            results.append({
                "batch": batch,
                "path": name,
                "p50_ms": round(p50 * 1e3, 3),
                "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 3),
                "rows_per_second": round(batch * len(seconds) / sum(seconds)),
                "p50_vs_keras": round(p50 / floor, 2),
            })
    return results


# Items in each timed `recommend_from_history` request's history.
HISTORY_LENGTH = 5


def measure_recommend(frame, path, k: int, batch_sizes, calls: int, warmup: int = 20) -> list[dict]:
    """p50/p99 of `recommend`, and of `recommend_from_history` with HISTORY_LENGTH items per user,
    for `k` items over the model's whole catalogue, per batch size (5% unknown users)."""
    signatures = tf.saved_model.load(path).signatures
    catalogue = recommend.catalogue_size(signatures[features.RECOMMEND])
    results = []
    top = tf.constant(k, tf.int32)
    for batch in batch_sizes:
        drawn = _requests(frame, batch * HISTORY_LENGTH, calls + warmup, seed=batch)
        requests = [(tf.constant(u[:batch]), tf.constant(i.reshape(batch, HISTORY_LENGTH))) for u, i in drawn]
        paths = {features.RECOMMEND: lambda r: signatures[features.RECOMMEND](user_id=r[0], k=top)}
        if features.RECOMMEND_FROM_HISTORY in signatures:
            paths[features.RECOMMEND_FROM_HISTORY] = lambda r: signatures[features.RECOMMEND_FROM_HISTORY](
                user_id=r[0], history=r[1], k=top)
        for name, call in paths.items():
            seconds = _time(call, requests, warmup)
            results.append({
                "signature": name, "catalogue": catalogue, "k": k, "batch": batch,
                "p50_ms": round(float(np.percentile(seconds, 50)) * 1e3, 3),
                "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 3),
                "users_per_second": round(batch * len(seconds) / sum(seconds)),
            })
    return results


def call_memory(items: int, batch: int, k: int, config: ModelConfig) -> dict:
    """How far one `recommend` call with a HISTORY_LENGTH-item history per user, for `batch` users
    over `items` items, takes the process's peak RSS above its resident size before the call
    (after a one-user call). Memory the process had already touched and freed (building the
    tables scores blocks of the same size) is reused without showing here.

    The model is built, not trained (its weights' values do not change what a call holds), with
    943 users of 100 training items each, and `recommender.recommend` is called on it in process:
    the signature's body without the SavedModel's loading.
    """
    rng = np.random.default_rng(12)
    users = np.repeat(np.arange(943), 100)
    training = TrainingData.from_columns({
        features.transformed_name(features.USER_ID): users,
        features.transformed_name(features.ITEM_ID): rng.integers(0, items, len(users)),
        **{name: rng.random(len(users)).astype(np.float32) for name in heads.NAMES},
    })
    model = build_model(943 + 1, items + 1, config, training)
    model(sample_inputs(4), training=False)
    tables = recommend.build_tables(model, [str(i).encode() for i in range(items)], 943, training, config)
    top = tf.constant(k, tf.int32)

    def call(rows: int):
        indices = tf.constant(rng.integers(0, 944, rows), tf.int64)
        history = tf.RaggedTensor.from_tensor(tf.constant(rng.integers(0, items, (rows, HISTORY_LENGTH)), tf.int64))
        return recommend.recommend(model, tables, indices, top, history)[features.ITEM_ID].numpy()

    call(1)
    before_kib = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    call(batch)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"catalogue": items, "batch": batch, "history": HISTORY_LENGTH,
            "resident_before_mib": round(before_kib / 1024, 1),
            "peak_above_resident_mib": round((peak_kib - before_kib) / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 1024])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per batch size and path")
    parser.add_argument("--rows", type=int, default=30_000, help="generated training interactions")
    parser.add_argument("--model-config", default=None, help="ModelConfig fields: JSON or a JSON file")
    parser.add_argument(
        "--catalogues", type=int, nargs="*", default=[1_682, 100_000],
        help="item catalogue sizes to time `recommend` over (a model trained on generated data each)",
    )
    parser.add_argument("--k", type=int, default=10, help="`recommend`'s k")
    parser.add_argument("--recommend-batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--memory-catalogue", type=int, default=0, metavar="ITEMS",
        help="also report one call's peak RSS rise over that many items at --memory-batch users (a built, untrained model)",
    )
    parser.add_argument("--memory-batch", type=int, default=1024)
    args = parser.parse_args()
    # No refit: every generated row trains and validates (see _trained_export), none is held out.
    config = ModelConfig.from_json_dict({"epochs": 2, **model_config_fields(args.model_config), "refit": False})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    recommend_results = []
    with tempfile.TemporaryDirectory() as tmp:
        frame, model, tft_output, path = _trained_export(Path(tmp), config, args.rows)
        results = measure(frame, model, tft_output, path, args.batch_sizes, args.calls)
        for items in args.catalogues:
            # ML-100K's shape for its 1,682 items (943 users, 100K ratings); more rows for larger catalogues.
            spec = SyntheticSpec(num_users=943, num_items=items, num_interactions=max(100_000, 2 * items), seed=12)
            frame, _, _, path = _trained_export(Path(tmp) / f"catalogue-{items}", dataclasses.replace(config, epochs=1),
                                                0, spec)
            recommend_results += measure_recommend(frame, path, args.k, args.recommend_batch_sizes, args.calls)
        memory = call_memory(args.memory_catalogue, args.memory_batch, args.k, config) if args.memory_catalogue else None
    print(json.dumps({
        "model_config": config.to_json_dict(), "training_rows": args.rows,
        "calls_per_point": args.calls, "cpu_count": os.cpu_count(),
        "results": results, "recommend": recommend_results, "recommend_call_memory": memory,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
