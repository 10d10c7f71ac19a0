"""The Trainer on several tasks, chosen from TF_CONFIG: two worker processes under
MultiWorkerMirroredStrategy, and a chief with two workers and two parameter servers under
ParameterServerStrategy, its embedding tables split in two."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from components.custom_config import MODEL, NUM_OOV_BUCKETS
from components.trainer import cluster_role, distribution, run_fn
from data.synthetic import SyntheticSpec, generate_rows
from recommender import features
from recommender.config import ModelConfig
from tests.support import REPO_ROOT, analysed, write_examples

pytestmark = pytest.mark.slow

# The two-worker model against the one-process model, on rows neither trained on: the same
# global batch and epochs, but each worker draws its half of a batch from its own files, so the
# examples of a step differ and the models agree to training noise only.
AUC_TOLERANCE = 0.02
RMSE_TOLERANCE = 0.02  # relative


def _ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(args: dict, tmp, tf_config: dict, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CONFIG": json.dumps(tf_config)}
    return subprocess.Popen([sys.executable, "-m", "tests.trainer_child", json.dumps(args)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _cluster(count: int) -> dict:
    return {"worker": [f"localhost:{port}" for port in _ports(count)]}


def _finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[dict]:
    """Each process's printed JSON; every process is killed if any fails or the time runs out."""
    try:
        outputs = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        return outputs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _scores(model_dir, rows, indices) -> tuple[float, float]:
    """(like-AUC, purchase RMSE) of the exported model's serving_default on rows[indices]."""
    serve = tf.saved_model.load(str(model_dir)).signatures[features.SERVING_DEFAULT]
    out = serve(user_id=tf.constant(rows[features.USER_ID][indices]), item_id=tf.constant(rows[features.ITEM_ID][indices]))
    auc = tf.keras.metrics.AUC()
    auc.update_state(rows[features.BINARY_RATING][indices], out[features.BINARY_RATING][:, 0])
    error = out[features.PURCHASE_PROBABILITY].numpy()[:, 0] - rows[features.PURCHASE_PROBABILITY][indices]
    return float(auc.result()), float(np.sqrt(np.mean(error**2)))


