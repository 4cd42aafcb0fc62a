"""``HintedEnum``: a setting with a fixed set of values, whose error says what each one means.

traitlets' ``Enum`` lists the allowed values in ``--help-all`` and refuses any other; its
message names the class and the values only. ``HintedEnum`` keeps that and says, in the
setting's own words, what to write instead (``SpawnPolicy.host_firewall='iptables': use
'nftables' (...) or 'off' (...)``). The error is also a ``ValueError``, which the hub's
start-up checks turn into a message instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from traitlets import Enum, TraitError


class ChoiceError(TraitError, ValueError):
    """A value outside a ``HintedEnum``'s values."""


# (traitlets lists "Choices" in --help-all for trait classes whose name contains "Enum")
class HintedEnum(Enum):  # type: ignore[type-arg]
    """``Enum`` with a hint for the error: ``HintedEnum(values, default, hint, help=...)``."""

    def __init__(self, values: Sequence[str], default: str, hint: str, **kwargs: Any) -> None:
        self.hint = hint
        super().__init__(list(values), default, **kwargs)

    def error(self, obj: Any, value: Any, error: Any = None, info: Any = None) -> NoReturn:
        owner = type(obj).__name__ if obj is not None else "setting"
        raise ChoiceError(f"{owner}.{self.name}={value!r}: {self.hint}")
