"""OKX v5 public frames to events: bytes in, events out, no I/O, never raises on input.

Sizes arrive in contracts and become coins through the instrument's contract value (``Instrument.base_size``:
``ctVal`` coins per linear contract, ``ctVal`` USD per inverse one). ``FundingMark`` joins three channels:
it is emitted on each mark price (and each funding update) once the instrument's funding rate and index are
known. Open interest is valued by ``oiUsd`` where the push has it, else at the last mark, held back until the
first mark arrives.

Ordering state: trade ids, and the venue times of books, funding and open interest, must increase (a repeat
after a reconnect is a ``duplicate``); mark and index times must not go back (OKX documents two marks with
one timestamp during deployments, the later one being right). Liquidations come out of time order by design,
so they are only deduplicated, never dropped as stale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from collectors.instruments import Instrument
from collectors.okx import schemas
from collectors.okx.instruments import DEFAULT_FUNDING_INTERVAL_H, VENUE, underlying
from collectors.parsing import (
    EMPTY,
    GENESIS_NS,
    NS_PER_MS,
    ParseResult,
    Sequencer,
    funding_rate,
    guarded,
    latest_ns,
    ms_to_ns,
    num,
    one_pass,
    positive,
    reject,
    tradable,
)
from collectors.rejects import Reject
from flushwatch.events import (
    Depth,
    Event,
    FundingMark,
    Liquidation,
    OpenInterest,
    PositionSide,
    TakerSide,
    Trade,
    depth_from_levels,
    funding_mark,
)

NS_PER_HOUR: Final = 3_600 * 10**9
RECENT_LIQUIDATIONS: Final = 4096
"""Liquidations remembered for dedupe: a replacement connection may repeat the last few, never thousands."""

_TAKER: Final[dict[str, TakerSide]] = {"buy": "buy", "sell": "sell"}
_POSITION: Final[dict[tuple[str, str], PositionSide]] = {
    ("long", "sell"): "long", ("long", "buy"): "long", ("short", "buy"): "short", ("short", "sell"): "short",
    # One-way mode: the liquidation order closes the position, so a sell closes a long.
    ("net", "sell"): "long", ("net", "buy"): "short",
}
_PONG: Final = b"pong"
_INF: Final = math.inf


class _Market:
    """What the parser knows of one watched instrument."""

    __slots__ = ("asset", "held_oi", "index", "interval_h", "inverse", "mark", "mark_ts", "next_funding",
                 "rate", "size", "symbol")

    def __init__(self, inst: Instrument) -> None:
        self.symbol = inst.symbol
        self.asset = inst.asset
        self.size = inst.contract_size
        self.inverse = inst.kind == "inverse"
        self.interval_h = inst.funding_interval_h or DEFAULT_FUNDING_INTERVAL_H
        self.mark = 0.0
        self.mark_ts = 0
        self.index = 0.0
        self.rate = math.nan
        self.next_funding = 0
        self.held_oi: tuple[float, int, int] | None = None  # (oi_base, ts_event, ts_recv) awaiting a mark

    def base(self, contracts: float, price: float) -> float:
        """``contracts`` in coins; ``price`` must be positive."""
        return contracts * self.size / price if self.inverse else contracts * self.size

    def funding(self, ts_event: int, ts_recv: int) -> FundingMark | None:
        if self.mark <= 0.0 or self.index <= 0.0 or math.isnan(self.rate):
            return None
        return funding_mark(venue=VENUE, symbol=self.symbol, asset=self.asset, ts_event=ts_event, ts_recv=ts_recv,
                            mark_price=self.mark, index_price=self.index, funding_rate=self.rate,
                            funding_interval_h=self.interval_h, next_funding_ts=self.next_funding)


def _levels(raw: list[tuple[float, ...]], market: _Market) -> list[tuple[float, float]] | None:
    """Book levels in coins, zero sizes dropped; ``None`` if any level is short or holds a bad number."""
    out = []
    for level in raw:
        if len(level) < 2:
            return None
        price, contracts = level[0], level[1]
        if not (0.0 < price < math.inf and 0.0 <= contracts < math.inf):
            return None
        if contracts > 0.0:
            out.append((price, market.base(contracts, price)))
    return out


class OkxParser:
    """Parses the frames of every connection of one collector (dedupe state is shared, so a message repeated on
    a replacement connection is dropped)."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int) -> None:
        self._markets = {i.symbol: _Market(i) for i in instruments}
        self._by_index: dict[str, list[_Market]] = {}
        for market in self._markets.values():
            self._by_index.setdefault(underlying(market.symbol), []).append(market)
        self._envelope = msgspec.json.Decoder(schemas.Envelope)
        self._trades = msgspec.json.Decoder(list[schemas.TradeItem])
        self._trades_frame = msgspec.json.Decoder(schemas.TradesFrame)
        self._books = msgspec.json.Decoder(list[schemas.BookItem], strict=False)
        self._marks = msgspec.json.Decoder(list[schemas.MarkPriceItem])
        self._indices = msgspec.json.Decoder(list[schemas.IndexTickerItem])
        self._funding = msgspec.json.Decoder(list[schemas.FundingRateItem])
        self._oi = msgspec.json.Decoder(list[schemas.OpenInterestItem])
        self._liquidations = msgspec.json.Decoder(list[schemas.LiquidationItem])
        self._handlers = {
            "trades": self._on_trades, "books5": self._on_books, "mark-price": self._on_mark,
            "index-tickers": self._on_index, "funding-rate": self._on_funding, "open-interest": self._on_oi,
            "liquidation-orders": self._on_liquidations,
        }
        self._trade_ids = Sequencer("tradeId")
        self._book_times = Sequencer("books5 ts")
        self._funding_times = Sequencer("funding-rate ts")
        self._oi_times = Sequencer("open-interest ts")
        self._index_ts: dict[str, int] = {}
        self._recent: dict[tuple[str, str, str, str, str, str], None] = {}
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        if frame == _PONG or frame == "pong":  # the answer to our text ping
            return EMPTY
        # Trades in one pass when the frame starts as OKX writes them; anything else, or what that decoder
        # refuses, goes the general way, which says what is wrong.
        if frame[:26] == b'{"arg":{"channel":"trades"' and (push := one_pass(self._trades_frame, frame)) is not None \
                and push.event is None and push.arg is not None and push.arg.channel == "trades":
            return self._trades_of(push.arg, push.data, ts_recv)
        envelope = self._envelope.decode(frame)
        arg = envelope.arg
        if envelope.event is not None:
            return self._on_event(envelope)
        if arg is None:
            return reject("malformed", "neither a push nor an event")
        handler = self._handlers.get(arg.channel)
        if handler is None:
            return reject("unknown_type", arg.channel)
        return handler(arg, envelope.data, ts_recv)

    def _on_event(self, envelope: schemas.Envelope) -> ParseResult:
        event, arg, request = envelope.event, envelope.arg, envelope.id
        if event in ("subscribe", "unsubscribe"):
            if isinstance(request, str) and (number := _integer(request)) is not None:
                request = number
            if request is None and arg is not None:  # a request sent without id: name the topic instead
                request = f"{arg.channel}:{arg.instId or arg.instType}"
            if request is None:
                return reject("malformed", f"{event} answer without id or arg")
            return ParseResult([], [], [request])
        if event in ("error", "notice"):  # a notice announces a disconnect (service upgrade)
            return reject("venue_error", f"{event} {envelope.code}: {envelope.msg}")
        return reject("unknown_type", f"event {event}")

    def _market(self, symbol: str, rejects: list[Reject]) -> _Market | None:
        market = self._markets.get(symbol)
        if market is None:
            rejects.append(Reject("unknown_symbol", symbol))
        return market

    def _on_trades(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        return self._trades_of(arg, self._trades.decode(data), ts_recv)

    def _trades_of(self, arg: schemas.Arg, items: list[schemas.TradeItem], ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        latest = latest_ns()
        for t in items or _empty(rejects, arg):
            market = self._markets.get(t.instId)
            if market is None:
                rejects.append(Reject("unknown_symbol", t.instId))
                continue
            side = _TAKER.get(t.side)
            trade_id = _integer(t.tradeId)
            # num(), ms_to_ns(), positive() and tradable(), inlined: calls per trade cost more than the checks.
            try:
                price, contracts, ts_event = float(t.px), float(t.sz), int(t.ts) * NS_PER_MS
            except ValueError:
                price = contracts = size = math.nan
                ts_event = 0
            else:
                size = market.base(contracts, price) if 0.0 < price < _INF and 0.0 < contracts < _INF else 0.0
            if (side is None or trade_id is None or not (0.0 < price < _INF and 0.0 < size < _INF)
                    or not price * size < _INF or not GENESIS_NS <= ts_event <= latest):
                rejects.append(Reject("bad_value", f"{t.instId} trade {t.tradeId!r} px={t.px!r} sz={t.sz!r} "
                                                   f"side={t.side!r} ts={t.ts!r}"))
                continue
            if (late := self._trade_ids.check(t.instId, trade_id)) is not None:
                rejects.append(late)
                continue
            events.append(Trade(VENUE, t.instId, market.asset, ts_event, ts_recv, price, size, side))
        return ParseResult(events, rejects)

    def _on_books(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        symbol = arg.instId
        for book in self._books.decode(data) or _empty(rejects, arg):
            market = self._market(symbol, rejects)
            if market is None:
                continue
            bids, asks = _levels(book.bids, market), _levels(book.asks, market)
            ts_event = ms_to_ns(book.ts)
            if bids is None or asks is None or ts_event is None:
                rejects.append(Reject("bad_value", f"{symbol} books5 level or ts (seqId {book.seqId})"))
                continue
            bands = depth_from_levels(bids, asks)
            if bands is None or not (math.isfinite(bands[2][2]) and math.isfinite(bands[3][2])):
                rejects.append(Reject("bad_value", f"{symbol} books5 one-sided, crossed or overflowing "
                                                   f"(seqId {book.seqId})"))
                continue
            if (late := self._book_times.check(symbol, ts_event)) is not None:
                rejects.append(late)
                continue
            mid, spread_bps, bid_usd, ask_usd, reach_bps = bands
            events.append(Depth(VENUE, symbol, market.asset, ts_event, ts_recv, mid, spread_bps, bid_usd, ask_usd,
                                reach_bps))
        return ParseResult(events, rejects)

    def _on_mark(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        for m in self._marks.decode(data) or _empty(rejects, arg):
            market = self._market(m.instId, rejects)
            if market is None:
                continue
            mark, ts_event = num(m.markPx), ms_to_ns(m.ts)
            if not positive(mark) or ts_event is None:
                rejects.append(Reject("bad_value", f"{m.instId} markPx={m.markPx!r} ts={m.ts!r}"))
                continue
            if ts_event < market.mark_ts:
                rejects.append(Reject("stale", f"{m.instId} mark-price ts {ts_event} after {market.mark_ts}"))
                continue
            market.mark, market.mark_ts = mark, ts_event
            if (funding := market.funding(ts_event, ts_recv)) is not None:
                events.append(funding)
            if market.held_oi is not None:
                oi_base, oi_ts, oi_recv = market.held_oi
                market.held_oi = None
                events.append(OpenInterest(VENUE, m.instId, market.asset, oi_ts, oi_recv, oi_base, oi_base * mark))
        return ParseResult(events, rejects)

    def _on_index(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        rejects: list[Reject] = []
        for i in self._indices.decode(data) or _empty(rejects, arg):
            markets = self._by_index.get(i.instId)
            if markets is None:
                rejects.append(Reject("unknown_symbol", i.instId))
                continue
            price, ts_event = num(i.idxPx), ms_to_ns(i.ts)
            if not positive(price) or ts_event is None:
                rejects.append(Reject("bad_value", f"{i.instId} idxPx={i.idxPx!r} ts={i.ts!r}"))
                continue
            last = self._index_ts.get(i.instId, 0)
            if ts_event < last:
                rejects.append(Reject("stale", f"{i.instId} index-tickers ts {ts_event} after {last}"))
                continue
            self._index_ts[i.instId] = ts_event
            for market in markets:
                market.index = price
        return ParseResult([], rejects)

    def _on_funding(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        for f in self._funding.decode(data) or _empty(rejects, arg):
            market = self._market(f.instId, rejects)
            if market is None:
                continue
            rate = num(f.fundingRate)
            this_time = ms_to_ns(f.fundingTime) if f.fundingTime else 0
            next_time = ms_to_ns(f.nextFundingTime) if f.nextFundingTime else 0
            ts_event = ms_to_ns(f.ts) if f.ts else 0
            interval_h = market.interval_h
            if this_time and next_time:
                interval_h = (next_time - this_time) / NS_PER_HOUR
            if not funding_rate(rate) or None in (this_time, next_time, ts_event) or not 0 < interval_h <= 24:
                rejects.append(Reject("bad_value", f"{f.instId} fundingRate={f.fundingRate!r} fundingTime="
                                                   f"{f.fundingTime!r} nextFundingTime={f.nextFundingTime!r}"))
                continue
            if ts_event and (late := self._funding_times.check(f.instId, ts_event)) is not None:
                rejects.append(late)
                continue
            market.rate, market.interval_h, market.next_funding = rate, interval_h, this_time or 0
            if (funding := market.funding(ts_event or market.mark_ts, ts_recv)) is not None:
                events.append(funding)
        return ParseResult(events, rejects)

    def _on_oi(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        for o in self._oi.decode(data) or _empty(rejects, arg):
            market = self._market(o.instId, rejects)
            if market is None:
                continue
            oi_base, ts_event = num(o.oiCcy), ms_to_ns(o.ts)
            oi_usd = num(o.oiUsd) if o.oiUsd else math.nan
            if not (0.0 <= oi_base < math.inf) or ts_event is None or not (o.oiUsd == "" or 0.0 <= oi_usd < math.inf):
                rejects.append(Reject("bad_value", f"{o.instId} oiCcy={o.oiCcy!r} oiUsd={o.oiUsd!r} ts={o.ts!r}"))
                continue
            if (late := self._oi_times.check(o.instId, ts_event)) is not None:
                rejects.append(late)
                continue
            if o.oiUsd == "":
                if market.mark <= 0.0:
                    market.held_oi = (oi_base, ts_event, ts_recv)
                    continue
                oi_usd = oi_base * market.mark
            events.append(OpenInterest(VENUE, o.instId, market.asset, ts_event, ts_recv, oi_base, oi_usd))
        return ParseResult(events, rejects)

    def _on_liquidations(self, arg: schemas.Arg, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        events: list[Event] = []
        rejects: list[Reject] = []
        for item in self._liquidations.decode(data) or _empty(rejects, arg):
            market = self._market(item.instId, rejects)  # routine: the channel carries every swap
            if market is None:
                continue
            for d in item.details or _empty(rejects, arg):
                side = _POSITION.get((d.posSide, d.side))
                price, contracts = num(d.bkPx), num(d.sz)
                ts_event = ms_to_ns(d.ts)
                size = market.base(contracts, price) if positive(price) and positive(contracts) else 0.0
                if side is None or not tradable(price, size) or ts_event is None:
                    rejects.append(Reject("bad_value", f"{item.instId} liquidation posSide={d.posSide!r} side="
                                                       f"{d.side!r} bkPx={d.bkPx!r} sz={d.sz!r} ts={d.ts!r}"))
                    continue
                key = (item.instId, d.ts, d.side, d.posSide, d.bkPx, d.sz)
                if key in self._recent:
                    rejects.append(Reject("duplicate", f"{item.instId} liquidation at {d.ts} again"))
                    continue
                self._recent[key] = None
                if len(self._recent) > RECENT_LIQUIDATIONS:
                    del self._recent[next(iter(self._recent))]
                events.append(Liquidation(VENUE, item.instId, market.asset, ts_event, ts_recv, price, size, side))
        return ParseResult(events, rejects)


def _empty(rejects: list[Reject], arg: schemas.Arg) -> list[Any]:
    """Record a push without data (a frame of the wrong shape) and iterate nothing."""
    rejects.append(Reject("malformed", f"{arg.channel} push without data"))
    return []


def _integer(text: str) -> int | None:
    """A decimal id (``tradeId``, a request id) as int; ``None`` for anything else, however long."""
    return int(text) if 0 < len(text) <= 20 and text.isascii() and text.isdigit() else None
