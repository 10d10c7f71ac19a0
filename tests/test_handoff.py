"""The hand-off from a blessed model to the serving folder, under faults, with real processes.

Each case runs ServingCheck (whose check is always a process of its own) and
the Pusher's executor against a serving folder that already serves a version,
while a watcher polls the folder every 20 ms as TF Serving would; where a
case kills the hand-off, it runs in a child process (`tests.handoff_child`).
Real SIGKILLs at each step, a model that fails the check, and a full disk:
the folder only ever shows versions that passed the check, the served one
stays byte for byte the same, and the next hand-off cleans up and says so.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import publish
from components.serving_check import ServingCheckError
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.config import REPO_ROOT
from recommender import export, features, warmup
from recommender.model import ModelConfig
from tests.handoff_child import handoff
from tests.support import Watcher, served_versions, serving_check_pid, transform_and_train

pytestmark = pytest.mark.slow
# Makes the copy long enough to be caught in the middle by a 1 ms poll.
PADDING_BYTES = 128 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A good model, the same with a large extra asset, and two that fail the check."""
    root = tmp_path_factory.mktemp("handoff-models")
    rows = generate_rows(SyntheticSpec(num_users=100, num_items=80, num_interactions=3_000, seed=5))
    tft_output, model, _ = transform_and_train(root, rows, np.arange(2_500), ModelConfig(epochs=1), 5)
    good = root / "good"
    export.export_model(model, tft_output, str(good))

    large = root / "large"
    shutil.copytree(good, large)
    with (large / "assets.extra" / "padding.bin").open("wb") as file:
        file.write(np.random.default_rng(0).bytes(PADDING_BYTES))

    wrong_input = root / "wrong_input"
    shutil.copytree(good, wrong_input)
    records = warmup.read_requests(str(wrong_input))
    request = records[0].predict_log.request
    request.inputs["userid"].CopyFrom(request.inputs[features.USER_ID])
    del request.inputs[features.USER_ID]
    with tf.io.TFRecordWriter(str(wrong_input / warmup.WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record.SerializeToString())

    for weight in model.trainable_weights:
        weight.assign(tf.fill(weight.shape, np.nan))
    non_finite = root / "non_finite"
    export.export_model(model, tft_output, str(non_finite))
    return {"good": good, "large": large, "wrong_input": wrong_input, "non_finite": non_finite}


@pytest.fixture
def serving(tmp_path, models):
    """A serving folder that already serves the good model as version 1000."""
    folder = tmp_path / "serving"
    folder.mkdir()
    shutil.copytree(models["good"], folder / "1000")
    return folder


class Child:
    """`tests.handoff_child` in its own process group; killed (with the group) at teardown."""

    def __init__(self, model: Path, serving: Path, work: Path, *extra: str):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.out, self.err = (work / "stdout").open("w"), (work / "stderr").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.handoff_child", str(model), str(serving), str(work / "run"), *extra],
            cwd=REPO_ROOT, stdout=self.out, stderr=self.err, start_new_session=True,
        )

    def wait(self, timeout=300):
        code = self.process.wait(timeout=timeout)
        lines = (self.work / "stdout").read_text().splitlines()
        errors = (self.work / "stderr").read_text().strip().splitlines()
        return code, [json.loads(line) for line in lines if line.startswith("{")], errors[-1] if errors else ""

    def check_process(self) -> int | None:
        """The pid of the serving check this child started, if it is running."""
        return serving_check_pid(parent=self.process.pid)

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.out.close()
        self.err.close()


@pytest.fixture
def children():
    started = []
    yield lambda *args: started.append(Child(*args)) or started[-1]
    for child in started:
        child.close()


