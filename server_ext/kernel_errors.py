"""Qustody's refusals in a notebook: one clear message, not a traceback through our code.

A QPU gateway refusal or a missing secret is the user's to act on (a quota, a project, a
grant), and its message already says what to do. IPython would print it under a long
traceback through ``server_ext`` and Qiskit; here the traceback keeps the user's own
frames (their cells and modules), drops everything from the first frame of Qustody or an
installed library on, and ends with ``<Kind> [<code>]: <message>``. ``%xmode Verbose``
(or ``QUSTODY_FULL_TRACEBACKS=1``) shows the full traceback again.

IPython renders an exception through its ``_render_traceback_()`` when it has one (the
hook exception classes use to customise their traceback); outside IPython nothing
changes. Imports nothing heavy (no Qiskit, no jupyter-server).
"""

from __future__ import annotations

import os
import sysconfig
import types
from pathlib import Path

#: Frames under these directories are not the user's code (with the separator, so that
#: ``/usr/lib/python3.11-mine/`` is not taken for ``/usr/lib/python3.11``).
_LIBRARY_DIRS = tuple(
    {
        os.path.join(d, "")
        for d in (
            str(Path(__file__).resolve().parent),
            *(sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")),
        )
    }
)


class QustodyRefusal(Exception):
    """Base of the errors a user fixes by acting, not by debugging Qustody."""

    #: A short reason code (``PROJECT_QUOTA``, ``NO_SUCH_SECRET``), shown in brackets.
    code: str = ""
    #: What the message is about, e.g. "QPU gateway".
    kind: str = "Qustody"

    def _render_traceback_(self) -> list[str]:
        """IPython's hook: the user's frames, then ``<kind> [<code>]: <message>``."""
        return _render(self)


def _users_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames that are not the user's code: IPython's own frames
    before the cell, and everything from the first library frame after it."""
    frames: list[types.TracebackType] = []
    while tb is not None:
        ours = os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_LIBRARY_DIRS)
        if ours and frames:
            break
        if not ours:
            frames.append(tb)
        tb = tb.tb_next
    head: types.TracebackType | None = None
    for frame in reversed(frames):
        head = types.TracebackType(head, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return head


def _render(value: QustodyRefusal) -> list[str]:
    import IPython

    shell = IPython.get_ipython()
    verbose = os.environ.get("QUSTODY_FULL_TRACEBACKS") == "1" or (
        shell is not None and getattr(shell.InteractiveTB, "mode", "") == "Verbose"
    )
    if shell is not None and verbose:
        return list(shell.InteractiveTB.structured_traceback(
            type(value), value, value.__traceback__))
    cut = _users_frames(value.__traceback__)
    lines: list[str] = []
    if shell is not None and cut is not None:
        # the last line is the exception itself: said below, in words
        lines = list(shell.InteractiveTB.structured_traceback(type(value), value, cut))[:-1]
    code = f" [{value.code}]" if value.code else ""
    # QiskitError's str() is the repr of its message
    lines.append(f"{value.kind}{code}: {getattr(value, 'message', '') or value}")
    return lines
