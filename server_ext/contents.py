"""Put the save guard in front of any jupyter-server contents manager.

jupyter-server lets a save through when a pre-save hook raises anything but
``HTTPError`` and runs hooks on the first chunk of an upload only, so the guard
is not a hook: it overrides ``save`` itself, turns every failure into a refusal,
stages chunked uploads outside the served directory and checks them whole.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.contents.manager import copy_pat
from jupyter_server.utils import ensure_async
from tornado.web import HTTPError

from . import audit_report, metrics
from .guard import GuardReport, SaveGuard, SaveRefused
from .trust import UntrustedNotebooks

_STALE_UPLOAD_SECONDS = 3600
_T = TypeVar("_T")
#: The model the contents handler parsed from the request being served: a save of that
#: very object may keep its clean cells (SaveGuard.check's ``remember``), since no other
#: code holds it (unless pre-save hooks run); a model built by the manager (a copy, an
#: upload's last chunk) may not.
request_model: ContextVar[Any] = ContextVar("qustody_request_model", default=None)
#: The size in bytes of that request's body (-1: no request body was parsed).
request_size: ContextVar[int] = ContextVar("qustody_request_size", default=-1)
#: Set by the contents handler while it answers a GET, to the path it serves: that
#: notebook is scanned once answered, and its clean cells kept for its first save
#: (``SaveGuard.remember_opened``). A one-item list taken by the first ``get`` of the
#: request: tasks started meanwhile (jupyter-server's event listeners) copy the context,
#: not the item, so a ``get`` of theirs never counts as the answer.
opening: ContextVar[list[str] | None] = ContextVar("qustody_opening", default=None)

#: A request body up to this size (a notebook or a file) is checked on the event loop:
#: handing the check to a worker thread and back costs more than the check of a real
#: notebook of this size (about 1-10 ms): the thread runs on the other core, away from
#: the objects the request's parse has just built, and the save that follows finds them
#: gone from its own core's cache. Measured on the 13 real notebooks of 1-6 MB of the
#: guard corpus, checking in a thread added 3-6% to the median save over checking inline
#: (``benchmarks/bench_save.py --real``). One crafted to be slow (a credential in each of
#: 28,000 table rows) holds its owner's server for about 6.6 s, with no kernel messages
#: meanwhile. A larger body, a model the manager built (a copy, a chunked upload's last
#: chunk), or a check that would wait for the engine to compile (at start-up, after a
#: secret is delivered) runs in a thread, so the loop serves the other requests meanwhile.
INLINE_CHECK_BYTES = 2 * 1024 * 1024

#: Opened notebooks are scanned one at a time, in a thread of their own: JupyterLab
#: restoring a workspace opens several at once, and their scans must not queue ahead of
#: the checks of saves in the default executor.
_OPEN_SCANS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qustody-open-scan")
#: Open scans waiting or running at once (one per path); a GET beyond is not scanned.
MAX_OPEN_SCANS = 8


def hooks_may_change(manager: Any) -> bool:
    """Whether jupyter-server runs pre-save hooks on this manager's saves: they run after
    the guard's check, on the same model, and may change it in place, so its clean cells
    are not kept. Reads jupyter-server's private ``_pre_save_hooks`` (what the public
    ``register_pre_save_hook`` fills); missing, hooks are assumed.
    tests/server/test_unchanged_cells.py fails if upstream stops using it."""
    hooks = getattr(manager, "_pre_save_hooks", None)
    return getattr(manager, "pre_save_hook", None) is not None or hooks is None or bool(hooks)


#: How strictly each path mode treats a credential (a rename into a stricter one is checked).
_STRICTNESS = {"warn": 0, "redact": 1, "block": 2}


class _Staging:
    """Chunks of uploads in progress, in a private directory outside the served root."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def _path(self, api_path: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="qustody-uploads-"))
            os.chmod(self._dir, 0o700)
        return self._dir / hashlib.sha256(api_path.encode("utf-8", "surrogatepass")).hexdigest()

    def add(self, api_path: str, chunk: int, data: bytes, limit: int) -> int:
        """Append a chunk; returns the staged size. Chunk 1 starts over."""
        target = self._path(api_path)
        if chunk == 1:
            self._sweep()
        elif not target.exists():
            raise SaveRefused(
                400,
                f"Upload of {api_path} was interrupted (chunk {chunk} arrived without the "
                "ones before it). Nothing was written; upload the file again.",
            )
        with open(target, "wb" if chunk == 1 else "ab") as f:
            f.write(data)
            size = f.tell()
        if size > limit:
            self.discard(api_path)
            raise SaveRefused(
                413,
                f"{api_path} was not uploaded: it is larger than the {limit:,} bytes the "
                "credential guard checks (SaveGuard.max_file_size). Nothing was written.",
            )
        return size

    def take(self, api_path: str) -> bytes:
        target = self._path(api_path)
        try:
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    def discard(self, api_path: str) -> None:
        self._path(api_path).unlink(missing_ok=True)

    def _sweep(self) -> None:
        # Uploads abandoned by a closed browser tab would otherwise stay forever.
        assert self._dir is not None
        cutoff = time.time() - _STALE_UPLOAD_SECONDS
        for entry in self._dir.iterdir():
            if entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class GuardRefusal(HTTPError):
    """A refused save; the contents handler adds ``findings`` to the JSON error body.

    Each finding is ``Located.public()``: zone, pointer, cell index and id, line, detector
    (the rule), masked value and fingerprint; never the value itself.
    """

    def __init__(
        self, status: int, message: str, findings: list[dict[str, Any]], audit_ref: str | None
    ) -> None:
        super().__init__(status, message)
        self.findings = findings
        #: the ``ref`` of the ``save-refused`` audit record (None when nothing is audited)
        self.audit_ref = audit_ref


