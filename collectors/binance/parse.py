"""Binance USDⓈ-M frames to events: bytes in, events out, no I/O, never raises on input.

``BinanceParser.parse`` takes one websocket frame of a combined-stream connection and returns the events it
carries, the reasons it dropped anything (``Reject``) and the ids of subscription acks. The only state is
what ordering needs: the last accepted trade id / event time / update id per symbol (to drop duplicates and
out-of-order messages after a reconnect), the last mark price (to value open interest in USD) and an open
interest sample held back until that mark price is known.

The hot path is one ``aggTrade`` per frame, decoded in one pass to a typed struct; other frames are decoded
with ``data`` kept raw until the stream name has picked its typed decoder. Events are built positionally --
no ``json.loads``, no dicts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from time import time_ns
from typing import Final

import msgspec

from collectors.binance import schemas
from collectors.binance.spec import ALL_LIQUIDATIONS_STREAM, asset_of
from collectors.parsing import (
    GENESIS_NS,
    MAX_AHEAD_NS,
    NS_PER_MS,
    ParseResult,
    Sequencer,
    funding_rate,
    guarded,
    ms_to_ns,
    num,
    one_pass,
    positive,
    reject,
    tradable,
)
from flushwatch.events import (
    Depth,
    Event,
    Liquidation,
    OpenInterest,
    PositionSide,
    Trade,
    depth_from_levels,
    funding_mark,
)

VENUE: Final = "binance"
DEFAULT_FUNDING_INTERVAL_H: Final = 8.0

# Partial book only (a full top-N snapshot per push); the diff book "@depth[@100ms]" needs a local book.
_PARTIAL_DEPTH: Final = re.compile(r"@depth(?:5|10|20)(?:@\d+ms)?$")
_INF: Final = math.inf


def _levels(raw: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """Book levels without zero-quantity ones; ``None`` if any price or quantity is bad (NaN included)."""
    for price, size in raw:
        if not (0.0 < price < math.inf and 0.0 <= size < math.inf):
            return None
    return [level for level in raw if level[1] > 0.0]


class BinanceParser:
    """Parses the frames of one or more connections for one watchlist (the dedupe state is shared, so a
    message repeated on a replacement connection is dropped)."""

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        max_frame_bytes: int = 1 << 20,
        funding_interval_h: Mapping[str, float] | None = None,
    ) -> None:
        self._assets = {s.upper(): asset_of(s) for s in symbols}
        self._interval_h: dict[str, float] = {}
        for symbol, hours in (funding_interval_h or {}).items():
            self.set_funding_interval(symbol, hours)
        self._envelope = msgspec.json.Decoder(schemas.Envelope)
        self._agg_trade = msgspec.json.Decoder(schemas.AggTrade)
        self._agg_trade_frame = msgspec.json.Decoder(schemas.AggTradeFrame)
        self._mark_price = msgspec.json.Decoder(schemas.MarkPriceUpdate)
        self._force_order = msgspec.json.Decoder(schemas.ForceOrder)
        self._depth = msgspec.json.Decoder(schemas.DepthUpdate, strict=False)
        self._oi = msgspec.json.Decoder(schemas.OpenInterestBody)
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""
        self.open_interest = guarded(self._decode_open_interest, max_frame_bytes)
        """A ``GET /fapi/v1/openInterest`` body -> ``ParseResult``; never raises."""
        self._trade_ids = Sequencer("aggTrade id")
        self._mark_times = Sequencer("markPrice time")
        self._depth_ids = Sequencer("depth update id")
        self._oi_times = Sequencer("openInterest time")
        self._mark: dict[str, float] = {}
        self._held_oi: dict[str, tuple[float, int, int]] = {}  # symbol -> (oi_base, ts_event, ts_recv)

    def set_funding_interval(self, symbol: str, hours: float) -> None:
        """Binance moves some contracts to 4 h or 1 h funding (``GET /fapi/v1/fundingInfo``); default 8 h."""
        if not (0.0 < hours < math.inf):
            raise ValueError(f"funding interval of {symbol} must be positive hours, got {hours!r}")
        self._interval_h[symbol.upper()] = float(hours)

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        # aggTrade, the most frequent message, in one pass when the frame starts as Binance writes it; anything
        # else, or what that decoder refuses, goes the general way, which says what is wrong.
        if isinstance(frame, bytes) and frame[:11] == b'{"stream":"' and frame.find(b'@aggTrade"', 11, 64) > 0 \
                and (msg := one_pass(self._agg_trade_frame, frame)) is not None \
                and msg.stream is not None and msg.stream.endswith("@aggTrade"):
            return self._agg_trade_of(msg.data, ts_recv)
        envelope = self._envelope.decode(frame)
        stream = envelope.stream
        if stream is not None:
            handler = self._handler(stream)
            if handler is None:
                return reject("unknown_type", stream)
            return handler(envelope.data, ts_recv)
        if envelope.error is not None:
            return reject("venue_error", f"code {envelope.error.code}: {envelope.error.msg}")
        if envelope.id is not None and envelope.result is not msgspec.UNSET:
            return ParseResult([], [], [envelope.id])
        return reject("malformed", "neither a stream message, an ack nor an error")

    def _decode_open_interest(self, body: bytes | str, ts_recv: int) -> ParseResult:
        """A ``GET /fapi/v1/openInterest`` body. Valued at the last mark price of the symbol; before the
        first mark price the newest sample is held and emitted right after that mark price."""
        msg = self._oi.decode(body)
        symbol = msg.symbol
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        oi_base = num(msg.openInterest)
        ts_event = ms_to_ns(msg.time)
        if not positive(oi_base) or ts_event is None:
            return reject("bad_value", f"{symbol} openInterest {msg.openInterest!r} time {msg.time}")
        if (late := self._oi_times.check(symbol, msg.time)) is not None:
            return ParseResult([], [late], [])
        mark = self._mark.get(symbol)
        if mark is None:
            self._held_oi[symbol] = (oi_base, ts_event, ts_recv)
            return ParseResult([], [], [])
        return ParseResult([OpenInterest(VENUE, symbol, asset, ts_event, ts_recv, oi_base, oi_base * mark)], [], [])

    def _handler(self, stream: str) -> Callable[[msgspec.Raw, int], ParseResult] | None:
        # Most frequent first.
        if stream.endswith("@aggTrade"):
            return self._on_agg_trade
        if _PARTIAL_DEPTH.search(stream):
            return self._on_depth
        if stream.endswith(("@markPrice@1s", "@markPrice")):
            return self._on_mark_price
        if stream.endswith("@forceOrder") or stream == ALL_LIQUIDATIONS_STREAM:
            return self._on_force_order
        return None

    def _on_agg_trade(self, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        return self._agg_trade_of(self._agg_trade.decode(data), ts_recv)

    def _agg_trade_of(self, msg: schemas.AggTrade, ts_recv: int) -> ParseResult:
        if msg.e != "aggTrade":
            return reject("malformed", f"event {msg.e!r} on an aggTrade stream")
        symbol = msg.s
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        # num(), ms_to_ns(), latest_ns() and tradable(), inlined: the calls cost more than the checks.
        try:
            price, size = float(msg.p), float(msg.q)
        except ValueError:
            price = size = math.nan
        ts_event = msg.T * NS_PER_MS
        if not (0.0 < price < _INF and 0.0 < size < _INF and price * size < _INF
                and GENESIS_NS <= ts_event <= time_ns() + MAX_AHEAD_NS):
            return reject("bad_value", f"{symbol} aggTrade p={msg.p!r} q={msg.q!r} T={msg.T}")
        trade_id = msg.l if msg.a is None else msg.a
        if (late := self._trade_ids.check(symbol, trade_id)) is not None:
            return ParseResult([], [late], [])
        # m: the buyer is the maker, so the taker sold.
        return ParseResult(
            [Trade(VENUE, symbol, asset, ts_event, ts_recv, price, size, "sell" if msg.m else "buy")], [], []
        )

    def _on_mark_price(self, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        msg = self._mark_price.decode(data)
        if msg.e != "markPriceUpdate":
            return reject("malformed", f"event {msg.e!r} on a markPrice stream")
        symbol = msg.s
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        if msg.r == "":
            return reject("unknown_type", f"{symbol} markPrice without funding (delivery contract)")
        mark, rate = num(msg.p), num(msg.r)
        index = num(msg.i) if msg.i else 0.0  # 0 = not reported; FundingMark then gives no premium
        ts_event = ms_to_ns(msg.E)
        next_funding = ms_to_ns(msg.T) if msg.T else 0
        if (
            not positive(mark)
            or not (positive(index) or msg.i == "")
            or not funding_rate(rate)
            or ts_event is None
            or next_funding is None
        ):
            return reject("bad_value", f"{symbol} markPrice p={msg.p!r} i={msg.i!r} r={msg.r!r}")
        if (late := self._mark_times.check(symbol, msg.E)) is not None:
            return ParseResult([], [late], [])
        self._mark[symbol] = mark
        events: list[Event] = [
            funding_mark(
                venue=VENUE,
                symbol=symbol,
                asset=asset,
                ts_event=ts_event,
                ts_recv=ts_recv,
                mark_price=mark,
                index_price=index,
                funding_rate=rate,
                funding_interval_h=self._interval_h.get(symbol, DEFAULT_FUNDING_INTERVAL_H),
                next_funding_ts=next_funding,
            )
        ]
        held = self._held_oi.pop(symbol, None)
        if held is not None:
            oi_base, oi_ts_event, oi_ts_recv = held
            events.append(OpenInterest(VENUE, symbol, asset, oi_ts_event, oi_ts_recv, oi_base, oi_base * mark))
        return ParseResult(events, [], [])

    def _on_force_order(self, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        msg = self._force_order.decode(data)
        if msg.e != "forceOrder":
            return reject("malformed", f"event {msg.e!r} on a forceOrder stream")
        order = msg.o
        symbol = order.s
        asset = self._assets.get(symbol)
        if asset is None:  # routine on !forceOrder@arr, which carries every symbol
            return reject("unknown_symbol", symbol)
        # The order side closes the position: SELL closes a long.
        side: PositionSide
        if order.S == "SELL":
            side = "long"
        elif order.S == "BUY":
            side = "short"
        else:
            return reject("malformed", f"{symbol} forceOrder side {order.S!r}")
        # Filled quantity at the average fill price; the order's own when nothing is reported filled.
        size = num(order.z)
        if size == 0.0:
            size = num(order.q)
        price = num(order.ap)
        if price == 0.0:
            price = num(order.p)
        ts_event = ms_to_ns(order.T)
        if not tradable(price, size) or ts_event is None:
            return reject("bad_value", f"{symbol} forceOrder ap={order.ap!r} z={order.z!r} T={order.T}")
        return ParseResult([Liquidation(VENUE, symbol, asset, ts_event, ts_recv, price, size, side)], [], [])

    def _on_depth(self, data: msgspec.Raw, ts_recv: int) -> ParseResult:
        msg = self._depth.decode(data)
        if msg.e != "depthUpdate":
            return reject("malformed", f"event {msg.e!r} on a depth stream")
        symbol = msg.s
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        bids, asks = _levels(msg.b), _levels(msg.a)
        ts_event = ms_to_ns(msg.T or msg.E)
        if bids is None or asks is None or ts_event is None:
            return reject("bad_value", f"{symbol} depth level or time (u={msg.u})")
        book = depth_from_levels(bids, asks)
        if book is None:
            return reject("bad_value", f"{symbol} depth one-sided or crossed (u={msg.u})")
        if (late := self._depth_ids.check(symbol, msg.u)) is not None:
            return ParseResult([], [late], [])
        mid, spread_bps, bid_usd, ask_usd, reach_bps = book
        return ParseResult(
            [Depth(VENUE, symbol, asset, ts_event, ts_recv, mid, spread_bps, bid_usd, ask_usd, reach_bps)], [], []
        )
