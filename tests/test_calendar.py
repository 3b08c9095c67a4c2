"""The TradFi calendar: sessions in local time (daylight saving included), closed when none is open."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from detector.calendar import TradFiCalendar, parse_session
from flushwatch.settings import DetectorSettings


def _t(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_the_us_session_follows_new_york_time_through_daylight_saving() -> None:
    cal = TradFiCalendar()
    # 09:30 New York is 14:30 UTC in winter (EST) and 13:30 UTC in summer (EDT)
    assert cal.closed(_t("2026-01-14T14:29:00")) and not TradFiCalendar().closed(_t("2026-01-14T14:30:00"))
    assert not TradFiCalendar().closed(_t("2026-07-15T13:30:00"))
    assert TradFiCalendar().closed(_t("2026-07-15T20:00:00"))  # 16:00 EDT: the close
    # 2025-10-10 20:50 UTC, the cascade's onset: a Friday after the US close
    assert TradFiCalendar().closed(_t("2025-10-10T20:50:00"))
    assert TradFiCalendar().closed(_t("2026-01-31T16:00:00"))  # a Saturday


def test_several_sessions_and_wrapping_day_ranges() -> None:
    cal = TradFiCalendar(("America/New_York Mon-Fri 09:30-16:00", "Asia/Tokyo Sun-Mon 09:00-15:00"))
    assert not cal.closed(_t("2026-02-01T01:00:00"))  # Sunday 10:00 in Tokyo
    assert parse_session("UTC Fri-Mon 00:00-23:59").days == frozenset({4, 5, 6, 0})


@pytest.mark.parametrize("bad", ["Nowhere/City Mon-Fri 09:30-16:00", "UTC Mon-Fri 16:00-09:30",
                                 "UTC Funday 09:00-10:00", "UTC Mon-Fri"])
def test_a_bad_session_fails_at_start_naming_the_setting(bad: str) -> None:
    with pytest.raises(ValidationError, match="tradfi_sessions"):
        DetectorSettings(tradfi_sessions=(bad,))
