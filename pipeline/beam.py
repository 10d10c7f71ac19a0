"""Beam pipeline arguments for the runners the pipeline's data work can use.

TFX hands these to every Beam-based component (ExampleGen, StatisticsGen,
Transform, Evaluator). Remote runners get `--setup_file`, so their workers
install `pipeline`, `components` and `data` from this repository's setup.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import IN_MEMORY_BEAM_ARGS, LOCAL_BEAM_RUNNER, LOCAL_DEPENDENCIES, REPO_ROOT
from pipeline.runner_options import OptionError

IN_MEMORY, MULTI_PROCESSING, DATAFLOW, FLINK, SPARK, PORTABLE = (
    "in-memory", "multi-processing", "dataflow", "flink", "spark", "portable"
)
RUNNERS = (IN_MEMORY, MULTI_PROCESSING, DATAFLOW, FLINK, SPARK, PORTABLE)
SETUP_FILE = REPO_ROOT / "setup.py"
# Above this much input, the local default is the DirectRunner's multi-processing
# mode: in-memory mode runs every bundle in one Python process.
LARGE_INPUT_BYTES = 256 * 2**20


def beam_pipeline_args(
    runner: str,
    workers: int | None = None,
    project: str | None = None,
    region: str | None = None,
    temp_location: str | None = None,
    flink_master: str | None = None,
    spark_master: str | None = None,
    setup_file: Path = SETUP_FILE,
    job_endpoint: str | None = None,
    environment_type: str | None = None,
    environment_config: str | None = None,
) -> tuple[str, ...]:
    """The arguments for `runner` (one of RUNNERS); raises ValueError naming what is missing."""
    # The local runners name Beam's FnApiRunner: Beam 2.77's "DirectRunner" first
    # tries to download and run Prism (github.com), and runs the pipeline there
    # when it can, so the chosen mode and workers would not be what runs.
    if runner == IN_MEMORY:
        return IN_MEMORY_BEAM_ARGS
    if runner == MULTI_PROCESSING:
        # 0: one worker per CPU core.
        return (LOCAL_BEAM_RUNNER, "--direct_running_mode=multi_processing", f"--direct_num_workers={workers or 0}",
                LOCAL_DEPENDENCIES)
    remote = (f"--setup_file={setup_file}",)
    if runner == DATAFLOW:
        missing = [name for name, value in
                   (("project", project), ("region", region), ("temp_location", temp_location)) if not value]
        if missing:
            raise ValueError(f"the Dataflow runner needs {missing}")
        args = ("--runner=DataflowRunner", f"--project={project}", f"--region={region}",
                f"--temp_location={temp_location}")
        return args + ((f"--max_num_workers={workers}",) if workers else ()) + remote
    if runner == FLINK:
        if not flink_master:
            raise ValueError("the Flink runner needs flink_master (host:port)")
        args = ("--runner=FlinkRunner", f"--flink_master={flink_master}")
        return args + ((f"--parallelism={workers}",) if workers else ()) + remote
    if runner == SPARK:
        if not spark_master:
            raise ValueError("the Spark runner needs spark_master (spark://host:port)")
        return ("--runner=SparkRunner", f"--spark_master_url={spark_master}") + remote
    if runner == PORTABLE:
        # Beam's Job API: any job server (Beam's Python one, Flink's, Spark's) at
        # `job_endpoint`; workers as `environment_type` says (EXTERNAL: a worker
        # pool at `environment_config`, with this project installed there).
        if not job_endpoint:
            raise ValueError("the portable runner needs job_endpoint (host:port)")
        args = ("--runner=PortableRunner", f"--job_endpoint={job_endpoint}")
        if environment_type:
            args += (f"--environment_type={environment_type}",)
        if environment_config:
            args += (f"--environment_config={environment_config}",)
        return args
    raise ValueError(f"unknown Beam runner {runner!r}; choose from {list(RUNNERS)}")


def default_runner(data_path: Path) -> str:
    """Multi-processing for large local input (a file or a folder's CSVs), in-memory otherwise."""
    files = [data_path] if data_path.is_file() else list(data_path.rglob("*.csv"))
    size = sum(f.stat().st_size for f in files if f.exists())
    return MULTI_PROCESSING if size >= LARGE_INPUT_BYTES else IN_MEMORY


def add_beam_flags(parser: argparse.ArgumentParser) -> None:
    """The command-line flags `beam_args_from_flags` reads."""
    parser.add_argument("--beam-runner", choices=RUNNERS, default=None,
                        help="where the data work runs (default: in-memory, multi-processing for large input)")
    parser.add_argument("--beam-workers", type=int, default=None,
                        help="multi-processing workers (0: one per core), Dataflow max workers, Flink parallelism")
    parser.add_argument("--gcp-project", default=None, help="Dataflow")
    parser.add_argument("--gcp-region", default=None, help="Dataflow")
    parser.add_argument("--beam-temp-location", default=None, help="Dataflow, e.g. gs://bucket/tmp")
    parser.add_argument("--flink-master", default=None, help="Flink, host:port")
    parser.add_argument("--spark-master", default=None, help="Spark, spark://host:port")
    parser.add_argument("--job-endpoint", default=None, help="portable: the Beam job server, host:port")
    parser.add_argument("--environment-type", default=None,
                        help="portable: how workers run, e.g. EXTERNAL (a worker pool), DOCKER, PROCESS, LOOPBACK")
    parser.add_argument("--environment-config", default=None,
                        help="portable: e.g. the worker pool's host:port for EXTERNAL, an image for DOCKER")


def beam_args_from_flags(args: argparse.Namespace, data_path: Path | None = None) -> tuple[str, ...]:
    runner = args.beam_runner or (default_runner(data_path) if data_path else IN_MEMORY)
    try:
        return beam_pipeline_args(
            runner, workers=args.beam_workers, project=args.gcp_project, region=args.gcp_region,
            temp_location=args.beam_temp_location, flink_master=args.flink_master,
            spark_master=args.spark_master, job_endpoint=args.job_endpoint,
            environment_type=args.environment_type, environment_config=args.environment_config,
        )
    except ValueError as error:
        raise OptionError(f"--beam-runner {runner}: {error}") from error
