"""Hyperliquid frames to events: bytes in, events out, no I/O, never raises on input.

A frame decodes in one pass (a tagged union on ``channel``) and its events are built positionally. The state
kept, and why:

* trades -- the newest accepted trade time per coin and the ids accepted at that millisecond. ``tid`` is
  unique but not increasing, so it cannot be sequenced; trades of one coin do arrive in time order, so a
  trade older than the newest accepted one is ``stale`` and a repeated id at that millisecond a
  ``duplicate``. This is what drops the replay a resubscription starts with: the first ``trades`` frame
  after subscribing repeats the coin's latest trades. On the very first subscription those trades predate
  the watch and are dropped whole (``stale``); after a reconnect, the ones newer than the last accepted
  trade fill the gap. The replay follows its answer at once; a coin without recent trades may get an empty
  one, which cannot name its coin, so a first frame that comes more than ``REPLAY_WAIT_NS`` after the
  answer is live, not the replay.
* books -- the last push time per coin (``Sequencer``): every ``l2Book`` is a whole book, so there is no
  local book and nothing to resynchronise; a push repeated on a replacement connection is a ``duplicate``.
* asset contexts -- the last funding/mark/oracle and open interest per coin, as text: the venue pushes the
  context again and again, changed or not, and only a change becomes an event.
* the venue clock -- ``activeAssetCtx`` carries no time. Hyperliquid is one chain whose blocks stamp every
  coin's books and trades with the same time, so the newest such time seen (any coin) is the context's
  ``ts_event``; a context arriving before any timed frame is held and released by the first one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import msgspec

from collectors.hyperliquid import schemas
from collectors.hyperliquid.instruments import FUNDING_INTERVAL_H, VENUE
from collectors.instruments import Instrument
from collectors.parsing import (
    EMPTY,
    NS_PER_MS,
    ParseResult,
    Sequencer,
    funding_rate,
    guarded,
    ms_to_ns,
    num,
    positive,
    reject,
    tradable,
)
from collectors.rejects import Reject
from flushwatch.events import Depth, Event, OpenInterest, TakerSide, Trade, depth_from_levels, funding_mark

NS_PER_HOUR: Final = 3600 * 10**9
REPLAY_WAIT_NS: Final = 2 * 10**9
"""How long after a trades subscription's answer its first frame is taken for the venue's replay (local time)."""
_INF: Final = math.inf
_SIDES: Final[dict[str, TakerSide]] = {"B": "buy", "A": "sell"}


def _levels(raw: list[schemas.WsLevel]) -> list[tuple[float, float]] | None:
    """``(price, size)`` best first; ``None`` if any level is bad (NaN included)."""
    out = []
    for level in raw:
        px, sz = level.px, level.sz
        if not (0.0 < px < _INF and 0.0 < sz < _INF):
            return None
        out.append((px, sz))
    return out


class HyperliquidParser:
    """Parses the frames of every connection of one collector (the dedupe state is shared, so a message
    repeated on a replacement connection is dropped)."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int = 1 << 20) -> None:
        self._assets = {i.symbol: i.asset for i in instruments}
        self._interval_h = {i.symbol: i.funding_interval_h if i.funding_interval_h > 0 else FUNDING_INTERVAL_H
                            for i in instruments}
        self._frame = msgspec.json.Decoder(schemas.Frame, strict=False)
        self._envelope = msgspec.json.Decoder(schemas.Envelope)
        self._book_times = Sequencer("l2Book time")
        self._trade_ms: dict[str, int] = {}
        self._trade_ids: dict[str, set[int]] = {}
        self._replay_due: dict[str, int] = {}
        """Coins subscribed to trades with no trade accepted yet, each with when its subscription was answered:
        their first frame is the venue's replay if it comes soon enough."""
        self._clock_ms = 0
        self._last_mark: dict[str, tuple[str, str, str]] = {}
        self._last_oi: dict[str, str] = {}
        self._held: dict[str, tuple[schemas.PerpsAssetCtx, int]] = {}
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        try:
            msg = self._frame.decode(frame)
        except msgspec.ValidationError:
            channel = self._envelope.decode(frame).channel  # a DecodeError here is the guard's "malformed"
            if channel in schemas.KNOWN_CHANNELS:
                raise
            return reject("unknown_type", channel)
        # Most frequent first.
        if type(msg) is schemas.Trades:
            return self._on_trades(msg.data, ts_recv)
        if type(msg) is schemas.L2Book:
            return self._on_book(msg.data, ts_recv)
        if type(msg) is schemas.ActiveAssetCtx:
            return self._on_ctx(msg.data, ts_recv)
        if type(msg) is schemas.SubscriptionResponse:
            return self._on_ack(msg.data, ts_recv)
        if type(msg) is schemas.Error:
            return self._on_error(msg.data)
        return EMPTY  # pong

    def _on_trades(self, trades: list[schemas.WsTrade], ts_recv: int) -> ParseResult:
        if not trades:
            return EMPTY
        coin = trades[0].coin
        answered = self._replay_due.pop(coin, None)
        if answered is not None and ts_recv - answered <= REPLAY_WAIT_NS:
            return reject("stale", f"{coin}: {len(trades)} trades replayed on subscribing, before the watch began")
        events: list[Event] = []
        rejects: list[Reject] = []
        for t in trades:
            coin = t.coin
            asset = self._assets.get(coin)
            if asset is None:
                rejects.append(Reject("unknown_symbol", coin))
                continue
            price, size, ms = t.px, t.sz, t.time
            ts_event = ms_to_ns(ms)
            side = _SIDES.get(t.side)
            if not tradable(price, size) or ts_event is None or side is None:
                rejects.append(Reject("bad_value", f"{coin} trade {t.tid} px={price} sz={size} time={ms} "
                                                   f"side={t.side!r}"))
                continue
            last = self._trade_ms.get(coin, 0)
            if ms > last:
                self._trade_ms[coin] = ms
                self._trade_ids[coin] = {t.tid}
            elif ms < last:
                rejects.append(Reject("stale", f"{coin} trade {t.tid} at {ms} after one at {last}"))
                continue
            elif t.tid in (ids := self._trade_ids[coin]):
                rejects.append(Reject("duplicate", f"{coin} trade {t.tid} at {ms}"))
                continue
            else:
                ids.add(t.tid)
            self._clock_ms = ms
            events.append(Trade(VENUE, coin, asset, ts_event, ts_recv, price, size, side))
        if self._held and events:
            events += self._release_held()
        return ParseResult(events, rejects)

    def _on_book(self, book: schemas.WsBook, ts_recv: int) -> ParseResult:
        coin = book.coin
        asset = self._assets.get(coin)
        if asset is None:
            return reject("unknown_symbol", coin)
        ts_event = ms_to_ns(book.time)
        bids, asks = _levels(book.levels[0]), _levels(book.levels[1])
        if bids is None or asks is None or ts_event is None:
            return reject("bad_value", f"{coin} l2Book level or time (time={book.time})")
        bands = depth_from_levels(bids, asks)
        if bands is None:
            return reject("bad_value", f"{coin} l2Book empty, one-sided or crossed (time={book.time})")
        if (late := self._book_times.check(coin, book.time)) is not None:
            return ParseResult([], [late])
        self._clock_ms = book.time
        mid, spread_bps, bid_usd, ask_usd, reach_bps = bands
        events: list[Event] = [Depth(VENUE, coin, asset, ts_event, ts_recv, mid, spread_bps, bid_usd, ask_usd,
                                     reach_bps)]
        if self._held:
            events += self._release_held()
        return ParseResult(events, [])

    def _on_ctx(self, msg: schemas.WsActiveAssetCtx, ts_recv: int) -> ParseResult:
        coin = msg.coin
        asset = self._assets.get(coin)
        if asset is None:
            return reject("unknown_symbol", coin)
        ctx = msg.ctx
        mark, index, rate, oi = num(ctx.markPx), num(ctx.oraclePx), num(ctx.funding), num(ctx.openInterest)
        if not (positive(mark) and positive(index) and funding_rate(rate) and 0.0 <= oi < _INF):
            return reject("bad_value", f"{coin} activeAssetCtx markPx={ctx.markPx!r} oraclePx={ctx.oraclePx!r} "
                                       f"funding={ctx.funding!r} openInterest={ctx.openInterest!r}")
        if not self._clock_ms:
            self._held[coin] = (ctx, ts_recv)
            return EMPTY
        return ParseResult(self._ctx_events(coin, asset, ctx, ts_recv), [])

    def _ctx_events(self, coin: str, asset: str, ctx: schemas.PerpsAssetCtx, ts_recv: int) -> list[Event]:
        """The events of a valid context that differ from the last ones emitted for ``coin``."""
        ts_event = self._clock_ms * NS_PER_MS
        mark = float(ctx.markPx)
        events: list[Event] = []
        key = (ctx.funding, ctx.markPx, ctx.oraclePx)
        if self._last_mark.get(coin) != key:
            self._last_mark[coin] = key
            events.append(funding_mark(
                venue=VENUE, symbol=coin, asset=asset, ts_event=ts_event, ts_recv=ts_recv, mark_price=mark,
                index_price=float(ctx.oraclePx), funding_rate=float(ctx.funding),
                funding_interval_h=self._interval_h[coin],
                # Funding is paid on every hour: the next payment is the next whole hour of the venue clock.
                next_funding_ts=(ts_event // NS_PER_HOUR + 1) * NS_PER_HOUR,
            ))
        if self._last_oi.get(coin) != ctx.openInterest:
            self._last_oi[coin] = ctx.openInterest
            oi = float(ctx.openInterest)
            events.append(OpenInterest(VENUE, coin, asset, ts_event, ts_recv, oi, oi * mark))
        return events

    def _release_held(self) -> list[Event]:
        events: list[Event] = []
        for coin, (ctx, ts_recv) in self._held.items():
            events += self._ctx_events(coin, self._assets[coin], ctx, ts_recv)
        self._held.clear()
        return events

    @staticmethod
    def _on_error(data: msgspec.Raw) -> ParseResult:
        text = msgspec.json.decode(data) if data else ""  # a JSON string as the venue sends it; else the raw JSON
        return reject("venue_error", (text if isinstance(text, str) else bytes(data).decode(errors="replace"))[:500])

    def _on_ack(self, ack: schemas.SubscriptionAck, ts_recv: int) -> ParseResult:
        if ack.method != "subscribe":
            return EMPTY  # an unsubscribe's answer: nothing to wait for
        sub = ack.subscription
        if sub.type == schemas.TRADES and sub.coin in self._assets and sub.coin not in self._trade_ms:
            self._replay_due[sub.coin] = ts_recv
        return ParseResult([], [], [schemas.topic(sub.type, sub.coin)])
