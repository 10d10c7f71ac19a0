"""Benchmark: two Evaluators side by side on a run a pipeline already made.

    python -m benchmarks.evaluator_compare --output outputs        # TFX's executor vs the pipeline's
    python -m benchmarks.evaluator_compare --output DIR --before-executor batched \
        --before A.json --after B.json [--repeats 2]               # two TFMA configs

Finds the latest Evaluator execution in `<output>/metadata.sqlite` and runs
two Evaluator executors on its inputs (examples, candidate and baseline
model), alternating, `--repeats` times each, in this process with the
pipeline's default Beam arguments. Each side is an executor (`tfma`: TFX's
own, TFMA's per-example metrics; `batched`: the pipeline's,
`components.batched_evaluation`) and a config (`--before`/`--after`: a TFMA
EvalConfig JSON file; default: the config recorded in ML Metadata, or with
`--todays-config`, the one `pipeline.eval_config` makes today for the
recorded thresholds). Prints JSON: each side's fastest seconds, the speed-up,
whether both bless alike, and of every scalar metric (slice, model, head,
metric, diff) the two share, the largest absolute difference between them,
plus the metrics only one of them reports.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from benchmarks.evaluator_profile import evaluator_inputs
from pipeline.config import IN_MEMORY_BEAM_ARGS
from results.evaluation import evaluation_metrics
from results.metadata import sqlite_readonly


def todays_config(recorded_json: str) -> str:
    """The EvalConfig `pipeline.eval_config` makes now for the thresholds inside `recorded_json`."""
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format

    from pipeline.eval_config import make_eval_config
    from recommender import heads

    recorded = json_format.Parse(recorded_json, tfma.EvalConfig())
    thresholds = {}
    for spec in recorded.metrics_specs:
        (head,) = spec.output_names
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                threshold = per_slice.threshold
                value, change = threshold.value_threshold, threshold.change_threshold
                higher = value.HasField("lower_bound")
                thresholds[head] = heads.HeadThreshold(
                    metric.class_name, higher,
                    bound=(value.lower_bound if higher else value.upper_bound).value,
                    max_regression=abs(change.absolute.value),
                )
    return json_format.MessageToJson(make_eval_config(thresholds))


def _executor(name: str):
    if name == "tfma":
        from tfx.components.evaluator.executor import Executor
    else:
        from components.batched_evaluation import Executor
    return Executor


def run_once(executor: str, artifacts: dict, eval_config: str, example_splits: str) -> tuple[float, bool, dict]:
    """(seconds, blessed, evaluation_metrics table) of one Evaluator execution."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
        evaluation.uri, blessing.uri = str(Path(tmp) / "evaluation"), str(Path(tmp) / "blessing")
        context = BaseBeamExecutor.Context(beam_pipeline_args=list(IN_MEMORY_BEAM_ARGS), tmp_dir=tmp)
        started = time.perf_counter()
        _executor(executor)(context).Do(artifacts, {"evaluation": [evaluation], "blessing": [blessing]},
                    {"eval_config": eval_config, "example_splits": example_splits})
        seconds = time.perf_counter() - started
        return seconds, (Path(blessing.uri) / "BLESSED").exists(), evaluation_metrics(evaluation.uri)


def compare(output: Path, sides: dict[str, tuple[str, str | None]], todays: bool, repeats: int) -> dict:
    """`sides`: {"before"/"after": (executor name, EvalConfig JSON or None for the recorded one)}."""
    store = metadata_store.MetadataStore(sqlite_readonly(str(output / "metadata.sqlite")))
    recorded, artifacts = evaluator_inputs(store)
    default = todays_config(recorded["eval_config"]) if todays else recorded["eval_config"]
    configs = {name: (executor, config or default) for name, (executor, config) in sides.items()}
    runs: dict[str, list] = {"before": [], "after": []}
    for _ in range(repeats):
        for name, (executor, config) in configs.items():
            runs[name].append(run_once(executor, artifacts, config, recorded["example_splits"]))
    tables = {name: runs[name][-1][2] for name in runs}
    flat = {name: {(slice_, *key): value for slice_, keys in table.items() for key, value in keys.items()}
            for name, table in tables.items()}
    shared = flat["before"].keys() & flat["after"].keys()
    def difference(key) -> float:
        a, b = flat["before"][key], flat["after"][key]
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf if math.isnan(a - b) else abs(a - b)

    worst = max(shared, key=difference, default=None)
    seconds = {name: min(r[0] for r in runs[name]) for name in runs}
    return {
        "eval_rows": next((int(v) for (_, _, name, diff), v in tables["before"].get("overall", {}).items()
                           if name == "example_count" and not diff), None),
        "executors": {name: executor for name, (executor, _) in configs.items()},
        "baseline_model": "baseline_model" in artifacts,
        "repeats": repeats,
        "seconds": {name: round(s, 2) for name, s in seconds.items()},
        "after_speedup": round(seconds["before"] / seconds["after"], 3),
        "blessed": {name: runs[name][-1][1] for name in runs},
        "metrics_compared": len(shared),
        "max_abs_difference": None if worst is None else {
            "metric": list(worst), "before": flat["before"][worst], "after": flat["after"][worst],
            "difference": difference(worst),
        },
        "only_before": sorted(map(list, flat["before"].keys() - shared)),
        "only_after": sorted(map(list, flat["after"].keys() - shared)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a pipeline output root (its metadata.sqlite)")
    parser.add_argument("--before-executor", choices=("tfma", "batched"), default="tfma")
    parser.add_argument("--after-executor", choices=("tfma", "batched"), default="batched")
    parser.add_argument("--before", type=Path, default=None, help="a TFMA EvalConfig as a JSON file")
    parser.add_argument("--after", type=Path, default=None, help="a TFMA EvalConfig as a JSON file")
    parser.add_argument("--todays-config", action="store_true",
                        help="instead of the recorded config, the one pipeline.eval_config makes today")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    read = lambda path: path.read_text() if path else None  # noqa: E731
    sides = {"before": (args.before_executor, read(args.before)), "after": (args.after_executor, read(args.after))}
    print(json.dumps(compare(args.output, sides, args.todays_config, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
