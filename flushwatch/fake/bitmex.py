"""BitMEX realtime, server side, for ``FakeVenue``: pure rules, no I/O.

Written from BitMEX's wsAPI page (commands, the welcome, per-topic acks, text ``ping``/``pong``), BitMEX's
announcements (the welcome's empty ``limit`` since 2026-03-30), real frames (the tardis fixtures: partials
with ``keys``/``filter``, empty partials, id-keyed book deltas, liquidation insert/delete) and a real error
quoted by a public client (``{"status":400,"error":"Unknown table: tradeBin5dm","meta":{},"request":..}``).
What a client sees::

    <- {"info":"Welcome to the BitMEX Realtime API.","version":"2.0.0",...}
    -> {"op":"subscribe","args":["instrument:XBTUSD","trade:XBTUSD"]}
    <- {"success":true,"subscribe":"instrument:XBTUSD","request":{"op":"subscribe","args":[...]}}
    <- {"table":"instrument","action":"partial","keys":["symbol"],"filter":{"symbol":"XBTUSD"},"data":[..]}
    <- {"success":true,"subscribe":"trade:XBTUSD","request":{...}}
    <- {"table":"trade","action":"partial","keys":[],"filter":{"symbol":"XBTUSD"},"data":[..recent..]}
    -> ping
    <- pong

Every topic's partial is rebuilt from the frames pushed so far (the instrument rows merged, the book and
the resting liquidations keyed as BitMEX keys them, the last trades), so a client that resubscribes
mid-stream gets a fresh image then deltas (a command's acks all go before its images here, where the venue
interleaves them). A command with one bad topic is refused whole. Error wordings
other than "Unknown table" are the fake's own. BitMEX documents no idle cut-off; ``idle_timeout_s`` adds
one for tests. The fake serves symbol-scoped topics only (``trade:XBTUSD``, not ``trade``).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from collectors.bitmex.instruments import INSTRUMENTS_PATH, OPEN
from collectors.instruments import Instrument
from flushwatch.fake.venue_server import METHOD_NOT_ALLOWED, FakeReply

WS_PATH: Final = "/realtime"
WELCOME: Final = ('{"info":"Welcome to the BitMEX Realtime API.","version":"2.0.0","timestamp":'
                  '"2026-11-20T00:00:00.000Z","docs":"https://www.bitmex.com/app/wsAPI","heartbeatEnabled":false,'
                  '"limit":{}}')
KEYS: Final = {"instrument": ["symbol"], "trade": [], "orderBookL2_25": ["symbol", "id", "side"],
               "orderBookL2": ["symbol", "id", "side"], "liquidation": ["orderID"]}
"""The tables the fake serves and the keys their partial announces."""
RECENT_TRADES: Final = 10
"""Trades a ``trade`` partial carries (the venue sends the latest few)."""
_TIMESPAN_ZERO_MS: Final = 946_684_800_000

_encode = msgspec.json.Encoder().encode


def _text(obj: Any) -> str:
    return _encode(obj).decode()


def _error(message: str, request: Any) -> str:
    return _text({"status": 400, "error": message, "meta": {}, "request": request})


class _Push(msgspec.Struct):
    table: str | None = None
    action: str = ""
    filter: dict[str, Any] | None = None
    data: list[dict[str, Any]] = []


class BitmexSession:
    """One connection: its topics and its answers; the welcome goes out first, whatever comes first."""

    def __init__(self, knows: Any) -> None:
        self._knows = knows
        self.topics: set[str] = set()
        self.welcomed = False

    def _welcome(self) -> list[str]:
        if self.welcomed:
            return []
        self.welcomed = True
        return [WELCOME]

    def handle(self, message: str | bytes) -> FakeReply:
        first = self._welcome()
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        if text == "ping":
            return FakeReply([*first, "pong"])
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return FakeReply([*first, _error("Unable to parse request: not JSON", text)])
        if not isinstance(request, dict):
            return FakeReply([*first, _error("Unable to parse request: not an object", request)])
        op, args = request.get("op"), request.get("args", [])
        args = [args] if isinstance(args, str) else args  # "If you are only sending a single argument..."
        if op not in ("subscribe", "unsubscribe"):
            return FakeReply([*first, _error(f"Unknown op: {op}", request)])
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return FakeReply([*first, _error("args must be a list of topics", request)])
        wanted = list(dict.fromkeys(args))
        for topic in wanted:
            problem = self._knows(topic)
            if problem:
                return FakeReply([*first, _error(problem, request)])
            if op == "subscribe" and topic in self.topics:
                return FakeReply([*first, _error(f"You are already subscribed to this topic: {topic}", request)])
            if op == "unsubscribe" and topic not in self.topics:
                return FakeReply([*first, _error(f"You are not subscribed to this topic: {topic}", request)])
        acks = [_text({"success": True, op: topic, "request": request}) for topic in wanted]
        if op == "unsubscribe":
            self.topics.difference_update(wanted)
            return FakeReply([*first, *acks], unsubscribed=wanted)
        self.topics.update(wanted)
        return FakeReply([*first, *acks], subscribed=wanted)

    def tick(self, now: float) -> FakeReply:
        return FakeReply(self._welcome())  # BitMEX greets on connect, before any command


class BitmexProtocol:
    """The venue for ``instruments`` (their symbols are the topics it knows; REST lists them, valued at
    ``mark_prices`` -- 50,000 where not given)."""

    name = "bitmex"
    ws_path = WS_PATH

    def __init__(self, instruments: Sequence[Instrument], *, idle_timeout_s: float | None = None,
                 mark_prices: dict[str, float] | None = None) -> None:
        self.instruments = list(instruments)
        self.symbols = frozenset(i.symbol for i in self.instruments)
        self.client_idle_timeout_s = idle_timeout_s
        self.mark_prices = dict(mark_prices or {})
        self._push = msgspec.json.Decoder(_Push)
        self._arrivals = itertools.count()
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {}
        """topic -> the table image: rows by their key (symbol, id, orderID; trades by arrival)."""

    def knows(self, topic: str) -> str | None:
        """Why ``topic`` is refused, or ``None``."""
        table, _, symbol = topic.partition(":")
        if table not in KEYS:
            return f"Unknown table: {table}"
        if symbol not in self.symbols:
            return f"Unknown symbol: {symbol}" if symbol else "The fake serves symbol-scoped topics only"
        return None

    def session(self) -> BitmexSession:
        return BitmexSession(self.knows)

    def observe(self, frame: str) -> str | None:
        try:
            msg = self._push.decode(frame)
        except (msgspec.DecodeError, ValueError):
            return None  # garbage published on purpose reaches nobody's state
        table = msg.table
        if table is None:
            return None  # an ack, a welcome, a pong in a recording
        symbol = msg.data[0].get("symbol") if msg.data else (msg.filter or {}).get("symbol")
        topic = f"{table}:{symbol}"
        if table in KEYS and isinstance(symbol, str):
            self._fold(topic, table, msg)
        return topic

    def _fold(self, topic: str, table: str, msg: _Push) -> None:
        if msg.action == "partial":
            self.rows[topic] = {}
        rows = self.rows.setdefault(topic, {})
        if table == "trade":
            for row in msg.data:
                rows[next(self._arrivals)] = row
            for old in list(rows)[:-RECENT_TRADES]:
                del rows[old]
            return
        for row in msg.data:
            key = row.get("orderID") if table == "liquidation" else row.get("id", row.get("symbol"))
            if msg.action == "delete":
                rows.pop(key, None)
            elif msg.action == "update" and key in rows:
                rows[key] = {**rows[key], **row}
            elif msg.action in ("partial", "insert"):
                rows[key] = dict(row)

    def snapshot(self, topic: str) -> list[str]:
        table, _, symbol = topic.partition(":")
        data = list(self.rows.get(topic, {}).values())
        return [_text({"table": table, "action": "partial", "keys": KEYS[table], "filter": {"symbol": symbol},
                       "data": data})]

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        if path != INSTRUMENTS_PATH:
            return None
        if method != "GET":
            return METHOD_NOT_ALLOWED
        return 200, _encode([self._instrument_row(i) for i in self.instruments])

    def _instrument_row(self, inst: Instrument) -> dict[str, Any]:
        mark = self.mark_prices.get(inst.symbol, 50_000.0)
        root = "XBT" if inst.asset == "BTC" else inst.asset
        row: dict[str, Any] = {
            "symbol": inst.symbol, "rootSymbol": root, "state": OPEN if inst.active else "Closed",
            "typ": "FFWCSX" if inst.perpetual else "FFCCSX", "isQuanto": False, "isInverse": inst.kind == "inverse",
            "fundingInterval": _timespan(inst.funding_interval_h) if inst.perpetual else None,
            "markPrice": mark, "foreignNotional24h": inst.volume_usd_24h,
            "openInterest": round(inst.oi_usd / inst.notional_usd(1.0, mark)),
        }
        if inst.kind == "inverse":
            row |= {"quoteCurrency": "USD", "settlCurrency": "XBt", "multiplier": -round(1e8 * inst.contract_size),
                    "underlyingToSettleMultiplier": -100_000_000, "underlyingToPositionMultiplier": None,
                    "quoteToSettleMultiplier": None}
        else:
            row |= {"quoteCurrency": "USDT", "settlCurrency": "USDt", "underlyingToSettleMultiplier": None,
                    "underlyingToPositionMultiplier": round(1 / inst.contract_size),
                    "multiplier": round(1e6 * inst.contract_size), "quoteToSettleMultiplier": 1_000_000}
        return row


def _timespan(hours: float) -> str:
    """A BitMEX timespan: the offset from 2000-01-01 written as a timestamp (8 h: 2000-01-01T08:00:00.000Z)."""
    return iso_ms(_TIMESPAN_ZERO_MS + round(hours * 3_600_000))


# --- benchmark frames -------------------------------------------------------------------------------

_T0_MS: Final = 1_786_310_817_583
_MID: Final = 65_000.0
_TICK: Final = 0.5
_ID0: Final = 8_799_000_000
_LEVELS: Final = 25


def iso_ms(ms: int) -> str:
    """Epoch ms in BitMEX's timestamp format."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _level(i: int, side: int) -> tuple[int, float]:
    """``(id, price)`` of grid level ``i`` away from mid on ``side`` (-1 bids, +1 asks)."""
    price = _MID + side * (i + 0.5) * _TICK
    return _ID0 - round(price * 100), price


