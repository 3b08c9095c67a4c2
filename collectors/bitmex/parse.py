"""BitMEX realtime frames to events: bytes in, events out, no I/O, never raises on input.

Each table is a ``partial`` image, then ``insert``/``update``/``delete`` rows keyed by the table's keys; kept
per watched symbol: the merged ``instrument`` row, the book levels by ``id`` (updates may omit the price),
the resting liquidation orders by ``orderID``. A delta before its image is ``out_of_sync``.

* ``trade`` -> ``Trade``, deduped by time + ``trdMatchID`` (UUIDs: unordered; one taker order fills many
  rows at one time), so the image a resubscribe repeats adds nothing.
* ``instrument`` -> ``FundingMark`` when mark, index or funding change (``fundingRate`` is paid at
  ``fundingTimestamp``, per ``fundingInterval``; the index is ``indicativeSettlePrice``, else ``indexPrice``),
  ``OpenInterest`` when ``openInterest`` does, valued at the mark.
* ``orderBookL2_25`` -> ``Depth`` per message; a broken book re-subscribes (``replies``) for a fresh image.
* ``liquidation`` -> ``Liquidation`` per new ``orderID``: ``Sell`` sells a long out (``side == "long"``), size
  ``leavesQty``; fills (updates, deletes) never count again. Rows carry no time: ``ts_event`` is the newest
  venue time seen for the symbol (instrument updates come several times a second); before any, it waits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from collectors.bitmex import schemas
from collectors.bitmex.instruments import DEFAULT_FUNDING_INTERVAL_H, VENUE
from collectors.bitmex.schemas import UNSET, iso_to_ns
from collectors.book import Book
from collectors.instruments import Instrument
from collectors.parsing import EMPTY, ParseResult, funding_rate, guarded, reject, tradable, venue_time
from collectors.rejects import Reject, RejectReason
from flushwatch.events import Depth, Event, Liquidation, OpenInterest, PositionSide, TakerSide, Trade, funding_mark

RECENT_LIQUIDATIONS: Final = 4096
"""Liquidation order ids remembered for dedupe: a partial repeats the few resting ones, never thousands."""
MAX_HELD: Final = 256
"""Liquidations held per symbol until a venue time is known (normally none: the instrument image comes first)."""
BOOK_LEVELS: Final = {"orderBookL2_25": 25, "orderBookL2": 200}
"""Levels per side the depth bands use: all of the top-25 book; the first 200 of the full one."""

_TAKER: Final[dict[str, TakerSide]] = {"Buy": "buy", "Sell": "sell"}
_POSITION: Final[dict[str, PositionSide]] = {"Sell": "long", "Buy": "short"}  # the order closes the other side
_INF: Final = math.inf
_PRICES: Final = ("markPrice", "indicativeSettlePrice", "indexPrice")
_FUNDING_FIELDS: Final = (*_PRICES, "fundingRate", "fundingTimestamp", "fundingInterval")


def _positive(value: float | None) -> bool:
    return value is not None and 0.0 < value < _INF


@dataclass(slots=True, eq=False)
class _Market:
    """What the parser knows of one watched instrument."""

    symbol: str
    asset: str
    size: float
    inverse: bool
    interval_h: float
    clock: int = 0  # the newest venue time seen for the symbol, ns
    held: list[tuple[float, float, PositionSide, int]] = field(default_factory=list)  # awaiting a venue time
    row: dict[str, Any] = field(default_factory=dict)  # the merged instrument row, times in ns; {} before the image
    last_funding: tuple[int, tuple[float, ...]] | None = None
    last_oi: tuple[int, tuple[float, ...]] | None = None
    trade_ts: int = 0
    trade_ids: set[str] = field(default_factory=set)
    book: Book = field(default_factory=lambda: Book(25))
    book_table: str = ""
    levels: dict[int, tuple[bool, float]] = field(default_factory=dict)  # id -> (is bid, price)
    active: set[str] = field(default_factory=set)  # liquidation orderIDs resting in the book

    def base(self, contracts: float, price: float) -> float:
        return contracts * self.size / price if self.inverse else contracts * self.size


def _fresh(m: _Market, what: str, ts: int, key: tuple[float, ...],
           last: tuple[int, tuple[float, ...]] | None) -> Reject | None:
    """``None`` when ``key`` at ``ts`` is news: not older than the last emitted, nor the same values again."""
    if last is not None and ts < last[0]:
        return Reject("stale", f"{m.symbol} {what} at {ts} < {last[0]}")
    if last == (ts, key):
        return Reject("duplicate", f"{m.symbol} {what} {key} at {ts}")
    return None


class BitmexParser:
    """Parses the frames of all connections of one watchlist (the state is shared, so a partial repeated on a
    replacement connection is recognised)."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int = 1 << 22) -> None:
        self._markets = {i.symbol: _Market(i.symbol, i.asset, i.contract_size, i.kind == "inverse",
                                           i.funding_interval_h or DEFAULT_FUNDING_INTERVAL_H) for i in instruments}
        self._table = msgspec.json.Decoder(schemas.Table)
        self._control = msgspec.json.Decoder(schemas.Control)
        self._seen: dict[str, None] = {}  # liquidation orderIDs, oldest first
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        if len(frame) == 4 and (frame == b"pong" if isinstance(frame, bytes) else frame == "pong"):
            return EMPTY  # the answer to our text ping
        try:
            msg = self._table.decode(frame)
        except msgspec.ValidationError as exc:
            return self._on_control(frame, exc)
        if type(msg) is schemas.TradeTable:
            return self._on_trades(msg, ts_recv)
        if isinstance(msg, schemas.BookTable):
            return self._on_book(msg, "orderBookL2" if type(msg) is schemas.FullBookTable else "orderBookL2_25",
                                 ts_recv)
        if type(msg) is schemas.InstrumentTable:
            return self._on_instrument(msg, ts_recv)
        assert type(msg) is schemas.LiquidationTable
        return self._on_liquidations(msg, ts_recv)

    def _on_control(self, frame: bytes | str, exc: msgspec.ValidationError) -> ParseResult:
        msg = self._control.decode(frame)  # a DecodeError here is the guard's "malformed"
        if msg.table is not None:
            if msg.table in schemas.TABLES:
                return reject("malformed", f"{msg.table}: {exc}")
            return reject("unknown_type", f"table {msg.table}")
        if msg.error is not None or msg.status is not None or msg.success is False:
            return reject("venue_error", f"{msg.status}: {msg.error}")
        if msg.subscribe is not None:
            return ParseResult([], [], [msg.subscribe])
        if msg.success or msg.info is not None:
            return EMPTY  # the welcome, an unsubscribe ack
        return reject("malformed", "neither a table, an ack nor an error")

    def _advance(self, m: _Market, ts: int, events: list[Event]) -> None:
        """Move the symbol's venue clock to ``ts``, releasing liquidations that waited for one."""
        m.clock = ts
        if m.held:
            events += [Liquidation(VENUE, m.symbol, m.asset, ts, recv, price, size, side)
                       for price, size, side, recv in m.held]
            m.held.clear()

    def _on_trades(self, msg: schemas.TradeTable, ts_recv: int) -> ParseResult:
        if msg.action != "insert" and msg.action != "partial":
            return reject("malformed", f"trade action {msg.action!r}")
        events: list[Event] = []
        rejects: list[Reject] = []
        for row in msg.data:
            m = self._markets.get(row.symbol)
            if m is None:
                rejects.append(Reject("unknown_symbol", row.symbol))
                continue
            side, price, size, ts = _TAKER.get(row.side), row.price, row.size, _venue_time(row.timestamp)
            if side is None or not tradable(price, size) or ts is None:
                rejects.append(Reject("bad_value", f"{row.symbol} trade {row.side!r} {price} {size} {row.timestamp!r}"))
                continue
            if ts < m.trade_ts or (ts == m.trade_ts and row.trdMatchID in m.trade_ids):
                reason: RejectReason = "stale" if ts < m.trade_ts else "duplicate"
                rejects.append(Reject(reason, f"{row.symbol} trade {row.trdMatchID} at {ts}, last {m.trade_ts}"))
                continue
            if ts == m.trade_ts:
                m.trade_ids.add(row.trdMatchID)
            else:
                m.trade_ts, m.trade_ids = ts, {row.trdMatchID}
            if ts > m.clock:
                self._advance(m, ts, events)
            base = size * m.size / price if m.inverse else size * m.size
            events.append(Trade(VENUE, m.symbol, m.asset, ts, ts_recv, price, base, side))
        return ParseResult(events, rejects)

    def _on_instrument(self, msg: schemas.InstrumentTable, ts_recv: int) -> ParseResult:
        action = msg.action
        if action not in ("partial", "insert", "update", "delete"):
            return reject("malformed", f"instrument action {action!r}")
        events: list[Event] = []
        rejects: list[Reject] = []
        for row in msg.data:
            m = self._markets.get(row.symbol)
            if m is None:
                rejects.append(Reject("unknown_symbol", row.symbol))
            elif action == "delete":
                m.row = {}  # delisted: later updates wait for a new image
            elif action == "update" and not m.row:
                rejects.append(Reject("out_of_sync", f"{row.symbol} instrument update before its partial"))
            else:
                problem = self._merge(m, row, action != "update")
                if problem is not None:
                    rejects.append(Reject("bad_value", f"{row.symbol} instrument {problem}"))
                else:
                    self._instrument_events(m, row, action != "update", ts_recv, events, rejects)
        return ParseResult(events, rejects)

    def _merge(self, m: _Market, row: schemas.InstrumentRow, image: bool) -> str | None:
        """Fold ``row`` into the symbol's row (``image``: replacing it), or say what is bad and change nothing."""
        fields = {name: value for name in row.__struct_fields__ if (value := getattr(row, name)) is not UNSET}
        for name in _PRICES:
            if fields.get(name) is not None and not _positive(fields[name]):
                return f"{name}={fields[name]}"
        rate, oi = fields.get("fundingRate"), fields.get("openInterest")
        if (rate is not None and not funding_rate(rate)) or (oi is not None and not 0.0 <= oi < _INF):
            return f"fundingRate={rate} openInterest={oi}"
        times = {name: _venue_time(fields[name]) for name in ("timestamp", "fundingTimestamp") if fields.get(name)}
        interval = fields.get("fundingInterval")
        hours = schemas.timespan_hours(interval) if interval else 0.0
        if None in times.values() or hours is None:
            return f"time {row.timestamp!r} {row.fundingTimestamp!r} {interval!r}"
        if image:
            m.row = {}
        m.row |= fields | times
        if hours:
            m.interval_h = hours
        return None

    def _instrument_events(self, m: _Market, row: schemas.InstrumentRow, image: bool, ts_recv: int,
                           events: list[Event], rejects: list[Reject]) -> None:
        state = m.row
        ts: int = state.get("timestamp") or 0
        if ts > m.clock:
            self._advance(m, ts, events)
        mark: float | None = state.get("markPrice")
        rate: float | None = state.get("fundingRate")
        oi: float | None = state.get("openInterest")
        if mark is None:
            return  # nothing to value anything at yet
        funding = rate is not None and (image or any(getattr(row, name) is not UNSET for name in _FUNDING_FIELDS))
        counted = oi is not None and (image or row.openInterest is not UNSET or m.last_oi is None)
        if (funding or counted) and ts == 0:
            rejects.append(Reject("bad_value", f"{m.symbol} instrument without a timestamp"))
            return
        if funding and rate is not None:
            # 0: no index known; FundingMark then reports no premium.
            index = state.get("indicativeSettlePrice") or state.get("indexPrice") or 0.0
            key = (mark, index, rate, m.interval_h)
            if (problem := _fresh(m, "mark/funding", ts, key, m.last_funding)) is not None:
                rejects.append(problem)
            else:
                m.last_funding = (ts, key)
                events.append(funding_mark(venue=VENUE, symbol=m.symbol, asset=m.asset, ts_event=ts,
                                           ts_recv=ts_recv, mark_price=mark, index_price=index, funding_rate=rate,
                                           funding_interval_h=m.interval_h,
                                           next_funding_ts=state.get("fundingTimestamp") or 0))
        if counted and oi is not None:
            if (problem := _fresh(m, "openInterest", ts, (oi,), m.last_oi)) is not None:
                rejects.append(problem)
            else:
                m.last_oi = (ts, (oi,))
                usd = oi * m.size if m.inverse else oi * m.size * mark
                events.append(OpenInterest(VENUE, m.symbol, m.asset, ts, ts_recv, m.base(oi, mark), usd))

    def _on_book(self, msg: schemas.BookTable, table: str, ts_recv: int) -> ParseResult:
        action = msg.action
        image = action == "partial"
        if not image and action not in ("insert", "update", "delete"):
            return reject("malformed", f"book action {action!r}")
        rejects: list[Reject] = []
        replies: list[str] = []
        touched: list[_Market] = []  # one market per message on BitMEX; several are handled all the same
        if image:
            symbols = dict.fromkeys(row.symbol for row in msg.data)
            if msg.filter is not None and msg.filter.symbol is not None:
                symbols[msg.filter.symbol] = None  # an empty image still says "this book is empty"
            for symbol in symbols:
                if (m := self._markets.get(symbol)) is None:
                    rejects.append(Reject("unknown_symbol", symbol))
                    continue
                m.book.snapshot((), ())
                m.book.keep, m.book_table = BOOK_LEVELS[table], table
                m.levels.clear()
                touched.append(m)
        ts, text = 0, None
        for row in msg.data:
            m = self._markets.get(row.symbol)
            if m is None or not m.book.synced:
                if image:
                    continue  # already rejected above
                if m is None:
                    rejects.append(Reject("unknown_symbol", row.symbol))
                elif not rejects or rejects[-1].reason != "out_of_sync":
                    rejects.append(Reject("out_of_sync", f"{row.symbol} book {action} without its partial"))
                continue
            problem = self._apply(m, "insert" if image else action, row)
            if problem is not None:
                rejects.append(problem)
                # A bad image is not asked for again: the venue would only send it again.
                self._desync(m, None if image else replies)
                continue
            if not touched or (touched[-1] is not m and m not in touched):
                touched.append(m)
            if row.timestamp is not None and row.timestamp != text:  # rows of a message share their time
                text = row.timestamp
                ts = max(ts, _venue_time(text) or 0)
        events: list[Event] = []
        for m in touched:
            if m.book.synced:
                self._depth(m, ts, ts_recv, events, rejects, None if image else replies)
        return ParseResult(events, rejects, [], replies)

    @staticmethod
    def _apply(m: _Market, action: str, row: schemas.BookRow) -> Reject | None:
        """Apply one level change to the symbol's book; the reject instead when it cannot be applied."""
        is_bid = row.side == "Buy"
        if not is_bid and row.side != "Sell":
            return Reject("malformed", f"{row.symbol} book side {row.side!r}")
        book, levels = m.book, m.levels
        old = levels.get(row.id)
        if old is None and action != "insert":
            return Reject("out_of_sync", f"{row.symbol} book {action} of unknown level {row.id}")
        if old is not None:  # resized, moved or gone: out first (any failure below drops the whole book)
            (book.bids if old[0] else book.asks).pop(old[1], None)
            if action == "delete":
                del levels[row.id]
                return None
        price = row.price if row.price is not None else (old[1] if old is not None else None)
        if not (_positive(price) and _positive(row.size)):
            return Reject("bad_value", f"{row.symbol} book level {row.id} price={price} size={row.size}")
        assert price is not None and row.size is not None
        levels[row.id] = (is_bid, price)
        (book.bids if is_bid else book.asks)[price] = m.base(row.size, price)
        return None

    def _desync(self, m: _Market, replies: list[str] | None) -> None:
        """Drop a broken book; with ``replies``, ask for a fresh partial by re-subscribing its topic."""
        m.book.bids, m.book.asks, m.book.synced = {}, {}, False
        m.levels.clear()
        if replies is not None and m.book_table:
            topic = [f"{m.book_table}:{m.symbol}"]
            replies += [schemas.command("unsubscribe", topic), schemas.command("subscribe", topic)]

    def _depth(self, m: _Market, ts: int, ts_recv: int, events: list[Event], rejects: list[Reject],
               replies: list[str] | None) -> None:
        if ts > m.clock:
            self._advance(m, ts, events)
        ts = ts or m.clock
        bands = m.book.depth()
        if bands is None:
            if m.book.bids and m.book.asks:
                rejects.append(Reject("bad_value", f"{m.symbol} book crossed"))
                self._desync(m, replies)
            return  # empty or one-sided: nothing to report, nothing wrong
        if ts == 0:
            return  # no venue time known yet (old frames carry none): kept, reported on the next change
        mid, spread_bps, bid_usd, ask_usd, reach_bps = bands
        events.append(Depth(VENUE, m.symbol, m.asset, ts, ts_recv, mid, spread_bps, bid_usd, ask_usd, reach_bps))

    def _on_liquidations(self, msg: schemas.LiquidationTable, ts_recv: int) -> ParseResult:
        action = msg.action
        if action not in ("partial", "insert", "update", "delete"):
            return reject("malformed", f"liquidation action {action!r}")
        if action == "partial":  # the image replaces what rests in the book, never what was counted
            for symbol in {row.symbol for row in msg.data} | {msg.filter.symbol if msg.filter else None}:
                if (m := self._markets.get(symbol or "")) is not None:
                    m.active.clear()
        events: list[Event] = []
        rejects: list[Reject] = []
        for row in msg.data:
            m = self._markets.get(row.symbol)
            if m is None:
                rejects.append(Reject("unknown_symbol", row.symbol))
            elif action in ("update", "delete"):  # a partial fill, or gone: counted already at its insert
                if row.orderID not in m.active:
                    rejects.append(Reject("out_of_sync", f"{row.symbol} liquidation {action} of {row.orderID}"))
                elif action == "delete":
                    m.active.discard(row.orderID)
            elif (side := _POSITION.get(row.side or "")) is None or not (
                    _positive(row.price) and _positive(row.leavesQty)):
                rejects.append(Reject("bad_value", f"{row.symbol} liquidation {row.side} {row.price} {row.leavesQty}"))
            elif row.orderID in self._seen:
                m.active.add(row.orderID)
                rejects.append(Reject("duplicate", f"{row.symbol} liquidation {row.orderID}"))
            else:
                m.active.add(row.orderID)
                self._seen[row.orderID] = None
                if len(self._seen) > RECENT_LIQUIDATIONS:
                    del self._seen[next(iter(self._seen))]
                assert row.price is not None and row.leavesQty is not None
                size = m.base(row.leavesQty, row.price)
                if m.clock:
                    events.append(Liquidation(VENUE, m.symbol, m.asset, m.clock, ts_recv, row.price, size, side))
                elif len(m.held) < MAX_HELD:
                    m.held.append((row.price, size, side, ts_recv))
                else:
                    rejects.append(Reject("out_of_sync", f"{row.symbol} liquidation with no venue time known"))
        return ParseResult(events, rejects)


def _venue_time(text: str) -> int | None:
    """A BitMEX time as int ns, if it is one and a plausible ``venue_time``."""
    return venue_time(iso_to_ns(text))
