"""The Binance USDⓈ-M market-stream protocol, server side: pure rules, no I/O.

``flushwatch.fake.server`` does the networking; everything that decides *what* the fake venue answers is
here, written from the venue documentation and real frames (``shared/research/exchange-interfaces.md``
§0-1, the tardis fixtures and the cryptofeed recording).

Endpoints (2026 split): ``/market`` carries trades, mark price and liquidations, ``/public`` carries the
order book. Under each, ``/stream`` is combined mode (every push wrapped ``{"stream":..,"data":..}``,
streams optionally in ``?streams=a/b``) and ``/ws`` raw mode (streams optionally in the path,
``/ws/a/b``). The pre-split root (``/stream``, ``/ws``) still completes the handshake but never pushes.
A stream subscribed on the wrong route is acknowledged and then never pushed either: that silence is how
the real venue behaves, so the fake must not be more helpful.

Control messages, as sent by clients and answered by the venue::

    -> {"method":"SUBSCRIBE","params":["btcusdt@aggTrade","!forceOrder@arr"],"id":1}
    <- {"result":null,"id":1}
    -> {"method":"LIST_SUBSCRIPTIONS","id":3}
    <- {"result":["btcusdt@aggTrade","!forceOrder@arr"],"id":3}
    -> {"method":"SUBSCRIBE","params":[...the 1025th stream...],"id":4}
    <- {"error":{"code":4,"msg":"Too many subscriptions"},"id":4}
    -> {"method":"SUBSCRIBE","id":"x"}
    <- {"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"},"id":null}

Error codes are Binance's: 0 unknown property, 1 invalid value type, 2 invalid request, 3 invalid JSON,
4 too many subscriptions.

A combined push, verbatim from the cryptofeed recording of 2021-07-22::

    {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT",
     "p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import msgspec

Frame = tuple[str, str]
"""``(stream name, payload JSON text)``: one push of one stream, as Binance sends it in raw mode."""


class FrameSource(Protocol):
    """Something the fake venue can serve: pushes, and the open interest its REST endpoint reports."""

    def batches(self) -> AsyncIterator[list[Frame]]:
        """Frames in delivery order, grouped in batches that are due together; paced by the source."""
        ...

    def open_interest(self, symbol: str) -> tuple[str, int] | None:
        """``(openInterest text, time ms)`` now, or ``None`` for a symbol the source does not know."""
        ...


MARKET: Final = "market"
PUBLIC: Final = "public"
LEGACY: Final = "legacy"

_PUBLIC_KINDS: Final = frozenset({"bookTicker", "trade"})
"""Besides every ``depth*`` stream. tardis-node routes ``bookTicker, depth, trade`` to ``/public``."""

MAX_STREAMS: Final = 1024
MAX_INCOMING_PER_S: Final = 10
RATE_LIMIT_CLOSE: Final = (1008, "Too many requests")
"""What Binance closes with when a connection sends more than 10 messages a second
(binance-connector-js issue #530: "closed due to 1008: Too many requests")."""

_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def route_of(stream: str) -> str:
    """The endpoint (``market`` or ``public``) that pushes ``stream``.

    ``btcusdt@depth20@100ms`` -> public; ``btcusdt@aggTrade``, ``!forceOrder@arr`` -> market.
    """
    name = stream[1:] if stream.startswith("!") else stream.partition("@")[2]
    kind = name.partition("@")[0]
    return PUBLIC if kind in _PUBLIC_KINDS or kind.startswith("depth") else MARKET


@dataclass(frozen=True)
class Endpoint:
    """What a websocket request path asks for."""

    route: str
    combined: bool
    streams: tuple[str, ...]


def parse_ws_path(path: str) -> Endpoint | None:
    """``/market/stream?streams=a/b``, ``/public/ws/a/b``, ``/stream`` ... into an ``Endpoint``; ``None``
    for a path that is not a stream endpoint."""
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    route = LEGACY
    if segments and segments[0] in (MARKET, PUBLIC):
        route = segments.pop(0)
    if not segments:
        return None
    mode, rest = segments[0], segments[1:]
    if mode == "stream" and not rest:
        query = parse_qs(parts.query).get("streams", [""])[0]
        return Endpoint(route, True, tuple(s for s in query.split("/") if s))
    if mode == "ws":
        return Endpoint(route, False, tuple(rest))
    return None


def wrap(stream: str, payload: str) -> str:
    """The combined-mode envelope. String concatenation keeps the payload byte-identical."""
    return '{"stream":"' + stream + '","data":' + payload + "}"


class Reply(NamedTuple):
    """The answer to one control message and what it changed."""

    method: str | None
    """The request's method when it was understood, else ``None``."""
    text: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


_encode = msgspec.json.Encoder().encode


def _result(result: Any, request_id: int) -> str:
    return _encode({"result": result, "id": request_id}).decode()


def _error(code: int, msg: str, request_id: int | None) -> str:
    return _encode({"error": {"code": code, "msg": msg}, "id": request_id}).decode()


class Session:
    """One connection's subscriptions and its ``combined`` property. ``handle`` answers a control message."""

    def __init__(self, combined: bool, streams: Iterable[str] = (), max_streams: int = MAX_STREAMS) -> None:
        self.combined = combined
        self.max_streams = max_streams
        self.streams: dict[str, None] = dict.fromkeys(streams)  # a dict keeps subscription order

    def handle(self, message: str | bytes) -> Reply:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            return Reply(None, _error(3, f"Invalid JSON: {exc}", None))
        if not isinstance(request, dict):
            return Reply(None, _error(2, "Invalid request: expected a JSON object", None))
        request_id = request.get("id")
        if type(request_id) is not int or request_id < 0:
            return Reply(None, _error(2, "Invalid request: request ID must be an unsigned integer", None))
        method = request.get("method")
        if method is None:
            return Reply(None, _error(2, "Invalid request: missing field `method`", request_id))
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            return Reply(None, _error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                                         f"{expected}", request_id))
        params = request.get("params", [])
        if not isinstance(params, list):
            return Reply(method, _error(2, "Invalid request: params must be an array", request_id))
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._subscription(method, params, request_id)
        if method == "LIST_SUBSCRIPTIONS":
            return Reply(method, _result(list(self.streams), request_id))
        return self._property(method, params, request_id)

    def _subscription(self, method: str, params: list[Any], request_id: int) -> Reply:
        if not all(isinstance(p, str) for p in params):
            return Reply(None, _error(2, "Invalid request: stream names must be strings", request_id))
        if method == "UNSUBSCRIBE":
            removed = tuple(s for s in dict.fromkeys(params) if s in self.streams)
            for stream in removed:
                del self.streams[stream]
            return Reply(method, _result(None, request_id), removed=removed)
        added = tuple(s for s in dict.fromkeys(params) if s not in self.streams)
        if len(self.streams) + len(added) > self.max_streams:
            return Reply(method, _error(4, "Too many subscriptions", request_id))
        self.streams.update(dict.fromkeys(added))
        return Reply(method, _result(None, request_id), added=added)

    def _property(self, method: str, params: list[Any], request_id: int) -> Reply:
        if not params or not isinstance(params[0], str):
            return Reply(method, _error(2, "Invalid request: property name must be a string", request_id))
        if params[0] != "combined":
            return Reply(method, _error(0, "Unknown property", request_id))
        if method == "GET_PROPERTY":
            return Reply(method, _result(self.combined, request_id))
        if len(params) != 2 or not isinstance(params[1], bool):
            return Reply(method, _error(1, "Invalid value type: expected Boolean", request_id))
        self.combined = params[1]
        return Reply(method, _result(None, request_id))


