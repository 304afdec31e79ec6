"""The image a pattern's containers run: the shared runtime plus the program's code and functions.

`write_build_context` lays out a Docker build context (deterministically: the same program gives
the same files and the same content tag) under `<program>/.metaparticle/build/<pattern>/`, and
`container_image` builds it with `pulumi_docker.Image`, pushes it to the registry (or not), and
gives the reference the workloads use: the pushed digest, else the content-tagged name.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import cloudpickle
import pulumi

import metaparticle_runtime

from ._errors import PatternError
from ._functions import FunctionSpec
from ._router import CONTEXT_ROUTER, image_router, image_router_settings, router_choice
from ._topology import Topology, dns_name

if TYPE_CHECKING:
    from ._patterns import PatternArgs, _Pattern

#: Where the program's directory lies in the image (MP_SOURCE_DIR).
APP_DIR = "/app"
#: Where by-value functions lie in the image.
FUNCTIONS_DIR = f"{APP_DIR}/.metaparticle/functions"
#: The non-root user and group the image runs as.
RUN_AS = 10001
#: Where build contexts are written, relative to the program's directory.
BUILD_DIR = Path(".metaparticle") / "build"
#: Config key choosing who builds a pattern's image: "pulumi" (a `pulumi_docker.Image` child, built
#: and pushed by `pulumi up`) or "external" (no image resource: workloads reference the content-tagged
#: name, built beforehand by `metaparticle build`).
IMAGE_BUILD_KEY = "imageBuild"
IMAGE_BUILDERS = ("pulumi", "external")
#: Platform images are built for unless config `metaparticle:platform` says otherwise.
DEFAULT_PLATFORM = "linux/amd64"

#: Never copied from the program into the image unless its .dockerignore brings them back (`!name`):
#: tooling, caches, virtualenvs, stack settings, and keys and credentials (a pushed image is public
#: to whoever can pull it).
ALWAYS_IGNORED = (
    ".git", ".hg", ".svn", ".metaparticle", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache",
    ".mypy_cache", ".ruff_cache", ".hypothesis", ".env", "Pulumi.*.yaml", "node_modules",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "id_rsa*", "id_ecdsa*", "id_ed25519*", ".ssh", ".aws",
    ".azure", ".gcloud", ".gnupg", ".kube", ".docker", ".npmrc", ".pypirc", ".netrc", ".git-credentials",
)
#: Requirements only the deploying side needs (they are not installed into the image).
DEPLOY_ONLY = re.compile(r"^(pulumi([-_].*)?|metaparticle[-_]pulumi)$", re.IGNORECASE)

_RUNTIME_DIR = Path(metaparticle_runtime.__file__).resolve().parent
# runtime/Dockerfile in a checkout; the package's copy of it (package data) in an installed wheel.
_DOCKERFILE = next(
    (p for p in (_RUNTIME_DIR.parent / "Dockerfile", _RUNTIME_DIR / "Dockerfile") if p.is_file()),
    _RUNTIME_DIR.parent / "Dockerfile",
)

#: The image has no Pulumi: a function shipped by value that refers to `metaparticle_pulumi`
#: (`mp.BadRequest`) unpickles against this stand-in, which holds what runs inside a replica.
RUNTIME_SHIM = b'''"""metaparticle_pulumi inside an image: what a function uses at run time (no Pulumi here)."""

from metaparticle_runtime.client import Client
from metaparticle_runtime.context import Context
from metaparticle_runtime.errors import BadRequest, CallError, Error
from metaparticle_runtime.storage import remove_durably, write_durably

__all__ = ["BadRequest", "CallError", "Client", "Context", "Error", "remove_durably", "write_durably"]
'''


def function_path(spec: Optional[FunctionSpec]) -> Optional[str]:
    """Where a by-value function's file lies in the image (None for by-reference functions)."""
    if spec is None or not spec.by_value:
        return None
    return f"{FUNCTIONS_DIR}/{spec.file_name}"


#: The runtime's dependencies at exact versions (runtime/requirements.txt; package data in a wheel).
RUNTIME_LOCK = _RUNTIME_DIR / "requirements.txt"
#: Environment variable pinning the base image of the deploying Python's images by digest,
#: `python:3.11-slim@sha256:<digest>` (scripts/container-engine prints the one its engine holds).
BASE_IMAGE_ENV = "METAPARTICLE_BASE_IMAGE"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9._-](@sha256:[0-9a-f]{64})?$", re.IGNORECASE)


