"""Benchmark: ingestion and validation (ExampleGen, StatisticsGen, ExampleValidator,
the gate) on generated interactions, one fresh process per size.

    python -m benchmarks.ingest_validate                    # 100K and 1M rows
    python -m benchmarks.ingest_validate --rows 100000 --beam-arg=--direct_num_workers=2

Prints JSON: per size, each component's seconds and rows per second (from ML
Metadata's execution times), the whole run's wall time, and the peak resident
memory of the process tree; then the ratios between consecutive sizes (time
growth per row growth: 1.0 is linear).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA_COMPONENTS = ("ExampleGen", "StatisticsGen", "ExampleValidator", "DataValidationGate")
# The components that read every row; the other two read statistics only.
ROW_COMPONENTS = ("ExampleGen", "StatisticsGen")


def _worker(rows: int, workdir: Path, beam_args: list[str]) -> dict:
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.metadata import sqlite_metadata_connection_config

    from data.synthetic import SyntheticSpec, write_csv
    from pipeline.config import PipelineConfig
    from pipeline.pipeline import create_data_validation_pipeline
    from results.summary import summarize

    spec = SyntheticSpec(num_users=max(600, rows // 50), num_items=max(400, rows // 100),
                         num_interactions=rows)
    started = time.perf_counter()
    data = write_csv(spec, workdir / "data" / "interactions.csv")
    generate_seconds = time.perf_counter() - started

    config = PipelineConfig(data_path=data, output_dir=workdir / "out")
    if beam_args:
        config = dataclasses.replace(config, beam_pipeline_args=tuple(beam_args))
    connection = sqlite_metadata_connection_config(
        str(config.metadata_path)
    )
    started = time.perf_counter()
    LocalDagRunner().run(create_data_validation_pipeline(config, connection))
    run_seconds = time.perf_counter() - started
    summary = summarize(metadata_store.MetadataStore(connection), config.pipeline_name)
    states = {c.component_id: c.state for c in summary.components}
    seconds = {c.component_id: c.seconds for c in summary.components if c.component_id in DATA_COMPONENTS}
    return {
        "rows": rows,
        "states_ok": all(states[c] == "complete" for c in DATA_COMPONENTS),
        "generate_csv_seconds": round(generate_seconds, 2),
        "pipeline_wall_seconds": round(run_seconds, 2),
        "component_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rows_per_second": {c: round(rows / seconds[c]) for c in ROW_COMPONENTS if seconds[c] > 0},
        "input_mib": round(data.stat().st_size / 2**20, 1),
        # ru_maxrss is in KiB: this process's peak, and its largest child's (Beam
        # workers in multi-processing mode; a forked helper also counts the
        # parent's pages it shared, so this is an upper bound).
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_child_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def _measure(rows: int, beam_args: list[str]) -> dict:
    """Runs one size in a fresh process, so memory peaks do not mix."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{rows}-") as tmp:
        command = [sys.executable, __file__, "--worker", "--rows", str(rows), "--workdir", tmp]
        command += [f"--beam-arg={a}" for a in beam_args]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--beam-arg", dest="beam_args", action="append", default=[])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (rows,) = args.rows
        print(json.dumps(_worker(rows, args.workdir, args.beam_args)))
        return 0
    results = [_measure(rows, args.beam_args) for rows in sorted(args.rows)]
    growth = [
        {
            "from_rows": a["rows"], "to_rows": b["rows"],
            "row_ratio": round(b["rows"] / a["rows"], 2),
            "time_ratio": {
                c: round(b["component_seconds"][c] / a["component_seconds"][c], 2)
                for c in DATA_COMPONENTS if a["component_seconds"].get(c)
            },
            "peak_rss_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 2),
        }
        for a, b in zip(results, results[1:])
    ]
    print(json.dumps({"sizes": results, "growth": growth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
