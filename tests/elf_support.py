"""ELF executables' headers written by hand, for the checks that read them (architecture, loader)."""

from __future__ import annotations

import struct
from pathlib import Path

from metaparticle_runtime.elf import this_machine

_PT_LOAD, _PT_INTERP = 1, 3
#: e_machine of the architectures these tests build headers for (the ELF specification's numbers).
EM_386, EM_PPC64, EM_X86_64, EM_AARCH64 = 3, 21, 62, 183
#: This machine's architecture as GOARCH names it, and its e_machine: images without a platform run on it.
HOST = this_machine()
HOST_MACHINE = {"amd64": EM_X86_64, "arm64": EM_AARCH64, "386": EM_386}.get(HOST, EM_X86_64)
#: Another CPU than this machine's, as e_machine and GOARCH: what a cross-build is for.
FOREIGN_MACHINE, FOREIGN = (EM_X86_64, "amd64") if HOST == "arm64" else (EM_AARCH64, "arm64")


def elf(
    path: Path, interpreter: bytes | None = None, payload: bytes = b"", *, machine: int = HOST_MACHINE, order: str = "<"
) -> Path:
    """A 64-bit ELF executable's headers for `machine` (default this machine's), little-endian unless
    `order` is ">": a PT_LOAD segment, plus a PT_INTERP naming `interpreter` when given (what a
    dynamically linked program has), then `payload`."""
    headers = [(_PT_LOAD, 0, 0)]
    data_at = 64 + 56 * 2
    if interpreter is not None:
        headers.insert(0, (_PT_INTERP, data_at, len(interpreter) + 1))
    ident = b"\x7fELF" + bytes([2, 1 if order == "<" else 2, 1]) + bytes(9)
    header = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, machine, 1, 0x401000, 64, 0, 0, 64, 56, len(headers), 64, 0, 0)
    table = b"".join(struct.pack(order + "IIQQQQQQ", kind, 5, offset, 0, 0, size, size, 0x1000) for kind, offset, size in headers)
    body = header + table
    body += bytes(data_at - len(body)) + (interpreter + b"\0" if interpreter is not None else b"") + payload
    path.write_bytes(body)
    path.chmod(0o755)
    return path


def elf32(path: Path, machine: int = EM_386) -> Path:
    """A 32-bit little-endian ELF executable's headers (52 bytes, then one 32-byte PT_LOAD entry)."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0x8048000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    path.write_bytes(header + struct.pack("<IIIIIIII", _PT_LOAD, 0, 0x8048000, 0x8048000, 84, 84, 5, 0x1000))
    path.chmod(0o755)
    return path
