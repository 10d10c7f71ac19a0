"""Benchmark: the RankingEvaluator's launcher memory as the training rows grow, on Beam and in process.

    python -m benchmarks.ranking_memory --model SAVED_MODEL [--rows 200000 2000000] [--workers 2]

For each size, writes generated interactions as ExampleGen writes them
(gzipped tf.Examples in `Split-train` and `Split-eval`; users = rows / 50,
a fifth of the rows in `eval`, a tenth of its users new), over the item IDs
of `--model`'s catalogue. Then, each in a fresh Python process (the
launcher), it ranks them with `--model` the three ways the RankingEvaluator
can run:

- `portable`: the Beam job (`components.ranking_job`) submitted to Beam's
  Python job server, its workers in an external worker pool, each in a
  process of its own (as on Flink, Spark or Dataflow, where neither the
  shuffle nor the workers are in the launcher);
- `multi-processing`: the same job on the DirectRunner's multi-processing
  mode with `--workers` worker processes: the launcher is the runner too,
  and every shuffle (the per-user grouping) passes through its memory;
- `process`: in the launcher alone (`ranking.evaluate`).

The launcher reads its own peak RSS from the kernel (getrusage of itself);
the job server's and the worker pool's (with its workers) are sampled from
/proc every 0.2 s. Prints JSON: per size and way, seconds, peak RSS and the
judged users; then each way's growth from the smallest size to the largest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.scale import _tree_rss_bytes

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import itertools, json, resource, sys, time
import apache_beam as beam
import tensorflow as tf
from components import ranking, ranking_job
from pipeline import beam as runners
from recommender import features, recommend

examples, model_dir, way, workers, output, job_endpoint, pool = sys.argv[1:8]
start = time.perf_counter()
signatures = tf.saved_model.load(model_dir).signatures
if way != "process":
    block = recommend.users_per_call(recommend.catalogue_size(signatures[features.RECOMMEND]))
    args = (runners.beam_pipeline_args(runners.PORTABLE, job_endpoint=job_endpoint, environment_type="EXTERNAL",
                                       environment_config=pool) if way == "portable"
            else runners.beam_pipeline_args(runners.MULTI_PROCESSING, int(workers)))
    with beam.Pipeline(argv=list(args)) as p:
        ranking_job.add_evaluation(p, examples, ["train"], "eval", model_dir, None, 10,
                                   features.DEFAULT_TIER_THRESHOLDS, block, output)
    result = ranking_job.read_summaries(output, [ranking.MODEL, ranking.POPULARITY], 10)
else:
    result = ranking.evaluate(
        ranking_job.read_interactions(examples, "train"), ranking_job.read_interactions(examples, "eval"),
        lambda users, seen, histories: ranking_job.model_top(signatures, users, seen, 10, histories),
        None, 10, features.DEFAULT_TIER_THRESHOLDS)
print(json.dumps({"seconds": round(time.perf_counter() - start, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "judged_users": result[ranking.OVERALL][ranking.MODEL]["users"]}))
"""


def catalogue(model_dir: str) -> list[bytes]:
    """The item IDs `model_dir`'s `recommend` signature ranks."""
    import tensorflow as tf

    from recommender import features

    signature = tf.saved_model.load(model_dir).signatures[features.RECOMMEND]
    return list(signature(user_id=tf.constant([b""]), k=tf.constant(2**31 - 1))[features.ITEM_ID].numpy()[0])


def write_split(folder: Path, users: np.ndarray, items: np.ndarray, times: np.ndarray, liked: np.ndarray,
                files: int = 4) -> None:
    """Gzipped tf.Examples of the rows, as ExampleGen writes a split, in `files` files."""
    import tensorflow as tf

    folder.mkdir(parents=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = [tf.io.TFRecordWriter(str(folder / f"data_tfrecord-{n:05d}-of-{files:05d}.gz"), options)
               for n in range(files)]
    for row, (user, item, time_, like) in enumerate(zip(users, items, times, liked)):
        example = tf.train.Example(features=tf.train.Features(feature={
            "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[user])),
            "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[item])),
            "binary_rating": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(like)])),
            "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(time_)])),
        }))
        writers[row % files].write(example.SerializeToString())
    for writer in writers:
        writer.close()