def _progress_model(path: str, size: int) -> dict[str, Any]:
    """The model returned for a chunk that was staged, not yet written."""
    now = datetime.now(UTC)
    return {
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "type": "file",
        "format": None,
        "mimetype": None,
        "content": None,
        "writable": True,
        "created": now,
        "last_modified": now,
        "size": size,
        "hash": None,
        "hash_algorithm": None,
    }


class GuardedContents(UntrustedNotebooks):
    """Mixin overriding ``save``; works for sync and async managers alike. Notebooks are
    never trusted unless configured (``trust.py``)."""

    _qustody_guard: SaveGuard | None = None
    _qustody_error: str | None = None
    _qustody_staging: _Staging | None = None
    _qustody_watcher: Any = None
    #: open scans waiting or in progress, by path (``_keep_opened``)
    _qustody_opened: dict[str, asyncio.Future[None]] | None = None

    def qustody_watch(self, watcher: Any) -> None:
        """Tell ``watcher`` about each file a save wrote, so it does not scan it again."""
        self._qustody_watcher = watcher

    def _note_saved(self, path: str) -> None:
        os_path = getattr(self, "_get_os_path", None)
        if self._qustody_watcher is not None and os_path is not None:
            self._qustody_watcher.note_own_write(Path(os_path(path)))

    def qustody_install(self, guard: SaveGuard | None, error: str | None = None) -> None:
        """Set the guard; with ``error`` and no guard, every save is refused (fail closed)."""
        self._qustody_guard = guard
        self._qustody_error = error

    def _guard(self) -> SaveGuard:
        if self._qustody_error is not None:
            raise HTTPError(503, f"Saving is disabled: {self._qustody_error}")
        if self._qustody_guard is None:
            self._qustody_guard = SaveGuard(parent=self)
        return self._qustody_guard

    def _ready(self) -> bool:
        """Whether a check would start at once (no engine compile to wait for)."""
        guard = self._qustody_guard
        return guard is not None and guard.ready

    def _prepare(
        self, model: dict[str, Any], path: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Stage chunks; returns (model to check and save, early response for a staged chunk)."""
        chunk = model.get("chunk")
        if chunk is None:
            return model, None
        guard = self._guard()
        if self._qustody_staging is None:
            self._qustody_staging = _Staging()
        staging = self._qustody_staging
        if not isinstance(chunk, int) or chunk == 0 or chunk < -1:
            raise SaveRefused(400, f"Upload of {path} sent an invalid chunk number.")
        if model.get("format") != "base64" or not isinstance(model.get("content"), str):
            staging.discard(path)
            raise SaveRefused(400, f"Chunked upload of {path} must send base64 content.")
        try:
            data = base64.b64decode(model["content"].encode("ascii"), validate=True)
        except ValueError:
            staging.discard(path)
            raise SaveRefused(400, f"Upload of {path} sent malformed base64 content.") from None
        size = staging.add(path, 1 if chunk == 1 else 2, data, guard.max_file_size)
        if chunk != -1:
            return model, _progress_model(path, size)
        whole = staging.take(path)
        full = {k: v for k, v in model.items() if k != "chunk"}
        full.update(type="file", format="base64", content=base64.b64encode(whole).decode("ascii"))
        return full, None

    def _check(
        self, model: dict[str, Any], path: str, remember: bool = False
    ) -> GuardReport | None:
        guard = self._guard()
        return metrics.timed_check(
            model,
            lambda: guard.check(model, path, remember=remember, keep_later=remember),
            SaveRefused,
        )

    def _keep_clean_cells(self, report: GuardReport | None) -> None:
        """Keep the saved notebook's clean cells for its next save (``SaveGuard.check``'s
        ``keep_later``). Losing them only costs the next save a full scan."""
        if report is None or report.keep is None:
            return
        try:
            report.keep()
        except Exception as e:  # type only: nothing of the content reaches the log
            self.log.warning(  # type: ignore[attr-defined]
                "Qustody could not keep the clean cells of a save (%s)", type(e).__name__
            )

    def _keep_opened(self, model: Any, path: str) -> None:
        """After the contents handler has answered a GET of a notebook, scan what it served
        in a thread and keep its clean cells (``SaveGuard.remember_opened``): the first
        save of a notebook opened in JupyterLab then costs what a later save does. Only the
        handler's own answer, which nothing changes once sent (a copy reads the file
        through ``get`` too, and changes what it read)."""
        slot = opening.get()
        if not slot:
            return
        served = slot.pop()  # once per request
        guard = self._qustody_guard
        if (
            served != path.strip("/")
            or guard is None
            or not isinstance(model, dict)
            or model.get("type") != "notebook"
            or not isinstance(model.get("content"), dict)
            or not isinstance(model.get("size"), int)
            or model["size"] > guard.unchanged_cells_cache  # could not be kept
        ):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync manager's get called from a thread: not the answer
            return
        # After this task step, in which the handler writes its answer; in a thread, so that
        # a large notebook's scan does not hold the loop.
        loop.call_soon(self._start_keeping_opened, loop, guard, model["content"], served)

    def _start_keeping_opened(
        self, loop: asyncio.AbstractEventLoop, guard: SaveGuard, content: Any, path: str
    ) -> None:
        # One scan per path at a time, and a few in all: a client that GETs a notebook in a
        # loop (or restores many tabs) must not queue a copy of it per request. A GET
        # skipped here only costs that notebook's first save a full scan.
        pending = self._qustody_opened
        if pending is None:
            pending = self._qustody_opened = {}
        if path in pending or len(pending) >= MAX_OPEN_SCANS:
            return
        scan = loop.run_in_executor(_OPEN_SCANS, self._remember_opened, guard, content, path)
        pending[path] = scan
        scan.add_done_callback(lambda _: pending.pop(path, None))

    def _remember_opened(self, guard: SaveGuard, content: Any, path: str) -> None:
        try:
            guard.remember_opened(content, path)
        except Exception as e:  # type only; losing them costs the first save a full scan
            self.log.warning(  # type: ignore[attr-defined]
                "Qustody could not keep the clean cells of an opened notebook (%s)",
                type(e).__name__,
            )

    def _rename_plan(self, old: str, new: str, action: str = "renamed"
                     ) -> list[tuple[str, dict[str, Any], GuardReport]]:
        """Check what a rename (or a directory copy: ``action`` "copied") brings into a
        stricter path (``warn`` -> ``redact``/``block``) as if it were saved there;
        SaveRefused stops it. Returns the files whose content the check changed
        (redactions), to be written at their new paths.

        A file in a ``warn`` path may hold a credential the guard reported and let through;
        renaming must not turn it into a file that a ``block`` path holds unchecked.
        """
        guard = self._guard()  # a guard that could not start refuses renames too
        if not guard.enabled:
            return []
        linked: list[str] = []
        moves = [
            (src, dst)
            for src, dst in self._renamed_files(old, new, linked)
            if _STRICTNESS[guard.mode_for(dst)] > _STRICTNESS[guard.mode_for(src)]
        ]
        stricter = moves or _STRICTNESS[guard.mode_for(new)] > _STRICTNESS[guard.mode_for(old)]
        if action == "copied" and linked and stricter:
            # copytree copies what such a link holds, once per path that reaches it (a link
            # to a parent: until the path is too long): refused, not worked out
            raise SaveRefused(
                422,
                f"{old} was not copied to {new}: {linked[0]} is a link to a folder, and a "
                f"copy would bring what it holds into a more strictly checked path. Copy "
                "that folder itself, or remove the link first.",
            )
        if not moves:
            return []
        root = getattr(self, "_get_os_path", None)
        if root is None:
            raise SaveRefused(
                422,
                f"{old} was not {action} to {new}: {new} is checked more strictly than "
                f"{old}, and this contents manager is not file-backed, so the credential "
                "guard cannot check what would move. Save a copy there instead.",
            )
        rewrites = []
        for src, dst in moves:
            os_path = root(src)
            if not os.path.isfile(os_path):
                continue  # a dangling link moves nothing readable
            try:
                with open(os_path, "rb") as f:
                    data = f.read(guard.max_file_size + 1)  # one byte over: refused as too big
                content = base64.b64encode(data).decode("ascii")
                model = {"type": "file", "format": "base64", "content": content}
                report = self._check(model, dst)
            except SaveRefused as e:
                raise SaveRefused(
                    e.status,
                    f"{old} was not {action} to {new} ({dst} is a '{guard.mode_for(dst)}' "
                    f"path; the guard checks what moves there): {e.message}",
                    e.findings,
                ) from None
            if report is not None and report.redacted:
                rewrites.append((dst, {k: model[k] for k in ("type", "format", "content")}, report))
        return rewrites

    def _restore_plan(
        self, checkpoint_id: str, path: str
    ) -> tuple[dict[str, Any], GuardReport] | None:
        """Check a checkpoint as if it were saved at ``path``, which restoring it writes
        (SaveRefused stops it): a checkpoint taken in a ``warn`` path moves with its file
        when the file is renamed, and was never checked where it now lies. Returns the
        redacted content to write over the restored file, and the check's report, or None."""
        guard = self._guard()
        if not guard.enabled:
            return None
        where = getattr(self.checkpoints, "checkpoint_path", None)  # type: ignore[attr-defined]
        if where is None:
            raise SaveRefused(
                422,
                f"{path} was not restored: this server's checkpoints are not files, so the "
                "credential guard cannot check what restoring would write.",
            )
        try:
            with open(where(checkpoint_id, path), "rb") as f:
                data = f.read(guard.max_file_size + 1)  # one byte over: refused as too big
        except FileNotFoundError:
            return None  # jupyter-server answers that there is no such checkpoint
        model = {"type": "file", "format": "base64",
                 "content": base64.b64encode(data).decode("ascii")}
        try:
            report = self._check(model, path)
        except SaveRefused as e:
            raise SaveRefused(e.status, f"{path} was not restored from its checkpoint "
                              f"(the guard checks what restoring writes): {e.message}",
                              e.findings) from None
        if report is not None and report.redacted:
            return {k: model[k] for k in ("type", "format", "content")}, report
        return None

    def _exists_on_disk(self, path: str) -> bool:
        root = getattr(self, "_get_os_path", None)
        return root is None or os.path.lexists(root(path))

    def _remove_partial_copy(self, dest: str, existed: bool) -> None:
        """Remove the tree a failed (or refused) directory copy wrote at ``dest``, unless
        something was there before it."""
        root = getattr(self, "_get_os_path", None)
        if existed or root is None or not dest:
            return
        os_dest = root(dest)
        if os.path.isdir(os_dest) and not os.path.islink(os_dest):
            shutil.rmtree(os_dest, ignore_errors=True)

    def _checked_elsewhere(
        self, src: str, copied: str, expected: str
    ) -> list[tuple[str, dict[str, Any], GuardReport]]:
        """A directory copy that jupyter-server put at ``copied``, not where ``copy``
        checked it (a newer jupyter-server names copies otherwise, or a name was taken
        meanwhile): checked where it is; what may not be there is removed again."""
        self.log.warning(  # type: ignore[attr-defined]
            "Qustody: a copy of %s was written to %s, not %s; checking it there", src,
            copied, expected,
        )
        try:
            return self._rename_plan(src, copied, "copied")
        except BaseException:
            self._remove_partial_copy(copied, existed=copied == src)
            raise

    def _renamed_files(self, old: str, new: str,
                       linked: list[str] | None = None) -> list[tuple[str, str]]:
        """(old path, new path) of every file a rename of ``old`` to ``new`` moves,
        hidden ones included; links to directories (not followed) are added to
        ``linked`` (a copy would copy what they hold)."""
        root = getattr(self, "_get_os_path", None)
        if root is None:
            return [(old, new)]
        os_old = root(old)
        if not os.path.isdir(os_old):
            return [(old, new)]
        pairs = []
        for dirpath, dirs, files in os.walk(os_old):
            rel = os.path.relpath(dirpath, os_old)
            for name in files:
                tail = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                pairs.append((f"{old}/{tail}", f"{new}/{tail}"))
            if linked is not None:
                linked += [f"{old}/{name}" if rel == "." else f"{old}/{rel}/{name}"
                           for name in dirs if os.path.islink(os.path.join(dirpath, name))]
        return pairs

    def _refusal(self, error: BaseException, path: str) -> HTTPError:
        if isinstance(error, SaveRefused):
            log_findings(self, path, error)
            ref = audit_report.save_refused(self.log, path, error)  # type: ignore[attr-defined]
            return GuardRefusal(
                error.status, error.message, [loc.public() for loc in error.findings], ref
            )
        if isinstance(error, HTTPError):
            return error
        # Type and place only: an exception's message may quote the content being saved.
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        self.log.error("Qustody guard failed on %s: %s at %s", path, type(error).__name__, where)  # type: ignore[attr-defined]
        return HTTPError(
            500,
            f"{path} was not saved: the credential check failed ({type(error).__name__}). "
            "Nothing was written; your work is still open in the editor. "
            "Ask an admin to check the server log.",
        )