@dataclass(frozen=True)
class BaseImage:
    """The image the runtime's image starts FROM: a name, and its digest when one is pinned."""

    name: str
    digest: str = ""

    @property
    def reference(self) -> str:
        """What FROM uses: `name@digest` when pinned, else the name (whatever it points to then)."""
        return f"{self.name}@{self.digest}" if self.digest else self.name


def deploying_python() -> str:
    """The deploying Python's minor version (`3.11`): by-value functions load only there."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def base_image(python: Optional[str] = None) -> BaseImage:
    """The base image for `python` (default: the deploying Python's minor version).

    `python:<minor>-slim`, pinned by digest when METAPARTICLE_BASE_IMAGE gives a reference for the
    deploying Python (`python:3.11-slim@sha256:...`); an image for another Python stays unpinned.
    """
    python = python or deploying_python()
    pinned = os.environ.get(BASE_IMAGE_ENV, "").strip()
    if not pinned or python != deploying_python():
        return BaseImage(f"python:{python}-slim")
    if not _REFERENCE.match(pinned):
        raise PatternError(
            f"{BASE_IMAGE_ENV} must be an image reference such as python:{python}-slim@sha256:<64 hex digits>, got {pinned!r}"
        )
    name, _, digest = pinned.partition("@")
    named = re.search(r"(?:^|/)python:(\d+\.\d+)\b", name)
    if named and named.group(1) != python:
        raise PatternError(f"{BASE_IMAGE_ENV} names {name}, but images are built for Python {python} (the deploying one)")
    return BaseImage(name, digest)


def runtime_pins(text: Optional[str] = None) -> tuple[str, ...]:
    """The runtime's pinned requirements (`name==version`, sorted) from its lock file (or `text`).

    Anything but an exact pin is an error: a range would let two builds of one tag differ.
    """
    if text is None:
        text = RUNTIME_LOCK.read_text()
    pins = []
    for number, line in enumerate(text.splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        if not _PIN.match(spec):
            raise PatternError(f"{RUNTIME_LOCK}:{number}: the runtime's requirements are exact pins (name==version), got {spec!r}")
        pins.append(spec)
    return tuple(sorted(pins, key=str.lower))


def build_args(python: Optional[str] = None) -> dict[str, str]:
    """The Dockerfile's build args for an image of `python` (default: the deploying Python's minor
    version, where by-value functions load): the base image, the deploying cloudpickle version, and
    what the labels record (the base's name and digest, every pinned runtime dependency)."""
    python = python or deploying_python()
    base = base_image(python)
    pins = (*runtime_pins(), f"cloudpickle=={cloudpickle.__version__}")
    return {
        "PYTHON_VERSION": python,
        "CLOUDPICKLE_VERSION": cloudpickle.__version__,
        "BASE_IMAGE": base.reference,
        "BASE_NAME": base.name,
        "BASE_DIGEST": base.digest,
        "RUNTIME_REQUIREMENTS": " ".join(sorted(pins, key=str.lower)),
    }


#: Directories of every build context: by-value functions, and the compiled router when it is built.
_ALWAYS_DIRS = ("functions", "router")
#: Package data that builds the image rather than running in it.
_BUILD_FILES = ("Dockerfile", "requirements.txt")


def dockerfile_text() -> str:
    """The runtime's Dockerfile (runtime/Dockerfile)."""
    if not _DOCKERFILE.is_file():
        raise FileNotFoundError(f"the runtime's Dockerfile is missing: {_DOCKERFILE}")
    return _DOCKERFILE.read_text()


# --- .dockerignore --------------------------------------------------------------------------


class DockerIgnore:
    """The rules of a .dockerignore file, matched by the `docker` package's own matcher: the last
    rule that matches a path (or one of its parents) decides, `!` rules bring paths back."""

    def __init__(self, lines: Iterable[str]) -> None:
        from docker.utils.build import PatternMatcher  # the docker SDK loads only when an image is built

        rules = [line.strip() for line in lines]
        self.rules = [r for r in rules if r and not r.startswith("#")]
        self._matcher = PatternMatcher(list(self.rules))
        #: Whether a rule brings paths back (ignored directories must then still be walked).
        self.negates = any(r.startswith("!") for r in self.rules)

    @classmethod
    def for_directory(cls, directory: Path) -> "DockerIgnore":
        file = directory / ".dockerignore"
        user = file.read_text().splitlines() if file.is_file() else []
        defaults = [p for name in ALWAYS_IGNORED for p in (name, f"**/{name}")]
        return cls([*defaults, *user])

    def ignored(self, rel: str) -> bool:
        return bool(self._matcher.matches(rel))


# --- build context --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """A written build context."""

    path: Path
    dockerfile: Path
    #: Relative paths of every file, sorted.
    files: tuple[str, ...]
    #: Content hash of the whole context (paths, modes and bytes): the image's tag.
    digest: str

    @property
    def tag(self) -> str:
        return self.digest[:16]

    @property
    def carries_router(self) -> bool:
        """Whether the image holds the compiled router (a static build of scripts/build-router)."""
        return CONTEXT_ROUTER in self.files

    def summary(self) -> str:
        """How many files and bytes go into the image, and how many of them are the program's own."""
        def size(files: list[str]) -> int:
            return sum((self.path / f).stat().st_size for f in files)

        own = [f for f in self.files if f.startswith(f"{APP_DIR.strip('/')}/")]
        return f"{len(self.files)} files, {size(list(self.files))} bytes (the program's own: {len(own)} files, {size(own)} bytes)"


def _program_files(source: Path) -> dict[str, Path]:
    """The program's files that go into the image, by path relative to `source`.

    A symlink is followed only while it stays inside the program: one that leads out of it (to a
    key, a home directory) is an error naming it, never copied.
    """
    ignore = DockerIgnore.for_directory(source)
    root_dir = source.resolve()
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(source):
        rel_root = Path(root).relative_to(source).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        # Prune ignored directories unless a later rule could bring a file inside them back.
        if not ignore.negates:
            dirs[:] = [d for d in dirs if not ignore.ignored(rel_root + d)]
        for name in dirs:
            path = Path(root) / name
            if path.is_symlink() and not ignore.ignored(rel_root + name):
                _check_inside(path, rel_root + name, root_dir)
        dirs.sort()
        for name in sorted(files):
            rel = rel_root + name
            path = Path(root) / name
            if ignore.ignored(rel):
                continue
            if path.is_symlink():
                _check_inside(path, rel, root_dir)
            if path.is_file():
                found[rel] = path
    return found


def _check_inside(path: Path, rel: str, root_dir: Path) -> None:
    target = path.resolve()
    if target != root_dir and root_dir not in target.parents:
        raise PatternError(
            f"{rel} in the program directory links to {target}, outside it: the image would carry that file; "
            "copy what the program needs into its directory, or add the link to .dockerignore"
        )


def _requirements(source: Path) -> bytes:
    """The program's requirements.txt without deploy-only packages and local paths."""
    file = source / "requirements.txt"
    if not file.is_file():
        return b""
    kept = []
    for line in file.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        if spec.startswith(("-e", "--editable", ".", "/", "file:")):
            continue
        name = re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0]
        if DEPLOY_ONLY.match(name):
            continue
        kept.append(spec)
    return ("\n".join(kept) + "\n").encode() if kept else b""


