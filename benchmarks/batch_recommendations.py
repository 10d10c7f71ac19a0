"""Benchmark: the BatchRecommender's Beam job, users per second.

    python -m benchmarks.batch_recommendations [--users 10000 100000 1000000] [--k 10]
        [--catalogue 1682] [--beam-arg=--direct_num_workers=2 ...]

Trains a model on generated interactions with ML-100K's shape (943 users,
`--catalogue` items) with the pipeline's code and exports it with its
`recommend` signature, then, for each user count, runs the same Beam job the
BatchRecommender runs (`components.batch_recommend.write_recommendations`,
then the rename into place) over a file of that many user IDs drawn, with
repeats, from the model's users, each with the user's training items as its
history. Each user is scored against the whole catalogue whoever it
is, so the count, not who, sets the work. Beam runs in memory unless
`--beam-arg`s say otherwise. Prints JSON: seconds, rows written and users
per second per user count.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import tensorflow_transform as tft

from benchmarks.serving_latency import _trained_export
from components import batch_recommend
from data.synthetic import SyntheticSpec
from pipeline.config import IN_MEMORY_BEAM_ARGS
from recommender import features
from recommender.model import ModelConfig


def _write_examples(frame, path: str) -> None:
    """The training rows' IDs and timestamps as ExampleGen writes examples: gzipped TFRecords."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for user, item, stamp in zip(frame[features.USER_ID], frame[features.ITEM_ID], frame[features.TIMESTAMP]):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                features.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(user).encode()])),
                features.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(item).encode()])),
                features.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(stamp)])),
            })).SerializeToString())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--catalogue", type=int, default=1_682)
    parser.add_argument("--beam-arg", dest="beam_args", action="append", default=None, metavar="ARG")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    beam_args = args.beam_args or list(IN_MEMORY_BEAM_ARGS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = SyntheticSpec(num_users=943, num_items=args.catalogue, num_interactions=100_000, seed=12)
        frame, _, _, model_dir = _trained_export(root / "model", ModelConfig(epochs=1, refit=False), 0, spec)
        training = str(root / "train.gz")
        _write_examples(frame, training)
        known = tft.TFTransformOutput(str(root / "model" / "transform")).vocabulary_by_name(
            features.vocabulary_name(features.USER_ID)
        )
        rng = np.random.default_rng(0)
        for count in args.users:
            users = root / f"users-{count}.txt"
            users.write_bytes(b"".join(known[i] + b"\n" for i in rng.integers(0, len(known), count)))
            staging, destination = root / f"staging-{count}", root / f"recommendations-{count}"
            started = time.perf_counter()
            with beam.Pipeline(argv=beam_args) as pipeline:
                batch_recommend.write_recommendations(pipeline, model_dir, str(users), [training], args.k, str(staging))
            rows = batch_recommend.publish_table(staging, destination)
            seconds = time.perf_counter() - started
            results.append({
                "users": count, "seconds": round(seconds, 1), "rows": rows,
                "users_per_second": round(count / seconds),
            })
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({
        "catalogue": args.catalogue, "k": args.k, "beam_args": beam_args, "cpu_count": os.cpu_count(),
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