def log_findings(manager: Any, path: str, refused: SaveRefused) -> None:
    if refused.findings:
        detectors = sorted({loc.finding.detector for loc in refused.findings})
        manager.log.warning(
            "Qustody refused saving %s: %d finding(s) by %s",
            path,
            len(refused.findings),
            ", ".join(detectors),
        )
    else:
        manager.log.warning("Qustody refused saving %s (status %d)", path, refused.status)


class AsyncGuardedContents(GuardedContents):
    async def get(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # a manager whose save is async may still have a sync get
        model: dict[str, Any] = await ensure_async(super().get(path, *args, **kwargs))  # type: ignore[misc]
        self._keep_opened(model, path)
        return model

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        path = path.strip("/")
        try:
            model, early = self._prepare(model, path)
            if early is not None:
                return early
            parsed = model is request_model.get()
            own = parsed and not hooks_may_change(self)
            if parsed and 0 <= request_size.get() <= INLINE_CHECK_BYTES and self._ready():
                report = self._check(model, path, own)
            else:
                report = await asyncio.to_thread(self._check, model, path, own)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            raise self._refusal(e, path) from None
        saved: dict[str, Any] = await super().save(model, path)  # type: ignore[misc]
        self._note_saved(path)
        _log_checked(self, path, report)
        audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]
        # After this task step: the contents handler writes its answer in the step that
        # returns from here, so the answer does not wait for the bookkeeping. On the loop,
        # not a thread: the next save of the path then always finds the cells kept, and
        # keeping costs less than the save's own work on the loop (a copy, validation).
        if report is not None and report.keep is not None:
            asyncio.get_running_loop().call_soon(self._keep_clean_cells, report)
        return _annotate(saved, report)


    async def _planned(self, path: str, plan: Callable[..., _T], *args: Any) -> _T:
        """``plan(*args)`` (a rename's, copy's or restore's check) in a thread; what it
        raises becomes the refusal of ``path`` (a cancellation passes)."""
        try:
            return await asyncio.to_thread(plan, *args)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            raise self._refusal(e, path) from None

    async def rename(self, old_path: str, new_path: str) -> None:
        old, new = old_path.strip("/"), new_path.strip("/")
        rewrites = await self._planned(new, self._rename_plan, old, new)
        await super().rename(old_path, new_path)  # type: ignore[misc]
        for path, model, report in rewrites:  # already checked: written as redacted
            await super().save(model, path)  # type: ignore[misc]
            audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]

    async def copy(self, from_path: str, to_path: str | None = None) -> dict[str, Any]:
        """A file's copy is saved through the guard (``new``); a directory's is
        ``shutil.copytree``, so what it brings into a stricter path is checked first, as
        a rename's is (``_rename_plan``)."""
        src = from_path.strip("/")
        if not await ensure_async(self.dir_exists(src)):  # type: ignore[attr-defined]
            return await super().copy(from_path, to_path)  # type: ignore[misc,no-any-return]
        folder, name = _copy_target(src, to_path)
        if await ensure_async(self.dir_exists(folder)):  # type: ignore[attr-defined]
            taken = self.increment_filename  # type: ignore[attr-defined]
            name = await ensure_async(taken(name, folder, insert="-Copy"))
        dest = f"{folder}/{name}".strip("/")
        rewrites = await self._planned(dest, self._rename_plan, src, dest, "copied")
        existed = self._exists_on_disk(dest)
        try:
            model: dict[str, Any] = await super().copy(from_path, to_path)  # type: ignore[misc]
        except BaseException:
            self._remove_partial_copy(dest, existed)
            raise
        copied = str(model.get("path", "")).strip("/")
        if copied != dest:  # not where it was checked: check where it is, or undo it
            rewrites = await self._planned(copied, self._checked_elsewhere, src, copied, dest)
        for path, rewrite, report in rewrites:  # already checked: written as redacted
            await super().save(rewrite, path)  # type: ignore[misc]
            audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]
        return model

    async def restore_checkpoint(self, checkpoint_id: str, path: str) -> None:
        rewrite = await self._planned(path.strip("/"), self._restore_plan, checkpoint_id,
                                      path.strip("/"))
        if rewrite is None:
            await super().restore_checkpoint(checkpoint_id, path)  # type: ignore[misc]
        else:  # what restoring writes, redacted: the credential never reaches the file
            await super().save(rewrite[0], path.strip("/"))  # type: ignore[misc]
            log = self.log  # type: ignore[attr-defined]
            audit_report.outputs_redacted(log, path.strip("/"), rewrite[1])


