"""Scan files written under the served root outside the contents API.

A kernel (``df.to_csv``, ``nb.write``), a terminal (``echo KEY=... > .env``) or ``git pull``
writes files the save guard never sees. The watcher follows the root with inotify
(``watchfiles``: a maintained Rust watcher with built-in debounce) in one daemon thread,
which scans each new or changed file off the event loop:

- a finding is reported: server log (detectors and fingerprints only), the audit log
  (``file-finding``), and ``GET /qustody/api/watcher`` for the JupyterLab extension;
- a notebook's outputs holding credentials are redacted in place, as a save would;
- sources are never rewritten and nothing is ever deleted: the user decides.

Work is bounded: changes are debounced, files larger than ``max_file_size`` are reported
as not checked instead of read, one file is scanned at a time, and the guard's own writes
(contents-API saves, its redactions) are recognised by their size and mtime and skipped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Int, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from . import audit_report
from .guard import SaveGuard
from .scanner.documents import (
    Located,
    RepeatedKey,
    notebook_json,
    redact_segments,
    scan_file,
    scan_notebook,
    scan_repeated,
)
from .scanner.notebook import NotebookError, Zone


def _inside(root: Path, directory: str) -> Path | None:
    """``directory`` relative to ``root``, if it lies inside it. Not a symlink: a user
    who links the runtime path to their work must not take that work out of the
    watcher's sight (a link higher up only moves where the runtime directory lies)."""
    try:
        given = Path(directory).absolute()
        if given.is_symlink():
            return None
        rel = given.resolve().relative_to(root)
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop
        return None
    return rel if rel.parts else None  # never the whole root: the watcher would see nothing


#: Seen as the guard's own write if the file still has this (mtime_ns, size).
_Stamp = tuple[int, int]


