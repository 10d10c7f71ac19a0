"""The Trainer's `run_fn` in a process of its own, as a TFX Trainer task runs it.

    TF_CONFIG=... python -m tests.trainer_child ARGS_JSON

ARGS_JSON holds FnArgs' fields: `train_files`, `eval_files` (file patterns),
`transform_graph_path`, `serving_model_dir` and `custom_config`. TF_CONFIG,
when set, describes the cluster this process is one task of, exactly as a
distributed Trainer's launcher sets it. Logs the epochs to stderr, prints
the seconds `run_fn` took as JSON and exits 0.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from tfx.components.trainer.fn_args_utils import FnArgs

from components.trainer import run_fn
from recommender import features


def main() -> int:
    progress = logging.getLogger(features.PROGRESS_LOGGER)
    progress.addHandler(logging.StreamHandler(sys.stderr))
    progress.setLevel(logging.INFO)
    args = json.loads(sys.argv[1])
    started = time.perf_counter()
    run_fn(FnArgs(hyperparameters=None, **args))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
