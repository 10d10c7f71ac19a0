"""One run per output root, and no execution left `RUNNING` after its run ended.

`output_root_lock(output_dir, run_id)` holds an exclusive `flock` on
`<output>/.run.lock` for the whole run; the kernel releases it when the
process dies, however it dies. The file records the holder (pid, host, start
time, run id), or that the last holder released it: a second run fails at
once naming the holder, and a run that finds a holder's record, or a record
cut short by a kill while it was written, says it took the lock over. The
file is never empty once made (it is linked into place with its first
record), and a record overwrites the last one before the file is cut to its
length, so a kill at any point leaves a record or a visibly torn one.

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


class OutputRootUnwritable(RuntimeError):
    """The run lock's record cannot be written (a full disk, a file size limit)."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    run_id: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, started {self.started})"


# The record of a lock its last holder released.
_RELEASED = {"released": True}


def _read_holder(fd: int) -> LockHolder | str | None:
    """The holder the lock file names; None if released (or empty, as older versions left it);
    the text itself if it is no record (a write cut short)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace").strip()
    if not text:
        return None
    try:
        record = json.loads(text)
        return None if record == _RELEASED else LockHolder(**record)
    except (ValueError, TypeError):
        return text


def _write_record(fd: int, record: dict) -> None:
    data = json.dumps(record).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _open_lock_file(path: Path) -> int:
    """`path` opened for reading and writing; made first, if missing, with a released record in it."""
    if not path.exists():
        draft = path.with_name(f"{path.name}.{os.getpid()}.new")
        try:
            draft.write_text(json.dumps(_RELEASED))
            with contextlib.suppress(FileExistsError):  # another run made it first
                os.link(draft, path)
        finally:  # also when the draft could not be written whole (a full disk)
            draft.unlink(missing_ok=True)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


def _unwritable(path: Path, error: OSError) -> OutputRootUnwritable:
    return OutputRootUnwritable(
        f"cannot write the run lock {path}: {error.strerror} (is the disk full, or a file size limit "
        "reached?); nothing ran and nothing was changed"
    )


@contextlib.contextmanager
def output_root_lock(output_dir: Path, run_id: str) -> Iterator[str | None]:
    """Holds `output_dir`'s run lock; yields a note if it took over a dead holder's lock, else None.

    Raises OutputRootBusy, naming the holder, if another live run holds it.
    """
    path = output_dir / LOCK_NAME
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = _open_lock_file(path)
    except OSError as error:
        raise _unwritable(path, error) from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if isinstance(holder, LockHolder) else "another run (just starting)"
            raise OutputRootBusy(
                f"output root {output_dir} is in use by {who}; wait for it to finish or use another --output"
            ) from None
        previous = _read_holder(fd)
        note = None
        if isinstance(previous, LockHolder):
            note = (
                f"took over the run lock of {previous.describe()}, whose process ended without "
                "releasing it (killed?)"
            )
        elif previous is not None:
            note = (
                f"took over the run lock from a run killed while it wrote its record ({path} held "
                f"{previous[:80]!r}, no whole record)"
            )
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        try:
            _write_record(fd, dataclasses.asdict(LockHolder(os.getpid(), socket.gethostname(), started, run_id)))
        except OSError as error:
            with contextlib.suppress(OSError):  # the short released record may still fit
                _write_record(fd, _RELEASED)
            raise _unwritable(path, error) from error
        try:
            yield note
        finally:
            _write_record(fd, _RELEASED)
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
