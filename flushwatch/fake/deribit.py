"""The Deribit JSON-RPC websocket and REST metadata, server side: pure rules for ``FakeVenue``, no I/O.

Written from Deribit's documentation, the tardis fixtures, the cryptofeed recording and a public probe of the
live venue (nemanull/arbitrage-observatory ``docs/profiles/deribit/websocket.md``, 2026-09):

* ``public/subscribe`` answers the list of channels it subscribed; an unknown instrument or interval is
  dropped from that list *without* an error; a ``raw`` channel is refused (13778: authorized users only).
  Subscribing a channel already subscribed is acknowledged and sends no new snapshot; only an unsubscribe
  followed by a subscribe does.
* ``public/set_heartbeat {"interval": >= 10}`` answers ``"ok"``; the server then sends
  ``{"method":"heartbeat","params":{"type":"test_request"}}`` every interval, and a client that does not
  answer with ``public/test`` within the next interval is closed with code 4000 "heartbeat close".
* Text that is not JSON: error 11050 ``bad_request`` without an id, the socket stays open. Unknown
  method: -32601. Bad parameters: -32602. A socket silent for 60 s is cut.
* ``book.{instrument}.{interval}`` starts with a ``snapshot`` and goes on with ``change`` messages chained by
  ``prev_change_id``; the snapshot a (re)subscriber gets is rebuilt from the frames published so far.
* REST ``get_instruments`` takes ``currency=any``; ``get_book_summary_by_currency`` refuses it (HTTP 400).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from collectors.instruments import Instrument
from flushwatch.fake.venue_server import METHOD_NOT_ALLOWED, FakeReply

WS_PATH: Final = "/ws/api/v2"
INSTRUMENTS_PATH: Final = "/api/v2/public/get_instruments"
SUMMARY_PATH: Final = "/api/v2/public/get_book_summary_by_currency"
MIN_HEARTBEAT_S: Final = 10.0
IDLE_TIMEOUT_S: Final = 60.0
"""A probe's socket that sent nothing was closed at 60.5 s."""
HEARTBEAT_CLOSE: Final = (4000, "heartbeat close")
VERSION: Final = "1.2.26"
_CHANNEL: Final = re.compile(r"^(ticker|trades|book)\.([^.]+)\.(100ms|agg2|raw)$")
_CURRENCIES: Final = frozenset({"BTC", "ETH", "USDC", "USDT", "EURR"})
_FAR_FUTURE_MS: Final = 32503708800000  # the expiration_timestamp Deribit gives perpetuals

_encode = msgspec.json.Encoder().encode


def _text(message: dict[str, Any]) -> str:
    return _encode(message).decode()


def _stamped(message: dict[str, Any]) -> str:
    us = time.time_ns() // 1000
    return _text(message | {"usIn": us, "usOut": us + 25, "usDiff": 25, "testnet": False})


def answer(request_id: Any, result: Any) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "result": result}
    if request_id is not None:
        message["id"] = request_id
    return _stamped(message)


def error(request_id: Any, code: int, text: str, data: Any = None) -> str:
    body: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        body["data"] = data
    message: dict[str, Any] = {"jsonrpc": "2.0", "error": body}
    if request_id is not None:
        message["id"] = request_id
    return _stamped(message)


