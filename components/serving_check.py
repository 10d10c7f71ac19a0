"""Checks a SavedModel the way TensorFlow Serving loads it, in a fresh process, before it is published.

`check_saved_model(path)` runs inside that process:

1. loads the MetaGraph tagged `serve` through TensorFlow's session-based
   (graph-mode, TF1) SavedModel loader into a `Session`, as TF Serving does;
2. replays `assets.extra/tf_serving_warmup_requests` under TF Serving's rules:
   at most 1,000 records, each a `PredictLog` whose signature exists and is a
   predict signature, whose input names are exactly the signature's and whose
   dtypes are the ones it declares, run by tensor name in that session;
3. checks the answers: one row per request row for each head, finite values,
   each head in its kind's range, and the two serving signatures agreeing on
   the same rows; `recommend` and `recommend_from_history` answer at most
   `k` items per user, best score first, padding only at the end, never an
   item of the request's history;
4. loads the same folder with TF2's `tf.saved_model.load` (the README's way)
   and requires the same answers from its signatures, and the same
   predictions from `serving_default` for every (user, recommended item)
   pair, unknown users included.

A failure raises `ServingCheckError` naming the model, the signature and
what was wrong. `check_in_fresh_process(path, timeout_s)` runs
`python -I -m components.serving_check PATH` (isolated mode: nothing is
imported from the caller's working directory or `PYTHONPATH`), kills it
after `timeout_s` and refuses a result it cannot parse. This module imports
only TensorFlow and the project's names, so the process starts fast. Within
`standby()`, the process is started ahead, when the block opens: it imports
TensorFlow while the caller works and then waits, having loaded no model,
for the one path it checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2

from recommender import features, heads, warmup

# Largest difference allowed between two ways of computing the same output.
PARITY_TOLERANCE = 1e-6
# The same, between `recommend` and `serving_default`: the first scores a grid
# with matrix products, the second pair by pair, so float32 sums run in another
# order and differ by a few 1e-6; any skew in what either computes is orders of
# magnitude larger.
GRID_PARITY_TOLERANCE = 1e-4
# What TF Serving uses when a request names no signature.
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
SERVE_TAG = "serve"
# A check that has not answered by then is treated as a failure (a hung model).


class ServingCheckError(RuntimeError):
    """A model that TF Serving would not load, or that answers its own sample requests wrongly."""


def _warmup_logs(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The warm-up records, parsed and counted as TF Serving does."""
    file = os.path.join(path, warmup.WARMUP_FILE)
    if not tf.io.gfile.exists(file):
        raise ServingCheckError(f"{path}: no warm-up requests ({warmup.WARMUP_FILE} is missing)")
    try:
        logs = warmup.read_requests(path)
    except ValueError as error:
        raise ServingCheckError(f"{path}: {error}") from error
    for number, log in enumerate(logs, start=1):
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ServingCheckError(
                f"{path}: warm-up record {number} is a {kind or 'empty'} log; this model's "
                "signatures are predict signatures, so its warm-up must hold predict logs"
            )
    if not logs:
        raise ServingCheckError(f"{path}: no warm-up requests in {warmup.WARMUP_FILE}")
    return logs


def _request_inputs(path: str, number: int, name: str, signature, request) -> dict[str, np.ndarray]:
    """The request's inputs as arrays, refused unless names and dtypes are the signature's."""
    declared, given = set(signature.inputs), set(request.inputs)
    if declared != given:
        raise ServingCheckError(
            f"{path}: signature {name!r}: warm-up record {number} has inputs {sorted(given)}, "
            f"the signature declares {sorted(declared)}"
        )
    arrays = {}
    for key in sorted(given):
        proto, spec = request.inputs[key], signature.inputs[key]
        if proto.dtype != spec.dtype:
            raise ServingCheckError(
                f"{path}: signature {name!r}: input {key!r} of warm-up record {number} is "
                f"{types_pb2.DataType.Name(proto.dtype)}, the signature declares "
                f"{types_pb2.DataType.Name(spec.dtype)}"
            )
        value = tf.make_ndarray(proto)
        shape = tf.TensorShape(spec.tensor_shape)
        if not shape.is_compatible_with(value.shape):
            raise ServingCheckError(
                f"{path}: signature {name!r}: input {key!r} of warm-up record {number} has "
                f"shape {value.shape}, the signature declares {shape}"
            )
        arrays[key] = value
    return arrays


