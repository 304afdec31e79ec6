"""Which router serves Spread and Shard routers: the compiled one (runtime/router, Go) when it is
built, else the Python runtime's. One choice for every target: local processes run the binary where
`scripts/build-router` put it; images carry a static copy of it at `IMAGE_ROUTER`.

Each target turns the choice into RuntimeConfig settings (`router`, `router_binary`); no MP_* name
is spelled here.
"""

from __future__ import annotations

import os
import struct
from typing import Optional

from ._errors import PatternError

#: Where `scripts/build-router` puts the compiled router; METAPARTICLE_ROUTER_BIN names another.
ROUTER_BIN_ENV = "METAPARTICLE_ROUTER_BIN"
#: "auto" (the compiled router when it is built), "go" (it must be) or "python".
ROUTER_ENV = "METAPARTICLE_ROUTER"
DEFAULT_ROUTER = "auto"
CHOICES = ("auto", "go", "python")
#: Where an image holds the compiled router (the Dockerfile copies the context's router/ there).
IMAGE_ROUTER = "/opt/metaparticle/bin/metaparticle-router"
#: The file of the build context that holds it.
CONTEXT_ROUTER = "router/metaparticle-router"

_PT_INTERP = 3


def router_choice() -> str:
    """The router asked for by METAPARTICLE_ROUTER (default auto)."""
    choice = os.environ.get(ROUTER_ENV, DEFAULT_ROUTER)
    if choice not in CHOICES:
        raise PatternError(f"{ROUTER_ENV} must be auto, go or python, got {choice!r}")
    return choice


def router_binary() -> str | None:
    """The compiled router of this machine, if one is built (scripts/build-router)."""
    given = os.environ.get(ROUTER_BIN_ENV)
    if given:
        return os.path.abspath(given)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    default = os.path.join(cache, "metaparticle", "router", "metaparticle-router")
    return default if os.access(default, os.X_OK) else None


def compiled_router() -> dict[str, str]:
    """The runtime settings that hand Spread and Shard routers to this machine's compiled router
    when it is built (local processes)."""
    choice = router_choice()
    binary = router_binary() if choice != "python" else None
    if choice == "go" and binary is None:
        raise PatternError(f"{ROUTER_ENV}=go but no compiled router is built: run scripts/build-router (needs Go)")
    return {"router": choice, "router_binary": binary} if binary else {}


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


def image_router() -> Optional[str]:
    """The compiled router to put into images: this machine's, when one is built, statically
    linked and not declined (METAPARTICLE_ROUTER=python); None leaves images with the Python router.

    An image's root filesystem is not this machine's: a binary that needs a dynamic loader may
    find another C library there, or none. METAPARTICLE_ROUTER=go makes its absence an error.
    """
    choice = router_choice()
    if choice == "python":
        return None
    binary = router_binary()
    if binary is None:
        if choice == "go":
            raise PatternError(f"{ROUTER_ENV}=go but no compiled router is built: run scripts/build-router (needs Go)")
        return None
    loader = dynamic_loader(binary)
    if loader is None:
        return binary
    if choice == "go":
        raise PatternError(
            f"{ROUTER_ENV}=go but the compiled router {binary} is not a static executable ({loader}), which an "
            "image cannot run: rebuild it with scripts/build-router (CGO_ENABLED=0)"
        )
    return None


def image_router_settings(carried: bool) -> dict[str, str]:
    """The runtime settings of an image's Spread and Shard routers: the compiled router when the
    image carries it (`carried`), else none (the Python router)."""
    return {"router": router_choice(), "router_binary": IMAGE_ROUTER} if carried else {}
