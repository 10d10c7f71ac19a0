"""Benchmark: the whole pipeline at growing sizes of generated interactions.

    python -m benchmarks.scale [--rows 100000 1000000 10000000] [--epochs 1] [--users N --items N]
        [--beam-runner ...]

For each size: generates interactions (users = rows/50, items = rows/100, at
least 600/400; or `--users`/`--items` at every size, so that only the rows
grow), runs `run_local.py` on them in a fresh process and samples the
RSS of that process and all its descendants (Beam workers, the serving check)
every 0.2 s from /proc. Per-component seconds come from ML Metadata. Prints
JSON: per size, each component's seconds and rows per second, wall time, peak
tree RSS overall and while each component ran, the exported model's size on
disk (its variables and its graph); then, between consecutive sizes, how each grows relative to rows (a
ratio above the row ratio means faster than linear).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from data.synthetic import SyntheticSpec, write_csv

REPO = Path(__file__).resolve().parent.parent


def _tree_rss_bytes(root_pid: int) -> int:
    """Summed RSS of `root_pid` and every descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * page
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _run_sampled(command: list[str], log: Path) -> tuple[int, float, list[tuple[float, int]]]:
    """(exit status, wall seconds, [(epoch seconds, tree RSS bytes)] samples) of `command`."""
    samples: list[tuple[float, int]] = []
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append((time.time(), _tree_rss_bytes(process.pid)))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = process.wait()
        done.set()
        sampler.join()
    return status, time.perf_counter() - started, samples


def _model_mib(output: Path) -> dict[str, float]:
    """The size of the (one) model the Trainer exported under `output`: its variables and its graph."""
    (model,) = (output / "pipeline" / "Trainer" / "model").glob("*/Format-Serving")
    variables = sum(p.stat().st_size for p in (model / "variables").iterdir())
    return {"variables": round(variables / 2**20, 3), "graph": round((model / "saved_model.pb").stat().st_size / 2**20, 3)}


