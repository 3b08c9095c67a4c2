"""Bybit v5 linear frames to events: bytes in, events out, no I/O, never raises on input.

State is what the protocol needs: the merged ticker of each symbol (``tickers`` sends a snapshot, then only
the fields that changed), the local book of each ``orderbook`` topic (snapshot, then deltas numbered by
``u``), and the recent trade ids of each symbol (for duplicates after a reconnect).

When a ticker or a book loses sync (a delta before any snapshot, a missed ``u``, a bad level) the parser
asks for a fresh snapshot the only way Bybit offers: it replies with an unsubscribe and a subscribe of that
one topic on the same connection, once until the snapshot arrives. Without that a book would stay dark
until the connection happened to be replaced.

Trades, tickers and books are decoded in one pass (the whole frame to one typed struct; the book's by a
lenient decoder that checks every level, so the book need not); events are built positionally.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any, Final

import msgspec

from collectors.book import Book
from collectors.bybit import schemas
from collectors.bybit.schemas import Scalar
from collectors.bybit.spec import LIQUIDATIONS, ORDERBOOK, TICKERS, TRADES, VENUE, request
from collectors.bybit.ticker import DEFAULT_FUNDING_INTERVAL_H, FUNDING_FIELDS, OI_FIELDS, funding_of, open_interest_of
from collectors.instruments import Instrument
from collectors.parsing import (
    EMPTY,
    GENESIS_NS,
    MAX_AHEAD_NS,
    NS_PER_MS,
    ParseResult,
    Sequencer,
    guarded,
    ms_to_ns,
    num,
    one_pass,
    reject,
    tradable,
)
from collectors.rejects import Reject, RejectReason
from flushwatch.events import (
    Depth,
    Event,
    Liquidation,
    PositionSide,
    TakerSide,
    Trade,
)

DEPTH_INTERVAL_NS: Final = 100 * NS_PER_MS
"""Depth is reported at most this often per book (venue time), every delta still folded in. ``orderbook.50``
pushes every 20 ms; banding 50 levels per push would cost more than all the rest of the feed, and 100 ms is
the cadence of Binance's ``depth20@100ms``, so every venue's depth arrives alike."""
RESYNC_INTERVAL_NS: Final = 1_000 * NS_PER_MS
RECENT_TRADE_IDS: Final = 4096
"""Trade ids remembered per symbol: four full messages, far more than ever share one millisecond."""

_TAKER: Final[dict[str, TakerSide]] = {"Buy": "buy", "Sell": "sell"}
_POSITION: Final[dict[str, PositionSide]] = {"Buy": "long", "Sell": "short"}  # Bybit's S is the position's
_INF: Final = math.inf

Handler = Callable[[str, schemas.Envelope, int], ParseResult]
Push = Callable[[str, str, schemas.Header, Any, int], ParseResult]
"""``(symbol, asset, header, decoded data, ts_recv)``: a push of a watched symbol."""


def _digits(text: str, most: int) -> bool:
    """ASCII digits only (``str.isdigit`` takes "²"), and few enough for ``int`` to be cheap and safe."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


class _RecentTrades:
    """Bybit's trade id is a uuid (unique, unordered) and ``seq`` is shared by all fills of one match and by
    several messages, so neither orders trades alone. Messages are sorted by match time ``T``, so a trade
    older than the newest accepted is stale, and one at the same or a later time is a duplicate when its id
    is among the last ``RECENT_TRADE_IDS`` accepted. The trades loop checks them (a method call per trade
    cost more than the check)."""

    __slots__ = ("ids", "last_ms")

    def __init__(self) -> None:
        self.last_ms = 0
        self.ids: dict[str, None] = {}  # insertion-ordered: the oldest is evicted first


class _BookTopic:
    """An ``orderbook`` topic that has had a snapshot: what the topic names, its local book, the last ``u``
    applied, and the venue time from which a delta reports depth again. Looked up by the topic after its kind,
    once per push."""

    __slots__ = ("asset", "book", "depth_due", "symbol", "topic", "u")

    def __init__(self, topic: str, symbol: str, asset: str, book: Book) -> None:
        self.topic = topic
        self.symbol = symbol
        self.asset = asset
        self.book = book
        self.u = 0
        self.depth_due = 0


