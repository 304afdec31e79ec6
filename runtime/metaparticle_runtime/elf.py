"""ELF executables: the CPU architecture one runs on and the dynamic loader it needs, read from its
headers, so that a compiled router is run only where it can start (an image's root filesystem, this
machine's CPU) instead of failing at exec."""

from __future__ import annotations

import platform
import struct
from typing import Optional

_PT_INTERP = 3
#: ELF e_machine values and the CPU architecture each names, spelled as Go's GOARCH (and image platforms) do.
_ELF_MACHINES = {62: "amd64", 183: "arm64", 3: "386", 40: "arm", 21: "ppc64", 22: "s390x", 243: "riscv64"}
#: Other spellings of those architectures (platform.machine(), Debian's, image platforms').
_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "x64": "amd64", "aarch64": "arm64", "armv8": "arm64", "armv8l": "arm64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "x86": "386",
    "armv6l": "arm", "armv7l": "arm", "armhf": "arm", "armel": "arm", "ppc64el": "ppc64le",
}


def dynamic_loader(path: str) -> Optional[str]:
    """Why the ELF file at `path` cannot run in another root filesystem: its program interpreter
    (the dynamic loader it needs, e.g. `/lib64/ld-linux-x86-64.so.2`), "not an ELF executable",
    or None when it is statically linked."""
    with open(path, "rb") as file:
        header = file.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] not in (1, 2):
            return "not an ELF executable"
        wide = header[4] == 2
        order = "<" if header[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            phoff, = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        for index in range(phnum):
            file.seek(phoff + index * phentsize)
            entry = file.read(phentsize)
            kind, = struct.unpack_from(order + "I", entry, 0)
            if kind != _PT_INTERP:
                continue
            if wide:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
                offset, size = struct.unpack_from(order + "Q", entry, 8)[0], struct.unpack_from(order + "Q", entry, 32)[0]
            else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz
                offset, size = struct.unpack_from(order + "I", entry, 4)[0], struct.unpack_from(order + "I", entry, 16)[0]
            file.seek(offset)
            return file.read(size).rstrip(b"\0").decode(errors="replace") or "a program interpreter"
    return None


def elf_architecture(path: str) -> Optional[str]:
    """The CPU architecture the ELF file at `path` runs on (its e_machine), as GOARCH names it
    (`amd64`, `arm64`, `ppc64le`), `ELF machine N` for one not named here, None for no ELF file."""
    with open(path, "rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[5] not in (1, 2):
        return None
    order = "<" if header[5] == 1 else ">"
    machine, = struct.unpack_from(order + "H", header, 18)
    arch = _ELF_MACHINES.get(machine, f"ELF machine {machine}")
    return "ppc64le" if arch == "ppc64" and order == "<" else arch


def goarch(name: str) -> str:
    """An architecture's name as GOARCH spells it (`x86_64` -> `amd64`, `aarch64` -> `arm64`)."""
    lowered = name.strip().lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def this_machine() -> str:
    """This machine's CPU architecture, as GOARCH names it."""
    return goarch(platform.machine())
