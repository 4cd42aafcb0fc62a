"""Qustody server extension: runs inside every user notebook container."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    # Imported here so that `qustody scan` does not need jupyter-server.
    from .app import QustodyApp

    return [{"module": "server_ext", "app": QustodyApp}]
