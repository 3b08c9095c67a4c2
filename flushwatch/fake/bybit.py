"""Bybit v5 public linear, server side, for ``FakeVenue``: pure rules, no I/O.

Written from Bybit's docs (``docs/v5/websocket/wss-authentication.mdx``: subscribe, ping, the 21,000-character
``args`` limit, the 10-minute idle cut-off; ``public/ticker.mdx``, ``public/orderbook.mdx``) and real frames
(the 2026-08-09 cryptofeed recording, the tardis fixtures). What a client sees::

    -> {"req_id":"1","op":"subscribe","args":["tickers.BTCUSDT","orderbook.50.BTCUSDT"]}
    <- {"success":true,"ret_msg":"","conn_id":"fake-0001","req_id":"1","op":"subscribe"}
    <- {"topic":"tickers.BTCUSDT","type":"snapshot","data":{...},"cs":753843900397,"ts":1786310817583}
    <- {"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":...,"data":{"s":"BTCUSDT","b":[...],"a":[...],
        "u":15076953,"seq":753843913870},"cts":...}
    -> {"req_id":"ping-1","op":"ping"}
    <- {"success":true,"ret_msg":"pong","conn_id":"fake-0001","req_id":"ping-1","op":"ping"}
    -> {"req_id":"2","op":"subscribe","args":["kline.1.BTCUSDT"]}
    <- {"success":false,"ret_msg":"error:handler not found,topic:kline.1.BTCUSDT","conn_id":"fake-0001",
        "req_id":"2","op":"subscribe"}

A subscriber gets the snapshot of ``tickers`` and ``orderbook`` topics rebuilt from the frames pushed so far,
then live frames, as on the venue. The wording of errors other than "handler not found" is the fake's own.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from collectors.bybit.instruments import INSTRUMENTS_PATH, PAGE_LIMIT, PERPETUAL, TICKERS_PATH, TRADING
from collectors.bybit.spec import (
    BOOK_DEPTH,
    LIQUIDATIONS,
    MAX_ARGS_CHARS,
    ORDERBOOK,
    TICKERS,
    TRADES,
    args_chars,
)
from collectors.instruments import Instrument
from flushwatch.fake.venue_server import METHOD_NOT_ALLOWED, FakeReply

WS_PATH: Final = "/v5/public/linear"
IDLE_TIMEOUT_S: Final = 600.0
"""With no ping-pong and no data, Bybit cuts a connection after 10 minutes."""
BOOK_DEPTHS: Final = frozenset({1, 50, 200, 1000})
_DEPTH_NAMES: Final = frozenset(str(d) for d in BOOK_DEPTHS)
DEFAULT_PAGE_LIMIT: Final = 500
_PER_SYMBOL: Final = frozenset({TICKERS, TRADES, LIQUIDATIONS})

_encode = msgspec.json.Encoder().encode


class _Push(msgspec.Struct):
    topic: str | None = None
    type: str = ""
    ts: int = 0
    cs: int | None = None
    cts: int | None = None
    data: msgspec.Raw = msgspec.Raw()


class _BookData(msgspec.Struct):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int = 0


class _Book:
    """Levels keyed by price, the original text kept so a rebuilt snapshot reads like Bybit's."""

    def __init__(self) -> None:
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.u = self.seq = self.ts = 0
        self.cts: int | None = None

    def fold(self, msg: _Push, data: _BookData) -> None:
        if msg.type == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data.b), (self.asks, data.a)):
            for price, size in levels:
                if float(size) == 0.0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = (price, size)
        self.u, self.seq, self.ts, self.cts = data.u, data.seq, msg.ts, msg.cts

    def snapshot(self, topic: str, symbol: str, depth: int) -> str:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [self.asks[p] for p in sorted(self.asks)[:depth]]
        frame: dict[str, Any] = {"topic": topic, "type": "snapshot", "ts": self.ts,
                                 "data": {"s": symbol, "b": bids, "a": asks, "u": self.u, "seq": self.seq}}
        if self.cts is not None:
            frame["cts"] = self.cts
        return _encode(frame).decode()


