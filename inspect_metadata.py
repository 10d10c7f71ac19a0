"""Inspect the pipeline's ML Metadata store: runs, models, lineage.

    python inspect_metadata.py runs                 [--output DIR | --sqlite FILE | --mysql ...] [--json]
    python inspect_metadata.py models               [...]
    python inspect_metadata.py lineage TARGET       [...]

TARGET is a pushed model's path (as in `outputs/serving/<version>`) or an
artifact id. By default the store is `outputs/metadata.sqlite` (the one
`run_local.py` writes); `--mysql-host` etc. read a MySQL/MariaDB store instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

from ml_metadata.metadata_store import metadata_store

from components import mlmd_names
from pipeline.config import MySQLMetadata
from pipeline.runner_options import OptionError
from results import queries
from results.metadata import sqlite_readonly


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1e3, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_runs(runs: list[queries.Run]) -> str:
    lines = []
    for run in runs:
        lines.append(f"{run.run_id}  started {_time(run.started_ms)}  {run.seconds:.1f} s")
        for c in run.components:
            lines.append(f"    {c['node']:<34} {c['state']:<9} {c['seconds']:7.1f} s")
            if c.get("failure_reason"):
                lines.append(f"        {c['failure_reason'].splitlines()[0][:300]}")
    return "\n".join(lines) or "no runs recorded"


def format_models(models: list[queries.ModelRecord]) -> str:
    lines = []
    for m in models:
        verdict = {None: "not evaluated", True: "BLESSED", False: "not blessed"}[m.blessed]
        lines.append(f"model {m.artifact_id}  {verdict}  run {m.run_id}  {_time(m.created_ms)}")
        lines.append(f"    uri: {m.uri}")
        for head, values in sorted(m.metrics.items()):
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()))
            lines.append(f"    {head}: {shown}")
        lines.append(f"    pushed: {m.pushed_to or 'no'}")
    return "\n".join(lines) or "no models recorded"


# Properties worth a line in the human-readable lineage.
_SHOWN = ("input_base", "input_config", "span", "split_names", mlmd_names.PUSHED_DESTINATION, mlmd_names.BLESSED)


def format_lineage(steps: list[queries.LineageStep]) -> str:
    lines = []
    for step in steps:
        producer = f" <- {step.produced_by} (execution {step.execution_id})" if step.produced_by else ""
        lines.append(f"{'  ' * step.depth}{step.artifact_type} {step.artifact_id}{producer}")
        lines.append(f"{'  ' * step.depth}  uri: {step.uri}")
        for key in _SHOWN:
            if key in step.properties:
                value = " ".join(str(step.properties[key]).split())  # JSON protos on one line
                lines.append(f"{'  ' * step.depth}  {key}: {value}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("runs", "models", "lineage"))
    parser.add_argument("target", nargs="?", help="lineage: pushed model path or artifact id")
    parser.add_argument("--output", type=Path, default=Path("outputs"), help="run_local.py's output root")
    parser.add_argument("--sqlite", type=Path, default=None, help="a SQLite store (default: OUTPUT/metadata.sqlite)")
    parser.add_argument("--mysql-host", default=None)
    parser.add_argument("--mysql-port", type=int, default=3306)
    parser.add_argument("--mysql-database", default=None)
    parser.add_argument("--mysql-user", default="root")
    parser.add_argument("--mysql-password-env", default=None, metavar="NAME",
                        help="the environment variable holding the MySQL password")
    parser.add_argument("--mysql-password-file", type=Path, default=None, metavar="PATH",
                        help="a file holding the MySQL password")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.command == "lineage" and not args.target:
        parser.error("lineage needs a TARGET (pushed model path or artifact id)")
    if args.mysql_host and not args.mysql_database:
        parser.error("--mysql-host needs --mysql-database")
    return args


def store_from_args(args: argparse.Namespace) -> metadata_store.MetadataStore:
    if args.mysql_host:
        mysql = MySQLMetadata(
            host=args.mysql_host, port=args.mysql_port, database=args.mysql_database,
            user=args.mysql_user, password_env=args.mysql_password_env, password_file=args.mysql_password_file,
        )
        try:
            return metadata_store.MetadataStore(mysql.connection_config())
        except ValueError as error:
            raise OptionError(str(error)) from error
    path = args.sqlite or args.output / "metadata.sqlite"
    if not path.is_file():
        raise OptionError(f"no ML Metadata store at {path} (run the pipeline, or pass --sqlite/--output)")
    return metadata_store.MetadataStore(sqlite_readonly(str(path)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        store = store_from_args(args)
    except OptionError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "runs":
        result, text = queries.runs(store), format_runs
    elif args.command == "models":
        result, text = queries.models(store), format_models
    else:
        try:
            result, text = queries.lineage(store, args.target), format_lineage
        except LookupError as error:
            print(f"lineage: {error}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in result], indent=2, default=str))
    else:
        print(text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