class SyncGuardedContents(GuardedContents):
    def get(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        model: dict[str, Any] = super().get(path, *args, **kwargs)  # type: ignore[misc]
        self._keep_opened(model, path)
        return model

    def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        path = path.strip("/")
        try:
            model, early = self._prepare(model, path)
            if early is not None:
                return early
            own = model is request_model.get() and not hooks_may_change(self)
            report = self._check(model, path, own)
        except Exception as e:
            raise self._refusal(e, path) from None
        saved: dict[str, Any] = super().save(model, path)  # type: ignore[misc]
        self._note_saved(path)
        _log_checked(self, path, report)
        audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]
        self._keep_clean_cells(report)
        return _annotate(saved, report)

    def rename(self, old_path: str, new_path: str) -> None:
        old, new = old_path.strip("/"), new_path.strip("/")
        try:
            rewrites = self._rename_plan(old, new)
        except Exception as e:
            raise self._refusal(e, new) from None
        super().rename(old_path, new_path)  # type: ignore[misc]
        for path, model, report in rewrites:
            super().save(model, path)  # type: ignore[misc]
            audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]

    def copy(self, from_path: str, to_path: str | None = None) -> dict[str, Any]:
        src = from_path.strip("/")
        if not self.dir_exists(src):  # type: ignore[attr-defined]
            return super().copy(from_path, to_path)  # type: ignore[misc,no-any-return]
        folder, name = _copy_target(src, to_path)
        dest = src
        try:
            if self.dir_exists(folder):  # type: ignore[attr-defined]
                name = self.increment_filename(name, folder, insert="-Copy")  # type: ignore[attr-defined]
            dest = f"{folder}/{name}".strip("/")
            rewrites = self._rename_plan(src, dest, "copied")
        except Exception as e:
            raise self._refusal(e, dest) from None
        existed = self._exists_on_disk(dest)
        try:
            model: dict[str, Any] = super().copy(from_path, to_path)  # type: ignore[misc]
        except BaseException:
            self._remove_partial_copy(dest, existed)
            raise
        copied = str(model.get("path", "")).strip("/")
        if copied != dest:
            try:
                rewrites = self._checked_elsewhere(src, copied, dest)
            except Exception as e:
                raise self._refusal(e, copied) from None
        for path, rewrite, report in rewrites:
            super().save(rewrite, path)  # type: ignore[misc]
            audit_report.outputs_redacted(self.log, path, report)  # type: ignore[attr-defined]
        return model

    def restore_checkpoint(self, checkpoint_id: str, path: str) -> None:
        path = path.strip("/")
        try:
            rewrite = self._restore_plan(checkpoint_id, path)
        except Exception as e:
            raise self._refusal(e, path) from None
        if rewrite is None:
            super().restore_checkpoint(checkpoint_id, path)  # type: ignore[misc]
        else:
            super().save(rewrite[0], path)  # type: ignore[misc]
            audit_report.outputs_redacted(self.log, path, rewrite[1])  # type: ignore[attr-defined]