class BybitSession:
    """One connection: its topics and its answers."""

    def __init__(self, conn_id: str, knows: Any) -> None:
        self.conn_id = conn_id
        self._knows = knows
        self.topics: set[str] = set()

    def _answer(self, success: bool, ret_msg: str, req_id: str, op: str) -> str:
        return _encode({"success": success, "ret_msg": ret_msg, "conn_id": self.conn_id, "req_id": req_id,
                        "op": op}).decode()

    def handle(self, message: str | bytes) -> FakeReply:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return FakeReply([self._answer(False, "error:request not in json format", "", "")])
        if not isinstance(request, dict):
            return FakeReply([self._answer(False, "error:request not in json format", "", "")])
        raw_id = request.get("req_id", "")
        req_id = raw_id if isinstance(raw_id, str) else _encode(raw_id).decode()
        op = request.get("op")
        if op == "ping":
            return FakeReply([self._answer(True, "pong", req_id, "ping")])
        if op not in ("subscribe", "unsubscribe"):
            return FakeReply([self._answer(False, f"error:unknown op {op!r}", req_id, str(op))])
        args = request.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return FakeReply([self._answer(False, "error:args must be a list of topics", req_id, op)])
        wanted = list(dict.fromkeys(args))
        if op == "unsubscribe":
            for topic in wanted:
                if topic not in self.topics:
                    return FakeReply([self._answer(False, f"error:not subscribed,topic:{topic}", req_id, op)])
            self.topics.difference_update(wanted)
            return FakeReply([self._answer(True, "", req_id, op)], unsubscribed=wanted)
        for topic in wanted:
            if not self._knows(topic):
                return FakeReply([self._answer(False, f"error:handler not found,topic:{topic}", req_id, op)])
            if topic in self.topics:
                return FakeReply([self._answer(False, f"error:already subscribed,topic:{topic}", req_id, op)])
        if args_chars([*self.topics, *wanted]) > MAX_ARGS_CHARS:
            return FakeReply([self._answer(False, f"error:args length over {MAX_ARGS_CHARS}", req_id, op)])
        self.topics.update(wanted)
        return FakeReply([self._answer(True, "", req_id, op)], subscribed=wanted)

    def tick(self, now: float) -> FakeReply:
        return FakeReply()  # Bybit initiates nothing: keeping alive is the client's job


class BybitProtocol:
    """The venue for ``instruments`` (their symbols are the topics it knows; REST lists them)."""

    name = "bybit"
    ws_path = WS_PATH

    def __init__(self, instruments: Sequence[Instrument], *, idle_timeout_s: float | None = IDLE_TIMEOUT_S,
                 page_limit: int = PAGE_LIMIT) -> None:
        self.instruments = list(instruments)
        self.symbols = frozenset(i.symbol for i in self.instruments)
        self.client_idle_timeout_s = idle_timeout_s
        self.page_limit = page_limit
        """The most entries a REST page holds (Bybit: 1000); lower it to exercise paging."""
        self._ids = itertools.count(1)
        self._push = msgspec.json.Decoder(_Push)
        self._ticker_data = msgspec.json.Decoder(dict[str, Any])
        self._book_data = msgspec.json.Decoder(_BookData)
        self.tickers: dict[str, dict[str, Any]] = {}
        """topic -> the merged ticker ``data``, with ``cs`` and ``ts`` of the newest frame."""
        self._ticker_meta: dict[str, tuple[int | None, int]] = {}
        self.books: dict[str, _Book] = {}

    def knows(self, topic: str) -> bool:
        kind, _, rest = topic.partition(".")
        if kind in _PER_SYMBOL:
            return rest in self.symbols
        depth, _, symbol = rest.partition(".")
        return kind == ORDERBOOK and depth in _DEPTH_NAMES and symbol in self.symbols

    def session(self) -> BybitSession:
        return BybitSession(f"fake-{next(self._ids):04d}", self.knows)

    def observe(self, frame: str) -> str | None:
        try:
            msg = self._push.decode(frame)
            topic = msg.topic
            if not topic:
                return None  # an ack or a pong in a recording
            kind = topic.partition(".")[0]
            if kind == TICKERS:
                self._fold_ticker(topic, msg)
            elif kind == ORDERBOOK:
                data = self._book_data.decode(msg.data)
                book = self.books.get(topic)
                if book is None and msg.type == "snapshot":
                    book = self.books[topic] = _Book()
                if book is not None:
                    book.fold(msg, data)
        except (msgspec.DecodeError, ValueError):
            return None  # garbage published on purpose still reaches nobody's state
        return topic

    def _fold_ticker(self, topic: str, msg: _Push) -> None:
        data = self._ticker_data.decode(msg.data)
        if msg.type == "snapshot":
            self.tickers[topic] = data
        elif topic in self.tickers:
            self.tickers[topic].update(data)
        else:
            return
        self._ticker_meta[topic] = (msg.cs, msg.ts)

    def snapshot(self, topic: str) -> list[str]:
        kind, _, rest = topic.partition(".")
        if kind == TICKERS and topic in self.tickers:
            cs, ts = self._ticker_meta[topic]
            frame: dict[str, Any] = {"topic": topic, "type": "snapshot", "data": self.tickers[topic]}
            if cs is not None:
                frame["cs"] = cs
            frame["ts"] = ts
            return [_encode(frame).decode()]
        if kind == ORDERBOOK and topic in self.books:
            depth, _, symbol = rest.partition(".")
            return [self.books[topic].snapshot(topic, symbol, int(depth))]
        return []

    # --- REST ---------------------------------------------------------------------------------------

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        if path not in (INSTRUMENTS_PATH, TICKERS_PATH):
            return None
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if query.get("category") != "linear":
            return 200, _encode({"retCode": 10001, "retMsg": "params error: category is invalid", "result": {},
                                 "retExtInfo": {}, "time": 0})
        if path == TICKERS_PATH:
            return 200, _body({"category": "linear", "list": [_ticker_row(i) for i in self.instruments]})
        try:
            limit = int(query.get("limit", DEFAULT_PAGE_LIMIT))
            start = int(query.get("cursor") or 0)
        except ValueError:
            return 200, _encode({"retCode": 10001, "retMsg": "params error: limit or cursor", "result": {},
                                 "retExtInfo": {}, "time": 0})
        size = max(1, min(limit, PAGE_LIMIT, self.page_limit))
        page = self.instruments[start:start + size]
        more = start + size < len(self.instruments)
        return 200, _body({"category": "linear", "list": [_instrument_entry(i) for i in page],
                           "nextPageCursor": str(start + size) if more else ""})


