"""Checks a pushed SavedModel in a fresh process before the run reports it pushed.

`check_saved_model(path)` loads the model with nothing but TensorFlow, replays
its own TF Serving warm-up requests through both serving signatures and checks
the answers: one row per request row, finite, a probability for
`binary_rating`, and the two signatures agreeing (within 1e-6) on the same rows.

`python -m components.serving_check PATH` runs it and prints JSON; the
`ServingCheck` component (`components.serving_check_component`) runs that
command after the Pusher, so the check sees exactly what a server would load,
not the objects still alive in the trainer. This module imports only
TensorFlow, so the fresh process starts fast.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from components import features, warmup

# Largest difference allowed between the two serving signatures' outputs.
PARITY_TOLERANCE = 1e-6


class ServingCheckError(RuntimeError):
    """A pushed model that does not answer its own sample requests correctly."""


def _outputs(signature, log) -> dict[str, np.ndarray]:
    inputs = {name: tf.make_ndarray(proto) for name, proto in log.predict_log.request.inputs.items()}
    return {head: value.numpy() for head, value in signature(**inputs).items()}


def check_saved_model(path: str) -> dict:
    """Replays the warm-up requests at `path`; returns what was checked, raises on a wrong answer."""
    started = time.perf_counter()
    loaded = tf.saved_model.load(path)
    missing = {features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE} - set(loaded.signatures)
    if missing:
        raise ServingCheckError(f"{path}: no signature {sorted(missing)}")
    if not tf.io.gfile.exists(os.path.join(path, warmup.WARMUP_FILE)):
        raise ServingCheckError(f"{path}: no warm-up requests ({warmup.WARMUP_FILE} is missing)")
    requests = warmup.read_requests(path)
    if not requests:
        raise ServingCheckError(f"{path}: no warm-up requests in {warmup.WARMUP_FILE}")
    answers = {}
    for log in requests:
        name = log.predict_log.request.model_spec.signature_name
        rows = len(next(iter(log.predict_log.request.inputs.values())).string_val)
        outputs = _outputs(loaded.signatures[name], log)
        for head in features.HEADS:
            value = outputs.get(head)
            if value is None or value.shape != (rows, 1):
                raise ServingCheckError(
                    f"{path}: {name} answered {rows} rows with {head} of shape "
                    f"{None if value is None else value.shape}, expected ({rows}, 1)"
                )
            if not np.all(np.isfinite(value)):
                raise ServingCheckError(f"{path}: {name} gave a non-finite {head}")
        liked = outputs[features.BINARY_RATING]
        if np.any((liked < 0) | (liked > 1)):
            raise ServingCheckError(f"{path}: {name} gave a {features.BINARY_RATING} outside [0, 1]")
        answers[name] = outputs
    if len(answers) == 2:
        for head in features.HEADS:
            a, b = (answers[n][head] for n in (features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE))
            gap = float(np.max(np.abs(a - b))) if a.size else 0.0
            if gap > PARITY_TOLERANCE:
                raise ServingCheckError(f"{path}: the serving signatures differ by {gap:g} on {head}")
    return {
        "path": path,
        "requests": len(requests),
        "signatures": sorted(answers),
        "seconds": round(time.perf_counter() - started, 3),
    }


def check_in_fresh_process(path: str) -> dict:
    """`check_saved_model` in a new Python process; raises ServingCheckError with its message."""
    result = subprocess.run(
        [sys.executable, "-m", "components.serving_check", path],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ServingCheckError(lines[-1] if lines else f"exit status {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m components.serving_check SAVED_MODEL_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        print(json.dumps(check_saved_model(argv[0])))
    except (ServingCheckError, OSError, ValueError, tf.errors.OpError) as error:
        print(f"serving check failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
