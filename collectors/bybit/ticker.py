"""Bybit's ``tickers`` pushes turned into funding and open-interest events: pure functions of the merged ticker
(``BybitParser`` keeps it: a snapshot, then only the fields that changed; ``schemas.TickerData`` has a real
snapshot). The fields read here, from that snapshot (2026-08-09)::

    "markPrice":"65117.44","indexPrice":"65137.76","openInterest":"59891.732","fundingIntervalHour":"8",
    "singleOpenInterest":"29945.866","singleOpenInterestValue":"1949998132.50","nextFundingTime":"1786320000000",
    "fundingRate":"0.0001"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from collectors.bybit.schemas import Scalar
from collectors.bybit.spec import VENUE
from collectors.parsing import funding_rate, ms_to_ns, num, positive
from collectors.rejects import Reject
from flushwatch.events import FundingMark, OpenInterest, funding_mark

DEFAULT_FUNDING_INTERVAL_H: Final = 8.0
FUNDING_FIELDS: Final = frozenset({"markPrice", "indexPrice", "fundingRate", "fundingIntervalHour", "nextFundingTime"})
"""The ticker fields a funding event is made of: a delta changing one of them makes a new one."""
OI_FIELDS: Final = frozenset({"singleOpenInterest", "openInterest"})
_INF: Final = math.inf


def given(value: Scalar) -> bool:
    """A ticker field that carries a value (Bybit sends ``""`` for what does not apply)."""
    return value is not None and value != ""


def next_funding_ns(value: Scalar) -> int | None:
    """``nextFundingTime`` (ms text) in ns; 0 when not given, ``None`` when not a time."""
    if value is None or value in ("", "0") or (type(value) is int and value == 0):
        return 0
    return ms_to_ns(value) if isinstance(value, str) or type(value) is int else None


def funding_of(symbol: str, asset: str, state: Mapping[str, Scalar], ts_event: int, ts_recv: int,
               default_interval_h: float) -> FundingMark | Reject | None:
    """The funding event of a merged ticker, ``None`` for a dated future (no funding rate), or the reject of a
    bad value; ``default_interval_h`` when the ticker does not say ``fundingIntervalHour``."""
    rate_text = state.get("fundingRate")
    if not given(rate_text):
        return None  # a dated future: no funding, and mark and index alone are not an event
    hours = state.get("fundingIntervalHour")
    interval = num(hours) if given(hours) else default_interval_h
    next_text = state.get("nextFundingTime")
    next_ns = next_funding_ns(next_text)
    mark, index, rate = num(state.get("markPrice")), num(state.get("indexPrice")), num(rate_text)
    if not (positive(mark) and positive(index) and funding_rate(rate) and positive(interval)) or next_ns is None:
        return Reject("bad_value", f"{symbol} ticker markPrice={state.get('markPrice')!r} indexPrice="
                                   f"{state.get('indexPrice')!r} fundingRate={rate_text!r} interval={hours!r} "
                                   f"nextFundingTime={next_text!r}")
    return funding_mark(venue=VENUE, symbol=symbol, asset=asset, ts_event=ts_event, ts_recv=ts_recv,
                        mark_price=mark, index_price=index, funding_rate=rate, funding_interval_h=interval,
                        next_funding_ts=next_ns)


def open_interest_of(symbol: str, asset: str, state: Mapping[str, Scalar], ts_event: int, ts_recv: int,
                     ) -> OpenInterest | Reject | None:
    """The open-interest event of a merged ticker (one side), ``None`` when it carries none, or the reject of a
    bad value."""
    single = state.get("singleOpenInterest")
    if given(single):
        base = num(single)
        value = state.get("singleOpenInterestValue")
        usd = num(value) if given(value) else base * num(state.get("markPrice"))
    elif given(both := state.get("openInterest")):
        # Before 2026-06 Bybit sent only openInterest, which counts longs and shorts (the 2026-08 recording
        # has openInterest == 2 x singleOpenInterest); every other venue reports one side.
        base = num(both) / 2.0
        usd = base * num(state.get("markPrice"))
    else:
        return None
    if not (0.0 <= base < _INF and 0.0 <= usd < _INF):
        return Reject("bad_value", f"{symbol} ticker singleOpenInterest={single!r} openInterest="
                                   f"{state.get('openInterest')!r} markPrice={state.get('markPrice')!r}")
    return OpenInterest(VENUE, symbol, asset, ts_event, ts_recv, base, usd)
