"""The compiled router in images, offline: which binary the build context carries (static only, of
the image platform's architecture, METAPARTICLE_ROUTER=python none), the content tag following it, and the Docker and Kubernetes
routers' RuntimeConfig pointing at the image's copy (container tests run it: test_containers.py)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from metaparticle_pulumi import PatternError, testing
from metaparticle_pulumi._router import (
    IMAGE_ROUTER,
    ROUTER_BIN_ENV,
    ROUTER_ENV,
    image_router,
    platform_architectures,
)
from metaparticle_pulumi._image import write_build_context
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.elf import dynamic_loader, elf_architecture, goarch

from elf_support import EM_386, EM_AARCH64, EM_PPC64, EM_X86_64, FOREIGN, FOREIGN_MACHINE, HOST, elf, elf32
from target_support import copy_program, env_of

#: Where scripts/build-router puts the Go router by default.
BUILT_ROUTER = Path.home() / ".cache" / "metaparticle" / "router" / "metaparticle-router"


@pytest.fixture
def static_router(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    binary = elf(tmp_path / "bin" / "metaparticle-router", payload=b"one")
    monkeypatch.setenv(ROUTER_BIN_ENV, str(binary))
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    return binary


def evaluate(tmp_path: Path, example: str, target: str, config: dict[str, str] | None = None):
    """Evaluates an example for `target`; Kubernetes images default to linux/amd64, so unless
    `config` says otherwise they are built for this machine's architecture, as the fake router is."""
    if config is None:
        config = {"metaparticle:platform": f"linux/{HOST}"} if target == "kubernetes" else {}
    stack = testing.evaluate(copy_program(example, tmp_path), target, config=config)
    (pattern,) = stack.patterns
    return stack, pattern


def test_the_elf_check_tells_a_static_executable_from_one_that_needs_a_loader(tmp_path):
    assert dynamic_loader(str(elf(tmp_path / "static"))) is None
    assert dynamic_loader(str(elf(tmp_path / "dynamic", b"/lib64/ld-linux-x86-64.so.2"))) == "/lib64/ld-linux-x86-64.so.2"
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert dynamic_loader(str(tmp_path / "script")) == "not an ELF executable"


def test_the_elf_architecture_of_this_pythons_executable_is_this_machines():
    assert elf_architecture(sys.executable) == HOST
    if platform.machine() == "x86_64":
        assert HOST == "amd64"


@pytest.mark.skipif(not os.access(BUILT_ROUTER, os.X_OK), reason="scripts/build-router has not built the Go router")
def test_the_built_router_is_a_static_executable_of_this_machine():
    assert elf_architecture(str(BUILT_ROUTER)) == HOST
    assert dynamic_loader(str(BUILT_ROUTER)) is None


def test_the_elf_architecture_comes_from_e_machine_in_either_class_and_byte_order(tmp_path):
    assert elf_architecture(str(elf(tmp_path / "arm64", machine=EM_AARCH64))) == "arm64"
    assert elf_architecture(str(elf(tmp_path / "amd64", machine=EM_X86_64))) == "amd64"
    i386 = elf32(tmp_path / "386")
    assert elf_architecture(str(i386)) == "386"
    assert dynamic_loader(str(i386)) is None  # the 32-bit program headers read too
    assert elf_architecture(str(elf(tmp_path / "ppc64le", machine=EM_PPC64))) == "ppc64le"
    assert elf_architecture(str(elf(tmp_path / "ppc64", machine=EM_PPC64, order=">"))) == "ppc64"
    assert elf_architecture(str(elf(tmp_path / "other", machine=0xBEEF))) == f"ELF machine {0xBEEF}"
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert elf_architecture(str(tmp_path / "script")) is None


def test_an_image_platform_names_its_architecture_as_goarch_does():
    assert platform_architectures("linux/arm64") == ("arm64",)
    assert platform_architectures("linux/arm/v7") == ("arm",)
    assert platform_architectures("linux/x86_64") == ("amd64",)
    assert platform_architectures("linux/amd64,linux/arm64") == ("amd64", "arm64")
    assert platform_architectures(None) == platform_architectures("linux") == (HOST,)
    for bad in ("linux/", "linux/arm/v7/extra", "/arm64"):
        with pytest.raises(PatternError, match="os/arch"):
            platform_architectures(bad)


