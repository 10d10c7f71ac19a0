"""The serving folder's hand-off on plain files: staging, verification, versions, the lock."""

import errno
import fcntl
import os
import subprocess
import sys
import time

import pytest

from components import publish


def _model(root, payload=b"weights"):
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(payload)
    return root


def test_publishes_the_checked_bytes_under_a_new_version(tmp_path):
    model = _model(tmp_path / "model")
    serving = tmp_path / "serving"
    published = publish.stage_and_publish(model, serving, publish.tree_digest(model))
    assert published.version >= int(time.time()) - 5
    assert publish.versions(serving) == [published.version]
    assert publish.tree_digest(published.path) == publish.tree_digest(model)
    assert [p.name for p in serving.iterdir() if p.name.startswith(publish.STAGING_PREFIX)] == []


def test_bytes_that_differ_from_the_checked_ones_are_not_published(tmp_path):
    model = _model(tmp_path / "model")
    checked = publish.tree_digest(model)
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"changed after the check")
    serving = tmp_path / "serving"
    with pytest.raises(publish.PublishError, match="changed after its serving check"):
        publish.stage_and_publish(model, serving, checked)
    assert publish.versions(serving) == []
    assert [p.name for p in serving.iterdir()] == [publish.LOCK_NAME]  # no staging left either


def test_versions_only_increase_past_a_future_folder_and_a_clock_that_stepped_back(tmp_path):
    serving = tmp_path / "serving"
    ahead = int(time.time()) + 100_000  # a version published before the clock stepped back
    (serving / str(ahead)).mkdir(parents=True)
    (serving / str(ahead) / "saved_model.pb").write_bytes(b"older model")
    model = _model(tmp_path / "model")
    published = publish.stage_and_publish(model, serving, publish.tree_digest(model))
    assert published.version == ahead + 1
    assert (serving / str(ahead) / "saved_model.pb").read_bytes() == b"older model"
    assert publish.next_version(serving, now=0) == ahead + 2
    assert publish.next_version(tmp_path / "empty", now=1234.9) == 1234


def test_rename_never_replaces_an_existing_folder_even_an_empty_one(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    target.mkdir()  # plain rename(2) would silently replace an empty folder
    with pytest.raises(FileExistsError):
        publish.rename_noreplace(source, target)
    assert source.is_dir()
    publish.rename_noreplace(source, tmp_path / "c")
    assert (tmp_path / "c").is_dir() and not source.exists()


def test_stale_staging_folders_are_removed_and_reported(tmp_path):
    serving = tmp_path / "serving"
    stale = serving / f"{publish.STAGING_PREFIX}123-456"
    _model(stale)
    (serving / "17").mkdir()
    model = _model(tmp_path / "model")
    published = publish.stage_and_publish(model, serving, publish.tree_digest(model))
    assert published.removed_staging == (str(stale),)
    assert not stale.exists() and (serving / "17").is_dir()


def test_symlinks_in_a_model_are_refused(tmp_path):
    model = _model(tmp_path / "model")
    (model / "link").symlink_to(tmp_path)
    with pytest.raises(publish.PublishError, match="not a regular file"):
        publish.stage_and_publish(model, tmp_path / "serving", publish.tree_digest(model))
    assert publish.versions(tmp_path / "serving") == []


HOLD_LOCK = """
import sys, time
from pathlib import Path
from components import publish
with publish.publish_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_publish_lock_waits_for_a_live_holder_and_is_freed_when_it_is_killed(tmp_path):
    serving = tmp_path / "serving"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(serving)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(publish.PublishError, match="another publisher held"), \
                publish.publish_lock(serving, timeout_s=0.3):
            pass
        holder.kill()
        holder.wait(timeout=10)
        with publish.publish_lock(serving, timeout_s=5):
            fd = os.open(serving / publish.LOCK_NAME, os.O_RDWR)
            try:
                with pytest.raises(OSError) as raised:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                assert raised.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            finally:
                os.close(fd)
    finally:
        holder.kill()
        holder.wait(timeout=10)