def json_request(request_id: Any, method: str, params: dict[str, Any]) -> str:
    """A client request, as a test client would send it."""
    return _text({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def notification(channel: str, data: Any) -> str:
    return _text({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


TEST_REQUEST: Final = _text({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})


@dataclass
class BookState:
    instrument_name: str
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    change_id: int = 0
    timestamp: int = 0

    def fold(self, data: dict[str, Any]) -> None:
        if data.get("type") == "snapshot" or ("type" not in data and "prev_change_id" not in data):
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data.get("bids", [])), (self.asks, data.get("asks", []))):
            for action, price, amount in levels:
                if action == "delete" or not amount:
                    side.pop(price, None)
                else:
                    side[price] = amount
        self.change_id = int(data.get("change_id", self.change_id))
        self.timestamp = int(data.get("timestamp", self.timestamp))

    def snapshot(self, channel: str) -> str:
        bids = [["new", p, a] for p, a in sorted(self.bids.items(), reverse=True)]
        asks = [["new", p, a] for p, a in sorted(self.asks.items())]
        return notification(channel, {"type": "snapshot", "timestamp": self.timestamp, "change_id": self.change_id,
                                      "instrument_name": self.instrument_name, "bids": bids, "asks": asks})


class DeribitSession:
    """One connection: its channels and its heartbeat schedule."""

    def __init__(self, protocol: DeribitProtocol) -> None:
        self.protocol = protocol
        self.channels: set[str] = set()
        self.interval_s: float | None = None
        self.next_probe = 0.0
        self.probe_sent: float | None = None
        """When the unanswered ``test_request`` went out, else None."""
        self.test_requests = 0
        self.tests_answered = 0

    def handle(self, message: str | bytes) -> FakeReply:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return FakeReply([error(None, 11050, "bad_request", "invalid json")])
        if not isinstance(request, dict):
            return FakeReply([error(None, 11050, "bad_request", "invalid request")])
        request_id, method, params = request.get("id"), request.get("method"), request.get("params", {})
        if not isinstance(params, dict):
            return FakeReply([error(request_id, -32602, "Invalid params")])
        if method in ("public/subscribe", "public/unsubscribe"):
            return self._subscription(method, request_id, params)
        if method == "public/set_heartbeat":
            return self._set_heartbeat(request_id, params)
        if method == "public/disable_heartbeat":
            self.interval_s = None
            return FakeReply([answer(request_id, "ok")])
        if method == "public/test":
            if self.probe_sent is not None:
                self.tests_answered += 1
                self.probe_sent = None
            return FakeReply([answer(request_id, {"version": VERSION})])
        return FakeReply([error(request_id, -32601, "Method not found")])

    def _subscription(self, method: str, request_id: Any, params: dict[str, Any]) -> FakeReply:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            return FakeReply([error(request_id, -32602, "Invalid params",
                                    {"reason": "value is required", "param": "channels"})])
        if method == "public/unsubscribe":
            removed = [c for c in dict.fromkeys(channels) if c in self.channels]
            self.channels.difference_update(removed)
            return FakeReply([answer(request_id, removed)], unsubscribed=removed)
        if any(c.endswith(".raw") for c in channels):
            return FakeReply([error(request_id, 13778, "raw_subscriptions_not_available_for_unauthorized")])
        known = [c for c in dict.fromkeys(channels) if self.protocol.knows(c)]
        new = [c for c in known if c not in self.channels]
        self.channels.update(new)
        return FakeReply([answer(request_id, known)], subscribed=new)

    def _set_heartbeat(self, request_id: Any, params: dict[str, Any]) -> FakeReply:
        interval = params.get("interval")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < MIN_HEARTBEAT_S:
            return FakeReply([error(request_id, -32602, "Invalid params",
                                    {"reason": f"must be >= {MIN_HEARTBEAT_S:g}", "param": "interval"})])
        self.interval_s = self.protocol.heartbeat_interval_s or float(interval)
        self.next_probe = time.monotonic() + self.interval_s
        return FakeReply([answer(request_id, "ok")])

    def tick(self, now: float) -> FakeReply:
        interval = self.interval_s
        if interval is None:
            return FakeReply()
        if self.probe_sent is not None and now - self.probe_sent >= interval:
            self.protocol.heartbeat_failures += 1
            return FakeReply(close=HEARTBEAT_CLOSE)  # at once, whatever the client does next, as Deribit does
        if now < self.next_probe:
            return FakeReply()
        self.next_probe = now + interval
        if self.probe_sent is None:
            self.probe_sent = now
        self.test_requests += 1
        return FakeReply([TEST_REQUEST])


def _instrument_info(inst: Instrument) -> dict[str, Any]:
    inverse = inst.kind == "inverse"
    quote = "USD" if inverse else "USDC"
    return {
        "tick_size": 0.5 if inverse else 0.01, "taker_commission": 0.0005, "maker_commission": 0.0,
        "settlement_period": "perpetual" if inst.perpetual else "month", "settlement_currency": _settlement(inst),
        "quote_currency": quote, "counter_currency": quote, "price_index": f"{inst.asset.lower()}_{quote.lower()}",
        "min_trade_amount": 10.0 if inverse else 0.001, "kind": "future", "is_active": inst.active,
        "instrument_name": inst.symbol, "instrument_type": "reversed" if inverse else "linear",
        "future_type": "reversed" if inverse else "linear", "expiration_timestamp": _FAR_FUTURE_MS,
        "creation_timestamp": 1534242287000, "contract_size": (10.0 if inst.asset == "BTC" else 1.0) if inverse
        else 0.001, "base_currency": inst.asset,
    }


def _settlement(inst: Instrument) -> str:
    return inst.asset if inst.kind == "inverse" else "USDC"


class DeribitProtocol:
    """``FakeVenue(DeribitProtocol(instruments))``: Deribit for the instruments given.

    ``marks`` sets the mark price the REST summaries report (default 100); ``heartbeat_interval_s``
    overrides the interval clients ask for, so a test sees ``test_request`` sooner than Deribit's 10 s."""

    name = "deribit"
    ws_path = WS_PATH

    def __init__(self, instruments: Sequence[Instrument], *, marks: Mapping[str, float] | None = None,
                 heartbeat_interval_s: float | None = None,
                 client_idle_timeout_s: float | None = IDLE_TIMEOUT_S) -> None:
        self.instruments = {i.symbol: i for i in instruments}
        self.marks = dict(marks or {})
        self.heartbeat_interval_s = heartbeat_interval_s
        self.client_idle_timeout_s = client_idle_timeout_s
        self.books: dict[str, BookState] = {}
        self.sessions: list[DeribitSession] = []
        self.heartbeat_failures = 0

    def session(self) -> DeribitSession:
        session = DeribitSession(self)
        self.sessions.append(session)
        return session

    def knows(self, name: str) -> bool:
        match = _CHANNEL.match(name)
        return match is not None and match[2] in self.instruments and match[3] != "raw"

    def observe(self, frame: str) -> str | None:
        try:
            message = msgspec.json.decode(frame)
            if message.get("method") != "subscription":
                return None
            name, data = message["params"]["channel"], message["params"]["data"]
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError):
            return None
        if not isinstance(name, str):
            return None
        if name.startswith("book.") and isinstance(data, dict):
            state = self.books.get(name)
            if state is None:
                state = self.books[name] = BookState(str(data.get("instrument_name", "")))
            state.fold(data)
        return name

    def snapshot(self, topic: str) -> list[str]:
        state = self.books.get(topic)
        return [state.snapshot(topic)] if state is not None else []

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        if path not in (INSTRUMENTS_PATH, SUMMARY_PATH):
            return None
        if method != "GET":
            return METHOD_NOT_ALLOWED
        currency = query.get("currency", "any")
        if path == INSTRUMENTS_PATH:
            if currency != "any" and currency not in _CURRENCIES:
                return self._invalid("invalid currency", "currency")
            rows = [_instrument_info(i) for i in self.instruments.values()
                    if currency in ("any", _settlement(i)) and query.get("kind", "future") == "future"]
            return 200, answer(None, rows).encode()
        if currency not in _CURRENCIES:  # the summaries; "any" included: the real venue refuses it here
            return self._invalid("invalid currency", "currency")
        rows = [self._summary(i) for i in self.instruments.values() if _settlement(i) == currency]
        return 200, answer(None, rows).encode()

    @staticmethod
    def _invalid(reason: str, param: str) -> tuple[int, bytes]:
        return 400, error(None, -32602, "Invalid params", {"reason": reason, "param": param}).encode()

    def _summary(self, inst: Instrument) -> dict[str, Any]:
        mark = self.marks.get(inst.symbol, 100.0)
        inverse = inst.kind == "inverse"
        return {
            "instrument_name": inst.symbol, "base_currency": inst.asset, "quote_currency": "USD" if inverse else "USDC",
            "open_interest": inst.oi_usd if inverse else inst.oi_usd / mark, "mark_price": mark,
            "volume": inst.volume_usd_24h / mark, "volume_usd": inst.volume_usd_24h, "funding_8h": 0.0001,
            "current_funding": 0.0, "estimated_delivery_price": mark, "creation_timestamp": time.time_ns() // 10**6,
        }


# ------------------------------------------------------------------------------------- frames for tests

def trade(symbol: str, seq: int, price: float, amount: float, direction: str, timestamp: int,
          liquidation: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"trade_seq": seq, "trade_id": str(100_000_000 + seq), "timestamp": timestamp,
                            "tick_direction": 0, "price": price, "mark_price": price, "index_price": price,
                            "instrument_name": symbol, "direction": direction, "amount": amount}
    if liquidation:
        item["liquidation"] = liquidation
    return item


def trades_frame(symbol: str, items: Sequence[dict[str, Any]]) -> str:
    return notification(f"trades.{symbol}.100ms", list(items))


def ticker_frame(symbol: str, timestamp: int, *, mark: float, index: float, open_interest: float,
                 funding_8h: float) -> str:
    return notification(f"ticker.{symbol}.100ms", {
        "timestamp": timestamp, "stats": {"volume_usd": 1e6, "volume": 10.0, "price_change": 0.1, "low": mark * 0.99,
                                          "high": mark * 1.01},
        "state": "open", "settlement_price": mark, "open_interest": open_interest, "min_price": mark * 0.985,
        "max_price": mark * 1.015, "mark_price": mark, "last_price": mark, "interest_value": 0.0,
        "instrument_name": symbol, "index_price": index, "funding_8h": funding_8h, "current_funding": 0.0,
        "estimated_delivery_price": index, "best_bid_price": mark - 0.5, "best_bid_amount": 1000.0,
        "best_ask_price": mark + 0.5, "best_ask_amount": 1000.0,
    })


def book_frame(symbol: str, change_id: int, timestamp: int, bids: Sequence[Sequence[Any]],
               asks: Sequence[Sequence[Any]], prev_change_id: int | None = None) -> str:
    """A snapshot when ``prev_change_id`` is None, else a change."""
    data: dict[str, Any] = {"type": "snapshot" if prev_change_id is None else "change", "timestamp": timestamp,
                            "instrument_name": symbol, "change_id": change_id,
                            "bids": [list(level) for level in bids], "asks": [list(level) for level in asks]}
    if prev_change_id is not None:
        data["prev_change_id"] = prev_change_id
    return notification(f"book.{symbol}.100ms", data)


SAMPLE_INSTRUMENT: Final = Instrument("deribit", "BTC-PERPETUAL", "BTC", "inverse", 1.0, 8.0)
_T0_MS: Final = 1_760_000_000_000


def sample_frames(kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` distinct valid frames of BTC-PERPETUAL: ``trade`` (one trade each, increasing ``trade_seq``) or
    ``book`` (a 25-level snapshot, then changes chained by ``prev_change_id``)."""
    rng = random.Random(7)
    symbol = SAMPLE_INSTRUMENT.symbol
    if kind == "trade":
        frames = [trades_frame(symbol, [trade(symbol, 1 + i, 60_000.0 + rng.randint(-400, 400) * 0.5,
                                              10.0 * rng.randint(1, 500), rng.choice(("buy", "sell")), _T0_MS + i)])
                  for i in range(n)]
        return [SAMPLE_INSTRUMENT], frames
    if kind != "book":
        raise ValueError(f"kind must be 'trade' or 'book', got {kind!r}")
    bids = {60_000.0 - 0.5 * k: 10.0 * rng.randint(1, 5000) for k in range(1, 26)}
    asks = {60_000.0 + 0.5 * k: 10.0 * rng.randint(1, 5000) for k in range(25)}
    change_id = 1_000_000
    frames = [book_frame(symbol, change_id, _T0_MS, [("new", p, a) for p, a in sorted(bids.items(), reverse=True)],
                         [("new", p, a) for p, a in sorted(asks.items())])]
    for i in range(1, n):
        side, away = (bids, -0.5) if i % 2 else (asks, 0.5)
        if i % 4 < 2:  # the far end moves: one level goes, a new one appears beyond it
            far = max(side, key=lambda p: p * away)
            del side[far]
            fresh = far + away
            side[fresh] = 10.0 * rng.randint(1, 5000)
            levels: list[tuple[str, float, float]] = [("delete", far, 0.0), ("new", fresh, side[fresh])]
        else:
            price = rng.choice(list(side))
            side[price] = 10.0 * rng.randint(1, 5000)
            levels = [("change", price, side[price])]
        frames.append(book_frame(symbol, change_id + i, _T0_MS + i, levels if side is bids else [],
                                 levels if side is asks else [], prev_change_id=change_id + i - 1))
    return [SAMPLE_INSTRUMENT], frames