@pytest.fixture
def arm64_router(tmp_path, monkeypatch):
    binary = elf(tmp_path / "arm64-router", payload=b"arm64", machine=EM_AARCH64)
    monkeypatch.setenv(ROUTER_BIN_ENV, str(binary))
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    return binary


def test_a_router_goes_only_into_images_of_its_architecture(tmp_path, arm64_router, monkeypatch):
    _, pattern = evaluate(tmp_path, "spread", "docker")
    arm64 = write_build_context(pattern.topology, platform="linux/arm64")
    assert arm64.carries_router
    assert (arm64.path / "router/metaparticle-router").read_bytes() == arm64_router.read_bytes()
    amd64 = write_build_context(pattern.topology, platform="linux/amd64")
    assert not amd64.carries_router and not (amd64.path / "router/metaparticle-router").exists()
    assert amd64.digest != arm64.digest
    # Left out, the image is the one without a router (the same content tag).
    monkeypatch.setenv(ROUTER_ENV, "python")
    assert write_build_context(pattern.topology, platform="linux/amd64").digest == amd64.digest
    monkeypatch.setenv(ROUTER_ENV, "auto")
    assert image_router("linux/amd64,linux/arm64") is None  # one binary serves one architecture


def test_go_refuses_a_router_of_another_architecture_and_says_how_to_build_one(tmp_path, arm64_router, monkeypatch):
    monkeypatch.setenv(ROUTER_ENV, "go")
    assert image_router("linux/arm64") == str(arm64_router)
    with pytest.raises(PatternError, match=r"built for arm64.*linux/amd64 \(amd64\).*GOARCH=amd64 MP_ROUTER_DIR=<dir> scripts/build-router"):
        image_router("linux/amd64")
    with pytest.raises(PatternError, match=r"GOARCH=arm GOARM=7 MP_ROUTER_DIR"):
        image_router("linux/arm/v7")
    if HOST != "arm64":
        with pytest.raises(PatternError, match=rf"this machine's platform \({HOST}\)"):
            image_router()


def test_kubernetes_images_follow_the_configured_platform(tmp_path, arm64_router):
    _, pattern = evaluate(tmp_path / "default", "spread", "kubernetes", config={})  # linux/amd64
    assert not pattern.image.context.carries_router
    stack, pattern = evaluate(tmp_path / "arm64", "spread", "kubernetes", config={"metaparticle:platform": "linux/arm64"})
    assert pattern.image.context.carries_router
    (router,) = [d for d in stack.objects(kind="Deployment") if d["metadata"]["name"] == "api-router"]
    env = {k: v for k, v in env_of(router["spec"]["template"]["spec"]["containers"][0]).items() if isinstance(v, str)}
    assert RuntimeConfig.from_env(env).router_binary == IMAGE_ROUTER


def test_a_static_router_goes_into_the_context_and_into_the_tag(tmp_path, static_router, monkeypatch):
    _, pattern = evaluate(tmp_path, "spread", "docker")
    context = write_build_context(pattern.topology)
    assert "router/metaparticle-router" in context.files and context.carries_router
    copied = context.path / "router/metaparticle-router"
    assert copied.read_bytes() == static_router.read_bytes() and os.access(copied, os.X_OK)
    # Another build of the router is another image.
    elf(static_router, payload=b"two")
    rebuilt = write_build_context(pattern.topology)
    assert rebuilt.digest != context.digest
    # METAPARTICLE_ROUTER=python: no router in the image, and the stale copy leaves the context.
    monkeypatch.setenv(ROUTER_ENV, "python")
    declined = write_build_context(pattern.topology)
    assert not declined.carries_router and not copied.exists()
    assert (declined.path / "router").is_dir(), "the Dockerfile copies router/ even when it is empty"
    assert len({context.digest, rebuilt.digest, declined.digest}) == 3


def test_without_a_built_router_images_are_as_before(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where scripts/build-router would have put it
    monkeypatch.delenv(ROUTER_BIN_ENV, raising=False)
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    _, pattern = evaluate(tmp_path, "spread", "docker")
    assert not pattern.image.context.carries_router
    for container in pattern.docker_spec.containers:
        env = dict(e.split("=", 1) for e in container.options.get("environment", []))
        assert RuntimeConfig.env_name("router_binary") not in env
    monkeypatch.setenv(ROUTER_ENV, "go")
    with pytest.raises(PatternError, match="no compiled router is built"):
        image_router()


def test_a_dynamically_linked_router_stays_out_and_go_refuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ROUTER_BIN_ENV, str(elf(tmp_path / "dynamic", b"/lib64/ld-linux-x86-64.so.2")))
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    assert image_router() is None
    monkeypatch.setenv(ROUTER_ENV, "go")
    with pytest.raises(PatternError, match=r"not a static executable \(/lib64/ld-linux-x86-64.so.2\).*CGO_ENABLED=0"):
        image_router()


