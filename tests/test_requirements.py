"""Everything `make` installs is pinned by version and hash: pip then refuses any other file."""

import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements"


def _pins(text: str) -> dict[str, list[str]]:
    """{name==version: its hashes} of a pip requirements file (continuation lines joined)."""
    pins: dict[str, list[str]] = {}
    for entry in re.sub(r"\\\n", " ", text).splitlines():
        entry = entry.split("#", 1)[0].strip()
        if entry:
            requirement, *options = entry.split()
            pins[requirement] = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
    return pins


@pytest.mark.parametrize("name", ["tools.txt", "requirements.lock", "airflow.lock"])
def test_every_requirement_is_pinned_with_hashes(name):
    pins = _pins((REQUIREMENTS / name).read_text())
    assert pins
    for requirement, hashes in pins.items():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[^=\s]+", requirement), requirement
        assert hashes, f"{name}: {requirement} has no hash"


def test_the_tools_share_the_main_locks_versions():
    tools, main = _pins((REQUIREMENTS / "tools.txt").read_text()), _pins((REQUIREMENTS / "requirements.lock").read_text())
    names = {pin.split("==")[0]: pin for pin in main}
    shared = [pin for pin in tools if pin.split("==")[0] in names]
    assert shared  # pytest and its dependencies are in both
    for pin in shared:
        assert pin == names[pin.split("==")[0]]
