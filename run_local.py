"""Runs the pipeline locally: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner.

    python run_local.py                      # bundled synthetic data
    python run_local.py --data my.csv        # your interactions (canonical columns)
    python run_local.py --movielens ../shared/datasets/ml-100k
    python run_local.py --data ratings.parquet --columns user_id=uid,item_id=sku,timestamp=ts,rating=stars

Everything goes under --output: pipeline/ (artifacts), metadata.sqlite,
serving/<version>/ (published models). One run at a time per output root (a
second one fails at once, naming the first). Prints a summary of this run read
back from ML Metadata; exits 1 if a component failed (e.g. the data did not
match the schema).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import sys
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from components import publish
from components.choices import SplitKind
from components.ranking import RankingThreshold
from data import ratings
from data.synthetic import SyntheticSpec, write_csv
from pipeline.beam import add_beam_flags, beam_args_from_flags
from pipeline.config import PipelineConfig, VocabularyCaps
from pipeline.console import QuietConsole, log_path, redacting
from pipeline.run_state import (
    OutputRootBusy,
    OutputRootUnwritable,
    output_root_lock,
    record_failure_reason,
    record_unfinished,
)
from pipeline.runner_options import OptionError, json_value, model_config
from recommender.config import TuningConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the multi-task recommender pipeline locally.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, default=None, metavar="PATH",
        help="a CSV file, or a folder of CSV files, with columns user_id, item_id, timestamp, "
        "binary_rating, purchase_probability (None: generate the bundled synthetic set)",
    )
    parser.add_argument(
        "--movielens", type=Path, default=None, metavar="PATH",
        help="a MovieLens release (folder or ratings file): ML-100K u.data, ML-1M/10M "
        "ratings.dat, ML-20M/25M/latest ratings.csv; converted to the canonical columns",
    )
    parser.add_argument(
        "--columns", default=None, metavar="MAPPING",
        help="with --data: convert a CSV/Parquet file whose columns are mapped as "
        "CANONICAL=SOURCE,... (user_id, item_id, timestamp, and rating or both labels)",
    )
    parser.add_argument("--delimiter", default=",", help="with --columns: the CSV delimiter")
    parser.add_argument(
        "--rating-scale-max", type=float, default=5.0,
        help="with --movielens/--columns rating: purchase_probability = rating / this",
    )
    parser.add_argument(
        "--like-threshold", type=float, default=4.0,
        help="with --movielens/--columns rating: binary_rating = rating >= this",
    )
    parser.add_argument(
        "--split", choices=list(SplitKind), default=SplitKind.TEMPORAL,
        help="temporal: evaluate on the most recent interactions; hash: a random split",
    )
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of rows the Evaluator judges on")
    parser.add_argument(
        "--example-files", type=int, default=1, metavar="N",
        help="write each split in at least N files (one per worker that is to read a split in parallel)",
    )
    parser.add_argument(
        "--vocabulary-top-k", type=int, default=None, metavar="N",
        help="keep at most the N most frequent user IDs and item IDs; the rest share the OOV buckets "
        "(the summary reports how many were dropped)",
    )
    parser.add_argument(
        "--vocabulary-min-count", type=int, default=1, metavar="N",
        help="keep only IDs seen at least N times in the training rows; the rest share the OOV buckets",
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.1,
        help="share of rows the Trainer validates (and early-stops) on; disjoint from the eval rows",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("outputs"), metavar="DIR",
        help="output root: pipeline/, metadata.sqlite, serving/<version>/",
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=None,
        help="training steps per epoch (default: one full pass over the train split)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step")
    parser.add_argument("--learning-rate", type=float, default=None, help="Adam's")
    parser.add_argument(
        "--embedding-dim", type=int, default=None, help="user and item embeddings"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the examples' written order and of training")
    parser.add_argument(
        "--model-config", default=None, metavar="JSON|FILE",
        help='ModelConfig fields as JSON or a JSON file (e.g. configs/original-model.json); '
        "the flags above override it",
    )
    parser.add_argument(
        "--tune", action="store_true",
        help="add TFX's Tuner: a random search on the validation split (the model config's tuning, "
        "or its default search space) whose best values the Trainer fits",
    )
    parser.add_argument(
        "--ranking-threshold", default=None, metavar="JSON|FILE",
        help='gate on ranking quality too, e.g. \'{"metric": "ndcg", "bound": 0.05, "max_regression": 0.01}\'',
    )
    parser.add_argument(
        "--ranking-sample", type=float, default=1.0, metavar="FRACTION",
        help="judge only this fraction of the users in the ranking evaluation, chosen by a keyed hash of the ID",
    )
    parser.add_argument(
        "--recommendations", type=int, default=None, metavar="K",
        help="after publishing, write the top K items of every training user to <output>/recommendations/<version>/",
    )
    parser.add_argument(
        "--recommend-users", type=Path, default=None, metavar="FILE",
        help="with --recommendations: only these users (one ID per line)",
    )
    parser.add_argument("--cache", action="store_true", help="reuse cached component results")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--verbose", action="store_true",
        help="show every log (TensorFlow, absl, Beam, the Trainer's epochs) on the console; by default the "
        "console shows one line per component and the summary, the rest goes to <output>/logs/<run id>.log",
    )
    parser.add_argument(
        "--beam-arg", dest="beam_args", action="append", default=None, metavar="ARG",
        help="a Beam pipeline argument, repeatable (e.g. --beam-arg=--direct_num_workers=2); "
        "replaces the --beam-runner settings",
    )
    add_beam_flags(parser)
    return parser.parse_args(argv)


def _ratings_source(args: argparse.Namespace) -> ratings.RatingsSource | None:
    if args.movielens is not None:
        if args.data is not None or args.columns is not None:
            raise OptionError("--movielens cannot be combined with --data or --columns")
        source = ratings.movielens_source(args.movielens)
    elif args.data is not None and args.data.suffix == ".parquet" and args.columns is None:
        if not args.data.is_file():
            raise OptionError(f"--data {args.data}: no such file")
        source = ratings.canonical_source(args.data)
    elif args.columns is not None:
        if args.data is None or not args.data.is_file():
            raise OptionError("--columns needs --data pointing at one CSV or Parquet file")
        source = ratings.RatingsSource(
            args.data,
            ratings.parse_column_mapping(args.columns),
            file_format="parquet" if args.data.suffix == ".parquet" else "csv",
            delimiter=args.delimiter,
        )
    else:
        return None
    return dataclasses.replace(
        source, scale_max=args.rating_scale_max, like_threshold=args.like_threshold
    )


def _ranking_threshold(value: str | None) -> RankingThreshold | None:
    if value is None:
        return None
    fields = json_value(value, "--ranking-threshold")
    try:
        return RankingThreshold(**fields)
    except (TypeError, ValueError) as error:
        raise OptionError(f"--ranking-threshold: {error}") from error


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The run's config; converts rating data or generates the default set as needed."""
    output = args.output.resolve()
    source = _ratings_source(args)
    scale_max = None
    if source is not None:
        data = output / "data" / source.path.stem / "interactions.csv"
        ratings.convert(source, data)
        scale_max = source.scale_max if ratings.RATING in source.columns else None
    elif args.data is not None:
        data = args.data
    else:
        data = write_csv(SyntheticSpec(), output / "data" / "interactions.csv")
    if not data.exists():
        raise OptionError(f"--data {data}: no such file or folder")
    model = model_config(
        args.model_config, embedding_dim=args.embedding_dim, learning_rate=args.learning_rate,
        batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
    )
    if args.tune and model.tuning is None:
        model = dataclasses.replace(model, tuning=TuningConfig())
    config = PipelineConfig(
        data_path=data,
        output_dir=output,
        model=model,
        split=args.split,
        vocabulary=VocabularyCaps(args.vocabulary_top_k, args.vocabulary_min_count),
        example_files=args.example_files,
        eval_fraction=args.eval_fraction,
        validation_fraction=args.validation_fraction,
        rating_scale_max=scale_max,
        enable_cache=args.cache,
        ranking_threshold=_ranking_threshold(args.ranking_threshold),
        ranking_sample=args.ranking_sample,
        batch_recommendations_k=args.recommendations,
        recommend_users=args.recommend_users,
    )
    beam_args = tuple(args.beam_args) if args.beam_args else beam_args_from_flags(args, config.data_path)
    config = dataclasses.replace(config, beam_pipeline_args=beam_args)
    return config


