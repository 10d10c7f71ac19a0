"""Benchmark: the Trainer's peak memory and seconds, alone in a fresh process, on runs a pipeline already made.

    python -m benchmarks.trainer_memory --output OUT_A [OUT_B ...] [--config JSON] [--repo PATH]

For each output root, rebuilds the latest Trainer execution's inputs as TFX
gave them to `run_fn` (`benchmarks.training_throughput.fn_args_of`), then runs
`components.trainer.run_fn` on them in a new Python process (the export goes
to a temporary folder) and reads that process's peak RSS from the kernel
(getrusage of the child): what the Trainer holds, with nothing the earlier
components left in the runner's process. `--config` puts JSON values on top
of the recorded model config (e.g. a fixed `steps_per_epoch`; null removes a
field); `--repo` runs another checkout's `run_fn` (an earlier commit) on the
same inputs, e.g. with `--config '{"input": null}'` where it lacks that field. Prints
JSON per output root: training rows (the files' records), peak RSS, seconds;
and the growth between consecutive roots.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.training_throughput import fn_args_of

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
from tfx.components.trainer.fn_args_utils import FnArgs
from components.trainer import run_fn
run_fn(FnArgs(hyperparameters=None, **json.loads(sys.argv[1])))
"""


def measure(output: Path, overrides: dict, repo: Path) -> dict:
    import tensorflow as tf

    from components.custom_config import MODEL
    from components.trainer import count_records

    fn_args = fn_args_of(output)
    custom = dict(fn_args.custom_config)
    custom[MODEL] = {k: v for k, v in {**custom[MODEL], **overrides}.items() if v is not None}
    records = sum(count_records(tf.io.gfile.glob(pattern)) for pattern in fn_args.train_files)
    with tempfile.TemporaryDirectory(prefix="trainer-memory-") as tmp:
        args = {
            "train_files": list(fn_args.train_files), "eval_files": list(fn_args.eval_files),
            "transform_graph_path": fn_args.transform_graph_path,
            "serving_model_dir": str(Path(tmp) / "model"), "custom_config": custom,
        }
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=repo,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"run_fn failed on {output}: {done.stderr[-3000:]}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:
        raise RuntimeError("an earlier child's peak hides this one's: measure one output per process")
    return {"output": str(output), "training_files_records": records,
            "peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, nargs="+", required=True, help="pipeline output roots")
    parser.add_argument("--config", default="{}", help="JSON values on top of the recorded model config")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose run_fn runs")
    args = parser.parse_args()
    results = []
    for output in args.output:
        # ru_maxrss of children is the largest child's so far: each root in its own process.
        done = subprocess.run(
            [sys.executable, "-c", "import json, sys; from pathlib import Path; "
             "from benchmarks.trainer_memory import measure; "
             "print(json.dumps(measure(Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]))))",
             str(output), args.config, str(args.repo)],
            cwd=REPO, capture_output=True, text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    growth = [
        {"rows_ratio": round(b["training_files_records"] / a["training_files_records"], 2),
         "peak_rss_growth_mib": round(b["peak_rss_mib"] - a["peak_rss_mib"], 1)}
        for a, b in zip(results, results[1:])
    ]
    print(json.dumps({"runs": results, "growth": growth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