def build_files(topology: Topology, *, platform: Optional[str] = None) -> dict[str, bytes | Path]:
    """Every file of the build context of an image for `platform` (`os/arch[/variant]`, None: this
    machine's, which decides whether the compiled router fits it): relative path -> bytes, or the file to copy."""
    source = Path(topology.source_dir).resolve()
    files: dict[str, bytes | Path] = {
        "Dockerfile": dockerfile_text().encode(),
        "runtime-requirements.txt": RUNTIME_LOCK.read_bytes(),
        "requirements.txt": _requirements(source),
    }
    for path in sorted(_RUNTIME_DIR.rglob("*")):
        rel = path.relative_to(_RUNTIME_DIR).as_posix()
        if path.is_file() and "__pycache__" not in rel.split("/") and path.suffix != ".pyc" and rel not in _BUILD_FILES:
            files[f"runtime/metaparticle_runtime/{rel}"] = path
    files["runtime/metaparticle_pulumi/__init__.py"] = RUNTIME_SHIM
    for rel, path in _program_files(source).items():
        files[f"app/{rel}"] = path
    for role in topology.roles:
        if role.function is not None and role.function.by_value:
            files[f"functions/{role.function.file_name}"] = role.function.pickled or b""
    router = image_router(platform)
    if router is not None:
        files[CONTEXT_ROUTER] = Path(router)
    return files


def _content(item: bytes | Path) -> bytes:
    return item if isinstance(item, bytes) else item.read_bytes()


def _mode(item: bytes | Path) -> int:
    if isinstance(item, Path) and os.stat(item).st_mode & stat.S_IXUSR:
        return 0o755
    return 0o644


