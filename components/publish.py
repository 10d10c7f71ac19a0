"""Publishing a checked model into a TF Serving model folder, atomically.

TF Serving polls its model base folder and loads any child whose name is a
number as a version. This module keeps that folder truthful:

- a model is copied into a staging folder (`.staging-<pid>-<time>`, a name TF
  Serving ignores) in the same file system, each file synced to disk;
- the staged tree must hash to the digest the serving check recorded for the
  model it checked, so what is published is byte for byte what was checked;
- it is renamed to the next version number, without ever replacing an existing
  folder: `max(now, highest existing version + 1)`, so versions only increase,
  also when the clock steps back or a folder with that number already exists.

All of it happens under an exclusive lock on `<serving>/.publish.lock`, so two
publishers never interleave; a staging folder found while holding the lock was
left by a publisher that died, and is removed and reported. Only the standard
library is imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

STAGING_PREFIX = ".staging-"
LOCK_NAME = ".publish.lock"
# How long a publisher waits for another one to finish before giving up.
DEFAULT_LOCK_TIMEOUT_S = 600.0
_CHUNK = 1 << 20


class PublishError(RuntimeError):
    """The model could not be published; the serving folder is as it was."""


@dataclasses.dataclass(frozen=True)
class Published:
    version: int
    path: Path
    removed_staging: tuple[str, ...]  # stale staging folders removed first


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under `root`, in a stable order."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def versions(serving_dir: Path) -> list[int]:
    """The version numbers TF Serving would see in `serving_dir`, ascending."""
    if not serving_dir.is_dir():
        return []
    return sorted(int(p.name) for p in serving_dir.iterdir() if p.name.isdigit() and p.is_dir())


@contextlib.contextmanager
def publish_lock(serving_dir: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Holds the exclusive lock of `serving_dir` (created if missing); released on exit or death."""
    serving_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(serving_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PublishError(
                        f"{serving_dir}: another publisher held {LOCK_NAME} for more than {timeout_s:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_staging(serving_dir: Path) -> tuple[str, ...]:
    """Removes staging folders; call only while holding `publish_lock` (their publishers are dead)."""
    if not serving_dir.is_dir():
        return ()
    stale = sorted(p for p in serving_dir.iterdir() if p.name.startswith(STAGING_PREFIX))
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return tuple(str(p) for p in stale)


def _copy_file_synced(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("xb") as writer:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_tree_synced(source: Path, target: Path) -> None:
    """Copies files and folders (no links, no special files), everything synced to disk."""
    target.mkdir()
    for entry in sorted(source.iterdir()):
        if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
            raise PublishError(f"{entry}: not a regular file or folder; a SavedModel holds none")
        if entry.is_dir():
            _copy_tree_synced(entry, target / entry.name)
        else:
            _copy_file_synced(entry, target / entry.name)
    _fsync_dir(target)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def rename_noreplace(source: Path, target: Path) -> None:
    """Atomically renames `source` to `target`; FileExistsError if `target` exists (never replaced).

    Uses Linux's renameat2(RENAME_NOREPLACE); where the file system does not
    support it, a plain rename after an existence check (safe under the lock).
    """
    result = _libc.renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
    if result == 0:
        return
    error = ctypes.get_errno()
    if error == errno.EEXIST:
        raise FileExistsError(error, os.strerror(error), str(target))
    if error not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(error, os.strerror(error), str(source))
    if target.exists():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


def next_version(serving_dir: Path, now: float) -> int:
    """A number above every existing version and not below the clock."""
    existing = versions(serving_dir)
    return max(int(now), existing[-1] + 1 if existing else 0)


def stage_and_publish(
    model_dir: Path, serving_dir: Path, expected_digest: str,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Published:
    """Copies `model_dir` to a staging folder, verifies it, and renames it to a new version.

    Raises PublishError (the serving folder then holds what it held before,
    minus stale staging folders) if the copy fails (a full disk), the staged
    bytes are not the checked ones, or no version number can be taken.
    """
    model_dir, serving_dir = Path(model_dir), Path(serving_dir)
    with publish_lock(serving_dir, lock_timeout_s):
        removed = remove_stale_staging(serving_dir)
        staging = serving_dir / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        try:
            _copy_tree_synced(model_dir, staging)
            staged = tree_digest(staging)
            if staged != expected_digest:
                raise PublishError(
                    f"{model_dir}: the staged copy's digest {staged[:12]} is not the checked model's "
                    f"{expected_digest[:12]}: the model changed after its serving check"
                )
            for _ in range(100):
                version = next_version(serving_dir, time.time())
                try:
                    rename_noreplace(staging, serving_dir / str(version))
                    break
                except FileExistsError:
                    continue  # a folder with that number appeared meanwhile: take the next one
            else:
                raise PublishError(f"{serving_dir}: no free version number after 100 attempts")
            _fsync_dir(serving_dir)
        except OSError as error:
            raise PublishError(f"{model_dir}: could not publish into {serving_dir}: {error}") from error
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return Published(version, serving_dir / str(version), removed)
