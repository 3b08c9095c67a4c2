"""When traditional markets are closed: a thin crypto book is thinner then (weekends, US off-hours).

A calendar is data: sessions written ``"<IANA zone> <days> <HH:MM>-<HH:MM>"`` (``"America/New_York Mon-Fri
09:30-16:00"``), local times so daylight saving is the zone's business. TradFi counts as closed when no
session is open. The default is the US equity session, whose hours ETF flows follow. CME's crypto futures
used to close Friday evening to Sunday evening; CME announced 24/7 trading from 2026-05-29, so their hours are
no longer a default -- add a session (or remove one) in the configuration when a venue's hours matter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DEFAULT_SESSIONS = ("America/New_York Mon-Fri 09:30-16:00",)


@dataclass(frozen=True)
class Session:
    zone: ZoneInfo
    days: frozenset[int]
    open: dt.time
    close: dt.time

    def is_open(self, t: float) -> bool:
        local = dt.datetime.fromtimestamp(t, self.zone)
        if local.weekday() not in self.days:
            return False
        return self.open <= local.time() < self.close


def _days(text: str) -> frozenset[int]:
    first, _, last = text.partition("-")
    lo, hi = DAYS.index(first), DAYS.index(last or first)
    return frozenset(d % 7 for d in range(lo, hi + 1 if hi >= lo else hi + 8))


def parse_session(text: str) -> Session:
    """``"<zone> <days> <HH:MM>-<HH:MM>"``; raises ``ValueError`` naming what is wrong."""
    try:
        zone, days, hours = text.split()
        start, end = (dt.time.fromisoformat(h) for h in hours.split("-"))
        session = Session(ZoneInfo(zone), _days(days), start, end)
    except (ValueError, KeyError) as exc:
        expected = "'<IANA zone> <Mon-Fri> <HH:MM>-<HH:MM>'"
        raise ValueError(f"calendar session {text!r}: expected {expected} ({exc})") from exc
    if not start < end:
        raise ValueError(f"calendar session {text!r}: the session must open before it closes")
    return session


class TradFiCalendar:
    def __init__(self, sessions: Sequence[str] = DEFAULT_SESSIONS) -> None:
        self.sessions = [parse_session(s) for s in sessions]
        self._minute = -1
        self._closed = False

    def closed(self, t: float) -> bool:
        """Whether every session is shut at event time ``t`` (seconds); cached per minute."""
        minute = int(t // 60)
        if minute != self._minute:
            self._minute = minute
            self._closed = not any(s.is_open(t) for s in self.sessions)
        return self._closed