def _check_outputs(path: str, name: str, rows: int, outputs: dict[str, np.ndarray], columns: int = 1) -> None:
    for head in heads.HEADS:
        value = outputs.get(head.name)
        if value is None or value.shape != (rows, columns):
            raise ServingCheckError(
                f"{path}: signature {name!r} answered {rows} rows with {head.name} of shape "
                f"{None if value is None else value.shape}, expected ({rows}, {columns})"
            )
        if not np.all(np.isfinite(value)):
            raise ServingCheckError(f"{path}: signature {name!r} gave a non-finite {head.name}")
        if head.kind.output_range is not None:
            low, high = head.kind.output_range
            if np.any((value < low) | (value > high)):
                raise ServingCheckError(
                    f"{path}: signature {name!r} gave a {head.name} outside [{low:g}, {high:g}]"
                )


def _max_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _replay_in_session(path: str, logs) -> list[tuple[str, dict, dict]]:
    """Each record as TF Serving runs it: (signature, inputs, outputs) from a graph-mode session."""
    answers = []
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
        except (RuntimeError, ValueError, OSError, tf.errors.OpError) as error:
            raise ServingCheckError(
                f"{path}: TensorFlow's session-based loader cannot load tag {SERVE_TAG!r}: {error}"
            ) from error
        signatures = meta_graph.signature_def
        for number, log in enumerate(logs, start=1):
            request = log.predict_log.request
            name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if name not in signatures:
                raise ServingCheckError(
                    f"{path}: warm-up record {number} asks for signature {name!r}, which the "
                    f"model does not have (it has {sorted(signatures)})"
                )
            signature = signatures[name]
            if signature.method_name != PREDICT_METHOD:
                raise ServingCheckError(
                    f"{path}: signature {name!r} has method {signature.method_name!r}, "
                    f"expected {PREDICT_METHOD!r}"
                )
            inputs = _request_inputs(path, number, name, signature, request)
            fetches = {key: spec.name for key, spec in signature.outputs.items()}
            try:
                outputs = session.run(
                    fetches, feed_dict={signature.inputs[k].name: v for k, v in inputs.items()}
                )
            except tf.errors.OpError as error:
                raise ServingCheckError(
                    f"{path}: signature {name!r} failed on warm-up record {number}: "
                    f"{' '.join(error.message.split())[:1000]}"
                ) from error
            answers.append((name, inputs, outputs))
    return answers


RECOMMENDERS = (features.RECOMMEND, features.RECOMMEND_FROM_HISTORY)


def _check_recommendations(path: str, inputs: dict, outputs: dict, name: str = features.RECOMMEND) -> None:
    """A recommending signature's answer: the same [rows, <= k] shape everywhere, sorted, padded
    only at the end, none of the request's history items."""
    rows, k = len(inputs[features.USER_ID]), int(inputs["k"])
    items = outputs.get(features.ITEM_ID)
    if items is None or items.ndim != 2 or items.shape[0] != rows or items.shape[1] > max(k, 0):
        raise ServingCheckError(
            f"{path}: signature {name!r} answered {rows} users and k={k} with item_id of shape "
            f"{None if items is None else items.shape}, expected ({rows}, at most {k})"
        )
    _check_outputs(path, name, rows, {**outputs}, columns=items.shape[1])
    score = outputs.get(features.SCORE)
    if score is None or score.shape != items.shape or not np.all(np.isfinite(score)):
        raise ServingCheckError(f"{path}: signature {name!r} gave no finite score of item_id's shape")
    padding = items == b""
    if np.any(padding[:, :-1] & ~padding[:, 1:]):
        raise ServingCheckError(f"{path}: signature {name!r} gave an item after an empty one")
    ranked = np.where(padding, -np.inf, score)
    if np.any(ranked[:, 1:] > ranked[:, :-1]):
        raise ServingCheckError(f"{path}: signature {name!r} did not rank items by score")
    for row, history in enumerate(inputs.get(features.HISTORY, ())):
        again = (set(items[row]) & set(history)) - {b""}
        if again:
            raise ServingCheckError(f"{path}: signature {name!r} recommended history item(s) {sorted(again)}")


