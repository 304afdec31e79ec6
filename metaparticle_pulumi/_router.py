"""Which router serves Spread and Shard routers: the compiled one (runtime/router, Go) when it is
built, else the Python runtime's. One choice for every target: local processes run the binary where
`scripts/build-router` put it when it is built for this machine's CPU architecture; images carry a
static copy of it at `IMAGE_ROUTER` when it is built for their platform's CPU architecture.

Each target turns the choice into RuntimeConfig settings (`router`, `router_binary`); no MP_* name
is spelled here.
"""

from __future__ import annotations

import os
from typing import Optional

from metaparticle_runtime.elf import dynamic_loader, elf_architecture, goarch, this_machine

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

#: What a platform of one component names when it is an OS, not an architecture (`linux`: this machine's).
_OSES = ("linux", "windows", "darwin", "freebsd")


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
    when it is built, for this machine's architecture (local processes; a cross-build for images
    would fail at exec)."""
    choice = router_choice()
    binary = router_binary() if choice != "python" else None
    if choice == "go" and binary is None:
        raise PatternError(f"{ROUTER_ENV}=go but no compiled router is built: run scripts/build-router (needs Go)")
    if binary is not None and os.path.isfile(binary):
        arch, here = elf_architecture(binary), this_machine()
        if arch is not None and arch != here:  # a cross-build (for images of another platform) fails at exec here
            if choice == "go":
                raise PatternError(
                    f"{ROUTER_ENV}=go but the compiled router {binary} is built for {arch}, and this machine is {here}: "
                    f"build one with {_build_for(here, None)}"
                )
            binary = None
    return {"router": choice, "router_binary": binary} if binary else {}


def platform_architectures(platform: Optional[str]) -> tuple[str, ...]:
    """The CPU architectures of an image platform, `os/arch[/variant]` (`linux/arm64`, `linux/arm/v7`,
    several separated by commas), as GOARCH names them; None is this machine's (the engine's own)."""
    if not platform:
        return (this_machine(),)
    found = []
    for one in platform.split(","):
        parts = one.strip().split("/")
        if len(parts) > 3 or not all(parts):
            raise PatternError(f"an image platform is os/arch[/variant], such as linux/arm64, got {platform!r}")
        if len(parts) == 1:  # as the engine reads it: an OS on this machine's architecture, or an architecture
            found.append(this_machine() if parts[0].lower() in _OSES else goarch(parts[0]))
        else:
            found.append(goarch(parts[1]))
    return tuple(found)


def _build_for(arch: str, platform: Optional[str]) -> str:
    """How to build the router for `arch`: scripts/build-router passes Go's GOARCH (and GOARM) through
    to `go build` and writes into MP_ROUTER_DIR, which METAPARTICLE_ROUTER_BIN then names."""
    variant = (platform or "").split(",")[0].strip().split("/")[2:]
    goarm = f" GOARM={variant[0].lstrip('v')}" if arch == "arm" and variant else ""
    return (
        f"GOARCH={arch}{goarm} MP_ROUTER_DIR=<dir> scripts/build-router, then {ROUTER_BIN_ENV}=<dir>/metaparticle-router"
    )


def image_router(platform: Optional[str] = None) -> Optional[str]:
    """The compiled router to put into images of `platform` (`os/arch[/variant]`, None: this
    machine's): this machine's build, when there is one, statically linked, for the platform's
    architecture and not declined (METAPARTICLE_ROUTER=python); None leaves images with the Python router.

    An image's root filesystem is not this machine's: a binary that needs a dynamic loader may
    find another C library there, or none; one built for another CPU fails at exec.
    METAPARTICLE_ROUTER=go makes its absence an error.
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
    if loader is not None:
        if choice == "go":
            raise PatternError(
                f"{ROUTER_ENV}=go but the compiled router {binary} is not a static executable ({loader}), which an "
                "image cannot run: rebuild it with scripts/build-router (CGO_ENABLED=0)"
            )
        return None
    arch = elf_architecture(binary)
    wanted = platform_architectures(platform)
    if set(wanted) == {arch}:
        return binary
    if choice == "go":
        where = f"platform {platform}" if platform else "this machine's platform"
        how = (
            f"build one with {_build_for(wanted[0], platform)}" if len(set(wanted)) == 1
            else "one binary serves one architecture: build an image per platform"
        )
        raise PatternError(
            f"{ROUTER_ENV}=go but the compiled router {binary} is built for {arch}, and images are built for "
            f"{where} ({', '.join(dict.fromkeys(wanted))}), which cannot run it: {how}"
        )
    return None


def image_router_settings(carried: bool) -> dict[str, str]:
    """The runtime settings of an image's Spread and Shard routers: the compiled router when the
    image carries it (`carried`), else none (the Python router)."""
    return {"router": router_choice(), "router_binary": IMAGE_ROUTER} if carried else {}