def write_build_context(
    topology: Topology, directory: str | os.PathLike[str] | None = None, *, platform: Optional[str] = None
) -> BuildContext:
    """Writes the build context of `topology` (default `<program>/.metaparticle/build/<name>`) for an
    image of `platform` (None: this machine's).

    Files are rewritten only when their bytes change and stale files are removed, so an unchanged
    program leaves the context (and its digest, the image tag) exactly as it was.
    """
    source = Path(topology.source_dir).resolve()
    out = Path(directory) if directory is not None else source / BUILD_DIR / dns_name(topology.name)
    files = build_files(topology, platform=platform)
    out.mkdir(parents=True, exist_ok=True)
    for always in _ALWAYS_DIRS:  # the Dockerfile copies them, empty or not
        (out / always).mkdir(exist_ok=True)
    digest = hashlib.sha256()
    # The tag names the image, not just the files: another Python or cloudpickle is another image.
    for key, value in sorted(build_args().items()):
        digest.update(f"ARG {key}={value}\0".encode())
    for rel in sorted(files):
        data = _content(files[rel])
        mode = _mode(files[rel])
        digest.update(f"{rel}\0{mode:o}\0{len(data)}\0".encode())
        digest.update(data)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        if stat.S_IMODE(target.stat().st_mode) != mode:
            target.chmod(mode)
    keep = set(files)
    for path in sorted(out.rglob("*"), reverse=True):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and rel not in _ALWAYS_DIRS and not any(path.iterdir()):
            path.rmdir()
    return BuildContext(out, out / "Dockerfile", tuple(sorted(files)), digest.hexdigest())


# --- the image resource ---------------------------------------------------------------------


@dataclass
class ContainerImage:
    """The image of one pattern."""

    #: `repository:tag` (the tag is the build context's content hash, or the user's image).
    name: pulumi.Input[str]
    #: What workloads reference: the pushed digest, else `name`.
    ref: pulumi.Output[str]
    #: The `docker.Image` child (None for a prebuilt image).
    resource: Optional[pulumi.CustomResource] = None
    context: Optional[BuildContext] = None

    @property
    def router(self) -> dict[str, str]:
        """The RuntimeConfig settings of its Spread and Shard routers: the compiled router when the
        image carries it; for a prebuilt image only when METAPARTICLE_ROUTER=go says it does."""
        if self.context is not None:
            return image_router_settings(self.context.carries_router)
        return image_router_settings(router_choice() == "go")


def image_repository(topology: Topology, registry: Optional[str]) -> str:
    """`<registry>/<project>-<pattern>` (no registry: a name in the local image store)."""
    repo = dns_name(f"{pulumi.get_project()}-{dns_name(topology.name)}")
    return f"{registry.rstrip('/')}/{repo}" if registry else repo


def image_platform(default_platform: Optional[str]) -> Optional[str]:
    """The platform a pattern's images are built for: config `metaparticle:platform`, else the
    target's default (None: the engine's own). It also decides which compiled router fits them."""
    from ._targets._shared import config

    return config().get("platform") or default_platform


def container_image(
    component: "_Pattern",
    topology: Topology,
    args: "PatternArgs",
    *,
    default_platform: Optional[str] = DEFAULT_PLATFORM,
    by_name: bool = False,
    local: bool = False,
) -> ContainerImage:
    """The image of a pattern: `args.image` as given, else the program built on the runtime image.

    Registry: `args.registry`, else config `metaparticle:registry`; without one the image is not
    pushed (a local cluster or the local Docker). `by_name` references the image by its tag, not
    its digest (rendering manifests offline, where nothing is pushed); `local` by the name the
    local engine knows it by (the Docker target, which runs what it built).
    """
    from ._targets._shared import config

    if args.image is not None:
        if any(r.function is not None and r.function.by_value for r in topology.roles):
            pulumi.log.warn(
                f"{topology.name}: functions defined in __main__ travel by value and must lie in the "
                f"prebuilt image under {FUNCTIONS_DIR}; define them in a module of the program instead",
                resource=component,
            )
        return ContainerImage(name=args.image, ref=pulumi.Output.from_input(args.image))

    platform = image_platform(default_platform)
    context = write_build_context(topology, platform=platform)
    component.image = _built_image(
        component, topology, args, context=context, repository=image_repository(topology, args.registry or config().get("registry")),
        build_args=build_args(), template="{base}-image", platform=platform, by_name=by_name, local=local,
    )
    return component.image


