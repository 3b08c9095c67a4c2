"""The OKX v5 public protocol, server side, for ``FakeVenue``: pure rules, no I/O.

Written from OKX's documentation (per-channel pages of docs-v5, 2026-07) and real frames (tardis fixtures,
the cryptofeed recording of 2022-05-13). What it models:

* ``/ws/v5/public``; requests ``{"id":"1","op":"subscribe","args":[{"channel":..,"instId":..}]}``, each arg
  answered on its own -- an ack ``{"id":"1","event":"subscribe","arg":{..},"connId":".."}`` or an error
  ``{"id":"1","event":"error","code":"60018","msg":"Wrong URL or channel:..,instId:.. doesn't exist. ..",
  "connId":".."}``; a request that is not one: ``60012 Invalid request``, an unknown op: ``60019``;
* 480 subscribe/unsubscribe requests per connection per hour, then ``60014 Requests too frequent``;
* text ``ping`` -> text ``pong``; a connection that hears nothing from its client for 30 s is closed (OKX
  closes after 30 s without traffic; a client's ping keeps it open);
* latest-value channels (``books5``, whose first push is documented to be the current snapshot, and
  ``mark-price``, ``index-tickers``, ``funding-rate``, ``open-interest``) give a new subscriber the last push
  seen, so a client that resubscribes after a drop starts from fresh state; ``trades`` and
  ``liquidation-orders`` replay nothing;
* REST ``/api/v5/public/instruments``, ``/api/v5/public/open-interest`` and ``/api/v5/market/tickers`` built
  from the instruments given to the constructor, answered ``{"code":"0","msg":"","data":[..]}``.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from collectors.instruments import Instrument
from collectors.okx.instruments import INSTRUMENTS_PATH, OPEN_INTEREST_PATH, TICKERS_PATH, underlying
from flushwatch.fake.venue_server import METHOD_NOT_ALLOWED, FakeReply

WS_PATH: Final = "/ws/v5/public"
IDLE_TIMEOUT_S: Final = 30.0
MAX_REQUESTS_PER_HOUR: Final = 480
DEFAULT_PRICE: Final = 100.0
"""Valuation of REST open interest and volume for a symbol no mark price has been seen for."""
LATEST_VALUE_CHANNELS: Final = frozenset({"books5", "mark-price", "index-tickers", "funding-rate", "open-interest"})
INST_ID_CHANNELS: Final = frozenset({*LATEST_VALUE_CHANNELS, "trades", "tickers", "bbo-tbt"}) - {"index-tickers"}
INST_TYPES: Final = frozenset({"SWAP", "FUTURES", "MARGIN", "OPTION"})
_LIST_TIME: Final = "1611916828000"

_encode = msgspec.json.encode


def _text(message: Any) -> str:
    return _encode(message).decode()


def _decimal(value: float) -> str:
    """A decimal string as OKX writes it: ``0.01``, ``100``."""
    return f"{value:.12f}".rstrip("0").rstrip(".")


class OkxSession:
    """One connection: answers its requests, counts them against the hourly limit."""

    def __init__(self, protocol: FakeOkx, conn_id: str) -> None:
        self.protocol = protocol
        self.conn_id = conn_id
        self.requests: deque[float] = deque()

    def handle(self, message: str | bytes) -> FakeReply:
        text = message if isinstance(message, str) else message.decode(errors="replace")
        if text == "ping":
            return FakeReply(["pong"])
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return FakeReply([self._error("60012", f"Invalid request: {text}")])
        if not isinstance(request, dict):
            return FakeReply([self._error("60012", f"Invalid request: {text}")])
        rid = request.get("id")
        if rid is not None and not (isinstance(rid, str) and rid.isalnum() and len(rid) <= 32):
            return FakeReply([self._error("60012", f"Invalid request: {text}")])
        op = request.get("op")
        if op not in ("subscribe", "unsubscribe"):
            return FakeReply([self._error("60019", f"Invalid op: {op}", rid)])
        args = request.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, dict) for a in args):
            return FakeReply([self._error("60012", f"Invalid request: {text}", rid)])
        now = time.monotonic()
        while self.requests and now - self.requests[0] > 3600:
            self.requests.popleft()
        if len(self.requests) >= self.protocol.max_requests_per_hour:
            return FakeReply([self._error("60014", "Requests too frequent.", rid)])
        self.requests.append(now)
        reply = FakeReply()
        for arg in args:
            name = self.protocol.topic_of(arg)
            if name is None:
                channel, key = arg.get("channel"), arg.get("instId", arg.get("instType"))
                field = "instType" if "instType" in arg else "instId"
                reply.replies.append(self._error("60018", f"Wrong URL or channel:{channel},{field}:{key} doesn't "
                                                          "exist. Please use the correct URL, channel and "
                                                          "parameters referring to API document.", rid))
                continue
            ack: dict[str, Any] = {"id": rid} if rid is not None else {}
            reply.replies.append(_text(ack | {"event": op, "arg": arg, "connId": self.conn_id}))
            (reply.subscribed if op == "subscribe" else reply.unsubscribed).append(name)
        return reply

    def tick(self, now: float) -> FakeReply:
        return FakeReply()  # OKX initiates nothing: the client pings

    def _error(self, code: str, msg: str, rid: object = None) -> str:
        head: dict[str, Any] = {"id": rid} if rid is not None else {}
        return _text(head | {"event": "error", "code": code, "msg": msg, "connId": self.conn_id})


class FakeOkx:
    """OKX's public rules for ``FakeVenue(FakeOkx(instruments))``; ``idle_timeout_s`` shrinks the venue's 30 s
    cut-off for tests."""

    name = "okx"
    ws_path = WS_PATH

    def __init__(self, instruments: Sequence[Instrument], *, prices: Mapping[str, float] | None = None,
                 idle_timeout_s: float | None = IDLE_TIMEOUT_S,
                 max_requests_per_hour: int = MAX_REQUESTS_PER_HOUR) -> None:
        self.instruments = {i.symbol: i for i in instruments}
        self.indices = {underlying(s) for s in self.instruments}
        self.prices = dict(prices or {})
        self.client_idle_timeout_s = idle_timeout_s
        self.max_requests_per_hour = max_requests_per_hour
        self.latest: dict[str, str] = {}
        """Topic -> its last push, for the latest-value channels."""
        self._sessions = 0

    def session(self) -> OkxSession:
        self._sessions += 1
        return OkxSession(self, f"{0xA4D3AE55 + self._sessions:08x}")

    def topic_of(self, arg: Mapping[str, Any]) -> str | None:
        """The topic an arg subscribes to, or ``None`` when OKX would answer 60018."""
        channel = arg.get("channel")
        if channel == "liquidation-orders":
            key = arg.get("instType")
            known = key in INST_TYPES
        elif channel == "index-tickers":
            key = arg.get("instId")
            known = key in self.indices
        else:
            key = arg.get("instId")
            known = channel in INST_ID_CHANNELS and key in self.instruments
        return f"{channel}:{key}" if known else None

    def observe(self, frame: str) -> str | None:
        try:
            message = msgspec.json.decode(frame)
        except msgspec.DecodeError:
            return None
        if not isinstance(message, dict) or "event" in message or not isinstance(message.get("arg"), dict):
            return None
        arg = message["arg"]
        channel = arg.get("channel")
        name = f"{channel}:{arg.get('instId') or arg.get('instType')}"
        if channel in LATEST_VALUE_CHANNELS:
            self.latest[name] = frame
        if channel == "mark-price":
            for item in message.get("data") or ():
                if isinstance(item, dict):
                    with contextlib.suppress(TypeError, ValueError):
                        self.prices[str(item.get("instId"))] = float(item.get("markPx", ""))
        return name

    def snapshot(self, topic: str) -> list[str]:
        frame = self.latest.get(topic)
        return [frame] if frame is not None else []

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        if path not in (INSTRUMENTS_PATH, OPEN_INTEREST_PATH, TICKERS_PATH):
            return None
        if method != "GET":
            return METHOD_NOT_ALLOWED
        inst_type = query.get("instType", "")
        if not inst_type:
            return 400, _encode({"code": "50014", "msg": "Parameter instType can not be empty.", "data": []})
        chosen = [i for i in self.instruments.values() if (i.perpetual and inst_type == "SWAP")
                  or (not i.perpetual and inst_type == "FUTURES")]
        build = {INSTRUMENTS_PATH: self._instrument, OPEN_INTEREST_PATH: self._open_interest,
                 TICKERS_PATH: self._ticker}[path]
        return 200, _encode({"code": "0", "msg": "", "data": [build(i) for i in chosen]})

    def _instrument(self, inst: Instrument) -> dict[str, str]:
        uly = underlying(inst.symbol)
        linear = inst.kind == "linear"
        return {
            "instType": "SWAP" if inst.perpetual else "FUTURES", "instId": inst.symbol, "uly": uly,
            "instFamily": uly, "ctType": inst.kind, "ctVal": _decimal(inst.contract_size), "ctMult": "1",
            "ctValCcy": inst.asset if linear else "USD", "settleCcy": uly.partition("-")[2] if linear else inst.asset,
            "state": "live" if inst.active else "suspend", "listTime": _LIST_TIME, "expTime": "", "lotSz": "1",
            "minSz": "1", "tickSz": "0.1", "lever": "100", "baseCcy": "", "quoteCcy": "",
        }

    def _price(self, inst: Instrument) -> float:
        return self.prices.get(inst.symbol, DEFAULT_PRICE)

    def _contracts(self, inst: Instrument, usd: float) -> float:
        price = self._price(inst)
        return usd / inst.contract_size if inst.kind == "inverse" else usd / price / inst.contract_size

    def _open_interest(self, inst: Instrument) -> dict[str, str]:
        return {"instType": "SWAP" if inst.perpetual else "FUTURES", "instId": inst.symbol,
                "oi": _decimal(self._contracts(inst, inst.oi_usd)),
                "oiCcy": _decimal(inst.oi_usd / self._price(inst)), "oiUsd": _decimal(inst.oi_usd),
                "ts": str(time.time_ns() // 1_000_000)}

    def _ticker(self, inst: Instrument) -> dict[str, str]:
        price = self._price(inst)
        return {"instType": "SWAP" if inst.perpetual else "FUTURES", "instId": inst.symbol, "last": _decimal(price),
                "vol24h": _decimal(self._contracts(inst, inst.volume_usd_24h)),
                "volCcy24h": _decimal(inst.volume_usd_24h / price), "ts": str(time.time_ns() // 1_000_000)}


# --- frames for tests and the benchmark ---------------------------------------------------------------

SAMPLE_INSTRUMENT: Final = Instrument(venue="okx", symbol="BTC-USDT-SWAP", asset="BTC", kind="linear",
                                      contract_size=0.01, funding_interval_h=8.0)
_T0_MS: Final = 1_760_000_000_000


def push(channel: str, key: str, data: list[dict[str, Any]]) -> str:
    """A push frame as OKX sends it."""
    field = "instType" if channel == "liquidation-orders" else "instId"
    return _text({"arg": {"channel": channel, field: key}, "data": data})


def trade_frame(trade_id: int, *, symbol: str = "BTC-USDT-SWAP", px: str = "60000.5", sz: str = "3",
                side: str = "buy", ts_ms: int | None = None) -> str:
    ts = _T0_MS + trade_id if ts_ms is None else ts_ms
    return push("trades", symbol, [{"instId": symbol, "tradeId": str(trade_id), "px": px, "sz": sz, "side": side,
                                    "ts": str(ts), "count": "1", "source": "0", "seqId": trade_id}])


def book_frame(seq: int, *, symbol: str = "BTC-USDT-SWAP", mid: float = 60000.0, ts_ms: int | None = None) -> str:
    """A ``books5`` push: 5 levels a side, one tick (0.1) apart, two ticks either side of ``mid``; sizes vary
    with ``seq``."""
    asks = [[f"{mid + 0.1 * (k + 1):.1f}", str(10 + (seq + k) % 50), "0", str(1 + k)] for k in range(5)]
    bids = [[f"{mid - 0.1 * (k + 1):.1f}", str(12 + (seq * 3 + k) % 40), "0", str(1 + k)] for k in range(5)]
    ts = _T0_MS + seq if ts_ms is None else ts_ms
    return push("books5", symbol, [{"asks": asks, "bids": bids, "instId": symbol, "ts": str(ts), "seqId": seq}])


def sample_frames(kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` distinct valid frames of ``kind``: ``trade`` (one trade each, increasing ids) or ``book`` (``books5``
    snapshots, OKX's only book here, increasing times)."""
    if kind == "trade":
        frames = [trade_frame(i + 1, px=_decimal(60000 + (i % 200) * 0.1), sz=str(1 + i % 37),
                              side="buy" if i % 2 else "sell") for i in range(n)]
    elif kind == "book":
        frames = [book_frame(i + 1, mid=60000.0 + (i % 100) / 10) for i in range(n)]
    else:
        raise ValueError(f"unknown sample kind {kind!r}; known: trade, book")
    return [SAMPLE_INSTRUMENT], frames
