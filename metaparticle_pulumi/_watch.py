"""`run --watch`: a thread that watches the program's directory (watchfiles) and flags changes;
the run loop re-evaluates the program (`evaluate`) and rolls to it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from ._program import Evaluation


class Watch:
    """Flags `changed` when a file of `directory` changes (caches, VCS files and `ignore` aside)."""

    def __init__(
        self, directory: Path, evaluate: Callable[[Mapping[Any, int]], "Evaluation"], ignore: Iterable[Path] = ()
    ) -> None:
        from watchfiles import DefaultFilter

        self.directory = directory.resolve()
        self.evaluate = evaluate
        self.changed = threading.Event()
        self._ignore = {str(Path(p).resolve()) for p in ignore}
        self._files: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._filter = DefaultFilter()
        self._thread = threading.Thread(target=self._watch, name="watch", daemon=True)

    def start(self) -> "Watch":
        self._thread.start()
        return self

    def _relevant(self, path: str) -> bool:
        return path not in self._ignore and not path.endswith((".tmp", ".pkl", ".swp", "~"))

    def _watch(self) -> None:
        from watchfiles import Change, watch

        for changes in watch(self.directory, watch_filter=self._filter, stop_event=self._stop, rust_timeout=1000, yield_on_timeout=False):
            # An editor's (or sed's) temporary file, added and gone within the batch, is no change.
            added = {path for change, path in changes if change == Change.added}
            paths = {
                path for change, path in changes
                if self._relevant(path) and not (change == Change.deleted and path in added)
                and (change == Change.deleted or Path(path).exists())
            }
            if paths:
                with self._lock:
                    self._files |= paths
                self.changed.set()

    def take(self) -> list[str]:
        """The changed files since the last `take` (relative to the directory), clearing the flag."""
        with self._lock:
            files, self._files = self._files, set()
            self.changed.clear()
        return sorted(str(Path(f).relative_to(self.directory)) if f.startswith(str(self.directory)) else f for f in files)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3.0)
