"""BitMEX realtime wire messages, with BitMEX's own field names, and its timestamp format.

Every data frame is a *table* message -- ``{"table":..,"action":..,"data":[rows]}`` -- where ``action`` is
``partial`` (the table image for the subscribed filter, sent once after subscribing), then ``insert``,
``update`` (only the changed fields and the row's keys) or ``delete`` (only the keys). Numbers are JSON
numbers; ``null`` means "no value" (a dated future has ``fundingRate: null``). The tagged union ``Table``
decodes a frame in one pass; anything else (the welcome, acks, errors) goes through ``Control``.
Unknown fields are ignored, so BitMEX adding a field never breaks decoding.
"""

from __future__ import annotations

from datetime import date
from typing import Final

import msgspec

UNSET: Final = msgspec.UNSET
Unset = msgspec.UnsetType

NS_PER_S: Final = 1_000_000_000
_MAX_NS: Final = 2**63 - 1
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_DAY_NS: dict[str, int] = {}
_DAY_CACHE_MAX: Final = 4096


def iso_to_ns(text: str) -> int | None:
    """BitMEX's ``"2019-06-01T00:00:19.163Z"`` (UTC, 0-9 fraction digits) as int ns; ``None`` for anything
    else. Hand-sliced with the day cached: several times faster than ``datetime.fromisoformat`` per trade."""
    if len(text) < 20 or text[10] != "T" or text[13] != ":" or text[16] != ":" or text[-1] != "Z":
        return None
    day = _DAY_NS.get(text[:10])
    if day is None:
        if text[4] != "-" or text[7] != "-":
            return None
        try:
            day = (date.fromisoformat(text[:10]).toordinal() - _EPOCH_ORDINAL) * 86_400 * NS_PER_S
        except ValueError:
            return None
        if len(_DAY_NS) < _DAY_CACHE_MAX:
            _DAY_NS[text[:10]] = day
    clock = text[11:13] + text[14:16] + text[17:19]
    frac = text[19:-1]
    if not (clock.isascii() and clock.isdigit()):
        return None
    ns = 0
    if frac:
        digits = frac[1:]
        if frac[0] != "." or not 0 < len(digits) <= 9 or not (digits.isascii() and digits.isdigit()):
            return None
        ns = int(digits) * 10 ** (9 - len(digits))
    hours, minutes, seconds = int(clock[0:2]), int(clock[2:4]), int(clock[4:6])
    if hours > 23 or minutes > 59 or seconds > 60:
        return None
    total = day + ((hours * 60 + minutes) * 60 + seconds) * NS_PER_S + ns
    return total if 0 < total <= _MAX_NS else None


_TIMESPAN_ZERO_NS: Final = 946_684_800 * NS_PER_S  # 2000-01-01T00:00:00Z


def timespan_hours(text: str) -> float | None:
    """A BitMEX *timespan* (an offset from 2000-01-01, ``"2000-01-01T08:00:00.000Z"`` = 8 h) in hours."""
    ns = iso_to_ns(text)
    if ns is None or ns <= _TIMESPAN_ZERO_NS:
        return None
    return (ns - _TIMESPAN_ZERO_NS) / (3_600 * NS_PER_S)


def command(op: str, args: list[str]) -> str:
    """A client command: ``{"op":"subscribe","args":["trade:XBTUSD"]}``. BitMEX commands carry no id; the
    answer names the topic instead."""
    return msgspec.json.encode({"op": op, "args": args}).decode()


class Filter(msgspec.Struct, frozen=True, gc=False):
    """A partial's ``filter``: which symbol the image is for (the only clue when ``data`` is empty)."""

    symbol: str | None = None


class TradeRow(msgspec.Struct, frozen=True, gc=False):
    """``trade``: one fill per row, ``side`` the taker's, ``size`` in contracts. Real (2019-06-01)::

        {"table":"trade","action":"insert","data":[{"timestamp":"2019-06-01T00:00:19.163Z","symbol":"XBTUSD",
         "side":"Sell","size":1000,"price":8544.5,"tickDirection":"ZeroMinusTick",
         "trdMatchID":"f73b6f28-075a-3548-a81c-8c843afd2746","grossValue":11703000,"homeNotional":0.11703,
         "foreignNotional":1000}]}
    """

    timestamp: str
    symbol: str
    side: str  # "Buy": the taker bought
    size: float  # contracts (USD for XBTUSD)
    price: float
    trdMatchID: str  # a UUID: unique, but not ordered