def new_run_id() -> str:
    """A run id like TFX's own (local time, ISO 8601), unique per output root while its lock is held."""
    return datetime.datetime.now().isoformat()


def run_pipeline(config: PipelineConfig, connection, run_id: str) -> None:
    """Compiles the pipeline, fixes its run id to `run_id`, and runs it with LocalDagRunner.

    The ServingCheck's fresh process is started first, on standby, so that its
    TensorFlow import overlaps this process's imports and the components before it.
    """
    from components import serving_check

    with serving_check.standby():
        from tfx.dsl.compiler import compiler
        from tfx.dsl.compiler import constants as compiler_constants
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner
        from tfx.orchestration.portable import runtime_parameter_utils

        from pipeline.pipeline import create_pipeline

        ir = compiler.Compiler().compile(create_pipeline(config, connection))
        runtime_parameter_utils.substitute_runtime_parameter(
            ir, {compiler_constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id}
        )
        LocalDagRunner().run_with_ir(ir)


def _housekeeping(config: PipelineConfig, store, run_id: str) -> list[str]:
    """Under the run lock: what earlier, killed runs left behind is recorded or removed. Returns notes."""
    notes = []
    abandoned = record_unfinished(
        store, config.pipeline_name,
        f"abandoned: its run ended (killed?) while this was running; recorded by run {run_id}",
    )
    if abandoned:
        notes.append("recorded as FAILED (left running by a run that ended): " + "; ".join(abandoned))
    if config.serving_dir.is_dir():
        with publish.publish_lock(config.serving_dir):
            notes.extend(f"removed stale staging folder {path}" for path in publish.remove_stale_staging(config.serving_dir))
    return notes


