"""The image build: the context written from a program (deterministic, .dockerignore respected, only
runtime requirements) and the Dockerfile it is built with."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

import metaparticle_pulumi as mp
import metaparticle_runtime
from metaparticle_pulumi import testing
from metaparticle_pulumi import _image as image_module
from metaparticle_pulumi._image import DockerIgnore, base_image, build_args, dockerfile_text, runtime_pins, write_build_context

from target_support import REPO, copy_program, write_program

RUNTIME = Path(metaparticle_runtime.__file__).resolve().parent


def topology_of(program: Path, target: str = "kubernetes"):
    stack = testing.evaluate(program, target)
    (pattern,) = stack.patterns
    return stack, pattern.topology


def test_the_dockerfile_runs_the_runtime_as_a_non_root_user_on_python_slim():
    text = dockerfile_text()
    assert text == (REPO / "runtime" / "Dockerfile").read_text()
    assert "ARG PYTHON_VERSION=3.11\nARG BASE_IMAGE=python:${PYTHON_VERSION}-slim\nFROM ${BASE_IMAGE}\n" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert 'CMD ["python", "-m", "metaparticle_runtime"]' in text
    # Only the lock's exact versions (no resolver), checked complete; the program's requirements
    # are constrained by the same pins.
    install = text.split("RUN pip install", 1)[1].split("&&", 1)[0]
    assert "--no-deps -r /opt/metaparticle/runtime-requirements.txt" in install
    assert re.findall(r'"([a-z-]+)[<>=!~]', install) == ["cloudpickle"]
    assert "&& pip check" in text
    assert "-c /opt/metaparticle/runtime-requirements.txt" in text
    labels = text.split("LABEL", 1)[1]
    assert labels.index("CMD") > labels.index("io.metaparticle.runtime.requirements"), "labels come after every cached step"
    assert "COPY runtime/ /opt/metaparticle/" in text
    assert "COPY functions/ /app/.metaparticle/functions/" in text


def test_the_image_is_built_for_the_deploying_python_and_cloudpickle(tmp_path, monkeypatch):
    monkeypatch.delenv(image_module.BASE_IMAGE_ENV, raising=False)
    stack, topology = topology_of(copy_program("spread", tmp_path))
    (image,) = stack.resources(type="docker:index/image:Image")
    build = image.inputs["build"]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert build["args"] == {
        "PYTHON_VERSION": python,
        "CLOUDPICKLE_VERSION": cloudpickle.__version__,
        "BASE_IMAGE": f"python:{python}-slim",
        "BASE_NAME": f"python:{python}-slim",
        "BASE_DIGEST": "",
        "RUNTIME_REQUIREMENTS": " ".join(sorted((*runtime_pins(), f"cloudpickle=={cloudpickle.__version__}"), key=str.lower)),
    }
    assert build["context"] == ".metaparticle/build/api"  # relative: state does not depend on the checkout
    assert build["dockerfile"] == ".metaparticle/build/api/Dockerfile"
    context = write_build_context(topology)
    assert image.inputs["imageName"] == f"spread-api:{context.tag}"


def test_the_context_holds_the_runtime_the_program_and_the_by_value_functions(tmp_path):
    _, topology = topology_of(copy_program("shard", tmp_path))
    context = write_build_context(topology)
    files = set(context.files)
    runtime_files = {f"runtime/metaparticle_runtime/{p.relative_to(RUNTIME).as_posix()}" for p in RUNTIME.rglob("*.py") if "__pycache__" not in p.parts}
    assert runtime_files <= files
    assert (context.path / "runtime/metaparticle_runtime/__main__.py").read_bytes() == (RUNTIME / "__main__.py").read_bytes()
    assert {"Dockerfile", "requirements.txt", "app/__main__.py", "app/Pulumi.yaml"} <= files
    (key_file,) = [f for f in files if f.startswith("functions/key-")]
    (handler_file,) = [f for f in files if f.startswith("functions/function-")]
    key = pickle.loads((context.path / key_file).read_bytes())
    assert key({"user": "bob"}) == "bob"
    assert pickle.loads((context.path / handler_file).read_bytes()).__name__ == "handler"


def test_the_same_program_gives_the_same_context_and_tag(tmp_path):
    program = copy_program("scatter_gather", tmp_path)
    _, topology = topology_of(program)
    first = write_build_context(topology)
    snapshot = {f: (first.path / f).read_bytes() for f in first.files}
    mtimes = {f: (first.path / f).stat().st_mtime_ns for f in first.files}
    again = write_build_context(topology)
    elsewhere = write_build_context(topology, tmp_path / "elsewhere")
    assert again.digest == first.digest == elsewhere.digest
    assert {f: (elsewhere.path / f).read_bytes() for f in elsewhere.files} == snapshot
    assert {f: (first.path / f).stat().st_mtime_ns for f in first.files} == mtimes, "unchanged files are not rewritten"
    (program / "search.py").write_text((program / "search.py").read_text() + "\n# changed\n")
    assert write_build_context(topology).digest != first.digest


def test_stale_files_leave_the_context(tmp_path):
    program = copy_program("hello_world", tmp_path)
    (program / "old.py").write_text("x = 1\n")
    _, topology = topology_of(program)
    context = write_build_context(topology)
    assert (context.path / "app/old.py").exists()
    (program / "old.py").unlink()
    context = write_build_context(topology)
    assert not (context.path / "app/old.py").exists()
    assert "app/old.py" not in context.files


def test_the_programs_dockerignore_and_private_files_stay_out(tmp_path):
    program = write_program(
        tmp_path / "app",
        "import metaparticle_pulumi as mp\nfrom handlers import handle\nmp.Service('svc', function=handle)\n",
        files={
            "handlers.py": "def handle(request):\n    return request\n",
            ".dockerignore": "# big data\ndata/\n*.log\n!keep.log\n/secret.txt\n",
            "data/huge.bin": "x",
            "debug.log": "x",
            "keep.log": "kept",
            "secret.txt": "x",
            "sub/secret.txt": "not at the root: kept",
            ".env": "TOKEN=x",
            ".venv/lib/site.py": "x",
            ".git/config": "x",
            "Pulumi.dev.yaml": "config: {}",
            "__pycache__/handlers.cpython-311.pyc": "x",
        },
    )
    _, topology = topology_of(program)
    app = {f[len("app/"):] for f in write_build_context(topology).files if f.startswith("app/")}
    assert app == {"Pulumi.yaml", "__main__.py", "handlers.py", ".dockerignore", "keep.log", "sub/secret.txt"}


@pytest.mark.parametrize(
    "rules, path, ignored",
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/README.md", False),
        (["**/*.md"], "docs/deep/README.md", True),
        (["docs"], "docs/a/b.txt", True),
        (["docs", "!docs/keep.txt"], "docs/keep.txt", False),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[!x]y"], "zy", True),
        (["[!x]y"], "xy", False),
    ],
)
def test_dockerignore_rules_follow_docker(rules, path, ignored):
    assert DockerIgnore(rules).ignored(path) is ignored


def test_only_the_programs_runtime_requirements_are_installed(tmp_path):
    program = write_program(
        tmp_path / "app",
        "import metaparticle_pulumi as mp\nmp.Service('svc', function=lambda r: r)\n",
        files={
            "requirements.txt": "pulumi>=3.0,<4\npulumi-kubernetes>=4\nmetaparticle-pulumi\n-e ../..\n"
            "requests==2.32.3  # for the handler\nnumpy>=2; python_version>'3.10'\n\n",
        },
    )
    _, topology = topology_of(program)
    context = write_build_context(topology)
    assert (context.path / "requirements.txt").read_text() == "requests==2.32.3\nnumpy>=2; python_version>'3.10'\n"


def test_without_requirements_the_file_is_empty_and_nothing_is_installed(tmp_path):
    _, topology = topology_of(copy_program("hello_world", tmp_path))
    assert (write_build_context(topology).path / "requirements.txt").read_bytes() == b""
    assert "if [ -s /opt/metaparticle/requirements.txt ]" in dockerfile_text()


def test_skip_push_and_platform_come_from_args_and_config():
    def handler(request):
        return request

    with testing.mocked(config={"metaparticle:registry": "ghcr.io/me", "metaparticle:platform": "linux/arm64"}) as stack:
        mp.Service("svc", function=handler, skip_push=True)
    (image,) = stack.resources(type="docker:index/image:Image")
    assert image.inputs["skipPush"] is True
    assert image.inputs["build"]["platform"] == "linux/arm64"
    assert image.inputs["imageName"].startswith("ghcr.io/me/test-svc:")


def test_a_by_value_function_using_mp_loads_where_only_the_runtime_is_installed(tmp_path):
    program = write_program(
        tmp_path / "app",
        "import metaparticle_pulumi as mp\n"
        "def handler(request):\n"
        "    if not request:\n"
        "        raise mp.BadRequest('empty request')\n"
        "    return {'ok': request}\n"
        "mp.Service('svc', function=handler)\n",
    )
    _, topology = topology_of(program)
    context = write_build_context(topology)
    (fn_file,) = [f for f in context.files if f.startswith("functions/")]
    script = (
        "import pickle, sys\n"
        "fn = pickle.load(open(sys.argv[1], 'rb'))\n"
        "import metaparticle_pulumi\n"
        "assert not hasattr(metaparticle_pulumi, 'Spread'), 'the deploy-side package was loaded'\n"
        "assert fn(1) == {'ok': 1}\n"
        "try:\n"
        "    fn(0)\n"
        "except metaparticle_pulumi.BadRequest as exc:\n"
        "    print('bad request:', exc)\n"
    )
    env = {"PYTHONPATH": str(context.path / "runtime"), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(context.path / fn_file)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "bad request: empty request" in done.stdout


HANDLED = "import metaparticle_pulumi as mp\nfrom handlers import handle\nmp.Service('svc', function=handle)\n"


def test_keys_and_credentials_stay_out_unless_the_dockerignore_brings_one_back(tmp_path):
    program = write_program(
        tmp_path / "app",
        HANDLED,
        files={
            "handlers.py": "def handle(request):\n    return request\n",
            "tls/cert.pem": "x",
            "tls/key.pem": "x",
            "server.key": "x",
            "id_ed25519": "x",
            ".ssh/config": "x",
            ".aws/credentials": "x",
            ".npmrc": "x",
            ".pypirc": "x",
            ".netrc": "x",
            "public/ca.pem": "meant to ship",
            ".dockerignore": "!public/ca.pem\n",
        },
    )
    _, topology = topology_of(program)
    app = {f[len("app/"):] for f in write_build_context(topology).files if f.startswith("app/")}
    assert app == {"Pulumi.yaml", "__main__.py", "handlers.py", ".dockerignore", "public/ca.pem"}


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_symlink_out_of_the_program_is_refused_by_name(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    program = write_program(tmp_path / "app", HANDLED, files={"handlers.py": "def handle(request):\n    return request\n"})
    link = program / "linked"
    link.symlink_to(outside / "secret.txt" if kind == "file" else outside)
    with pytest.raises(mp.Error, match=r"linked in the program directory links to .*outside.*, outside it"):
        testing.evaluate(program, "kubernetes")


def test_a_symlink_inside_the_program_is_followed(tmp_path):
    program = write_program(tmp_path / "app", HANDLED, files={"handlers.py": "def handle(request):\n    return request\n", "data/a.txt": "a"})
    (program / "alias.txt").symlink_to(program / "data" / "a.txt")
    _, topology = topology_of(program)
    context = write_build_context(topology)
    assert "app/alias.txt" in context.files
    assert (context.path / "app" / "alias.txt").read_text() == "a"


def test_a_main_outside_the_project_is_refused(tmp_path):
    elsewhere = write_program(tmp_path / "elsewhere", HANDLED, files={"handlers.py": "def handle(request):\n    return request\n"})
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(f"name: p\nruntime: python\nmain: ../{elsewhere.name}/\n")
    with pytest.raises(mp.Error, match="lies outside the project directory"):
        testing.evaluate(project, "kubernetes")


# --- pinned dependencies and base image -------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def test_the_runtime_lock_pins_every_dependency_exactly_within_the_supported_ranges():
    """Every runtime dependency of pyproject.toml is pinned inside its range, and so is everything
    those need (as this interpreter's installed metadata says), so `pip --no-deps` installs a whole set."""
    from importlib.metadata import requires
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")

    pins = {Requirement(p).name.lower().replace("_", "-"): Requirement(p) for p in runtime_pins()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    serving = pyproject[pyproject.index("grpcio>=1.66"):]  # the runtime's part, as pyproject says
    for spec in map(Requirement, serving):
        (version,) = [s.version for s in pins[spec.name.lower().replace("_", "-")].specifier]
        assert spec.specifier.contains(version), f"{spec.name}=={version} is outside pyproject's {spec}"
    for name, pin in pins.items():
        for needed in map(Requirement, requires(name) or []):
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                key = needed.name.lower().replace("_", "-")
                assert key in pins or key == "cloudpickle", f"{name} needs {needed.name}, which the lock does not pin"
                (version,) = [s.version for s in pins[key].specifier]
                assert needed.specifier.contains(version), f"{name} needs {needed}, the lock pins {version}"


def test_a_lock_line_that_is_not_an_exact_pin_is_refused():
    assert runtime_pins("# c\ngrpcio==1.2.3  # why\n\naiohttp==3.0\n") == ("aiohttp==3.0", "grpcio==1.2.3")
    with pytest.raises(mp.Error, match=r"requirements.txt:2: .*exact pins.*'aiohttp>=3'"):
        runtime_pins("grpcio==1.2.3\naiohttp>=3\n")


def test_the_content_tag_changes_with_the_pinned_versions(tmp_path, monkeypatch):
    """Another pinned version is another image: the lock is in the context and its pins in a label."""
    _, topology = topology_of(copy_program("hello_world", tmp_path))
    before = write_build_context(topology)
    assert (before.path / "runtime-requirements.txt").read_bytes() == image_module.RUNTIME_LOCK.read_bytes()
    lock = tmp_path / "requirements.txt"
    lock.write_text(image_module.RUNTIME_LOCK.read_text().replace("grpcio==", "grpcio==0.0.0.dev0+"))
    monkeypatch.setattr(image_module, "RUNTIME_LOCK", lock)
    assert "grpcio==0.0.0.dev0+" in build_args()["RUNTIME_REQUIREMENTS"]
    after = write_build_context(topology)
    assert after.tag != before.tag
    assert "runtime/metaparticle_runtime/requirements.txt" not in after.files  # built from, not run


def test_the_content_tag_changes_with_the_base_image_digest(tmp_path, monkeypatch):
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    monkeypatch.delenv(image_module.BASE_IMAGE_ENV, raising=False)
    _, topology = topology_of(copy_program("hello_world", tmp_path))
    unpinned = write_build_context(topology).tag
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, f"python:{python}-slim@{DIGEST}")
    args = build_args()
    assert (args["BASE_IMAGE"], args["BASE_NAME"], args["BASE_DIGEST"]) == (f"python:{python}-slim@{DIGEST}", f"python:{python}-slim", DIGEST)
    pinned = write_build_context(topology).tag
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, f"python:{python}-slim@sha256:{'cd' * 32}")
    repinned = write_build_context(topology).tag
    assert len({unpinned, pinned, repinned}) == 3
    # The pin is for the deploying Python's images; one for another Python names its own base.
    assert build_args("3.99")["BASE_IMAGE"] == "python:3.99-slim" and build_args("3.99")["BASE_DIGEST"] == ""


@pytest.mark.parametrize("value", ["python:3.11-slim@sha256:abc", "python 3.11", "python:3.11-slim@md5:" + "0" * 64, "-x"])
def test_a_malformed_base_image_pin_is_refused(monkeypatch, value):
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, value)
    with pytest.raises(mp.Error, match="METAPARTICLE_BASE_IMAGE must be an image reference"):
        base_image()


def test_a_base_image_pin_for_another_python_is_refused(monkeypatch):
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, f"docker.io/library/python:3.2-slim@{DIGEST}")
    with pytest.raises(mp.Error, match=r"names docker.io/library/python:3.2-slim, but images are built for Python 3\.\d+"):
        base_image()
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, f"registry.example/base:1@{DIGEST}")  # the user's own base
    assert base_image() == image_module.BaseImage("registry.example/base:1", DIGEST)