class InstrumentRow(msgspec.Struct, frozen=True, gc=False):
    """``instrument``: the full row in ``partial``/``insert``; in ``update`` only ``symbol``, what changed and
    mostly ``timestamp``. ``UNSET`` = not in this message (keep the last value), ``None`` = JSON null.
    Real updates (2019-06-01)::

        {"table":"instrument","action":"update","data":[{"symbol":"XBTUSD","lastTickDirection":"ZeroMinusTick",
         "timestamp":"2019-06-01T00:00:19.163Z"}]}
        {"table":"instrument","action":"update","data":[{"symbol":"ETHUSD","openInterest":58922153}]}

    The real partial of the same fixture file (ETHM19, 100 fields) carries every field below.
    """

    symbol: str
    timestamp: str | Unset = UNSET
    markPrice: float | Unset | None = UNSET
    indicativeSettlePrice: float | Unset | None = UNSET
    """For a perpetual: the index (``.BXBT`` for XBTUSD) -- tardis-node maps it to ``indexPrice``."""
    indexPrice: float | Unset | None = UNSET
    fundingRate: float | Unset | None = UNSET
    """The rate paid at ``fundingTimestamp``, per ``fundingInterval``; null for dated futures."""
    indicativeFundingRate: float | Unset | None = UNSET
    fundingTimestamp: str | Unset | None = UNSET
    fundingInterval: str | Unset | None = UNSET  # a timespan: "2000-01-01T08:00:00.000Z" = 8 h
    openInterest: float | Unset | None = UNSET  # contracts, one side
    openValue: float | Unset | None = UNSET  # in the settlement currency's smallest unit (XBt, USDt)


class BookRow(msgspec.Struct, frozen=True, gc=False):
    """``orderBookL2_25`` / ``orderBookL2``: one price level per ``id``. ``update`` and ``delete`` rows may
    omit ``price`` (older messages) and ``delete`` rows omit ``size``. Real (2022-02-14)::

        {"table":"orderBookL2","action":"insert","data":[{"symbol":"XBTUSD","id":8791115350,"side":"Buy",
         "size":20000,"price":42362,"timestamp":"2022-02-14T08:06:54.742Z"}]}
    """

    symbol: str
    id: int
    side: str  # "Buy" = bid, "Sell" = ask
    size: float | None = None  # contracts
    price: float | None = None
    timestamp: str | None = None


class LiquidationRow(msgspec.Struct, frozen=True, gc=False):
    """``liquidation``: liquidation orders resting in the book, keyed by ``orderID``; ``side`` is the order's
    (``Sell`` closes a long). No timestamp. Real (tardis fixture)::

        {"table":"liquidation","action":"insert","data":[{"orderID":"dd9cea25-207c-0dab-15b5-b88da776f500",
         "symbol":"XBTUSD","side":"Buy","price":10106,"leavesQty":9214}]}
        {"table":"liquidation","action":"delete","data":[{"orderID":"dd9cea25-207c-0dab-15b5-b88da776f500",
         "symbol":"XBTUSD"}]}
    """

    orderID: str
    symbol: str
    side: str | None = None
    price: float | None = None
    leavesQty: float | None = None  # contracts still to fill


class _Table(msgspec.Struct, frozen=True, gc=False, tag_field="table"):
    action: str  # partial | insert | update | delete
    filter: Filter | None = None


class TradeTable(_Table, frozen=True, gc=False, tag="trade"):
    data: list[TradeRow] = []


class InstrumentTable(_Table, frozen=True, gc=False, tag="instrument"):
    data: list[InstrumentRow] = []


class BookTable(_Table, frozen=True, gc=False, tag="orderBookL2_25"):
    data: list[BookRow] = []


class FullBookTable(BookTable, frozen=True, gc=False, tag="orderBookL2"):
    """The unbounded book: same rows; the recordings hold it, the collector subscribes the top-25 one."""


class LiquidationTable(_Table, frozen=True, gc=False, tag="liquidation"):
    data: list[LiquidationRow] = []


Table = TradeTable | InstrumentTable | BookTable | FullBookTable | LiquidationTable
TABLES: Final = frozenset({"trade", "instrument", "orderBookL2_25", "orderBookL2", "liquidation"})


class Control(msgspec.Struct, frozen=True, gc=False):
    """Every other frame; which fields are present tells the kind.

    The welcome, on connect (``limit`` is empty since 2026-03-30, per BitMEX's announcement)::

        {"info":"Welcome to the BitMEX Realtime API.","version":"2.0.0","timestamp":"2026-01-26T08:17:40.000Z",
         "docs":"https://www.bitmex.com/app/wsAPI","heartbeatEnabled":false,"limit":{}}

    A subscription ack, one per topic::

        {"success":true,"subscribe":"trade:XBTUSD","request":{"op":"subscribe","args":["trade:XBTUSD"]}}

    An error, for the whole request::

        {"status":400,"error":"Unknown table: tradeBin5dm","meta":{},"request":{"op":"subscribe",
         "args":["tradeBin1m","tradeBin5dm"]}}

    Also used to classify a frame the ``Table`` union refused (``table`` set: an unknown table or bad rows).
    """

    table: str | None = None
    info: str | None = None
    success: bool | None = None
    subscribe: str | None = None
    unsubscribe: str | None = None
    status: int | None = None
    error: str | None = None