def test_docker_routers_run_the_images_copy_and_other_roles_do_not(tmp_path, static_router):
    _, pattern = evaluate(tmp_path, "shard", "docker")
    for container in pattern.docker_spec.containers:
        if container.holder:  # the routers' network namespace: runs no role
            continue
        config = RuntimeConfig.from_env(dict(e.split("=", 1) for e in container.options["environment"]))
        if container.role == "users-router":
            assert (config.router, config.router_binary) == ("auto", IMAGE_ROUTER)
        else:
            assert config.router_binary is None, container.name


@pytest.mark.parametrize("choice", ["auto", "go"])
def test_kubernetes_router_pods_run_the_images_copy(tmp_path, static_router, monkeypatch, choice):
    monkeypatch.setenv(ROUTER_ENV, choice)
    stack, _ = evaluate(tmp_path, "spread", "kubernetes")
    for deployment in stack.objects(kind="Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {k: v for k, v in env_of(container).items() if isinstance(v, str)}
        config = RuntimeConfig.from_env(env)
        if deployment["metadata"]["name"] == "api-router":
            assert (config.router, config.router_binary) == (choice, IMAGE_ROUTER)
        else:
            assert config.router_binary is None


def test_python_keeps_kubernetes_routers_on_the_python_runtime(tmp_path, static_router, monkeypatch):
    monkeypatch.setenv(ROUTER_ENV, "python")
    stack, _ = evaluate(tmp_path, "spread", "kubernetes")
    for deployment in stack.objects(kind="Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        config = RuntimeConfig.from_env({k: v for k, v in env_of(container).items() if isinstance(v, str)})
        assert config.router_binary is None


def test_the_runtimes_router_variables_are_not_the_users_to_set(tmp_path, static_router):
    program = copy_program("spread", tmp_path)
    source = (program / "__main__.py").read_text()
    assert "function=handler," in source
    env = f"env={{{RuntimeConfig.env_name('router')!r}: 'python'}}"
    (program / "__main__.py").write_text(source.replace("function=handler,", f"function=handler, {env},", 1))
    with pytest.raises(Exception, match="is set by metaparticle"):
        testing.evaluate(program, "docker")


# -- local processes: they run the binary on this machine ------------------------------------------


@pytest.fixture
def foreign_router(tmp_path, monkeypatch):
    """A router built for an architecture other than this machine's (a cross-build meant for images)."""
    binary = elf(tmp_path / f"{FOREIGN}-router", payload=FOREIGN.encode(), machine=FOREIGN_MACHINE)
    monkeypatch.setenv(ROUTER_BIN_ENV, str(binary))
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    return binary, FOREIGN


def _local_router(tmp_path: Path, example: str) -> RuntimeConfig:
    stack = testing.evaluate(copy_program(example, tmp_path), "local")
    (pattern,) = stack.patterns
    return next(s.config for s in pattern.local_plan.processes(str(tmp_path)) if s.role.endswith("-router"))


def test_local_routers_run_a_compiled_router_of_this_machines_architecture(tmp_path, static_router):
    config = _local_router(tmp_path, "spread")
    assert (config.router, config.router_binary) == ("auto", str(static_router))


def test_local_routers_leave_a_router_of_another_architecture_to_python(tmp_path, foreign_router):
    config = _local_router(tmp_path, "shard")
    assert config.router_binary is None  # not exec'd only to fail: the Python router serves


def test_go_refuses_to_run_a_router_of_another_architecture_locally_and_says_how_to_build_one(
    tmp_path, foreign_router, monkeypatch
):
    binary, arch = foreign_router
    monkeypatch.setenv(ROUTER_ENV, "go")
    with pytest.raises(PatternError, match=rf"{binary} is built for {arch}, and this machine is {HOST}: build one with GOARCH={HOST} "):
        _local_router(tmp_path, "spread")