def _body(result: dict[str, Any]) -> bytes:
    return _encode({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1786310817197})


def _quote(symbol: str) -> str:
    # BTCPERP is Bybit's USDC perpetual; dated futures carry a suffix (BTCUSDT-14AUG26).
    base = symbol.partition("-")[0]
    return "USDC" if base.endswith(("USDC", "PERP")) else "USDT"


def _instrument_entry(inst: Instrument) -> dict[str, Any]:
    quote = _quote(inst.symbol)
    return {"symbol": inst.symbol, "contractType": PERPETUAL if inst.perpetual else "LinearFutures",
            "status": TRADING if inst.active else "Closed", "baseCoin": inst.asset, "quoteCoin": quote,
            "launchTime": "1584230400000", "deliveryTime": "0", "deliveryFeeRate": "", "priceScale": "2",
            "fundingInterval": round(inst.funding_interval_h * 60), "settleCoin": quote}


def _ticker_row(inst: Instrument) -> dict[str, str]:
    return {"symbol": inst.symbol, "openInterestValue": f"{2 * inst.oi_usd:.2f}",
            "singleOpenInterestValue": f"{inst.oi_usd:.2f}", "turnover24h": f"{inst.volume_usd_24h:.4f}"}


# --- benchmark frames -------------------------------------------------------------------------------

_T0_MS: Final = 1_786_310_817_583
_TICK: Final = 0.1
_MID: Final = 65_000.0


def _level(index: int, side: int, size: float) -> str:
    """``[price, size]`` of grid level ``index`` away from mid on ``side`` (-1 bids, +1 asks)."""
    return f'["{_MID + side * (index + 0.5) * _TICK:.2f}","{size:.3f}"]'


def sample_frames(kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` distinct, valid frames in Bybit's format for ``BTCUSDT``: ``trade`` (one trade each, increasing
    time and distinct ids) or ``book`` (an ``orderbook.50`` snapshot, then deltas of a few levels each)."""
    instruments = [Instrument("bybit", "BTCUSDT", "BTC", "linear", 1.0, 8.0)]
    rng = random.Random(7)
    frames: list[str] = []
    if kind == "trade":
        for k in range(n):
            t = _T0_MS + k
            side = "Buy" if rng.random() < 0.5 else "Sell"
            price = _MID + rng.randint(-50, 50) * _TICK
            frames.append(
                f'{{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":{t + 1},"data":[{{"T":{t},"s":"BTCUSDT",'
                f'"S":"{side}","v":"{rng.randint(1, 5000) / 1000:.3f}","p":"{price:.2f}","L":"PlusTick",'
                f'"i":"{uuid.UUID(int=k + 1)}","BT":false,"RPI":false,"seq":{753843954913 + k}}}]}}')
        return instruments, frames
    if kind != "book":
        raise ValueError(f"unknown kind {kind!r}: trade or book")
    topic = f"{ORDERBOOK}.{BOOK_DEPTH}.BTCUSDT"
    bids = ",".join(_level(i, -1, 1.0 + i / 10) for i in range(BOOK_DEPTH))
    asks = ",".join(_level(i, 1, 1.0 + i / 10) for i in range(BOOK_DEPTH))
    frames.append(f'{{"topic":"{topic}","type":"snapshot","ts":{_T0_MS},"data":{{"s":"BTCUSDT","b":[{bids}],'
                  f'"a":[{asks}],"u":1000,"seq":7961638724}},"cts":{_T0_MS - 1}}}')
    for k in range(1, n):
        # Sizes change on a fixed price grid (a few levels go to 0 and come back), so the book never crosses.
        b = ",".join(_level(rng.randrange(BOOK_DEPTH + 10), -1, rng.choice((0.0, 0.5, 2.0, 3.25))) for _ in range(2))
        a = ",".join(_level(rng.randrange(BOOK_DEPTH + 10), 1, rng.choice((0.0, 0.5, 2.0, 3.25))) for _ in range(2))
        t = _T0_MS + 20 * k
        frames.append(f'{{"topic":"{topic}","type":"delta","ts":{t},"data":{{"s":"BTCUSDT","b":[{b}],"a":[{a}],'
                      f'"u":{1000 + k},"seq":{7961638724 + k}}},"cts":{t - 1}}}')
    return instruments, frames
