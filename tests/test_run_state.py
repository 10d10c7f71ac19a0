"""One run per output root (real processes, real SIGKILL) and unfinished executions recorded as failed."""

import json
import os
import signal
import subprocess
import sys

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import mlmd_names
from pipeline.run_state import OutputRootBusy, output_root_lock, record_failure_reason, record_unfinished

HOLD = """
import sys, time
from pathlib import Path
from pipeline.run_state import output_root_lock
with output_root_lock(Path(sys.argv[1]), "holder-run") as note:
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_second_run_fails_at_once_naming_the_running_one(tmp_path, holder):
    with pytest.raises(OutputRootBusy) as raised, output_root_lock(tmp_path, "second-run"):
        pytest.fail("took a lock another process holds")
    message = str(raised.value)
    assert f"pid {holder.pid}" in message and "run holder-run" in message and "started 20" in message


def test_a_lock_left_by_a_killed_run_is_taken_over_and_said_so(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    with output_root_lock(tmp_path, "next-run") as note:
        assert f"pid {holder.pid}" in note and "holder-run" in note and "ended without releasing" in note
        holder_record = json.loads((tmp_path / ".run.lock").read_text())
        assert holder_record["pid"] == os.getpid() and holder_record["run_id"] == "next-run"
    assert json.loads((tmp_path / ".run.lock").read_text()) == {"released": True}  # nothing to take over next
    with output_root_lock(tmp_path, "third-run") as note:
        assert note is None


def test_a_record_cut_short_by_a_kill_is_taken_over_and_said_so(tmp_path):
    # What a kill between the record's write and the file's truncation leaves: a new record
    # over the start of a longer old one.
    (tmp_path / ".run.lock").write_text('{"pid": 7, "host": "h", "started": "s", "run_id": "r"}ed": true}xx')
    with output_root_lock(tmp_path, "next-run") as note:
        assert "killed while it wrote its record" in note and "no whole record" in note
    with output_root_lock(tmp_path, "third-run") as note:
        assert note is None


CHURN = """
import sys
from pathlib import Path
from pipeline.run_state import output_root_lock
print("started", flush=True)
number = 0
while True:  # takes and releases the lock as fast as it can: two record writes per pass
    with output_root_lock(Path(sys.argv[1]), f"churn-{number}"):
        number += 1
"""


def test_sigkill_at_any_moment_of_the_lock_records_writes_leaves_a_lock_the_next_run_takes_over(tmp_path):
    import random
    import time

    from pipeline.run_state import _RELEASED

    rng = random.Random(0)
    outcomes = set()
    for _ in range(12):
        process = subprocess.Popen([sys.executable, "-c", CHURN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "started"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        left = (tmp_path / ".run.lock").read_text()
        with output_root_lock(tmp_path, "next-run") as note:
            # Only a lock its holder released is taken without a word; any other state says so.
            try:
                clean = json.loads(left) == _RELEASED
            except ValueError:
                clean = False
            assert (note is None) == clean, (left, note)
            outcomes.add("released" if clean else note.split(" (")[0][:40])
        assert json.loads((tmp_path / ".run.lock").read_text()) == _RELEASED
    assert len(outcomes) >= 2, outcomes  # the kills fell at different moments


def _store_with_runs(path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    type_ids = {
        name: store.put_context_type(metadata_store_pb2.ContextType(name=name))
        for name in ("pipeline", "pipeline_run", "node")
    }
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="tfx.Trainer"))

    def context(kind, name):
        return metadata_store_pb2.Context(type_id=type_ids[kind], name=name)

    pipeline_id, run_a, run_b, node_id = store.put_contexts([
        context("pipeline", "p"), context("pipeline_run", "run-a"), context("pipeline_run", "run-b"),
        context("node", "p.Trainer"),
    ])
    ids = {}
    for run_name, run_id, state in (("a", run_a, "RUNNING"), ("b", run_b, "RUNNING"), ("done", run_a, "COMPLETE")):
        execution = metadata_store_pb2.Execution(
            type_id=execution_type, last_known_state=getattr(metadata_store_pb2.Execution, state)
        )
        [ids[run_name]] = store.put_executions([execution])
        store.put_attributions_and_associations([], [
            metadata_store_pb2.Association(context_id=c, execution_id=ids[run_name])
            for c in (pipeline_id, run_id, node_id)
        ])
    return store, ids


def _state(store, execution_id):
    (execution,) = store.get_executions_by_id([execution_id])
    reason = execution.custom_properties.get(mlmd_names.FAILURE_REASON)
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state), reason.string_value if reason else None


def test_a_failed_runs_running_executions_become_failed_with_the_reason(tmp_path):
    store, ids = _store_with_runs(tmp_path / "m.sqlite")
    lines = record_failure_reason(store, "p", "run-a", "ValueError: no span number in span-old")
    assert lines == [f"run run-a: Trainer (execution {ids['a']})"]
    assert _state(store, ids["a"]) == ("FAILED", "ValueError: no span number in span-old")
    assert _state(store, ids["b"]) == ("RUNNING", None)  # another run's: not this run's to judge
    assert _state(store, ids["done"]) == ("COMPLETE", None)


def test_executions_left_running_by_any_ended_run_are_recorded_once(tmp_path):
    store, ids = _store_with_runs(tmp_path / "m.sqlite")
    assert len(record_unfinished(store, "p", "abandoned")) == 2
    assert _state(store, ids["a"]) == ("FAILED", "abandoned") == _state(store, ids["b"])
    assert record_unfinished(store, "p", "abandoned") == []
    assert record_unfinished(store, "no-such-pipeline", "abandoned") == []


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4, resource.RLIM_INFINITY))
from pipeline.run_state import OutputRootUnwritable, output_root_lock
try:
    with output_root_lock(Path(sys.argv[1]), "first-run"):
        print("held")
except OutputRootUnwritable as refused:
    print(refused)
"""


def test_a_lock_file_that_cannot_be_made_on_a_full_disk_is_refused_by_name_and_leaves_no_draft(tmp_path):
    root = tmp_path / "fresh"
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(root)], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"cannot write the run lock {root / '.run.lock'}: File too large"), out.stdout
    assert list(root.iterdir()) == []
    with output_root_lock(root, "next-run") as note:
        assert note is None
