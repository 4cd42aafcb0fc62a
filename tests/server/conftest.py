"""A real jupyter-server with the Qustody extension, and helpers to drive its REST API."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"server_ext": True}}}


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.records.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.records)


@pytest.fixture
def server_logs(jp_serverapp: Any) -> Iterator[LogCapture]:
    """Everything the server and tornado log during the test, at every level."""
    handler = LogCapture()
    loggers = [
        jp_serverapp.log,
        *(
            logging.getLogger(n)
            for n in ("tornado.access", "tornado.application", "tornado.general", "")
        ),
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


class Api:
    """The contents REST API as JupyterLab uses it; errors are returned, not raised."""

    def __init__(self, fetch: Any) -> None:
        self.fetch = fetch

    async def call(
        self, method: str, *path: str, body: Any = None, raw: bytes | None = None, **params: str
    ) -> tuple[int, Any]:
        # tornado's 20 s default is too short for the 100 MB saves on a loaded 2-core runner.
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "request_timeout": 240}
        if raw is not None:
            kwargs["body"] = raw
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in {"POST", "PUT", "PATCH"}:
            kwargs["body"] = b""
        if params:
            kwargs["params"] = params
        response = await self.fetch(*path, **kwargs)
        text = response.body.decode("utf-8", "replace")
        try:
            return response.code, json.loads(text) if text else None
        except ValueError:
            return response.code, text

    async def save(self, path: str, model: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("PUT", "api", "contents", path, body=model)

    async def save_notebook(self, path: str, nb: dict[str, Any]) -> tuple[int, Any]:
        return await self.save(path, {"type": "notebook", "format": "json", "content": nb})

    async def save_text(self, path: str, text: str) -> tuple[int, Any]:
        return await self.save(path, {"type": "file", "format": "text", "content": text})


@pytest.fixture
def api(jp_fetch: Any, jp_serverapp: Any) -> Api:
    return Api(jp_fetch)