def _check_answers(path: str, answers) -> None:
    """Each answer's shapes and ranges; the two serving signatures agree on the same rows."""
    by_signature = {}
    for name, inputs, outputs in answers:
        if name in RECOMMENDERS:
            _check_recommendations(path, inputs, outputs, name)
            continue
        rows = len(next(iter(inputs.values())))
        _check_outputs(path, name, rows, outputs)
        by_signature.setdefault(name, outputs)
    if {features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE} <= set(by_signature):
        for head in heads.NAMES:
            a, b = (by_signature[n][head] for n in (features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE))
            if a.shape == b.shape and _max_gap(a, b) > PARITY_TOLERANCE:
                raise ServingCheckError(
                    f"{path}: signatures {features.SERVING_DEFAULT!r} and "
                    f"{features.SERVING_TF_EXAMPLE!r} differ by {_max_gap(a, b):g} on {head}"
                )


def _check_tf2_load(path: str, answers) -> None:
    """`tf.saved_model.load` of the same folder answers every record as the session did."""
    try:
        loaded = tf.saved_model.load(path)
    except (RuntimeError, ValueError, OSError, tf.errors.OpError) as error:
        raise ServingCheckError(f"{path}: tf.saved_model.load fails: {error}") from error
    for name, inputs, outputs in answers:
        if name not in loaded.signatures:
            raise ServingCheckError(f"{path}: tf.saved_model.load gives no signature {name!r}")
        again = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        for head in heads.NAMES:
            gap = _max_gap(np.asarray(outputs[head]), again[head].numpy())
            if gap > PARITY_TOLERANCE:
                raise ServingCheckError(
                    f"{path}: signature {name!r}: tf.saved_model.load and the session loader "
                    f"differ by {gap:g} on {head}"
                )
        if name in RECOMMENDERS:
            _check_recommended_pairs(path, loaded, inputs, outputs, name)


def _check_recommended_pairs(path: str, loaded, inputs: dict, outputs: dict, name: str = features.RECOMMEND) -> None:
    """`serving_default` predicts what a recommending signature said for each (user, recommended
    item) pair, the warm-up's unknown user included: one answer per pair, whichever signature is asked."""
    items = outputs[features.ITEM_ID]
    users = np.repeat(inputs[features.USER_ID], items.shape[1]).reshape(items.shape)
    pairs = items != b""
    if not pairs.any():
        return
    answer = loaded.signatures[features.SERVING_DEFAULT](
        user_id=tf.constant(users[pairs]), item_id=tf.constant(items[pairs])
    )
    for head in heads.NAMES:
        gap = _max_gap(np.asarray(outputs[head])[pairs], answer[head].numpy().ravel())
        if gap > GRID_PARITY_TOLERANCE:
            raise ServingCheckError(
                f"{path}: signature {name!r} and {features.SERVING_DEFAULT!r} differ by "
                f"{gap:g} on {head} for the same (user, item) pairs"
            )


