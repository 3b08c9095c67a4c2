"""Deribit frames to events: bytes in, events out, no I/O, never raises on input.

``DeribitParser.parse`` takes one websocket frame and returns the events it carries, counted rejects, the ids
of acknowledged requests and the *replies* the protocol demands: ``public/test`` for every ``test_request``
(Deribit closes the connection otherwise), and an unsubscribe + subscribe of a book channel whose chain of
``change_id`` broke, since only a new subscription brings a new snapshot.

State: the last ``trade_seq`` and ticker time per instrument (a message repeated on a replacement connection
is dropped), and one ``Book`` per instrument, merged from the snapshot and the changes.

Units: sizes are USD on inverse contracts and coins on linear ones (``Instrument.kind``). A trade's
``direction`` is the taker side; its ``liquidation`` flag names who was liquidated -- ``T`` the taker
(a taker *sell* closed a long), ``M`` the maker (a taker sell met a maker *buy*, which closed a short), ``MT``
both -- and each liquidated side becomes one ``Liquidation`` next to the ``Trade``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from time import time_ns
from typing import Any, Final

import msgspec

from collectors.book import Book
from collectors.deribit import schemas
from collectors.deribit.spec import TEST_MESSAGE, VENUE, resubscribe_messages
from collectors.instruments import Instrument
from collectors.parsing import (
    EMPTY,
    GENESIS_NS,
    MAX_AHEAD_NS,
    NS_PER_MS,
    ParseResult,
    Sequencer,
    funding_rate,
    guarded,
    ms_to_ns,
    one_pass,
    positive,
    reject,
    tradable,
)
from collectors.rejects import Reject, RejectReason
from flushwatch.events import (
    Depth,
    Event,
    Liquidation,
    OpenInterest,
    PositionSide,
    TakerSide,
    Trade,
    funding_mark,
)

FUNDING_INTERVAL_H: Final = 8.0
"""``funding_8h`` is, as its name says, a rate per 8 hours."""
RESYNC_RETRY_NS: Final = 10 * 10**9
"""A book still waiting for its snapshot this long after asking asks again (the answer may have been lost)."""

_INF: Final = math.inf
_SIDES: Final[dict[str, TakerSide]] = {"buy": "buy", "sell": "sell"}
_TAKER_LIQUIDATED: Final[dict[str, PositionSide]] = {"sell": "long", "buy": "short"}
_MAKER_LIQUIDATED: Final[dict[str, PositionSide]] = {"sell": "short", "buy": "long"}
_LIQUIDATION_FLAGS: Final = frozenset({"T", "M", "MT"})

_NOTIFICATION: Final = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"'
_ONE_PASS_KEY: Final = len(_NOTIFICATION) + 2
"""The notification prefix and two letters of the channel: "tr", "bo", "ti"."""

Notification = Callable[[str, Any, int], ParseResult]
"""``(channel, decoded data, ts_recv)``."""

Meta = tuple[str, bool, float]
"""``(asset, inverse, contract_size)`` of a watched symbol."""


def _levels(raw: list[schemas.Level], inverse: bool, contract_size: float) -> list[tuple[float, float]] | None:
    """``[action, price, amount]`` as ``(price, size in coins)``, size 0 for a delete; ``None`` if any level is
    bad, as the ``Book`` checks them (which then need not)."""
    out = []
    for action, price, amount in raw:
        if not 0.0 < price < _INF:
            return None
        if action == "delete":
            size = 0.0
        elif action == "new" or action == "change":
            size = amount * contract_size / price if inverse else amount * contract_size
            if not 0.0 <= size < _INF:
                return None
        else:
            return None
        out.append((price, size))
    return out


class DeribitParser:
    """Parses the frames of all connections of one collector (dedupe and books are shared, so a message
    repeated on a replacement connection is dropped)."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int = 1 << 22) -> None:
        self._meta: dict[str, Meta] = {
            i.symbol: (i.asset, i.kind == "inverse", i.contract_size) for i in instruments
        }
        self._envelope = msgspec.json.Decoder(schemas.Envelope)
        self._trades = msgspec.json.Decoder(list[schemas.TradeItem])
        self._ticker = msgspec.json.Decoder(schemas.Ticker)
        self._book = msgspec.json.Decoder(schemas.BookData)
        self._one_pass: dict[bytes, tuple[msgspec.json.Decoder[Any], str, Notification]] = {
            _NOTIFICATION + b"tr": (msgspec.json.Decoder(schemas.TradesNotification), "trades.", self._on_trades),
            _NOTIFICATION + b"bo": (msgspec.json.Decoder(schemas.BookNotification), "book.", self._on_book),
            _NOTIFICATION + b"ti": (msgspec.json.Decoder(schemas.TickerNotification), "ticker.", self._on_ticker),
        }
        self._trade_seqs = Sequencer("trade_seq")
        self._ticker_times = Sequencer("ticker timestamp")
        self._books: dict[str, Book] = {}
        self._change_ids: dict[str, int] = {}
        self._resync_asked: dict[str, int] = {}  # symbol -> ts_recv of the last resubscribe sent
        self.parse = guarded(self._decode, max_frame_bytes)
        """One websocket frame (``ts_recv`` = local receive time, ns) -> ``ParseResult``; never raises."""

    def _decode(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        # Notifications in one pass when the frame starts as Deribit writes them; anything else, or what that
        # decoder refuses, goes the general way, which says what is wrong.
        fast = self._one_pass.get(frame[:_ONE_PASS_KEY]) if isinstance(frame, bytes) else None
        if fast is not None and (msg := one_pass(fast[0], frame)) is not None:
            _, channel, handler = fast
            name = msg.params.channel
            if msg.method == "subscription" and name.startswith(channel):
                return handler(name, msg.params.data, ts_recv)
        envelope = self._envelope.decode(frame)
        method = envelope.method
        params = envelope.params
        if method == "subscription":
            if params is None:
                return reject("malformed", "a notification without params")
            name = params.channel
            if name.startswith("trades."):
                return self._on_trades(name, self._trades.decode(params.data), ts_recv)
            if name.startswith("book."):
                return self._on_book(name, self._book.decode(params.data), ts_recv)
            if name.startswith("ticker."):
                return self._on_ticker(name, self._ticker.decode(params.data), ts_recv)
            return reject("unknown_type", name)
        if method == "heartbeat":
            kind = params.type if params is not None else ""
            if kind == "test_request":
                return ParseResult([], [], [], [TEST_MESSAGE])
            if kind == "heartbeat":
                return EMPTY
            return reject("unknown_type", f"heartbeat {kind!r}")
        if envelope.error is not None:
            error = envelope.error
            return reject("venue_error", f"request {envelope.id}: code {error.code}: {error.message}")
        if envelope.result is not msgspec.UNSET:
            return self._on_answer(envelope.id, bytes(envelope.result))
        if method:
            return reject("unknown_type", method)
        return reject("malformed", "neither a notification, a heartbeat nor an answer")

    @staticmethod
    def _on_answer(request_id: int | str | None, result: bytes) -> ParseResult:
        """A subscribe (channel list) or ``set_heartbeat`` (``"ok"``) answer is an ack; ``public/test``'s
        (``{"version": ...}``) only proves the connection alive."""
        if request_id is None or result[:1] == b"{":
            return EMPTY
        if result[:1] == b"[" and result.replace(b" ", b"") == b"[]":
            # Deribit drops an unknown channel from the answer without an error: nothing was subscribed.
            return ParseResult([], [Reject("venue_error", f"request {request_id} acknowledged no channel")],
                               [request_id])
        return ParseResult([], [], [request_id])

    def _on_trades(self, _name: str, trades: list[schemas.TradeItem], ts_recv: int) -> ParseResult:
        if not trades:
            return reject("malformed", "an empty trades notification")
        events: list[Event] = []
        rejects: list[Reject] = []
        for trade in trades:
            symbol = trade.instrument_name
            meta = self._meta.get(symbol)
            if meta is None:
                rejects.append(Reject("unknown_symbol", symbol))
                continue
            asset, inverse, contract_size = meta
            price, amount, side = trade.price, trade.amount, _SIDES.get(trade.direction)
            ts_event = ms_to_ns(trade.timestamp)
            if not tradable(price, amount) or ts_event is None or side is None:
                rejects.append(Reject("bad_value", f"{symbol} trade {trade.trade_seq} price={price} "
                                                   f"amount={amount} direction={trade.direction!r}"))
                continue
            if (late := self._trade_seqs.check(symbol, trade.trade_seq)) is not None:
                rejects.append(late)
                continue
            size = amount * contract_size / price if inverse else amount * contract_size
            events.append(Trade(VENUE, symbol, asset, ts_event, ts_recv, price, size, side))
            flag = trade.liquidation
            if not flag:
                continue
            if flag not in _LIQUIDATION_FLAGS:
                rejects.append(Reject("bad_value", f"{symbol} trade {trade.trade_seq} liquidation={flag!r}"))
                continue
            if "T" in flag:
                events.append(Liquidation(VENUE, symbol, asset, ts_event, ts_recv, price, size,
                                          _TAKER_LIQUIDATED[side]))
            if "M" in flag:
                events.append(Liquidation(VENUE, symbol, asset, ts_event, ts_recv, price, size,
                                          _MAKER_LIQUIDATED[side]))
        return ParseResult(events, rejects, [], [])

    def _on_ticker(self, _name: str, ticker: schemas.Ticker, ts_recv: int) -> ParseResult:
        symbol = ticker.instrument_name
        meta = self._meta.get(symbol)
        if meta is None:
            return reject("unknown_symbol", symbol)
        asset, inverse, contract_size = meta
        mark, index, funding = ticker.mark_price, ticker.index_price, ticker.funding_8h
        ts_event = ticker.timestamp * NS_PER_MS  # ms_to_ns() and positive(), inlined: the calls cost more
        if (not (GENESIS_NS <= ts_event <= time_ns() + MAX_AHEAD_NS and 0.0 < mark < _INF and 0.0 < index < _INF)
                or (funding is not None and not funding_rate(funding))):
            return reject("bad_value", f"{symbol} ticker mark={mark} index={index} funding_8h={funding}")
        if (late := self._ticker_times.check(symbol, ticker.timestamp)) is not None:
            return ParseResult([], [late], [], [])
        events: list[Event] = []
        rejects: list[Reject] = []
        if funding is not None:  # None on dated futures
            events.append(funding_mark(
                venue=VENUE, symbol=symbol, asset=asset, ts_event=ts_event, ts_recv=ts_recv, mark_price=mark,
                index_price=index, funding_rate=funding, funding_interval_h=FUNDING_INTERVAL_H, next_funding_ts=0,
            ))
        oi = ticker.open_interest * contract_size
        if positive(oi):
            oi_base, oi_usd = (oi / mark, oi) if inverse else (oi, oi * mark)
            events.append(OpenInterest(VENUE, symbol, asset, ts_event, ts_recv, oi_base, oi_usd))
        else:
            rejects.append(Reject("bad_value", f"{symbol} open_interest={ticker.open_interest}"))
        return ParseResult(events, rejects, [], [])

    def _on_book(self, name: str, msg: schemas.BookData, ts_recv: int) -> ParseResult:
        symbol = msg.instrument_name
        meta = self._meta.get(symbol)
        if meta is None:
            return reject("unknown_symbol", symbol)
        asset, inverse, contract_size = meta
        ts_event = msg.timestamp * NS_PER_MS  # ms_to_ns(), inlined: the call costs more than the check
        if not GENESIS_NS <= ts_event <= time_ns() + MAX_AHEAD_NS:
            return reject("bad_value", f"{symbol} book timestamp {msg.timestamp}")
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = Book()
        kind = msg.type
        if kind == "snapshot" or (not kind and msg.prev_change_id is None):
            bids, asks = _levels(msg.bids, inverse, contract_size), _levels(msg.asks, inverse, contract_size)
            if bids is None or asks is None or not book.snapshot(bids, asks, checked=True):
                return self._lost(name, symbol, book, ts_recv, "bad_value", f"{symbol} snapshot {msg.change_id}")
            self._change_ids[symbol] = msg.change_id
            self._resync_asked.pop(symbol, None)
        elif kind in ("change", ""):
            last = self._change_ids.get(symbol)
            if last is None or not book.synced:
                return self._lost(name, symbol, book, ts_recv, "out_of_sync",
                                  f"{symbol} change {msg.change_id} without a snapshot")
            if msg.change_id <= last:  # repeated by a replacement connection, or late: the book is still good
                reason: RejectReason = "duplicate" if msg.change_id == last else "stale"
                return reject(reason, f"{symbol} change_id {msg.change_id} after {last}")
            if msg.prev_change_id != last:
                return self._lost(name, symbol, book, ts_recv, "out_of_sync",
                                  f"{symbol} gap: prev_change_id {msg.prev_change_id}, last {last}")
            bids, asks = _levels(msg.bids, inverse, contract_size), _levels(msg.asks, inverse, contract_size)
            if bids is None or asks is None or not book.update(bids, asks, checked=True):
                return self._lost(name, symbol, book, ts_recv, "bad_value", f"{symbol} change {msg.change_id}")
            self._change_ids[symbol] = msg.change_id
        else:
            return reject("malformed", f"{symbol} book type {kind!r}")
        depth = book.depth()
        if depth is None:
            if book.bids and book.asks:  # crossed: some change was missed after all
                return self._lost(name, symbol, book, ts_recv, "out_of_sync", f"{symbol} crossed at {msg.change_id}")
            return EMPTY  # one side empty: a thin book, nothing to measure
        mid, spread_bps, bid_usd, ask_usd, reach_bps = depth
        return ParseResult(
            [Depth(VENUE, symbol, asset, ts_event, ts_recv, mid, spread_bps, bid_usd, ask_usd, reach_bps)], [], [], []
        )

    def _lost(self, name: str, symbol: str, book: Book, ts_recv: int, reason: RejectReason,
              detail: str) -> ParseResult:
        """The book is out of sync until a new snapshot; ask for one unless that was done lately."""
        book.synced = False
        self._change_ids.pop(symbol, None)
        asked = self._resync_asked.get(symbol)
        if asked is not None and ts_recv - asked < RESYNC_RETRY_NS:
            return reject(reason, detail)
        self._resync_asked[symbol] = ts_recv
        return ParseResult([], [Reject(reason, detail)], [], resubscribe_messages(name))