class FileWatcher(LoggingConfigurable):
    """Scans files created or changed under the served root outside the contents API."""

    enabled = Bool(
        True,
        config=True,
        help="""Scan files that kernels, terminals or ``git pull`` write under the served
        directory, which never pass through the save guard. Findings are reported and
        audited; notebook outputs holding credentials are redacted in place. Turning this
        off leaves such files unchecked until they are saved through the editor.""",
    )
    debounce_ms = Int(
        800,
        config=True,
        help="""Milliseconds of quiet before a batch of changes is scanned, so a file
        written in many chunks is scanned once, when it is complete.""",
    )
    max_file_size = Int(
        20 * 1024 * 1024,
        config=True,
        help="""Largest file (bytes) the watcher reads. A larger file is reported as not
        checked (never silently skipped); saving it through the editor checks it whole.""",
    )
    ignored_dirs = List(
        Unicode(),
        default_value=[".git", ".ipynb_checkpoints", "__pycache__", "node_modules", ".venv"],
        config=True,
        help="""Directory names never scanned (version-control internals, caches,
        dependencies). ``qustody scan`` in CI covers what reaches a repository.""",
    )
    max_reports = Int(
        500, config=True, help="Reports kept for ``GET /qustody/api/watcher`` (oldest dropped)."
    )

    @validate("debounce_ms", "max_file_size", "max_reports")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"FileWatcher.{proposal['trait'].name} must be at least 1")
        return int(proposal["value"])

    def __init__(self, root: str, guard: SaveGuard, runtime_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).resolve()
        self.guard = guard
        self.reports: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.max_reports
        )
        # Jupyter's runtime directory holds the server's own credentials (its token, the
        # kernels' connection keys), written by the server itself: not the user's content,
        # and a finding at every kernel start would bury real ones. The image keeps it
        # outside the home (/run/jupyter); a server run as a local process keeps it inside.
        self._excluded = _inside(self.root, runtime_dir or jupyter_runtime_dir())
        self._own: dict[str, _Stamp] = {}  # absolute path -> stamp of the guard's own write
        self._own_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self.scanned = 0  # files scanned since start (for the status endpoint)

    # -- the guard's own writes -------------------------------------------------------

    def note_own_write(self, path: Path) -> None:
        """A file the guard has just checked and written: its next change event is ours."""
        try:
            st = path.stat()
        except OSError:
            return
        # saves (event loop) and redactions (watcher thread) both write here
        with self._own_lock:
            self._own[str(path)] = (st.st_mtime_ns, st.st_size)
            if len(self._own) > 4096:  # bounded: forget the oldest
                self._own.pop(next(iter(self._own)))

    def _is_own(self, path: Path, st: os.stat_result) -> bool:
        with self._own_lock:
            return self._own.get(str(path)) == (st.st_mtime_ns, st.st_size)

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stop = threading.Event()
        # A daemon thread: when jupyter-server exits without running the extensions' stop
        # step (SIGINT ends its loop with KeyboardInterrupt), a watcher still blocked in
        # inotify must not keep the process alive past the spawner's stop.
        self._thread = threading.Thread(target=self._run, name="qustody-watcher", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None or self._stop is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)
        self._thread = None

    def _run(self) -> None:
        from watchfiles import Change, watch

        assert self._stop is not None
        try:
            for changes in watch(
                self.root,
                debounce=self.debounce_ms,
                step=50,
                stop_event=self._stop,
                watch_filter=None,
                recursive=True,
                ignore_permission_denied=True,
                raise_interrupt=False,
            ):
                paths = sorted({p for change, p in changes if change is not Change.deleted})
                for raw in paths:
                    path = Path(raw)
                    if self._wanted(path):
                        self._check_path(path)
        except Exception as e:  # the server keeps running; the hole is logged loudly
            self.log.error(
                "Qustody file watcher stopped (%s): files written outside the editor are "
                "no longer checked",
                type(e).__name__,
            )

    def _wanted(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        if any(part in self.ignored_dirs for part in rel.parts):
            return False
        if self._excluded is not None and (rel == self._excluded
                                           or self._excluded in rel.parents):
            return False
        # jupyter-server's atomic writes go through ".~name" before the rename.
        return not rel.name.startswith(".~")

    # -- checking one file --------------------------------------------------------------

    def _check_path(self, path: Path) -> None:
        """A file, or a new directory: files written into a directory before its inotify
        watch was added (``mkdir -p d && cp key d/``, a ``git pull``) send no event."""
        if not path.is_dir() or path.is_symlink():
            self._check_one(path)
            return
        for top, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if self._wanted(Path(top) / d)]
            for name in files:
                if self._wanted(Path(top) / name):
                    self._check_one(Path(top) / name)

    def _check_one(self, path: Path) -> None:
        """``check_file``, and a file it could not check is reported as such: one file's
        surprise must not stop the watcher for every file after it."""
        try:
            self.check_file(path)
        except Exception as e:  # reported (its type only: no value), then the next file
            api_path = path.relative_to(self.root).as_posix()
            self._report(
                api_path,
                "not-checked",
                [],
                reason=f"the check failed ({type(e).__name__}); save it through the editor "
                "to check it",
            )

    def check_file(self, path: Path) -> dict[str, Any] | None:
        """Scan one file; redact a notebook's outputs; report. Returns the report, if any."""
        try:
            st = path.lstat()
        except OSError:
            return None  # gone again (a temporary file)
        if not stat.S_ISREG(st.st_mode) or self._is_own(path, st):
            return None
        api_path = path.relative_to(self.root).as_posix()
        if st.st_size > self.max_file_size:
            return self._report(
                api_path,
                "not-checked",
                [],
                reason=f"{st.st_size:,} bytes is over FileWatcher.max_file_size "
                f"({self.max_file_size:,}); save it through the editor to check it",
            )
        try:
            data = path.read_bytes()
        except OSError:
            return None
        self.scanned += 1
        engine = self.guard.engine
        repeated = False
        if path.suffix == ".ipynb":
            try:
                nb = notebook_json(data)
                scan = scan_notebook(engine, nb, self.guard.max_nesting_depth)
            except RepeatedKey:  # reported from its text and its parsed form, not rewritten
                scan, repeated = None, True
            except (ValueError, RecursionError, NotebookError):
                scan = None  # not a notebook (yet): read as text below
            if scan is not None:
                return self._notebook(path, st, api_path, nb, scan)
        located = (scan_repeated(engine, api_path, data, self.guard.max_nesting_depth)
                   if repeated else scan_file(engine, api_path, data))
        if not located:
            return None
        return self._report(api_path, "reported", located)

    def _notebook(
        self, path: Path, st: os.stat_result, api_path: str, nb: Any, scan: Any
    ) -> dict[str, Any] | None:
        located: list[Located] = scan.located()
        if not located:
            return None
        redacted = 0
        if self.guard.mode_for(api_path) != "warn":
            redacted = redact_segments([
                (segment, found)
                for segment, found in zip(scan.segments, scan.findings, strict=True)
                if found and segment.zone is Zone.OUTPUT
            ])
        if redacted and not self._replace(path, st, nb):
            redacted = 0  # the file changed meanwhile: its own change event rescans it
        action = "outputs-redacted" if redacted else "reported"
        return self._report(api_path, action, located, redacted=redacted)

    def _replace(self, path: Path, st: os.stat_result, nb: Any) -> bool:
        """Write the redacted notebook atomically, unless the file changed since it was read."""
        try:
            data = (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800" in the file) has no UTF-8 form; JSON escapes keep it.
            data = (json.dumps(nb, indent=1) + "\n").encode("ascii")
        fd, tmp = tempfile.mkstemp(prefix=".~qustody-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            now = path.stat()
            if (now.st_mtime_ns, now.st_size) != (st.st_mtime_ns, st.st_size):
                os.unlink(tmp)
                return False
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return False
        self.note_own_write(path)
        return True

    def _report(
        self,
        api_path: str,
        action: str,
        located: list[Located],
        redacted: int = 0,
        reason: str | None = None,
    ) -> dict[str, Any]:
        report: dict[str, Any] = {
            "time": time.time(),
            "path": api_path,
            "action": action,
            "redacted": redacted,
            "findings": [loc.public() for loc in located],
        }
        if reason:
            report["reason"] = reason
        self.reports.append(report)
        if located:
            self.log.warning(
                "Qustody found %d credential(s) in %s, written outside the editor (%s): %s",
                len(located),
                api_path,
                action,
                ", ".join(sorted({loc.finding.detector for loc in located})),
            )
        else:
            self.log.warning("Qustody could not check %s: %s", api_path, reason)
        audit_report.file_finding(self.log, api_path, action, located, redacted)
        return report
