"""The exported model's contract: both serving signatures and the trained Keras
model agree; unknown IDs, empty and large batches work; warm-up requests are
written and replayed; `saved_model_cli` reads and runs the signatures; the
serving check refuses what TF Serving would refuse, wrong answers and a hung
model, whatever the caller's working directory holds."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import serving_check
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.config import SERVING_CHECK_TIMEOUT_S as TIMEOUT_S
from recommender import export, features, heads, warmup
from recommender.config import ModelConfig, preset
from tests.support import REPO_ROOT, serving_check_pid, transform_and_train

pytestmark = pytest.mark.slow
OOV = 5
TOLERANCE = 1e-6
CONFIGS = {
    "default": ModelConfig(epochs=2),
    # The first design: Dense layers, scored pair by pair.
    "original": preset("original", epochs=2),
}


_EXPORTED = {}


def _export(name, tmp_path_factory):
    """(rows, transform output, trained Keras model, exported path), built once per config."""
    if name not in _EXPORTED:
        root = tmp_path_factory.mktemp(f"serving-{name}")
        rows = generate_rows(SyntheticSpec(num_users=120, num_items=90, num_interactions=4_000, seed=3))
        config = CONFIGS[name]
        tft_output, model, _ = transform_and_train(root, rows, np.arange(3_000), config, OOV)
        path = str(root / "model")
        export.export_model(model, tft_output, path)
        _EXPORTED[name] = rows, tft_output, model, path
    return _EXPORTED[name]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The default configuration; the fresh-process tests use it alone."""
    return _export("default", tmp_path_factory)


def _keras(model, tft_output, users, items):
    """The trained Keras model on the transform graph's output: what training saw."""
    transformed = tft_output.transform_features_layer()({
        features.USER_ID: tf.reshape(tf.constant(users, tf.string), [-1, 1]),
        features.ITEM_ID: tf.reshape(tf.constant(items, tf.string), [-1, 1]),
    })
    inputs = {features.transformed_name(k): transformed[features.transformed_name(k)] for k in features.ID_FEATURES}
    return {head: value.numpy() for head, value in model(inputs, training=False).items()}


def _serialized(users, items):
    return warmup.id_examples({features.USER_ID: list(users), features.ITEM_ID: list(items)})


def _all_three(path, model, tft_output, users, items):
    signatures = tf.saved_model.load(path).signatures
    by_ids = signatures[features.SERVING_DEFAULT](
        user_id=tf.constant(users, tf.string), item_id=tf.constant(items, tf.string)
    )
    by_examples = signatures[features.SERVING_TF_EXAMPLE](
        examples=tf.constant(_serialized(users, items), tf.string)
    )
    return (
        {h: v.numpy() for h, v in by_ids.items()},
        {h: v.numpy() for h, v in by_examples.items()},
        _keras(model, tft_output, users, items),
    )


def _assert_parity(outputs, rows, tolerance):
    by_ids, by_examples, keras = outputs
    for head in heads.NAMES:
        assert by_ids[head].shape == (rows, 1)
        np.testing.assert_allclose(by_ids[head], by_examples[head], rtol=0, atol=tolerance)
        np.testing.assert_allclose(by_ids[head], keras[head], rtol=0, atol=tolerance)


def test_signatures_and_keras_model_agree_on_training_rows(exported):
    rows, tft_output, model, path = exported
    users = [u.encode() for u in rows[features.USER_ID][3_000:3_500]]
    items = [i.encode() for i in rows[features.ITEM_ID][3_000:3_500]]
    outputs = _all_three(path, model, tft_output, users, items)
    _assert_parity(outputs, 500, TOLERANCE)
    # Not a constant: different rows get different answers.
    assert np.std(outputs[0][features.PURCHASE_PROBABILITY]) > 1e-4


def test_unknown_ids_are_answered_like_the_keras_model_does(exported):
    rows, tft_output, model, path = exported
    known_user, known_item = rows[features.USER_ID][0].encode(), rows[features.ITEM_ID][0].encode()
    users = [b"never-seen-user", known_user, b"never-seen-user", "ünïcode-👤".encode()]
    items = [known_item, b"never-seen-item", b"never-seen-item", b""]
    outputs = _all_three(path, model, tft_output, users, items)
    _assert_parity(outputs, 4, TOLERANCE)
    assert np.all(np.isfinite(outputs[0][features.BINARY_RATING]))


def test_an_empty_batch_gives_empty_outputs(exported):
    _, tft_output, model, path = exported
    by_ids, by_examples, _ = _all_three(path, model, tft_output, [], [])
    for head in heads.NAMES:
        assert by_ids[head].shape == (0, 1) and by_examples[head].shape == (0, 1)


def test_a_batch_of_100k_rows(exported):
    rows, tft_output, model, path = exported
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(rows[features.USER_ID]), 100_000)
    users = [rows[features.USER_ID][i].encode() for i in picks]
    items = [rows[features.ITEM_ID][i].encode() for i in rng.permutation(picks)]
    _assert_parity(_all_three(path, model, tft_output, users, items), 100_000, TOLERANCE)