def measure(rows: int, epochs: int, extra: list[str], workdir: Path,
            users: int | None = None, items: int | None = None) -> dict:
    from ml_metadata.metadata_store import metadata_store

    from results.metadata import sqlite_readonly
    from results.summary import summarize

    spec = SyntheticSpec(num_users=users or max(600, rows // 50), num_items=items or max(400, rows // 100),
                         num_interactions=rows)
    started = time.perf_counter()
    data = write_csv(spec, workdir / "data" / "interactions.csv")
    generate_seconds = time.perf_counter() - started
    output = workdir / "out"
    command = [sys.executable, "run_local.py", "--data", str(data), "--output", str(output),
               "--epochs", str(epochs), *extra]
    status, wall, samples = _run_sampled(command, workdir / "run.log")
    summary = summarize(metadata_store.MetadataStore(sqlite_readonly(str(output / "metadata.sqlite"))),
                        "multitask-recommender")
    components = [c for c in summary.components if not c.component_id.endswith("_resolver")]
    seconds = {c.component_id: round(c.seconds, 2) for c in components}
    # The whole tree's RSS while each component ran (the runner process
    # included); None for a component shorter than the sampling interval.
    component_peak = {}
    for c in components:
        during = [rss for t, rss in samples if c.started_at <= t <= c.started_at + c.seconds]
        component_peak[c.component_id] = round(max(during) / 2**30, 2) if during else None
    return {
        "rows": rows,
        "exit_status": status,
        "states": sorted({c.state for c in summary.components}),
        "input_mib": round(data.stat().st_size / 2**20, 1),
        "generate_csv_seconds": round(generate_seconds, 1),
        "wall_seconds": round(wall, 1),
        "peak_tree_rss_gib": round(max((rss for _, rss in samples), default=0) / 2**30, 2),
        "component_seconds": seconds,
        "component_peak_tree_rss_gib": component_peak,
        "rows_per_second": {c: round(rows / s) for c, s in seconds.items() if s >= 0.5},
        "users": spec.num_users,
        "items": spec.num_items,
        "model_mib": _model_mib(output) if status == 0 else None,
        "blessed": summary.blessed,
    }


def growth(results: list[dict]) -> list[dict]:
    out = []
    for a, b in zip(results, results[1:]):
        out.append({
            "from_rows": a["rows"], "to_rows": b["rows"], "row_ratio": round(b["rows"] / a["rows"], 1),
            "wall_ratio": round(b["wall_seconds"] / a["wall_seconds"], 2),
            "peak_rss_ratio": round(b["peak_tree_rss_gib"] / max(a["peak_tree_rss_gib"], 1e-9), 2),
            "model_variables_ratio": (
                round(b["model_mib"]["variables"] / a["model_mib"]["variables"], 4)
                if a["model_mib"] and b["model_mib"] else None
            ),
            "component_time_ratio": {
                c: round(b["component_seconds"][c] / a["component_seconds"][c], 2)
                for c in b["component_seconds"] if a["component_seconds"].get(c, 0) >= 0.5
            },
        })
    return out


def fixed_and_per_row(results: list[dict]) -> dict:
    """Per component (and the wall time): the least-squares fit seconds = a + b * rows over the sizes.

    `fixed_seconds` is a (start-up, graph building, model loading: what a
    component costs whatever the data), `microseconds_per_row` is b, and
    `r2` says how well a straight line describes the sizes measured.
    """
    rows = np.array([r["rows"] for r in results], dtype=float)
    series = {"wall": [r["wall_seconds"] for r in results]}
    for name in results[0]["component_seconds"]:
        if all(name in r["component_seconds"] for r in results):
            series[name] = [r["component_seconds"][name] for r in results]
    out = {}
    for name, seconds in series.items():
        y = np.array(seconds, dtype=float)
        b, a = np.polyfit(rows, y, 1)
        residual = float(np.sum((y - (a + b * rows)) ** 2))
        total = float(np.sum((y - y.mean()) ** 2))
        out[name] = {
            "fixed_seconds": round(float(a), 2),
            "microseconds_per_row": round(float(b) * 1e6, 2),
            "r2": round(1 - residual / total, 4) if total > 0 else None,
        }
    return out


def only(result: dict, components: list[str]) -> dict:
    """`result` with its per-component figures restricted to `components`."""
    keyed = ("component_seconds", "component_peak_tree_rss_gib", "rows_per_second")
    return {k: ({c: v for c, v in result[k].items() if c in components} if k in keyed else result[k])
            for k in result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--users", type=int, default=None, help="users at every size (default: rows/50)")
    parser.add_argument("--items", type=int, default=None, help="items at every size (default: rows/100)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each size's outputs under this folder")
    parser.add_argument("--components", nargs="+", default=None, metavar="ID",
                        help="report only these components (e.g. Evaluator Transform); the pipeline runs whole")
    args, extra = parser.parse_known_args()  # the rest goes to run_local.py (e.g. --beam-runner)
    if args.keep:
        # A kept store from an earlier run would make this one a second run
        # (a baseline to evaluate against, analyzer caches): not comparable.
        for rows in args.rows:
            workdir = args.keep / str(rows)
            if workdir.exists() and any(workdir.iterdir()):
                parser.error(f"--keep: {workdir} is not empty; remove it or keep elsewhere")
    results = []
    for rows in sorted(args.rows):
        if args.keep:
            workdir = args.keep / str(rows)
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(measure(rows, args.epochs, extra, workdir, args.users, args.items))
        else:
            with tempfile.TemporaryDirectory(prefix=f"scale-{rows}-") as tmp:
                results.append(measure(rows, args.epochs, extra, Path(tmp), args.users, args.items))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress
    if args.components:
        results = [only(result, args.components) for result in results]
    fit = fixed_and_per_row(results) if len(results) > 1 else None
    print(json.dumps({"sizes": results, "growth": growth(results), "fixed_and_per_row": fit}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
