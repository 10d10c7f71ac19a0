"""The pipeline's hand-off (ServingCheck, then the Pusher's executor) in a process of its own.

    python -m tests.handoff_child MODEL_DIR SERVING_DIR WORK_DIR [--timeout S] [--file-size-limit BYTES]

Runs TFX's executors of the two components on real artifacts, exactly as the
pipeline wires them, so tests can kill it with real signals at each step and
look at the serving folder. Writes the checked digest to WORK_DIR/checked.json,
prints the PushedModel's properties as JSON and exits 0; on a failure prints
the error's message on the last stderr line and exits 1. `--file-size-limit`
sets RLIMIT_FSIZE (SIGXFSZ ignored) once the check passed, so the Pusher's
writes past it fail with EFBIG as on a full disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import sys
from pathlib import Path

from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import mlmd_names, pusher
from components.serving_check_component import ServingCheck


def _artifact(kind, uri: Path):
    artifact = kind()
    artifact.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    return artifact


def handoff(
    model_dir: Path, serving_dir: Path, work: Path, timeout_s: float, file_size_limit: int | None = None
) -> dict:
    model = _artifact(standard_artifacts.Model, work / "model")
    shutil.copytree(model_dir, Path(model.uri) / "Format-Serving")
    model_blessing = _artifact(standard_artifacts.ModelBlessing, work / "model_blessing")
    model_blessing.set_int_custom_property(mlmd_names.BLESSED, 1)
    infra_blessing = _artifact(standard_artifacts.InfraBlessing, work / "infra_blessing")

    ServingCheck.EXECUTOR_SPEC.executor_class().Do(
        {"model": [model], "model_blessing": [model_blessing]},
        {"blessing": [infra_blessing]},
        {"timeout_seconds": timeout_s},
    )
    (work / "checked.json").write_text(json.dumps({
        "checked": infra_blessing.get_string_custom_property(mlmd_names.CHECKED_DIGEST)
    }))

    pushed = _artifact(standard_artifacts.PushedModel, work / "pushed_model")
    if file_size_limit is not None:  # from here on, as if the disk were nearly full
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir))
    )
    pusher.Executor().Do(
        {"model": [model], "model_blessing": [model_blessing], "infra_blessing": [infra_blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return {
        key: pushed.get_custom_property(key)
        for key in (mlmd_names.PUSHED, mlmd_names.PUSHED_DESTINATION, mlmd_names.PUSHED_VERSION,
                    mlmd_names.REMOVED_STAGING)
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("serving_dir", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--file-size-limit", type=int, default=None)
    args = parser.parse_args()
    try:
        result = handoff(args.model_dir, args.serving_dir, args.work, args.timeout, args.file_size_limit)
    except Exception as error:  # the test reads the message
        print(f"hand-off failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
