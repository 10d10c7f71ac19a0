"""The compatibility step: its decisions on made-up ELF facts, and its effect on this .venv."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tools.runtime_compat import patch

HOST = {"libc.so.6": frozenset({"GLIBC_2.2.5", "GLIBC_2.36"}), "libstdc++.so.6": frozenset({"GLIBCXX_3.4.30"})}


def _need(lib, version, index, flags=0):
    return patch.VersionNeed(lib, version, index, flags, flags_offset=0)


def test_nothing_to_do_when_the_runtime_has_every_version():
    info = patch.ElfInfo((_need("libc.so.6", "GLIBC_2.36", 2),), (("strtol", 2),), frozenset())
    assert patch.plan_for(Path("x.so"), info, HOST, shim_beside=True) is None


def test_missing_versions_are_planned_for_shim_symbols():
    info = patch.ElfInfo(
        (_need("libc.so.6", "GLIBC_2.38", 3), _need("libc.so.6", "GLIBC_2.2.5", 2)),
        (("__isoc23_strtol", 3), ("malloc", 2)),
        frozenset(),
    )
    plan = patch.plan_for(Path("x.so"), info, HOST, shim_beside=True)
    assert plan.symbols == ("__isoc23_strtol",)
    assert [n.version for n in plan.weaken] == ["GLIBC_2.38"]
    assert plan.needs_shim


def test_a_symbol_the_shim_lacks_fails_loudly_by_name():
    info = patch.ElfInfo((_need("libc.so.6", "GLIBC_2.39", 3),), (("pidfd_spawn", 3),), frozenset())
    with pytest.raises(patch.CompatError, match="pidfd_spawn.*GLIBC_2.39"):
        patch.plan_for(Path("x.so"), info, HOST, shim_beside=True)


def test_already_patched_files_are_left_alone():
    weak = _need("libc.so.6", "GLIBC_2.38", 3, flags=0x2)
    info = patch.ElfInfo((weak,), (("__isoc23_strtol", 0),), frozenset())  # unversioned now
    assert patch.plan_for(Path("x.so"), info, HOST, shim_beside=True) is None


def test_a_patched_extension_without_its_shim_beside_gets_the_shim():
    weak = _need("libc.so.6", "GLIBC_2.38", 3, flags=0x2)
    info = patch.ElfInfo((weak,), (("__isoc23_strtol", 0),), frozenset(), (patch.SHIM_NAME,))
    plan = patch.plan_for(Path("x.so"), info, HOST, shim_beside=False)
    assert plan.needs_shim and plan.symbols == () and plan.weaken == ()
    assert patch.plan_for(Path("x.so"), info, HOST, shim_beside=True) is None


def test_patching_never_writes_through_a_hardlink(tmp_path):
    original = tmp_path / "cache.so"
    original.write_bytes(b"cached bytes")
    linked = tmp_path / "venv.so"
    linked.hardlink_to(original)
    patch._unshare(linked)
    linked.write_bytes(b"patched")
    assert original.read_bytes() == b"cached bytes"


def test_host_versions_are_read_from_the_real_runtime():
    host = patch.host_versions()
    assert "GLIBC_2.2.5" in host["libc.so.6"]
    assert any(v.startswith("GLIBCXX_3.4") for v in host["libstdc++.so.6"])


def test_this_environment_needs_nothing_more_and_imports():
    site = Path(sysconfig.get_path("purelib"))
    assert patch.plans(site, patch.host_versions()) == []
    subprocess.run(
        [sys.executable, "-c", "import ml_metadata.metadata_store, tensorflow_data_validation"],
        check=True,
    )