def check_saved_model(path: str) -> dict:
    """Runs the four steps of the module docstring; returns what was checked, raises on a failure."""
    started = time.perf_counter()
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise ServingCheckError(f"{path}: no saved_model.pb")
    logs = _warmup_logs(path)
    answers = _replay_in_session(path, logs)
    _check_answers(path, answers)
    _check_tf2_load(path, answers)
    return {
        "path": path,
        "requests": len(logs),
        "signatures": sorted({name for name, _, _ in answers}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _start_checker(path: str | None) -> tuple[subprocess.Popen, tempfile.TemporaryDirectory]:
    """A new, isolated checker process of `path` (None: of the path it reads from stdin), and its folder."""
    command = [
        sys.executable, "-I", "-m", "components.serving_check", path or "-", "--parent-pid", str(os.getpid()),
    ]
    # Keras 2, as the stack that wrote the model (tensorflow_transform sets the
    # same); TensorFlow then skips importing Keras 3 at start-up, which loading
    # a SavedModel never needs.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}
    workdir = tempfile.TemporaryDirectory(prefix="serving-check-")
    process = subprocess.Popen(
        command, cwd=workdir.name, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return process, workdir


_standby_lock = threading.Lock()
# The checker `standby()` started and no check has used yet, with its folder.
_standby: list[tuple[subprocess.Popen, tempfile.TemporaryDirectory]] = []


@contextlib.contextmanager
def standby():
    """Within the block, the first `check_in_fresh_process` uses a checker process started when it opened.

    Why: the checker's own TensorFlow import takes seconds; started ahead, it
    overlaps the caller's work instead of adding to the check. The process has
    checked nothing before it is given its path, so the check is as fresh as
    one started on demand. A checker left unused is stopped when the block ends.
    """
    started = _start_checker(None)
    with _standby_lock:
        _standby.append(started)
    try:
        yield
    finally:
        with _standby_lock:
            left = [entry for entry in _standby if entry is started]
            _standby[:] = [entry for entry in _standby if entry is not started]
        for process, workdir in left:
            _stop(process)
            workdir.cleanup()


def _stop(process: subprocess.Popen) -> None:
    """Ends an unused checker: stdin closed makes it exit at once; killed if it does not."""
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        stream.close()


def _take_checker(path: str) -> tuple[subprocess.Popen, tempfile.TemporaryDirectory, str | None]:
    """A checker for `path`, its folder, and what to write to its stdin: the standby one if one is
    waiting and alive (given the path on stdin), else a new one (given the path as its argument)."""
    with _standby_lock:
        waiting = _standby.pop() if _standby else None
    if waiting is not None:
        if waiting[0].poll() is None:
            return *waiting, path + "\n"
        _stop(waiting[0])
        waiting[1].cleanup()
    return *_start_checker(path), None


def check_in_fresh_process(path: str, timeout_s: float) -> dict:
    """`check_saved_model` in a new, isolated Python process; raises ServingCheckError on any failure.

    The process is killed after `timeout_s` from when it is given the path; it
    also ends by itself if this process dies. Its last stdout line must be
    JSON: the result, or `{"error": ...}`.
    """
    process, workdir, given = _take_checker(path)
    with workdir:
        try:
            stdout, stderr = process.communicate(given, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            process.kill()
            process.communicate()
            raise ServingCheckError(
                f"{path}: the serving check did not finish within {timeout_s:g} s and was stopped"
            ) from error
    return _parse_result(path, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))


def _parse_result(path: str, result: subprocess.CompletedProcess) -> dict:
    """The check's JSON answer; a reported failure raises it, anything unreadable is a failure too."""
    lines = result.stdout.strip().splitlines()
    try:
        if not lines:
            raise ValueError(f"exit status {result.returncode}, no output")
        answer = json.loads(lines[-1])
        if isinstance(answer, dict) and "error" in answer and result.returncode != 0:
            raise ServingCheckError(answer["error"])
        if result.returncode != 0 or answer["path"] != path or not isinstance(answer["requests"], int):
            raise ValueError(f"exit status {result.returncode}, last line {lines[-1][:200]!r}")
    except (ValueError, KeyError, TypeError) as error:
        stderr = result.stderr.strip().splitlines()
        raise ServingCheckError(
            f"{path}: the serving check's result cannot be read ({error}); its last stderr line: "
            f"{stderr[-1][:500] if stderr else ''}"
        ) from error
    return answer


def _exit_when_orphaned(parent_pid: int) -> None:
    """Ends this process once `parent_pid` is gone (a killed run leaves no check behind)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    """`SAVED_MODEL_DIR`, or `-`: the path is the first line of stdin (an empty stdin: exit 0, nothing checked)."""
    args = list(argv)
    if "--parent-pid" in args:
        at = args.index("--parent-pid")
        _exit_when_orphaned(int(args[at + 1]))
        del args[at:at + 2]
    if len(args) != 1:
        print("usage: python -m components.serving_check SAVED_MODEL_DIR|- [--parent-pid PID]", file=sys.stderr)
        return 2
    path = args[0]
    if path == "-":
        path = sys.stdin.readline().rstrip("\n")
        if not path:
            return 0
    try:
        print(json.dumps(check_saved_model(path)))
    except (ServingCheckError, OSError, ValueError, tf.errors.OpError) as error:
        print(json.dumps({"error": str(error)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