def _copy_target(src: str, to_path: str | None) -> tuple[str, str]:
    """Where jupyter-server's ``copy`` puts a copy of directory ``src``: (folder, name
    before ``increment_filename``). Checked against where it did put it (``copy``)."""
    from_dir, _, from_name = src.rpartition("/")
    folder = from_dir if to_path is None else to_path.strip("/")
    return folder, copy_pat.sub(".", from_name)


def _log_checked(manager: Any, path: str, report: GuardReport | None) -> None:
    if report is not None and report.unchanged:
        manager.log.debug(
            "Qustody checked %s: %d cells unchanged since it was last saved or opened",
            path, report.unchanged,
        )


def _annotate(saved: dict[str, Any], report: GuardReport | None) -> dict[str, Any]:
    if report is not None and (report.redacted or report.findings):
        saved["qustody"] = report.public()
    return saved


class GuardedContentsManager(AsyncGuardedContents, AsyncLargeFileManager):  # type: ignore[misc]
    """jupyter-server's default manager with the guard in front of every save."""


def guard_manager(manager: Any) -> None:
    """Give an existing manager instance the guard, whatever its class.

    The class is swapped for a subclass so that calls from the manager's own
    methods (``new``, ``copy``) go through the guard too.
    """
    cls = type(manager)
    if isinstance(manager, GuardedContents):
        return
    mixin = AsyncGuardedContents if asyncio.iscoroutinefunction(cls.save) else SyncGuardedContents
    manager.__class__ = type(f"Guarded{cls.__name__}", (mixin, cls), {"__module__": __name__})