class BybitParser:
    """Parses the frames of one or more connections for ``instruments`` (state is shared, so a message
    repeated on a replacement connection is dropped)."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int = 1 << 22) -> None:
        self._assets = {i.symbol: i.asset for i in instruments}
        self._interval_h = {i.symbol: i.funding_interval_h for i in instruments if i.funding_interval_h > 0}
        self._envelope = msgspec.json.Decoder(schemas.Envelope)
        self._trades_decoder = msgspec.json.Decoder(list[schemas.PublicTrade])
        self._liquidations_decoder = msgspec.json.Decoder(list[schemas.LiquidationItem])
        self._book_decoder = msgspec.json.Decoder(schemas.OrderbookData[tuple[float, float]], strict=False)
        self._ticker_decoder = msgspec.json.Decoder(schemas.TickerData)
        self._one_pass: dict[bytes, tuple[msgspec.json.Decoder[Any], str, Push]] = {
            b'{"topic":"pu': (msgspec.json.Decoder(schemas.TradesFrame), TRADES, self._trades_of),
            b'{"topic":"ti': (msgspec.json.Decoder(schemas.TickerFrame), TICKERS, self._ticker_of),
        }
        self._book_frame = msgspec.json.Decoder(schemas.BookFrame, strict=False)
        self._handlers: dict[str, Handler] = {
            TRADES: self._on_trades, ORDERBOOK: self._on_book, TICKERS: self._on_ticker,
            LIQUIDATIONS: self._on_liquidations,
        }
        self._tickers: dict[str, dict[str, Scalar]] = {}
        self._ticker_cs = Sequencer("ticker cs")
        self._trades: dict[str, _RecentTrades] = {}
        self._book_topics: dict[str, _BookTopic] = {}  # by the topic after "orderbook."
        self._resyncing: set[str] = set()
        self._resync_ids = itertools.count(1)
        self._resync_due: dict[str, int] = {}  # topic -> ts_recv from which it may be resynced again
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""

    def ticker(self, symbol: str) -> Mapping[str, Scalar]:
        """The merged ticker of ``symbol`` as Bybit names its fields (empty before the first snapshot);
        a read-only view."""
        return MappingProxyType(self._tickers.get(symbol, {}))

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        # The frequent small pushes in one pass when the frame starts as Bybit writes them; anything else, or
        # what that decoder refuses, goes the general way, which says what is wrong.
        prefix = frame[:12] if isinstance(frame, bytes) else None
        # Invalid UTF-8 inside a book's data sends it the general way too, which names a fault of the envelope
        # first, as it always has for books. Books first: the most frequent push.
        if prefix == b'{"topic":"or':
            if (book := one_pass(self._book_frame, frame, (msgspec.DecodeError, UnicodeError))) is not None \
                    and (result := self._book_push(book, ts_recv)) is not None:
                return result
        elif (fast := self._one_pass.get(prefix) if prefix is not None else None) is not None \
                and (msg := one_pass(fast[0], frame)) is not None:
            _, kind, push = fast
            head, _, symbol = (msg.topic or "").partition(".")
            if head == kind:
                asset = self._assets.get(symbol)
                if asset is None:
                    return reject("unknown_symbol", symbol)
                return push(symbol, asset, msg, msg.data, ts_recv)
        env = self._envelope.decode(frame)
        topic = env.topic
        if topic is None:
            return self._control(env)
        kind, _, rest = topic.partition(".")
        handler = self._handlers.get(kind)
        if handler is None:
            return reject("unknown_type", topic)
        return handler(rest, env, ts_recv)

    def _control(self, env: schemas.Envelope) -> ParseResult:
        op = env.op
        if not op:
            return reject("malformed", "neither a push nor an answer to a request")
        if env.success is False:
            return reject("venue_error", f"{op} req_id={env.req_id!r}: {env.ret_msg}")
        if op in ("ping", "pong"):
            return EMPTY
        if op in ("subscribe", "unsubscribe") and env.success:
            req_id = env.req_id
            return ParseResult([], [], [int(req_id) if _digits(req_id, 18) else req_id or op])
        return reject("unknown_type", f"op {op!r} success={env.success}")

    def _resync(self, topic: str, reason: RejectReason, detail: str, ts_recv: int) -> ParseResult:
        """The reject, and the requests that make Bybit send a snapshot: once until that snapshot arrives,
        and not again within ``RESYNC_INTERVAL_NS`` (a venue resending a snapshot we cannot use must not
        be asked in a loop)."""
        replies: list[str] = []
        if topic not in self._resyncing and ts_recv >= self._resync_due.get(topic, 0):
            self._resyncing.add(topic)
            self._resync_due[topic] = ts_recv + RESYNC_INTERVAL_NS
            req_id = f"resync-{next(self._resync_ids)}"
            replies = [request("unsubscribe", [topic], req_id), request("subscribe", [topic], req_id)]
        return ParseResult([], [Reject(reason, detail)], [], replies)

    # --------------------------------------------------------------------------------------- trades

    def _on_trades(self, symbol: str, env: schemas.Envelope, ts_recv: int) -> ParseResult:
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        return self._trades_of(symbol, asset, env, self._trades_decoder.decode(env.data), ts_recv)

    def _trades_of(self, symbol: str, asset: str, _head: schemas.Header, items: list[schemas.PublicTrade],
                   ts_recv: int) -> ParseResult:
        if not items:
            return reject("malformed", f"publicTrade.{symbol} without trades")
        recent = self._trades.get(symbol)
        if recent is None:
            recent = self._trades[symbol] = _RecentTrades()
        ids, last_ms = recent.ids, recent.last_ms
        latest = time_ns() + MAX_AHEAD_NS  # latest_ns(), inlined
        events: list[Event] = []
        rejects: list[Reject] = []
        for t in items:
            side = _TAKER.get(t.S)
            if side is None or t.s != symbol:
                rejects.append(Reject("malformed", f"publicTrade.{symbol} item s={t.s!r} S={t.S!r}"))
                continue
            try:
                price, size = float(t.p), float(t.v)
            except ValueError:
                price, size = num(t.p), num(t.v)
            t_ms = t.T
            ts_event = t_ms * NS_PER_MS
            if not (0.0 < price < _INF and 0.0 < size < _INF and price * size < _INF
                    and GENESIS_NS <= ts_event <= latest):  # tradable() and venue_time(), inlined
                rejects.append(Reject("bad_value", f"{symbol} trade {t.i} p={t.p!r} v={t.v!r} T={t_ms}"))
                continue
            trade_id = t.i
            if t_ms < last_ms:
                rejects.append(Reject("stale", f"{symbol} trade {trade_id} at {t_ms} after {last_ms}"))
                continue
            if trade_id in ids:
                rejects.append(Reject("duplicate", f"{symbol} trade {trade_id}"))
                continue
            ids[trade_id] = None
            if len(ids) > RECENT_TRADE_IDS:
                del ids[next(iter(ids))]
            last_ms = t_ms
            events.append(Trade(VENUE, symbol, asset, ts_event, ts_recv, price, size, side))
        recent.last_ms = last_ms
        return ParseResult(events, rejects)

    def _on_liquidations(self, symbol: str, env: schemas.Envelope, ts_recv: int) -> ParseResult:
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        items = self._liquidations_decoder.decode(env.data)
        if not items:
            return reject("malformed", f"allLiquidation.{symbol} without liquidations")
        events: list[Event] = []
        rejects: list[Reject] = []
        for item in items:
            side = _POSITION.get(item.S)
            if side is None or item.s != symbol:
                rejects.append(Reject("malformed", f"allLiquidation.{symbol} item s={item.s!r} S={item.S!r}"))
                continue
            price, size = num(item.p), num(item.v)
            ts_event = ms_to_ns(item.T)
            if not tradable(price, size) or ts_event is None:
                rejects.append(Reject("bad_value", f"{symbol} liquidation p={item.p!r} v={item.v!r} T={item.T}"))
                continue
            events.append(Liquidation(VENUE, symbol, asset, ts_event, ts_recv, price, size, side))
        return ParseResult(events, rejects)

    # ------------------------------------------------------------------------------------------ book

    def _on_book(self, rest: str, env: schemas.Envelope, ts_recv: int) -> ParseResult:
        return self._book_of(rest, env.type, env.ts, env.cts, env.data, ts_recv)

    def _book_push(self, msg: schemas.BookFrame, ts_recv: int) -> ParseResult | None:
        """A book decoded in one pass; ``None`` for what the strict envelope decoder would refuse, or another
        topic: the general way says what is wrong."""
        head, _, rest = (msg.topic or "").partition(".")
        ts, cts, success = msg.ts, msg.cts, msg.success
        if head != ORDERBOOK or type(ts) is not int or type(cts) is not int or type(msg.cs) is not int \
                or not (success is None or type(success) is bool):
            return None
        return self._book_of(rest, msg.type, ts, cts, msg.data, ts_recv)

    def _book_of(self, rest: str, kind: str, ts: int, cts: int,
                 data: msgspec.Raw | schemas.OrderbookData[tuple[schemas.Price, schemas.Size]], ts_recv: int,
                 ) -> ParseResult:
        """An ``orderbook`` push: ``data`` raw, or decoded with its levels checked (then not checked again)."""
        state = self._book_topics.get(rest)
        if state is None:
            depth, _, symbol = rest.partition(".")
            topic = f"{ORDERBOOK}.{rest}"
            if not _digits(depth, 5) or not symbol:
                return reject("unknown_type", topic)
            found = self._assets.get(symbol)
            if found is None:
                return reject("unknown_symbol", symbol)
            asset = found
        else:
            topic, symbol, asset = state.topic, state.symbol, state.asset
        if isinstance(data, msgspec.Raw):
            msg, checked = self._book_decoder.decode(data), False
        else:
            msg, checked = data, True
        if msg.s != symbol:
            return reject("malformed", f"{topic} carries s={msg.s!r}")
        ts_event = (cts or ts) * NS_PER_MS  # ms_to_ns(), inlined: both are int
        if not GENESIS_NS <= ts_event <= time_ns() + MAX_AHEAD_NS:
            return reject("bad_value", f"{topic} cts={cts} ts={ts}")
        if kind == "snapshot":  # the first, a resend after trouble on Bybit's side, or u == 1 after a restart
            if state is None:
                state = self._book_topics[rest] = _BookTopic(topic, symbol, asset, Book(keep=max(1, int(depth))))
            book = state.book
            self._resyncing.discard(topic)
            state.u = msg.u
            if not book.snapshot(msg.b, msg.a, checked):
                return self._resync(topic, "bad_value", f"{topic} snapshot u={msg.u} has a bad level", ts_recv)
        elif kind == "delta":
            if state is None or not state.book.synced:
                return self._resync(topic, "out_of_sync", f"{topic} delta u={msg.u} without a snapshot", ts_recv)
            book, last = state.book, state.u
            if msg.u <= last:
                reason: RejectReason = "duplicate" if msg.u == last else "stale"
                return ParseResult([], [Reject(reason, f"{topic} u={msg.u} after {last}")])
            if msg.u != last + 1:
                book.synced = False
                return self._resync(topic, "out_of_sync", f"{topic} u={msg.u} after {last}: updates missed", ts_recv)
            state.u = msg.u
            if not book.update(msg.b, msg.a, checked):
                return self._resync(topic, "bad_value", f"{topic} delta u={msg.u} has a bad level", ts_recv)
            if ts_event < state.depth_due:
                return EMPTY
        else:
            return reject("malformed", f"{topic} type {kind!r}")
        bands = book.depth()
        if bands is None:
            if book.bids and book.asks:  # crossed: the local book is wrong, not the market
                book.synced = False
                return self._resync(topic, "out_of_sync", f"{topic} crossed at u={msg.u}", ts_recv)
            return reject("bad_value", f"{topic} one-sided at u={msg.u}")
        state.depth_due = ts_event + DEPTH_INTERVAL_NS
        mid, spread_bps, bid_usd, ask_usd, reach_bps = bands
        return ParseResult([Depth(VENUE, symbol, asset, ts_event, ts_recv, mid, spread_bps, bid_usd, ask_usd,
                                  reach_bps)])

    # --------------------------------------------------------------------------------------- tickers

    def _on_ticker(self, symbol: str, env: schemas.Envelope, ts_recv: int) -> ParseResult:
        asset = self._assets.get(symbol)
        if asset is None:
            return reject("unknown_symbol", symbol)
        return self._ticker_of(symbol, asset, env, self._ticker_decoder.decode(env.data), ts_recv)

    def _ticker_of(self, symbol: str, asset: str, head: schemas.Header, data: schemas.TickerData,
                   ts_recv: int) -> ParseResult:
        topic = f"{TICKERS}.{symbol}"
        if data.get("symbol") != symbol:
            return reject("malformed", f"{topic} carries symbol={data.get('symbol')!r}")
        kind = head.type
        if kind != "snapshot" and kind != "delta":
            return reject("malformed", f"{topic} type {kind!r}")
        ts_event = head.ts * NS_PER_MS  # ms_to_ns(), inlined: ts is int
        if not GENESIS_NS <= ts_event <= time_ns() + MAX_AHEAD_NS:
            return reject("bad_value", f"{topic} ts={head.ts}")
        state = self._tickers.get(symbol)
        if kind == "snapshot":
            if head.cs:
                self._ticker_cs.forget(symbol)
                self._ticker_cs.check(symbol, head.cs)
            self._tickers[symbol] = state = data
            self._resyncing.discard(topic)
            funding_changed = oi_changed = True
        else:
            if state is None:
                return self._resync(topic, "out_of_sync", f"{topic} delta before a snapshot", ts_recv)
            if head.cs and (late := self._ticker_cs.check(symbol, head.cs)) is not None:
                return ParseResult([], [late])
            # A delta carries a few fields: looking each up in the (small) field sets beats looking every
            # funding and open-interest field up in it.
            funding_changed = oi_changed = False
            for name, value in data.items():
                if name in FUNDING_FIELDS:
                    funding_changed = funding_changed or value != state.get(name)
                elif name in OI_FIELDS:
                    oi_changed = oi_changed or value != state.get(name)
            state.update(data)  # an absent field has not changed
        if not (funding_changed or oi_changed):
            return EMPTY
        events: list[Event] = []
        rejects: list[Reject] = []
        interval_h = self._interval_h.get(symbol, DEFAULT_FUNDING_INTERVAL_H)
        for out in (funding_of(symbol, asset, state, ts_event, ts_recv, interval_h) if funding_changed else None,
                    open_interest_of(symbol, asset, state, ts_event, ts_recv) if oi_changed else None):
            if isinstance(out, Reject):
                rejects.append(out)
            elif out is not None:
                events.append(out)
        return ParseResult(events, rejects) if events or rejects else EMPTY
