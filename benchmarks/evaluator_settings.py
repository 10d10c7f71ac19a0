"""Benchmark: the Evaluator under two TFMA configs, side by side, on a run a pipeline already made.

    python -m benchmarks.evaluator_settings --output outputs                 # recorded vs today's config
    python -m benchmarks.evaluator_settings --output DIR --before A.json --after B.json [--repeats 2]

Finds the latest Evaluator execution in `<output>/metadata.sqlite` and runs
TFX's Evaluator executor on its inputs (examples, candidate and baseline
model) once per config, alternating, `--repeats` times each, in this process
with the pipeline's default Beam arguments. `before` defaults to the config
recorded in ML Metadata; `after` to the one `pipeline.eval_config` makes
today for the recorded thresholds. Prints JSON: each config's fastest
seconds, the ratio, whether both bless alike, and every scalar metric (slice,
model, head, metric, diff) the two share with the largest absolute
difference between them, plus the metrics only one of them reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from benchmarks.evaluator_profile import _tfx_artifacts, latest_evaluator
from pipeline.config import IN_MEMORY_BEAM_ARGS
from results.evaluation import evaluation_metrics
from results.metadata import sqlite_readonly


def todays_config(recorded_json: str) -> str:
    """The EvalConfig `pipeline.eval_config` makes now for the thresholds inside `recorded_json`."""
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format

    from components import heads
    from pipeline.eval_config import make_eval_config

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


def run_once(artifacts: dict, eval_config: str, example_splits: str) -> tuple[float, bool, dict]:
    """(seconds, blessed, evaluation_metrics table) of one Evaluator execution."""
    from tfx.components.evaluator.executor import Executor as EvaluatorExecutor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
        evaluation.uri, blessing.uri = str(Path(tmp) / "evaluation"), str(Path(tmp) / "blessing")
        executor = EvaluatorExecutor(BaseBeamExecutor.Context(beam_pipeline_args=list(IN_MEMORY_BEAM_ARGS), tmp_dir=tmp))
        started = time.perf_counter()
        executor.Do(artifacts, {"evaluation": [evaluation], "blessing": [blessing]},
                    {"eval_config": eval_config, "example_splits": example_splits})
        seconds = time.perf_counter() - started
        return seconds, (Path(blessing.uri) / "BLESSED").exists(), evaluation_metrics(evaluation.uri)


def compare(output: Path, before: str | None, after: str | None, repeats: int) -> dict:
    store = metadata_store.MetadataStore(sqlite_readonly(str(output / "metadata.sqlite")))
    recorded, inputs = latest_evaluator(store)
    artifacts = _tfx_artifacts(inputs)
    configs = {"before": before or recorded["eval_config"], "after": after or todays_config(recorded["eval_config"])}
    runs: dict[str, list] = {"before": [], "after": []}
    for _ in range(repeats):
        for name, config in configs.items():
            runs[name].append(run_once(artifacts, config, recorded["example_splits"]))
    tables = {name: runs[name][-1][2] for name in runs}
    flat = {name: {(slice_, *key): value for slice_, keys in table.items() for key, value in keys.items()}
            for name, table in tables.items()}
    shared = flat["before"].keys() & flat["after"].keys()
    worst = max(shared, key=lambda k: abs(flat["before"][k] - flat["after"][k]), default=None)
    seconds = {name: min(r[0] for r in runs[name]) for name in runs}
    return {
        "baseline_model": "baseline_model" in artifacts,
        "repeats": repeats,
        "seconds": {name: round(s, 2) for name, s in seconds.items()},
        "after_speedup": round(seconds["before"] / seconds["after"], 3),
        "blessed": {name: runs[name][-1][1] for name in runs},
        "metrics_compared": len(shared),
        "max_abs_difference": None if worst is None else {
            "metric": list(worst), "before": flat["before"][worst], "after": flat["after"][worst],
            "difference": abs(flat["before"][worst] - flat["after"][worst]),
        },
        "only_before": sorted(map(list, flat["before"].keys() - shared)),
        "only_after": sorted(map(list, flat["after"].keys() - shared)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a pipeline output root (its metadata.sqlite)")
    parser.add_argument("--before", type=Path, default=None, help="a TFMA EvalConfig as a JSON file")
    parser.add_argument("--after", type=Path, default=None, help="a TFMA EvalConfig as a JSON file")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    read = lambda path: path.read_text() if path else None  # noqa: E731
    print(json.dumps(compare(args.output, read(args.before), read(args.after), args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