# --- REST -------------------------------------------------------------------------------------------

OPEN_INTEREST_PATH: Final = "/fapi/v1/openInterest"
WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"


class RestReply(NamedTuple):
    status: int
    body: bytes


def _rest_error(status: int, code: int, msg: str) -> RestReply:
    return RestReply(status, _encode({"code": code, "msg": msg}))


def rest_reply(path: str, open_interest: Callable[[str], tuple[str, int] | None]) -> RestReply:
    """Answer ``GET path``. ``open_interest(symbol)`` gives ``(text, time_ms)`` or ``None``.

    Real answer (tardis fixture, and the documented shape)::

        {"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}
    """
    parts = urlsplit(path)
    if parts.path != OPEN_INTEREST_PATH:
        return _rest_error(404, -1, f"Unknown path {parts.path}")
    symbol = parse_qs(parts.query).get("symbol", [""])[0]
    if not symbol:
        return _rest_error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    found = open_interest(symbol)
    if found is None:
        return _rest_error(400, -1121, "Invalid symbol.")
    text, time_ms = found
    return RestReply(200, _encode({"openInterest": text, "symbol": symbol, "time": time_ms}))


def rate_limited_reply(status: int, retry_after_s: int, now_ms: int) -> RestReply:
    """The 429 (limit hit) or 418 (IP banned) answer, worded as Binance words it."""
    if status == 418:
        until = now_ms + retry_after_s * 1000
        return _rest_error(418, -1003, f"Way too many requests; IP(127.0.0.1) banned until {until}. "
                                       "Please use the websocket for live updates to avoid bans.")
    return _rest_error(status, -1003, "Too many requests; current limit of IP(127.0.0.1) is 2400 requests per "
                                      "minute. Please use the websocket for live updates to avoid polling the API.")


# --- misbehaviour -----------------------------------------------------------------------------------

_GARBAGE_PAYLOADS: Final = (
    '{"e":"aggTrade","E":"soon","a":null,"s":7,"p":"abc","q":"-1","f":1,"l":1,"T":[],"m":"maybe"}',
    '{"e":"forceOrder","E":1584059031426}',
    '{"e":"markPriceUpdate","E":1597536008000,"s":"BTCUSDT","p":"","i":"NaN","r":"x","T":0}',
)
"""Well-formed JSON of the wrong shape: wrong types, missing objects, unparseable numbers."""
_GARBAGE_TEXT: Final = ("this is not json", '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":15', "[1,2,3]")
_GARBAGE_BINARY: Final = b"\x00\xff\xfe binary frame"


def garbage_frames(n: int, stream: str, combined: bool) -> list[str | bytes]:
    """``n`` frames a collector must survive: non-JSON, truncated, not an object, wrong shapes, binary.

    Wrong-shape payloads are wrapped for ``stream`` in combined mode so they reach the stream's parser.
    """
    shapes = [wrap(stream, p) if combined else p for p in _GARBAGE_PAYLOADS]
    kinds: list[str | bytes] = [*_GARBAGE_TEXT, *shapes, _GARBAGE_BINARY]
    return list(itertools.islice(itertools.cycle(kinds), n))
