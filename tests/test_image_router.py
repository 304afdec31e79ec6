"""The compiled router in images, offline: which binary the build context carries (static only,
METAPARTICLE_ROUTER=python none), the content tag following it, and the Docker and Kubernetes
routers' RuntimeConfig pointing at the image's copy (container tests run it: test_containers.py)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from metaparticle_pulumi import PatternError, testing
from metaparticle_pulumi._router import IMAGE_ROUTER, ROUTER_BIN_ENV, ROUTER_ENV, dynamic_loader, image_router
from metaparticle_pulumi._image import write_build_context
from metaparticle_runtime.config import RuntimeConfig

from target_support import copy_program, env_of

_PT_LOAD, _PT_INTERP = 1, 3


def elf(path: Path, interpreter: bytes | None = None, payload: bytes = b"") -> Path:
    """A 64-bit little-endian ELF executable's headers: a PT_LOAD segment, plus a PT_INTERP naming
    `interpreter` when given (what a dynamically linked program has), then `payload`."""
    headers = [(_PT_LOAD, 0, 0)]
    data_at = 64 + 56 * 2
    if interpreter is not None:
        headers.insert(0, (_PT_INTERP, data_at, len(interpreter) + 1))
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 64, 0, 0, 64, 56, len(headers), 64, 0, 0)
    table = b"".join(struct.pack("<IIQQQQQQ", kind, 5, offset, 0, 0, size, size, 0x1000) for kind, offset, size in headers)
    body = header + table
    body += bytes(data_at - len(body)) + (interpreter + b"\0" if interpreter is not None else b"") + payload
    path.write_bytes(body)
    path.chmod(0o755)
    return path


@pytest.fixture
def static_router(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    binary = elf(tmp_path / "bin" / "metaparticle-router", payload=b"one")
    monkeypatch.setenv(ROUTER_BIN_ENV, str(binary))
    monkeypatch.delenv(ROUTER_ENV, raising=False)
    return binary


def evaluate(tmp_path: Path, example: str, target: str):
    stack = testing.evaluate(copy_program(example, tmp_path), target)
    (pattern,) = stack.patterns
    return stack, pattern


def test_the_elf_check_tells_a_static_executable_from_one_that_needs_a_loader(tmp_path):
    assert dynamic_loader(str(elf(tmp_path / "static"))) is None
    assert dynamic_loader(str(elf(tmp_path / "dynamic", b"/lib64/ld-linux-x86-64.so.2"))) == "/lib64/ld-linux-x86-64.so.2"
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert dynamic_loader(str(tmp_path / "script")) == "not an ELF executable"


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