def write_examples(root: Path, rows: int, items: list[bytes], seed: int = 0) -> None:
    """`rows` generated interactions under `root` (Split-train and Split-eval); see the module docstring."""
    rng = np.random.default_rng(seed)
    num_users = max(rows // 50, 10)
    users = np.array([f"u{n}".encode() for n in range(num_users + num_users // 10)], dtype=object)
    popularity = 1.0 / np.arange(1, len(items) + 1)
    item_ids = np.array(items, dtype=object)
    held = rows // 5
    for split, count, pool in (("train", rows - held, users[:num_users]), ("eval", held, users)):
        drawn = rng.choice(item_ids, count, p=popularity / popularity.sum())
        write_split(root / f"Split-{split}", rng.choice(pool, count), drawn, rng.integers(0, 10**9, count),
                    rng.random(count) < 0.6)


WAYS = ("portable", "multi-processing", "process")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def beam_services(folder: Path, workers: int) -> Iterator[tuple[str, str, list[subprocess.Popen]]]:
    """(job endpoint, worker pool address, both processes): Beam's Python job server and an external
    worker pool of `workers` processes, stopped on exit."""
    job_port, pool_port = _free_port(), _free_port()
    # The pool starts each worker as the `python` on its PATH: this environment's.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    commands = [
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)],
    ]
    started = []
    try:
        for command, port in zip(commands, (job_port, pool_port)):
            with open(folder / f"{port}.log", "w") as log:
                started.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
            deadline = time.monotonic() + 120
            with socket.socket() as probe:
                while probe.connect_ex(("127.0.0.1", port)) != 0:
                    if started[-1].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((folder / f"{port}.log").read_text()[-2000:])
                    time.sleep(0.2)
        yield f"localhost:{job_port}", f"localhost:{pool_port}", started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def _sampled(command: list[str], services: list[subprocess.Popen]) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Runs `command`; returns it and the peak tree RSS of each of `services` meanwhile."""
    peaks = [0] * len(services)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for i, process in enumerate(services):
                peaks[i] = max(peaks[i], _tree_rss_bytes(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        child = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    finally:
        done.set()
        sampler.join()
    return child, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an exported model with a `recommend` signature")
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    items = catalogue(args.model)
    out: dict = {"model": args.model, "catalogue": len(items), "workers": args.workers, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            root = Path(tmp) / str(rows)
            write_examples(root, rows, items)
            out["sizes"][rows] = {}
            for way in WAYS:
                # Fresh services per size, so that each peak is that size's.
                with beam_services(root, args.workers) as (job_endpoint, pool, services):
                    child, peaks = _sampled(
                        [sys.executable, "-c", CHILD, str(root), args.model, way, str(args.workers), str(root / way),
                         job_endpoint, pool],
                        services if way == "portable" else [],
                    )
                if child.returncode:
                    sys.stderr.write(child.stderr[-4000:])
                    return child.returncode
                result = json.loads(child.stdout.strip().splitlines()[-1])
                if way == "portable":
                    result["job_server_peak_rss_mib"], result["worker_pool_peak_rss_mib"] = (
                        round(peak / 2**20, 1) for peak in peaks)
                out["sizes"][rows][way] = result
    low, high = min(args.rows), max(args.rows)
    out["growth"] = {
        way: {
            "rows_ratio": high / low,
            "peak_rss_ratio": round(out["sizes"][high][way]["peak_rss_mib"] / out["sizes"][low][way]["peak_rss_mib"], 3),
            "peak_rss_mib": round(out["sizes"][high][way]["peak_rss_mib"] - out["sizes"][low][way]["peak_rss_mib"], 1),
        }
        for way in WAYS
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
