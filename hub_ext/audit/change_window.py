"""When privileged changes are expected: ``"Mon-Fri 08:00-18:00 Europe/Berlin"``.

A grant of a privileged role inside the window is routine; one outside it raises an alert
(``AlertRules.change_window``). The text is days (a range ``Mon-Fri`` or a list
``Mon,Wed,Fri``), a time range ``HH:MM-HH:MM`` (the end excluded; one that wraps past
midnight, ``22:00-02:00``, ends on the next day) and an optional IANA time zone (UTC by
default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EXAMPLE = "Mon-Fri 08:00-18:00 Europe/Berlin"


class ChangeWindowError(ValueError):
    pass


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ChangeWindowError(f"{part!r} is not a day or a day range (Mon, Mon-Fri)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def _minute(text: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ChangeWindowError(f"{text!r} is not a time (HH:MM)")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 24 * 60):
        raise ChangeWindowError(f"{text!r} is not a time of day")
    return h * 60 + m


@dataclass(frozen=True)
class ChangeWindow:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str) -> ChangeWindow:
        parts = text.split()
        if len(parts) not in (2, 3):
            raise ChangeWindowError(f"give days, hours and optionally a zone, e.g. {EXAMPLE!r}")
        start, sep, end = parts[1].partition("-")
        if not sep:
            raise ChangeWindowError(f"{parts[1]!r} is not a time range (08:00-18:00)")
        try:
            zone = ZoneInfo(parts[2] if len(parts) == 3 else "UTC")
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a tzdata folder
            raise ChangeWindowError(
                f"{parts[2]!r} is not a time zone (e.g. Europe/Berlin)"
            ) from None
        window = cls(_days(parts[0]), _minute(start), _minute(end), zone)
        if window.start == window.end:
            raise ChangeWindowError(f"{parts[1]!r} is an empty time range")
        if window.start == 24 * 60:
            raise ChangeWindowError(f"{parts[1]!r} starts at 24:00; write 00:00 of the next day")
        return window

    def contains(self, when: float) -> bool:
        """Whether the moment ``when`` (a Unix time) falls inside the window."""
        local = datetime.fromtimestamp(when, self.zone)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        # wraps past midnight: the late part belongs to the day, the early part to the day before
        if minute >= self.start:
            return local.weekday() in self.days
        return minute < self.end and (local.weekday() - 1) % 7 in self.days
