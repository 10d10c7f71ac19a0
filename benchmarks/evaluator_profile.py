"""Benchmark: where the Evaluator's time goes, on a run a pipeline already made.

    python -m benchmarks.evaluator_profile --output outputs            # the latest run there
    python -m benchmarks.evaluator_profile --output DIR --eval-config '{"...": ...}'

Finds the latest Evaluator execution in `<output>/metadata.sqlite`, and runs
TFX's Evaluator executor again in this process on the same inputs (examples,
candidate and baseline model) and the same TFMA config, with Beam's in-memory
DirectRunner on one worker (the pipeline's default), under cProfile. The
profile's self time is split into phases by the module of each function:
reading and parsing the examples, the transform graph, the models' inference,
the metric combiners, slicing, writing, and Beam's own work; `--top` lists
the functions with the most self time. Prints JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from benchmarks.recorded import latest_inputs, tfx_artifacts
from pipeline.config import IN_MEMORY_BEAM_ARGS
from results.metadata import sqlite_readonly

# Phases by the path of the module a function lives in; the first match wins.
PHASES = (
    ("metric combiners", ("tensorflow_model_analysis/metrics/",)),
    ("slicing", ("tensorflow_model_analysis/slicer/", "slice_key_extractor")),
    ("writing", ("tensorflow_model_analysis/writers/", "tfrecordio", "tensorflow/python/lib/io")),
    ("transform graph", ("transformed_features_extractor", "tensorflow_transform/")),
    ("inference", ("predictions_extractor", "tensorflow/python/eager", "tensorflow/python/saved_model",
                   "tensorflow/python/framework", "tensorflow/python/ops", "tf_keras/")),
    ("reading and parsing", ("tfx_bsl/", "tensorflow_model_analysis/extractors/", "pyarrow/",
                             "apache_beam/io/")),
    ("beam", ("apache_beam/",)),
    ("other TFMA", ("tensorflow_model_analysis/",)),
)


def _phase(filename: str) -> str | None:
    """The phase of a function in `filename`; None for built-ins and the standard library."""
    for phase, markers in PHASES:
        if any(marker in filename for marker in markers):
            return phase
    return None if filename.startswith("~") or "/lib/python3" in filename and "site-packages" not in filename else "other"


def phase_seconds(stats: pstats.Stats, depth: int = 4) -> dict[str, float]:
    """Self time per phase. A built-in's or the standard library's self time is its
    callers': split by what each caller spent in it, up to `depth` callers up."""
    out: dict[str, float] = {}

    def charge(function, seconds: float, level: int) -> None:
        phase = _phase(function[0])
        callers = stats.stats[function][4] if function in stats.stats else {}
        if phase is None and level < depth and callers:
            total = sum(c[2] for c in callers.values()) or 1.0
            for caller, (_, _, spent, _) in callers.items():
                charge(caller, seconds * spent / total, level + 1)
            return
        out[phase or "other"] = out.get(phase or "other", 0.0) + seconds

    for function, (_, _, self_time, _, _) in stats.stats.items():
        charge(function, self_time, 0)
    return out


def evaluator_inputs(store: metadata_store.MetadataStore) -> tuple[dict, dict[str, list]]:
    """(execution properties, {input key: [TFX artifacts]}) of the store's latest Evaluator execution."""
    from tfx.types import standard_artifacts

    recorded, inputs = latest_inputs(store, "Evaluator")
    kinds = {"examples": standard_artifacts.Examples, "model": standard_artifacts.Model,
             "baseline_model": standard_artifacts.Model}
    return recorded, tfx_artifacts(inputs, kinds)


def profile(output: Path, eval_config: str | None, top: int) -> dict:
    from tfx.components.evaluator.executor import Executor as EvaluatorExecutor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    store = metadata_store.MetadataStore(sqlite_readonly(str(output / "metadata.sqlite")))
    recorded, artifacts = evaluator_inputs(store)
    exec_properties = {
        "eval_config": eval_config or recorded["eval_config"],
        "example_splits": recorded["example_splits"],
    }
    beam_args = list(IN_MEMORY_BEAM_ARGS)
    with tempfile.TemporaryDirectory() as tmp:
        evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
        evaluation.uri, blessing.uri = str(Path(tmp) / "evaluation"), str(Path(tmp) / "blessing")
        executor = EvaluatorExecutor(BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=tmp))
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        executor.Do(artifacts, {"evaluation": [evaluation], "blessing": [blessing]}, exec_properties)
        profiler.disable()
        seconds = time.perf_counter() - started
        blessed = bool(int((Path(blessing.uri) / "BLESSED").exists()))
    stats = pstats.Stats(profiler)
    phases = phase_seconds(stats)
    functions = []
    for (filename, line, name), (_, _, self_time, _, callers) in stats.stats.items():
        caller = max(callers.items(), key=lambda kv: kv[1][2], default=None)
        called_by = (f"{caller[0][0].split('site-packages/')[-1]}:{caller[0][1]}({caller[0][2]})"
                     if caller else None)
        functions.append((self_time, f"{filename.split('site-packages/')[-1]}:{line}({name})", called_by))
    profiled = sum(phases.values())
    return {
        "evaluator_seconds": round(seconds, 2),
        "profiled_seconds": round(profiled, 2),  # the main thread's; less when work ran elsewhere
        "blessed": blessed,
        "baseline": "baseline_model" in artifacts,
        "phases_seconds": {k: round(v, 2) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
        "phases_share": {k: round(v / profiled, 3) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
        "top_functions": [
            {"self_seconds": round(t, 2), "function": f, "mostly_called_by": c}
            for t, f, c in sorted(functions, key=lambda x: -x[0])[:top]
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="a pipeline output root (its metadata.sqlite)")
    parser.add_argument("--eval-config", default=None, help="a TFMA EvalConfig as JSON instead of the recorded one")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(json.dumps(profile(args.output, args.eval_config, args.top), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
