"""A shard's persistent directory (`ctx.storage`) and durable writes into it.

An acknowledged write must survive the process, the container or the machine losing power right
after the answer: `write_durably` writes a temporary file, fsyncs it, renames it over the target
(readers see the old or the new bytes, never half) and fsyncs the directory (the rename itself is
on disk). `remove_durably` is the same for a deletion.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Union

from .config import ConfigError

PathLike = Union[str, "os.PathLike[str]"]
#: Held (flock) by the replica that owns a storage directory, for as long as it lives: a second
#: process given the same directory (the same program run twice) refuses to start.
LOCK_FILE = ".metaparticle.lock"
_held: list[int] = []


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: PathLike, data: Union[bytes, str]) -> None:
    """Replaces the file `path` with `data` (str as UTF-8) so that once this returns the new
    contents are on disk; a crash at any point leaves either the old file or the new one."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def remove_durably(path: PathLike) -> bool:
    """Removes the file `path` and fsyncs its directory; whether it existed."""
    target = Path(path)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    _fsync_directory(target.parent)
    return True


def prepare(directory: str) -> Path:
    """The role's storage directory, created when missing; ConfigError when it is not a writable
    directory (the replica must not start and lose every write)."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"storage directory {path} cannot be created: {exc.strerror or exc}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"storage directory {path} is not a writable directory (uid {os.getuid()})")
    _lock(path)
    return path


def _lock(path: Path) -> None:
    """Takes the directory's lock for the life of the process (the kernel drops it when it dies)."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(f"storage directory {path} is in use by {holder}: two replicas must not write one shard's data") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    _held.append(fd)
