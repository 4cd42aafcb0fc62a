"""REST endpoints of the server extension (all authenticated, none writes a file)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .contents import GuardRefusal, opening, request_model, request_size
from .guard import SaveGuard, SaveRefused
from .scanner import rules

try:  # only a faster reader of the same JSON: without it, json.loads reads every body
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency of the [server] extra
    msgspec = None  # type: ignore[assignment]


class _GuardHandler(ExtensionHandlerMixin, APIHandler):
    # Reading the guard's policy or dry-running it is as sensitive as reading files.
    auth_resource = "contents"

    @property
    def guard(self) -> SaveGuard:
        guard: SaveGuard | None = self.settings.get("qustody_guard")
        if guard is None:
            raise web.HTTPError(503, "The Qustody credential guard is not running on this server.")
        return guard


class GuardStatusHandler(_GuardHandler):
    """``GET /qustody/api/guard``: the policy in force (never the allow-listed values)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        g = self.guard
        self.finish(
            json.dumps(
                {
                    "enabled": g.enabled,
                    "default_mode": g.default_mode,
                    "path_modes": g.path_modes,
                    "max_file_size": g.max_file_size,
                    "detectors": [{"id": d.id, "title": d.title} for d in g.engine.detectors],
                    "available_detectors": sorted(rules.BY_ID),
                }
            )
        )


class ScanHandler(_GuardHandler):
    """``POST /qustody/api/scan``: what saving this model would do, without saving it."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        # what is scanned is credentials: never the default parser, which logs a bad body
        body = parse_json_body(self.request.body)
        if not isinstance(body, dict) or "path" not in body or "content" not in body:
            raise web.HTTPError(400, "Send a contents model: {path, type, content[, format]}.")
        path = str(body["path"]).strip("/")
        try:
            model = copy.deepcopy(body)
        except RecursionError:  # deepcopy recurses: a few hundred levels are too many
            raise web.HTTPError(
                400, "The model nests JSON too deep to check; nothing was scanned."
            ) from None
        try:
            report = await asyncio.to_thread(self.guard.check, model, path)
        except SaveRefused as refused:
            self.finish(
                json.dumps(
                    {
                        "action": "refuse",
                        "status": refused.status,
                        "message": refused.message,
                        "findings": [f.public() for f in refused.findings],
                    }
                )
            )
            return
        result: dict[str, Any] = {"action": "save", "findings": [], "redacted": 0}
        if report is not None:
            result.update(report.public())
            if report.redacted:
                result["action"] = "redact"
        self.finish(json.dumps(result))


class WatcherHandler(_GuardHandler):
    """``GET /qustody/api/watcher``: what the file watcher found in files written outside
    the editor (newest last; masked values and fingerprints only)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        watcher = self.settings.get("qustody_watcher")
        if watcher is None:
            raise web.HTTPError(503, "The Qustody file watcher is not running on this server.")
        self.finish(
            json.dumps(
                {
                    "enabled": watcher.enabled,
                    "scanned": watcher.scanned,
                    "reports": list(watcher.reports),
                }
            )
        )


HANDLERS = [
    (r"/qustody/api/guard", GuardStatusHandler),
    (r"/qustody/api/watcher", WatcherHandler),
    (r"/qustody/api/scan", ScanHandler),
]


_DECODER = msgspec.json.Decoder() if msgspec is not None else None


def body_reader() -> str:
    """What reads request bodies first: "msgspec", or "json" when it is not installed."""
    return "json" if _DECODER is None else "msgspec"


def parse_json_body(body: bytes) -> Any:
    """The request body as JSON, or a 400 that says what is wrong.

    Replaces jupyter-server's parser, which answers non-UTF-8 bodies with a 500 and
    logs unparseable bodies verbatim at debug level (a pasted key would reach the log).

    msgspec reads it first: a notebook's body parses in under half of ``json.loads``'s
    time (0.29 ms against 0.66 ms at the median of the 30 largest real notebooks, about
    as much as the guard's check of it). What msgspec accepts, it reads as ``json.loads``
    does, integers of any size included (tests/server/test_body_parser.py); what it
    refuses (``NaN``, ``1e400``, a lone surrogate escape, a byte-order mark, whitespace
    JSON does not allow) is read again by ``json.loads``, which accepts it or words the
    refusal. Such a body costs both reads, but JupyterLab never sends one (its
    ``JSON.stringify`` writes ``NaN`` as ``null``). Nesting: both stop near Python's
    recursion limit, msgspec a few levels deeper. (orjson, as fast, reads an integer over
    64 bits as a float: data lost.)
    """
    if not body:
        return None
    if _DECODER is not None:
        try:
            return _DECODER.decode(body)
        except (msgspec.DecodeError, RecursionError):
            pass  # json.loads decides, and says what is wrong
    try:
        text = body.strip().decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPError(400, "The request body is not UTF-8 text; nothing was saved.") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise web.HTTPError(400, "Invalid JSON in body of request; nothing was saved.") from None


def harden_contents_handler(web_app: web.Application) -> int:
    """Route the contents API to a handler that parses bodies with ``parse_json_body``."""
    from jupyter_server.services.contents.handlers import ContentsHandler

    class QustodyContentsHandler(ContentsHandler):
        def get_json_body(self) -> Any:
            model = parse_json_body(self.request.body)
            request_model.set(model)  # a save of this very object may keep its clean cells
            request_size.set(len(self.request.body))
            return model

        async def get(self, path: str = "") -> None:
            # the notebook served is scanned once answered (for its first save)
            opening.set([path.strip("/")])
            answered = super().get(path)
            if answered is not None:
                await answered

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            # A refused save answers {message, reason, findings}: the findings say where each
            # credential is (for the JupyterLab extension), with masked values only.
            error = kwargs.get("exc_info", (None, None))[1]
            if not isinstance(error, GuardRefusal):
                super().write_error(status_code, **kwargs)
                return
            self.set_header("Content-Type", "application/json")
            reply: dict[str, Any] = {"message": error.log_message, "reason": error.reason}
            reply["findings"] = error.findings
            if error.audit_ref is not None:
                reply["audit_ref"] = error.audit_ref
            self.log.warning("Qustody refused a save (%d findings)", len(error.findings))
            self.finish(json.dumps(reply))

    replaced = 0
    for rule in web_app.wildcard_router.rules:
        if rule.target is ContentsHandler:
            rule.target = QustodyContentsHandler
            replaced += 1
    return replaced


# -- session time limits (hardened containers) -----------------------------------------
from .session import SessionKeepAliveHandler, SessionStatusHandler  # noqa: E402 - appended section

HANDLERS.append((r"/qustody/api/session", SessionStatusHandler))  # type: ignore[arg-type]
HANDLERS.append((r"/qustody/api/session/keepalive", SessionKeepAliveHandler))  # type: ignore[arg-type]