def test_warmup_requests_cover_both_signatures_and_an_unknown_pair(default):
    _, _, _, path = default
    requests = warmup.read_requests(path)
    names = [r.predict_log.request.model_spec.signature_name for r in requests]
    assert names == [features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE]
    users = tf.make_ndarray(requests[0].predict_log.request.inputs[features.USER_ID])
    assert len(users) >= 2 and users[-1] == warmup.UNKNOWN_ID
    result = serving_check.check_in_fresh_process(path, TIMEOUT_S)
    assert result["requests"] == 2 and result["signatures"] == sorted(names)


def test_saved_model_cli_shows_and_runs_both_signatures(default):
    rows, _, _, path = default
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", path, "--all"], capture_output=True, text=True, check=True)
    for name in (features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE, features.TRANSFORM_FEATURES):
        assert f"signature_def['{name}']" in shown.stdout
    user, item = rows[features.USER_ID][0], rows[features.ITEM_ID][0]
    by_ids = subprocess.run(
        [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def", features.SERVING_DEFAULT,
         "--input_exprs", f"user_id=['{user}'];item_id=['{item}']"],
        capture_output=True, text=True, check=True,
    )
    by_examples = subprocess.run(
        [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def", features.SERVING_TF_EXAMPLE,
         "--input_examples", f"examples=[{{'user_id':['{user}'],'item_id':['{item}']}}]"],
        capture_output=True, text=True, check=True,
    )
    def results(stdout):
        found = re.findall(r"Result for output key (\w+):\n\[\[([^\]]+)\]\]", stdout)
        return {key: float(value) for key, value in found}

    assert set(results(by_ids.stdout)) == set(heads.NAMES)
    assert results(by_ids.stdout) == pytest.approx(results(by_examples.stdout), abs=TOLERANCE)