def run(config: PipelineConfig, run_id: str | None = None):
    """Runs the pipeline once, holding the output root's lock; returns (summary or None, error or None).

    The summary is this run's, found by its run id. OutputRootBusy (another
    run holds the output root) is returned as the error, with no summary.
    """
    from results.summary import summarize

    run_id = run_id or new_run_id()
    try:
        connection = config.metadata_connection()
    except ValueError as error:  # a MySQL password that cannot be read
        return None, error
    secrets = [connection.mysql.password] if connection.HasField("mysql") else []
    try:
        with redacting(secrets), output_root_lock(config.output_dir, run_id) as takeover:
            store = metadata_store.MetadataStore(connection)
            notes = ([takeover] if takeover else []) + _housekeeping(config, store, run_id)
            for note in notes:
                logging.warning("%s", note)
            error = None
            try:
                run_pipeline(config, connection, run_id)
            except Exception as err:  # reported with the summary; the exit code says it failed
                logging.exception("pipeline run failed")
                error = _store_write_error(config, err) or err
                with contextlib.suppress(Exception):  # a store that cannot be written cannot take the reason either
                    record_failure_reason(store, config.pipeline_name, run_id, f"{type(err).__name__}: {err}")
            try:
                summary = summarize(store, config.pipeline_name, run_id)
            except LookupError:
                if error is None:
                    raise
                return None, error  # failed before any component ran
            return dataclasses.replace(summary, notes=tuple(notes)), error
    except (OutputRootBusy, OutputRootUnwritable) as refused:
        return None, refused


# What SQLite answers when it cannot write its file or journal (ENOSPC, EFBIG, EIO).
_STORE_WRITE_FAILURES = ("disk I/O error", "database or disk is full")


class MetadataStoreUnwritable(RuntimeError):
    """ML Metadata could not be written: the run stopped where it was."""


def _store_write_error(config: PipelineConfig, error: Exception) -> MetadataStoreUnwritable | None:
    """A clear error for a run stopped because ML Metadata could not write, else None."""
    if not any(failure in str(error) for failure in _STORE_WRITE_FAILURES):
        return None
    where = "its MySQL database" if config.metadata_mysql else str(config.metadata_path)
    return MetadataStoreUnwritable(
        f"ML Metadata ({where}) could not be written (SQLite: disk I/O error; is the disk full, or a file size "
        "limit reached?): the run stopped there; the served model is untouched and the store stays readable; "
        f"run again once there is room. The store said: {str(error)[:200]}"
    )


def _write_report(config: PipelineConfig, summary) -> Path:
    """The run's HTML report, with the history of the runs in its metadata store."""
    from results.report import write_report
    from results.summary import history

    runs = history(metadata_store.MetadataStore(config.metadata_connection()), config.pipeline_name)
    return write_report(
        summary, config.output_dir / "reports" / summary.run_id.replace(":", "-"),
        history=runs, thresholds=config.thresholds,
    )


def main(argv: list[str] | None = None) -> int:
    # TensorFlow, TFX and TFMA are imported only inside the quiet console (by
    # `run` and below), so that even their import-time messages go to the log.
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        config = config_from_args(args)
    except ratings.RatingsFormatError as err:
        print(f"Cannot read the input: {err}", file=sys.stderr)
        return 1
    except (OptionError, ValueError) as err:
        print(f"Invalid option: {err}", file=sys.stderr)
        return 2
    run_id = new_run_id()
    log = log_path(config.output_dir, run_id)
    with QuietConsole(log, verbose=args.verbose, on_stderr=args.json) as console:
        if not args.verbose:
            print(f"Run {run_id}: one line per component; the full log is {log}", file=console.console)
        summary, error = run(config, run_id)
        if error is not None:
            console.failed(f"{type(error).__name__}: {error}")
        if summary is not None:
            report = _write_report(config, summary)
    if summary is not None:
        from results.summary import format_summary

        if args.json:
            print(json.dumps({**summary.to_json_dict(), "report": str(report)}, indent=2))
        else:
            print(format_summary(summary, config.rating_scale_max, all_components=args.verbose))
            print(f"Report: {report}")
    if error is not None:
        failed = [c for c in (summary.components if summary else ()) if c.state == "FAILED"]
        where = f" in {failed[0].component_id}" if failed else ""
        print(f"\nThe run failed{where}: {error}", file=sys.stderr)
        if not args.verbose:
            print(f"Full log: {log}", file=sys.stderr)
        return 1
    return 0


def exit_now(code: int) -> None:
    """Ends the process with `code` once the exit handlers have run and the output is flushed.

    Why not `sys.exit`: with TensorFlow, Beam and TFX loaded, the interpreter's
    own teardown (freeing every module and the native libraries' state) takes
    seconds and does nothing a finished run needs; the files, the metadata
    store and the logs are complete before it starts.
    """
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