def test_tf_config_names_the_cluster_and_the_chief():
    assert distribution(None)[1] and distribution(json.dumps({"cluster": {"worker": ["a:1"]}}))[1]
    workers = {"worker": ["a:1", "b:2"]}
    with_chief = {"chief": ["c:3"], **workers}

    def role(cluster, kind, index):
        return cluster_role(json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))

    assert [role(workers, "worker", i) for i in range(2)] == [(2, True, 0), (2, False, 0)]
    assert [role(with_chief, "chief", 0), role(with_chief, "worker", 0)] == [(3, True, 0), (3, False, 0)]
    servers = {**with_chief, "ps": ["d:4", "e:5"]}
    assert [role(servers, kind, 0) for kind in ("chief", "worker", "ps")] == [(5, True, 2), (5, False, 2), (5, False, 2)]
    with pytest.raises(ValueError, match="parameter servers but no chief"):
        role({**workers, "ps": ["d:4"]}, "ps", 0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(generated rows, their test indices, args(name, config): run_fn's arguments for a model
    folder `name`): train and validation rows written as ExampleGen writes them (4 and 2 files)."""
    root = tmp_path_factory.mktemp("distributed")
    rows = generate_rows(SyntheticSpec(num_users=150, num_items=80, num_interactions=6_000, seed=3))
    train, validation, test = np.arange(4_500), np.arange(4_500, 5_200), np.arange(5_200, 6_000)
    analysed(root, rows, train, NUM_OOV)
    write_examples(root / "Split-train", rows, train, files=4)
    write_examples(root / "Split-validation", rows, validation, files=2)

    def args(name: str, config: ModelConfig) -> dict:
        return {
            "train_files": [str(root / "Split-train" / "*")],
            "eval_files": [str(root / "Split-validation" / "*")],
            "transform_graph_path": str(root / "transform"),
            "serving_model_dir": str(root / name / "model"),
            "custom_config": {MODEL: config.to_json_dict(), NUM_OOV_BUCKETS: NUM_OOV},
        }

    return rows, test, args


# Streamed from the files, each worker reading its own; a fixed number of epochs (validated
# each epoch), so both runs take the same steps.
STREAMED = ModelConfig(epochs=3, early_stopping_patience=None, refit=False, input={"max_in_memory_mib": 0})
NUM_OOV = 2


def test_two_workers_train_one_model_that_only_the_chief_exports_and_that_matches_one_process(prepared, tmp_path):
    rows, test, args = prepared
    cluster = _cluster(2)
    scratch = [tmp_path / f"tmp-{i}" for i in range(2)]
    for folder in scratch:
        folder.mkdir()
    chief, worker = _finish([
        _start(args(f"worker-{i}", STREAMED), scratch[i], {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ])
    chief_model = Path(args("worker-0", STREAMED)["serving_model_dir"])
    assert (chief_model / "saved_model.pb").is_file()
    assert not Path(args("worker-1", STREAMED)["serving_model_dir"]).parent.exists()  # only the chief exports
    assert [list(folder.iterdir()) for folder in scratch] == [[], []]  # the other's copy is gone
    started = time.perf_counter()
    run_fn(FnArgs(hyperparameters=None, **args("alone", STREAMED)))  # this process: no TF_CONFIG
    alone = {"seconds": round(time.perf_counter() - started, 2)}

    two = _scores(chief_model, rows, test)
    one = _scores(Path(args("alone", STREAMED)["serving_model_dir"]), rows, test)
    print(json.dumps({"two_workers": {"auc": two[0], "rmse": two[1], "seconds": chief["seconds"]},
                      "one_process": {"auc": one[0], "rmse": one[1], "seconds": alone["seconds"]}}))
    assert one[0] > 0.6  # a model that learnt something, for the agreement to mean something
    assert abs(two[0] - one[0]) <= AUC_TOLERANCE
    assert abs(two[1] - one[1]) <= RMSE_TOLERANCE * one[1]


def test_a_worker_killed_mid_training_fails_the_chief_promptly_and_no_model_is_written(prepared, tmp_path):
    """SIGKILL of one worker once training runs: the chief's collective step fails as unavailable,
    naming the killed task (its connection reset, or its heartbeats stopped), instead of hanging;
    and it exports nothing."""
    _, _, args = prepared
    config = ModelConfig(epochs=500, early_stopping_patience=None, refit=False, input={"max_in_memory_mib": 0})
    cluster = _cluster(2)
    log = tmp_path / "chief.log"
    with open(log, "w") as chief_log:
        processes = [
            _start(args(f"killed-{i}", config), tmp_path, {"cluster": cluster, "task": {"type": "worker", "index": i}},
                   stderr=chief_log if i == 0 else subprocess.DEVNULL)
            for i in range(2)
        ]
        try:
            deadline = time.monotonic() + 300
            while "epoch 1/" not in log.read_text():  # the chief's first epoch is done: the two train
                assert processes[0].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            processes[1].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            processes[0].wait(timeout=120)
            detected = time.monotonic() - killed
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    print(json.dumps({"chief_failed_after_seconds": round(detected, 1)}))
    assert processes[0].returncode != 0
    failure = log.read_text().split("Traceback", 1)[-1]
    assert "UnavailableError" in failure and "/job:worker/replica:0/task:1" in failure
    assert not Path(args("killed-0", config)["serving_model_dir"]).exists()


def test_parameter_servers_hold_each_embedding_table_in_two_shards_and_the_export_is_the_same_model(
        prepared, tmp_path):
    """The chief of 2 workers and 2 parameter servers (in one process: tf_keras's helper) trains
    with each embedding table split over both servers; the exported model has whole tables,
    loads with tf.saved_model.load, and its signatures give the split model's predictions."""
    _, _, args = prepared
    # The default loop: early stopping on the validation split, then the refit on both splits.
    config = ModelConfig(epochs=3, early_stopping_patience=1)
    chief_args = args("parameter-servers", config)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "tests.ps_child", json.dumps(chief_args)], cwd=REPO_ROOT,
                           env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({"parameter_server_chief_seconds": round(time.perf_counter() - started, 1)}))
    for table, devices in out["shards"].items():
        assert [device.split("/device")[0] for device in devices] == [
            "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"], table
    loaded = tf.saved_model.load(chief_args["serving_model_dir"])
    # Each table is one variable again, of every row: the vocabulary and the OOV buckets.
    tables = {v.name.split("/")[-2]: v.shape for v in loaded.variables if v.name.endswith("embedding/embeddings:0")}
    assert tables == {"user_embedding": (150 + NUM_OOV, 32), "item_embedding": (80 + NUM_OOV, 32)}
    served = loaded.signatures[features.SERVING_DEFAULT](user_id=tf.constant(out["users"]),
                                                       item_id=tf.constant(out["items"]))
    for name, expected in out["predictions"].items():
        np.testing.assert_allclose(served[name].numpy().reshape(-1), expected, rtol=1e-5, atol=1e-6)
    top = loaded.signatures[features.RECOMMEND](user_id=tf.constant(out["users"][:2]), k=tf.constant(5))
    assert top[features.ITEM_ID].shape == (2, 5)