def sample_frames(kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` distinct, valid frames in BitMEX's format for XBTUSD: ``trade`` (one trade each, increasing times,
    distinct ids) or ``book`` (an ``orderBookL2_25`` partial, then deltas of one or two levels each)."""
    instruments = [Instrument("bitmex", "XBTUSD", "BTC", "inverse", 1.0, 8.0)]
    rng = random.Random(7)
    frames: list[str] = []
    if kind == "trade":
        for k in range(n):
            side = "Buy" if rng.random() < 0.5 else "Sell"
            price = _MID + rng.randint(-50, 50) * _TICK
            size = rng.randint(1, 500) * 100
            frames.append(
                f'{{"table":"trade","action":"insert","data":[{{"timestamp":"{iso_ms(_T0_MS + k)}",'
                f'"symbol":"XBTUSD","side":"{side}","size":{size},"price":{price},"tickDirection":"PlusTick",'
                f'"trdMatchID":"{uuid.UUID(int=k + 1)}","grossValue":{round(size / price * 1e8)},'
                f'"homeNotional":{size / price:.8f},"foreignNotional":{size},"trdType":"Regular"}}]}}')
        return instruments, frames
    if kind != "book":
        raise ValueError(f"unknown kind {kind!r}: trade or book")

    def row(i: int, side: int, size: int | None, t: str, price: bool = True) -> str:
        level_id, level_price = _level(i, side)
        fields = f'"symbol":"XBTUSD","id":{level_id},"side":"{"Buy" if side < 0 else "Sell"}"'
        if size is not None:
            fields += f',"size":{size}'
        if price:
            fields += f',"price":{level_price}'
        return "{" + fields + f',"timestamp":"{t}","transactTime":"{t}"}}'

    t0 = iso_ms(_T0_MS)
    image = ",".join(row(i, s, 1000 * (i + 1), t0) for s in (-1, 1) for i in range(_LEVELS))
    frames.append('{"table":"orderBookL2_25","action":"partial","keys":["symbol","id","side"],'
                  f'"filter":{{"symbol":"XBTUSD"}},"data":[{image}]}}')
    gone: tuple[int, int] | None = None  # a level deleted by the last frame, inserted back by the next
    for k in range(1, n):
        t = iso_ms(_T0_MS + 20 * k)
        if gone is not None:
            frames.append(f'{{"table":"orderBookL2_25","action":"insert","data":[{row(*gone, 700, t)}]}}')
            gone = None
        elif k % 10 == 0:
            gone = (rng.randrange(_LEVELS), rng.choice((-1, 1)))
            frames.append(f'{{"table":"orderBookL2_25","action":"delete","data":[{row(*gone, None, t, False)}]}}')
        else:
            rows = ",".join(row(rng.randrange(_LEVELS), rng.choice((-1, 1)), rng.randint(1, 90) * 100, t)
                            for _ in range(rng.randint(1, 2)))
            frames.append(f'{{"table":"orderBookL2_25","action":"update","data":[{rows}]}}')
    return instruments, frames
