"""One run per output root, and no execution left `RUNNING` after its run ended.

`output_root_lock(output_dir, run_id)` holds an exclusive `flock` on
`<output>/.run.lock` for the whole run; the kernel releases it when the
process dies, however it dies. The file records the holder (pid, host, start
time, run id): a second run fails at once naming it, and a run that finds a
record left by a holder that no longer holds the lock says it took it over.

TFX leaves an execution `RUNNING` in ML Metadata when its driver raises or
its process is killed. `record_unfinished` marks such executions `FAILED`
with a `failure_reason`; runners call it for their own run when it fails and,
holding the lock, for earlier runs of the pipeline when they start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import mlmd_names
from results.metadata import MetadataReader

LOCK_NAME = ".run.lock"
_UNFINISHED = (metadata_store_pb2.Execution.RUNNING, metadata_store_pb2.Execution.NEW)


class OutputRootBusy(RuntimeError):
    """Another run holds the output root."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    run_id: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, started {self.started})"


def _read_holder(fd: int) -> LockHolder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return LockHolder(**json.loads(text))
    except (ValueError, TypeError):
        return LockHolder(pid=-1, host="?", started="?", run_id=f"unknown ({text[:80]!r})")


def _write_holder(fd: int, holder: LockHolder | None) -> None:
    os.ftruncate(fd, 0)
    if holder is not None:
        os.pwrite(fd, json.dumps(dataclasses.asdict(holder)).encode(), 0)
    os.fsync(fd)


@contextlib.contextmanager
def output_root_lock(output_dir: Path, run_id: str) -> Iterator[str | None]:
    """Holds `output_dir`'s run lock; yields a note if it took over a dead holder's lock, else None.

    Raises OutputRootBusy, naming the holder, if another live run holds it.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if holder else "another run (just starting)"
            raise OutputRootBusy(
                f"output root {output_dir} is in use by {who}; wait for it to finish or use another --output"
            ) from None
        previous = _read_holder(fd)
        note = None
        if previous is not None:
            note = (
                f"took over the run lock of {previous.describe()}, whose process ended without "
                "releasing it (killed?)"
            )
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _write_holder(fd, LockHolder(os.getpid(), socket.gethostname(), started, run_id))
        try:
            yield note
        finally:
            _write_holder(fd, None)
    finally:
        os.close(fd)


def record_unfinished(
    store: metadata_store.MetadataStore, pipeline_name: str, reason: str, run_id: str | None = None,
) -> list[str]:
    """Marks `pipeline_name`'s RUNNING/NEW executions (of `run_id` only, if given) FAILED with `reason`.

    Returns one line per execution marked: "run <run>: <node> (execution N)".
    """
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    index = MetadataReader(store)
    marked, lines = [], []
    for execution in store.get_executions_by_context(pipeline.id):
        if execution.last_known_state not in _UNFINISHED:
            continue
        run = index.run_id(execution.id)
        if run_id is not None and run != run_id:
            continue
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        execution.custom_properties[mlmd_names.FAILURE_REASON].string_value = reason
        marked.append(execution)
        lines.append(f"run {run or '?'}: {index.node_id(execution.id)} (execution {execution.id})")
    if marked:
        store.put_executions(marked)
    return lines


def record_failure_reason(
    store: metadata_store.MetadataStore, pipeline_name: str, run_id: str, reason: str,
) -> list[str]:
    """After `run_id` failed: its unfinished executions become FAILED, and each failed one gets `reason`."""
    lines = record_unfinished(store, pipeline_name, reason, run_id)
    try:
        run = MetadataReader(store).run_context(pipeline_name, run_id)
    except LookupError:
        return lines
    unexplained = [
        e for e in store.get_executions_by_context(run.id)
        if e.last_known_state == metadata_store_pb2.Execution.FAILED
        and mlmd_names.FAILURE_REASON not in e.custom_properties
    ]
    for execution in unexplained:
        execution.custom_properties[mlmd_names.FAILURE_REASON].string_value = reason
    if unexplained:
        store.put_executions(unexplained)
    return lines