def _copy_with_warmup(source, target, mutate):
    """A copy of the model at `source` whose warm-up records are `mutate(records)`."""
    shutil.copytree(source, target)
    records = mutate(warmup.read_requests(str(target)))
    with tf.io.TFRecordWriter(str(target / warmup.WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return target


def _rename_input(records):
    request = records[0].predict_log.request
    request.inputs["userid"].CopyFrom(request.inputs[features.USER_ID])
    del request.inputs[features.USER_ID]
    return records


def _float_ids(records):
    request = records[0].predict_log.request
    rows = len(request.inputs[features.USER_ID].string_val)
    request.inputs[features.USER_ID].CopyFrom(tf.make_tensor_proto(np.zeros(rows, np.float32)))
    return records


def _unknown_signature(records):
    records[1].predict_log.request.model_spec.signature_name = "serving_nonexistent"
    return records


def _classify_log(records):
    records[0].ClearField("predict_log")
    records[0].classify_log.SetInParent()
    return records


def _too_many(records):
    return records * (warmup.TF_SERVING_MAX_RECORDS // len(records) + 1)


@pytest.mark.parametrize(("mutate", "expected"), [
    (_rename_input, "signature 'serving_default': warm-up record 1 has inputs ['item_id', 'userid'], "
                    "the signature declares ['item_id', 'user_id']"),
    (_float_ids, "signature 'serving_default': input 'user_id' of warm-up record 1 is DT_FLOAT, "
                 "the signature declares DT_STRING"),
    (_unknown_signature, "warm-up record 2 asks for signature 'serving_nonexistent', which the model does not have"),
    (_classify_log, "warm-up record 1 is a classify_log log"),
    (_too_many, "more than 1000 records, which TF Serving refuses to load"),
    (lambda records: [], "no warm-up requests"),
], ids=["input-name", "input-dtype", "signature", "log-kind", "too-many", "empty"])
def test_the_check_refuses_warmup_requests_tf_serving_would_refuse(default, tmp_path, mutate, expected):
    _, _, _, path = default
    broken = _copy_with_warmup(path, tmp_path / "broken", mutate)
    with pytest.raises(serving_check.ServingCheckError) as raised:
        serving_check.check_saved_model(str(broken))
    assert str(broken) in str(raised.value) and expected in str(raised.value)


def test_a_model_with_non_finite_outputs_fails_the_check_in_a_fresh_process(default, tmp_path):
    _, tft_output, model, _ = default
    trainable = model.trainable_weights
    saved = [w.numpy() for w in trainable]
    try:
        for weight in trainable:
            weight.assign(tf.fill(weight.shape, np.nan))
        export.export_model(model, tft_output, str(tmp_path / "nan"))
    finally:
        for weight, value in zip(trainable, saved):
            weight.assign(value)
    with pytest.raises(serving_check.ServingCheckError, match="signature 'serving_default' gave a non-finite"):
        serving_check.check_in_fresh_process(str(tmp_path / "nan"), TIMEOUT_S)


class _Hangs(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(self, user_id, item_id):
        (forever,) = tf.while_loop(lambda i: i >= 0, lambda i: i + 1, [tf.constant(0, tf.int64)])
        rows = tf.shape(user_id)[0]
        value = tf.fill([rows, 1], tf.cast(forever, tf.float32))
        return {head: value for head in heads.NAMES}


def test_a_hung_model_is_stopped_at_the_timeout(tmp_path):
    module = _Hangs()
    path = str(tmp_path / "hangs")
    tf.saved_model.save(module, path, signatures={features.SERVING_DEFAULT: module.serve.get_concrete_function()})
    warmup.write_requests(path, {features.USER_ID: [b"1"], features.ITEM_ID: [b"2"]})
    started = time.monotonic()
    with pytest.raises(serving_check.ServingCheckError, match="did not finish within 10 s and was stopped"):
        serving_check.check_in_fresh_process(path, timeout_s=10)
    assert time.monotonic() - started < 60


FAKE_CHECK = """import json, sys
print(json.dumps({"path": sys.argv[1], "requests": 2, "signatures": [], "seconds": 0}))
"""


def test_a_components_package_in_the_working_directory_does_not_change_the_check(default, tmp_path, monkeypatch):
    _, _, _, path = default
    fake = tmp_path / "elsewhere"
    (fake / "components").mkdir(parents=True)
    (fake / "components" / "__init__.py").write_text("")
    (fake / "components" / "serving_check.py").write_text(FAKE_CHECK)  # would pass anything
    broken = _copy_with_warmup(path, tmp_path / "broken", _rename_input)
    monkeypatch.chdir(fake)
    monkeypatch.setenv("PYTHONPATH", str(fake))
    with pytest.raises(serving_check.ServingCheckError, match="warm-up record 1 has inputs"):
        serving_check.check_in_fresh_process(str(broken), TIMEOUT_S)
    assert serving_check.check_in_fresh_process(path, TIMEOUT_S)["signatures"] == [
        features.SERVING_DEFAULT, features.SERVING_TF_EXAMPLE
    ]


def test_a_check_process_that_dies_without_a_result_is_a_failure(default):
    """E.g. the kernel's OOM killer: no JSON on stdout, so no pass."""
    _, _, _, path = default
    outcome = {}

    def check():
        try:
            outcome["result"] = serving_check.check_in_fresh_process(path, TIMEOUT_S)
        except serving_check.ServingCheckError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=check)
    thread.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        victim = serving_check_pid(model=path)
        time.sleep(0.01)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=120)
    assert "result" not in outcome
    assert "the serving check's result cannot be read (exit status -9" in outcome["error"]


def _gone(pid: int) -> bool:
    """Ended and reaped."""
    return not os.path.exists(f"/proc/{pid}")


def _dead(pid: int) -> bool:
    """Ended: reaped, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_standby_checker_is_used_for_one_check_and_an_unused_one_is_stopped(default):
    _, _, _, path = default
    with serving_check.standby():
        waiting = serving_check_pid(parent=os.getpid())
        assert waiting is not None
        result = serving_check.check_in_fresh_process(path, TIMEOUT_S)
        assert result["path"] == path and result["requests"] == 2
        assert _gone(waiting)  # it did the check; a new process would have left it waiting on stdin
    seen = []

    def failing_run():
        with serving_check.standby():
            seen.append(serving_check_pid(parent=os.getpid()))
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError, match="the run failed"):
        failing_run()
    assert seen[0] is not None and _gone(seen[0])


def test_a_killed_standby_checker_is_replaced_by_a_fresh_one(default):
    _, _, _, path = default
    with serving_check.standby():
        waiting = serving_check_pid(parent=os.getpid())
        os.kill(waiting, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _dead(waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        result = serving_check.check_in_fresh_process(path, TIMEOUT_S)
    assert result["path"] == path and result["requests"] == 2
    assert serving_check_pid(parent=os.getpid()) is None


STANDBY_CHILD = """import sys, time
from components import serving_check
with serving_check.standby():
    print("open", flush=True)
    time.sleep(600)
"""


def test_a_standby_checker_ends_when_its_run_is_killed(tmp_path):
    """kill -9 of the run that started it: the waiting checker is not left behind."""
    run = subprocess.Popen([sys.executable, "-c", STANDBY_CHILD], cwd=REPO_ROOT,
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    waiting = None
    try:
        assert run.stdout.readline().strip() == "open"
        deadline = time.monotonic() + 60
        while waiting is None and time.monotonic() < deadline:
            waiting = serving_check_pid(parent=run.pid)
            time.sleep(0.05)
        assert waiting is not None
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        deadline = time.monotonic() + 60
        while not _dead(waiting) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _dead(waiting)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
        if waiting is not None and not _dead(waiting):
            os.kill(waiting, signal.SIGKILL)
        run.stdout.close()