def _built_image(
    component: "_Pattern",
    topology: Topology,
    args: "PatternArgs",
    *,
    context: BuildContext,
    repository: str,
    build_args: dict[str, str],
    template: str,
    platform: Optional[str],
    by_name: bool,
    local: bool,
) -> ContainerImage:
    """An image of `platform` built from `context`, tagged with its content hash: a `docker.Image`
    child of `component` named by `template`, or (config imageBuild=external) just the name to reference."""
    from ._targets._shared import child_opts, config, config_bool

    cfg = config()
    registry = args.registry or cfg.get("registry")
    skip_push = args.skip_push if args.skip_push is not None else config_bool("skipPush")
    if skip_push is None:
        skip_push = registry is None
    builder = cfg.get(IMAGE_BUILD_KEY) or "pulumi"
    if builder not in IMAGE_BUILDERS:
        raise PatternError(
            f"{topology.pattern} {topology.name!r}: config metaparticle:{IMAGE_BUILD_KEY} must be one of "
            f"{', '.join(IMAGE_BUILDERS)}, got {builder!r}"
        )
    name = f"{repository}:{context.tag}"
    if builder == "external":
        # Built outside the engine (`metaparticle build`, a CI job) under the same content tag, so a
        # changed program is still a changed image and an unchanged one no diff.
        return ContainerImage(name=name, ref=pulumi.Output.from_input(name), context=context)
    context_dir = _relative(context.path)

    from pulumi_docker import DockerBuildArgs, Image, RegistryArgs

    build = DockerBuildArgs(
        context=context_dir,
        dockerfile=_relative(context.dockerfile),
        platform=platform,
        args=build_args,
    )
    registry_args = None
    username = cfg.get("registryUsername")
    if registry and username and not skip_push:
        registry_args = RegistryArgs(
            server=registry.split("/", 1)[0], username=username, password=cfg.require_secret("registryPassword")
        )
    fields = {"base": dns_name(topology.name)}
    image = Image(
        template.format(**fields),
        build=build,
        image_name=name,
        skip_push=skip_push,
        registry=registry_args,
        opts=child_opts(component, "docker:index/image:Image", template, fields),
    )
    if by_name:
        ref = pulumi.Output.from_input(name)
    elif local:
        ref = image.image_name.apply(lambda built: built or name)
    else:
        # The pushed digest, so workloads change exactly when the image does; unknown in a preview
        # while the image is to be (re)built, as with any image Pulumi builds. Not pushed: the name.
        ref = image.repo_digest.apply(lambda digest: digest or name)
    return ContainerImage(name=name, ref=ref, resource=image, context=context)


def function_context(directory: str) -> BuildContext:
    """An `mp.Container`'s `build=` directory as a build context, as it is (its Dockerfile, its
    .dockerignore respected), with the digest of what the build would see as its tag."""
    source = Path(directory)
    dockerfile = source / "Dockerfile"
    if not dockerfile.is_file():
        raise PatternError(f"mp.Container: build directory {directory} has no Dockerfile")
    files = _program_files(source)
    files.setdefault("Dockerfile", dockerfile)
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel].read_bytes()
        digest.update(f"{rel}\0{_mode(files[rel]):o}\0{len(data)}\0".encode())
        digest.update(data)
    return BuildContext(source, dockerfile, tuple(sorted(files)), digest.hexdigest())


def function_image(
    component: "_Pattern",
    topology: Topology,
    args: "PatternArgs",
    *,
    default_platform: Optional[str] = DEFAULT_PLATFORM,
    by_name: bool = False,
    local: bool = False,
) -> Optional[ContainerImage]:
    """The image of the pattern's `mp.Container` function (None when it has none): its `image=`
    as given, else built from its `build=` directory by the same machinery as the pattern's image
    (`<repository>-function:<content tag>`, a `<base>-function-image` child)."""
    from ._targets._shared import config

    container = next((r.container for r in topology.roles if r.container is not None), None)
    if container is None:
        return None
    where = f"{topology.pattern} {topology.name!r}"
    if container.image is not None:
        return ContainerImage(name=container.image, ref=pulumi.Output.from_input(container.image))
    if container.build is None:
        raise PatternError(f"{where}: the function's mp.Container needs image= or build= (a directory with a Dockerfile) on containers")
    context = function_context(container.build)
    repository = image_repository(topology, args.registry or config().get("registry")) + "-function"
    return _built_image(
        component, topology, args, context=context, repository=repository, build_args={},
        template="{base}-function-image", platform=image_platform(default_platform), by_name=by_name, local=local,
    )


def _relative(path: Path) -> str:
    """The context directory relative to the working directory (Pulumi runs programs in theirs),
    so the stack's state does not change with where the program is checked out."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()