def _wait_for(condition, timeout, step=0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def _staging(serving):
    return [p for p in serving.iterdir() if p.name.startswith(publish.STAGING_PREFIX)]


def test_only_the_checked_model_ever_appears_complete_under_a_new_higher_version(models, serving, tmp_path, children):
    ahead = int(time.time()) + 100_000  # a version from a clock that has since stepped back
    shutil.copytree(models["good"], serving / str(ahead))
    before = served_versions(serving)
    with Watcher(serving) as watcher:
        pushed = handoff(models["large"], serving, tmp_path / "work", timeout_s=120)
    checked = json.loads((tmp_path / "work" / "checked.json").read_text())
    assert pushed["pushed"] == 1 and pushed["pushed_version"] == str(ahead + 1)
    assert pushed["pushed_destination"] == str(serving / str(ahead + 1))
    new = set(watcher.seen) - set(before)
    assert new == {str(ahead + 1)}
    # Complete at first sight, and the very bytes the check passed.
    assert watcher.seen[str(ahead + 1)][1] == checked["checked"] == publish.tree_digest(models["large"])
    assert {k: v for k, v in served_versions(serving).items() if k in before} == before
    assert _staging(serving) == []


@pytest.mark.parametrize(("model", "expected"), [
    ("wrong_input", "warm-up record 1 has inputs ['item_id', 'userid']"),
    ("non_finite", "signature 'serving_default' gave a non-finite"),
])
def test_a_model_that_fails_the_check_is_never_visible(models, serving, tmp_path, model, expected):
    before = served_versions(serving)
    with Watcher(serving) as watcher, pytest.raises(ServingCheckError) as raised:
        handoff(models[model], serving, tmp_path / "work", timeout_s=120)
    assert expected in str(raised.value) and str(tmp_path / "work") in str(raised.value)  # names the model
    assert not (tmp_path / "work" / "pushed_model").exists()  # never got as far as the Pusher
    assert set(watcher.seen) == set(before)
    assert served_versions(serving) == before and _staging(serving) == []


def _kill_during_check(child, serving):
    check = _wait_for(child.check_process, timeout=120, step=0.01)
    os.kill(child.process.pid, signal.SIGKILL)
    return check


def _kill_between_check_and_publish(child, serving):
    check = _wait_for(child.check_process, timeout=120, step=0.01)
    _wait_for(lambda: not os.path.exists(f"/proc/{check}"), timeout=120, step=0.01)
    time.sleep(1.0)  # the Pusher is now waiting for the publish lock the test holds
    assert _staging(serving) == []
    os.kill(child.process.pid, signal.SIGKILL)
    return check


def _kill_during_copy(child, serving):
    (staging,) = _wait_for(lambda: _staging(serving), timeout=180)
    os.kill(child.process.pid, signal.SIGSTOP)
    copied = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    assert copied < PADDING_BYTES  # stopped in the middle of the copy
    os.kill(child.process.pid, signal.SIGKILL)
    return None


@pytest.mark.parametrize("kill", [_kill_during_check, _kill_between_check_and_publish, _kill_during_copy],
                         ids=["during-check", "between-check-and-publish", "during-copy"])
def test_sigkill_at_each_step_leaves_only_verified_versions_and_the_next_run_cleans_up(
    models, serving, tmp_path, children, kill,
):
    before = served_versions(serving)
    holds_lock = kill is _kill_between_check_and_publish
    lock = publish.publish_lock(serving) if holds_lock else None
    with Watcher(serving) as watcher:
        if lock:
            lock.__enter__()
        try:
            model = models["large"] if kill is _kill_during_copy else models["good"]
            child = children(model, serving, tmp_path / "killed")
            check = kill(child, serving)
            child.process.wait(timeout=30)
        finally:
            if lock:
                lock.__exit__(None, None, None)
        if check is not None:  # the orphaned check ends by itself
            _wait_for(lambda: not os.path.exists(f"/proc/{check}"), timeout=30, step=0.05)
        assert set(watcher.seen) == set(before)
    assert served_versions(serving) == before
    left = [str(p) for p in _staging(serving)]
    assert bool(left) == (kill is _kill_during_copy)

    pushed = handoff(models["good"], serving, tmp_path / "next", timeout_s=120)
    assert json.loads(pushed["removed_staging"]) == left  # says what it cleaned
    assert int(pushed["pushed_version"]) > max(int(v) for v in before)
    assert _staging(serving) == []
    assert {k: v for k, v in served_versions(serving).items() if k in before} == before


def test_a_full_disk_during_the_copy_publishes_nothing_and_leaves_no_staging(models, serving, tmp_path, children):
    before = served_versions(serving)
    code, results, error = children(
        models["good"], serving, tmp_path / "child", "--file-size-limit", str(64 << 10)
    ).wait()
    assert code == 1 and "could not publish" in error and "File too large" in error
    assert results == []  # no push reported
    assert (tmp_path / "child" / "run" / "checked.json").is_file()  # though the check had passed
    assert served_versions(serving) == before and _staging(serving) == []


def test_two_orchestrators_publishing_into_one_folder_at_once_keep_versions_unique_and_verified(
    models, serving, tmp_path, children
):
    """A LocalDagRunner run and, all through it, the Pusher's executor in another process (what an
    Airflow or Kubeflow task runs), one task after another, publish into one serving folder: the
    publish lock keeps every version unique, complete at first sight and the bytes its publisher
    checked."""
    import threading

    from data.synthetic import write_csv
    from pipeline.config import PipelineConfig
    from run_local import run
    from tests.support import LOOSE_THRESHOLDS

    data = write_csv(SyntheticSpec(num_interactions=3_000), tmp_path / "data" / "interactions.csv")
    config = PipelineConfig(data_path=data, output_dir=tmp_path, model=ModelConfig(epochs=2),
                            thresholds=LOOSE_THRESHOLDS)
    assert config.serving_dir == serving
    before = served_versions(serving)
    done, lanes = threading.Event(), []

    def lane(number):  # one task after another until the local run has finished
        turn = 0
        while not done.is_set():
            model = models["large" if (number + turn) % 2 else "good"]
            child = children(model, serving, tmp_path / f"task-{number}-{turn}")
            started = time.time()
            code, out, error = child.wait()
            lanes.append((started, time.time(), code, out, error, model))
            turn += 1

    # One lane: on a 2-core machine a second one only slowed every process down.
    threads = [threading.Thread(target=lane, args=(0,))]
    with Watcher(serving) as watcher:
        for thread in threads:
            thread.start()
        try:
            summary, error = run(config)
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=600)
    assert error is None and summary.pushed_to, error
    assert lanes and all(code == 0 for _, _, code, _, _, _ in lanes), [e for *_, e, _ in lanes]
    pusher = next(c for c in summary.components if c.component_id == "Pusher")
    pushed_at = (pusher.started_at, pusher.started_at + pusher.seconds)
    # The local run's push fell while another task was publishing or checking.
    assert any(start < pushed_at[1] and pushed_at[0] < end for start, end, *_ in lanes)

    (trained,) = (tmp_path / "pipeline" / "Trainer" / "model").glob("*/Format-Serving")
    published = {Path(summary.pushed_to).name: publish.tree_digest(trained)}
    for _, _, _, (out,), _, model in lanes:
        published.setdefault(out["pushed_version"], publish.tree_digest(model))
    final = served_versions(serving)
    new = {version: digest for version, digest in final.items() if version not in before}
    # One folder per publication, none reused, each the bytes its publisher checked, complete when first seen.
    assert len(new) == len(lanes) + 1 == len(published)
    assert new == published
    assert all(watcher.seen[version][1] == digest for version, digest in new.items())
    assert {k: v for k, v in final.items() if k in before} == before
    assert _staging(serving) == []
