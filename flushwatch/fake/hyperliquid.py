"""The Hyperliquid websocket protocol and info endpoint, server side, for ``FakeVenue``: pure rules, no I/O.

Written from the venue's documentation, client libraries that quote its answers, and the tardis fixtures
(``shared/research/exchange-interfaces.md`` §4). Client messages and the venue's answers::

    -> {"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}
    <- {"channel":"subscriptionResponse","data":{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}}
    <- {"channel":"trades","data":[...the coin's latest trades...]}             (the replay, then live pushes)
    -> the same again
    <- {"channel":"error","data":"Already subscribed: {\\"type\\":\\"trades\\",\\"coin\\":\\"BTC\\"}"}
    -> {"method":"subscribe","subscription":{"type":"trades","coin":"NOPE"}}
    <- {"channel":"error","data":"Invalid subscription {\\"type\\":\\"trades\\",\\"coin\\":\\"NOPE\\"}"}
    -> {"method":"subscribe","subscription":{"type":"liquidations","coin":"BTC"}}    (no such type)
    <- {"channel":"error","data":"Error parsing JSON into valid websocket request: {...the request...}"}
    -> {"method":"ping"}
    <- {"channel":"pong"}

Limits: 1000 subscriptions and 2000 client messages a minute (per IP on the venue; per connection here),
answered with the venue's sentences; a client silent for 60 s is cut off. Subscribing sends what is known
of the topic: the last ``l2Book`` and ``activeAssetCtx`` pushed, and a replay of the coin's latest trades.

``POST /info`` serves ``{"type":"metaAndAssetCtxs"}``. Other bodies get the venue's (axum's) rejections: text
that is not JSON 400 "Failed to parse the request body as JSON", JSON that is no request it knows 422 "Failed to
deserialize the JSON body into the target type" (the live venue and the ``@nktkas/hyperliquid`` API pages);
other real info types are 422 here too, as the fake does not serve them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from collectors.hyperliquid.instruments import INFO_PATH, META_AND_ASSET_CTXS
from collectors.hyperliquid.schemas import ACTIVE_ASSET_CTX, L2_BOOK, TRADES, topic
from collectors.instruments import Instrument
from flushwatch.fake.venue_server import METHOD_NOT_ALLOWED, FakeReply

IDLE_TIMEOUT_S: Final = 60.0
MAX_SUBSCRIPTIONS: Final = 1000
MESSAGES_PER_MINUTE: Final = 2000
REPLAY_TRADES: Final = 10
"""Trades replayed to a new subscriber. The venue's own count is not documented."""
SUBSCRIPTION_TYPES: Final = frozenset({TRADES, L2_BOOK, ACTIVE_ASSET_CTX, "bbo"})
"""Per-coin public types the fake serves; any other type is a request the venue cannot parse."""
PONG: Final = '{"channel":"pong"}'

_encode = msgspec.json.Encoder().encode


def _error(text: str) -> str:
    return _encode({"channel": "error", "data": text}).decode()


def _ack(method: str, subscription: dict[str, Any]) -> str:
    return _encode({"channel": "subscriptionResponse",
                    "data": {"method": method, "subscription": subscription}}).decode()


class HyperliquidSession:
    """One connection's subscriptions and message budget."""

    def __init__(self, coins: frozenset[str], max_subscriptions: int, messages_per_minute: int) -> None:
        self.coins = coins
        self.max_subscriptions = max_subscriptions
        self.messages_per_minute = messages_per_minute
        self.subscriptions: dict[str, None] = {}
        self._heard: deque[float] = deque()

    def handle(self, message: str | bytes) -> FakeReply:
        now = time.monotonic()
        heard = self._heard
        heard.append(now)
        while heard and heard[0] < now - 60.0:
            heard.popleft()
        if len(heard) > self.messages_per_minute:
            return FakeReply([_error(f"Cannot send more than {self.messages_per_minute} messages per minute.")])
        text = message if isinstance(message, str) else message.decode(errors="replace")
        unparsable = FakeReply([_error(f"Error parsing JSON into valid websocket request: {text}")])
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return unparsable
        if not isinstance(request, dict):
            return unparsable
        method = request.get("method")
        if method == "ping":
            return FakeReply([PONG])
        sub = request.get("subscription")
        if (method not in ("subscribe", "unsubscribe") or not isinstance(sub, dict)
                or sub.get("type") not in SUBSCRIPTION_TYPES or not isinstance(sub.get("coin"), str)):
            return unparsable
        name = topic(sub["type"], sub["coin"])
        echo = _encode(sub).decode()
        if method == "unsubscribe":
            self.subscriptions.pop(name, None)
            return FakeReply([_ack(method, sub)], unsubscribed=[name])
        if sub["coin"] not in self.coins:
            return FakeReply([_error(f"Invalid subscription {echo}")])
        if name in self.subscriptions:
            return FakeReply([_error(f"Already subscribed: {echo}")])
        if len(self.subscriptions) >= self.max_subscriptions:
            return FakeReply([_error(f"Cannot subscribe to more than {self.max_subscriptions} channels.")])
        self.subscriptions[name] = None
        return FakeReply([_ack(method, sub)], subscribed=[name])

    def tick(self, now: float) -> FakeReply:
        return FakeReply()  # the venue initiates nothing; the client pings


class _Push(msgspec.Struct):
    channel: str
    data: msgspec.Raw = msgspec.Raw()


class _Coin(msgspec.Struct):
    coin: str


class _CtxFields(msgspec.Struct):
    markPx: str | None = None
    funding: str | None = None


class _Ctx(msgspec.Struct):
    coin: str
    ctx: _CtxFields


class HyperliquidProtocol:
    """Hyperliquid for ``FakeVenue``: ``instruments`` are the perpetuals it lists (their ``oi_usd`` and
    ``volume_usd_24h`` are what the info endpoint reports, valued at the last mark pushed, else at 1.0)."""

    name = "hyperliquid"
    ws_path = "/ws"

    def __init__(self, instruments: Sequence[Instrument], *, client_idle_timeout_s: float | None = IDLE_TIMEOUT_S,
                 max_subscriptions: int = MAX_SUBSCRIPTIONS, messages_per_minute: int = MESSAGES_PER_MINUTE,
                 replay_trades: int = REPLAY_TRADES) -> None:
        self.instruments = list(instruments)
        self.coins = frozenset(i.symbol for i in self.instruments)
        self.client_idle_timeout_s = client_idle_timeout_s
        self.max_subscriptions = max_subscriptions
        self.messages_per_minute = messages_per_minute
        self._replay = replay_trades
        self._trades: dict[str, deque[bytes]] = {}
        self._latest: dict[str, str] = {}  # topic -> last whole-state push (l2Book, activeAssetCtx)
        self._ctx: dict[str, _CtxFields] = {}
        self._push = msgspec.json.Decoder(_Push)
        self._coin = msgspec.json.Decoder(_Coin)
        self._coins = msgspec.json.Decoder(list[_Coin])
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])
        self._ctx_msg = msgspec.json.Decoder(_Ctx)

    def session(self) -> HyperliquidSession:
        return HyperliquidSession(self.coins, self.max_subscriptions, self.messages_per_minute)

    def observe(self, frame: str) -> str | None:
        """The topic of a push, remembering what a later subscriber gets first; ``None`` for anything else
        (acks, pongs, errors, garbage)."""
        try:
            push = self._push.decode(frame)
            channel = push.channel
            if channel == TRADES:
                coins = self._coins.decode(push.data)
                if not coins:
                    return None
                coin = coins[0].coin
                replay = self._trades.setdefault(coin, deque(maxlen=self._replay))
                replay.extend(bytes(raw) for raw in self._raw_list.decode(push.data))
            elif channel == ACTIVE_ASSET_CTX:
                ctx = self._ctx_msg.decode(push.data)
                coin = ctx.coin
                self._ctx[coin] = ctx.ctx
                self._latest[topic(channel, coin)] = frame
            elif channel in (L2_BOOK, "bbo"):
                coin = self._coin.decode(push.data).coin
                self._latest[topic(channel, coin)] = frame
            else:
                return None
        except msgspec.DecodeError:
            return None
        return topic(channel, coin)

    def snapshot(self, topic_name: str) -> list[str]:
        kind, _, coin = topic_name.partition(":")
        if kind == TRADES:
            replay = self._trades.get(coin)
            return ['{"channel":"trades","data":[' + b",".join(replay).decode() + "]}"] if replay else []
        latest = self._latest.get(topic_name)
        return [latest] if latest is not None else []

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        if path != INFO_PATH:
            return None
        if method != "POST":
            return METHOD_NOT_ALLOWED
        try:
            request = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return 400, f"Failed to parse the request body as JSON: {exc}".encode()
        if not isinstance(request, dict) or request.get("type") != META_AND_ASSET_CTXS["type"]:
            return 422, b"Failed to deserialize the JSON body into the target type"
        return 200, self._meta_and_asset_ctxs()

    def _meta_and_asset_ctxs(self) -> bytes:
        universe: list[dict[str, Any]] = []
        ctxs: list[dict[str, Any]] = []
        for inst in self.instruments:
            seen = self._ctx.get(inst.symbol)
            mark = seen.markPx if seen is not None and seen.markPx else "1.0"
            px = float(mark)
            asset: dict[str, Any] = {"name": inst.symbol, "szDecimals": 2, "maxLeverage": 20, "marginTableId": 20}
            if not inst.active:
                asset["isDelisted"] = True
            universe.append(asset)
            ctxs.append({
                "funding": seen.funding if seen is not None and seen.funding else "0.0000125",
                "openInterest": repr(inst.oi_usd / px), "prevDayPx": mark, "dayNtlVlm": repr(inst.volume_usd_24h),
                "premium": "0.0", "oraclePx": mark, "markPx": mark, "midPx": mark, "impactPxs": [mark, mark],
                "dayBaseVlm": repr(inst.volume_usd_24h / px),
            })
        return _encode([{"universe": universe, "marginTables": []}, ctxs])


# --- frames for tests and the benchmark ------------------------------------------------------------------

SAMPLE_COIN: Final = "BTC"
SAMPLE_TIME_MS: Final = 1_750_000_000_000
SAMPLE_TID: Final = 400_000_000_000_000
_BOOK_VARIANTS: Final = 16
_BOOK_LEVELS: Final = 20


def sample_instruments() -> list[Instrument]:
    return [Instrument("hyperliquid", SAMPLE_COIN, SAMPLE_COIN, "linear", 1.0, 1.0)]


def trade_frame(coin: str, tid: int, time_ms: int, px: float, sz: float, side: str = "B") -> str:
    """One ``trades`` push of one trade, in the venue's format (with the documented ``users`` pair)."""
    return ('{"channel":"trades","data":[{"coin":"' + coin + '","side":"' + side + '","px":"' + repr(px)
            + '","sz":"' + repr(sz) + '","time":' + str(time_ms) + ',"hash":"0x' + f"{tid:064x}"
            + '","tid":' + str(tid) + ',"users":["0x' + "1" * 40 + '","0x' + "2" * 40 + '"]}]}')


def _levels_json(prices: Sequence[float], sizes: Sequence[float]) -> str:
    return ",".join('{"px":"' + repr(p) + '","sz":"' + repr(s) + '","n":' + str(1 + i % 7) + "}"
                    for i, (p, s) in enumerate(zip(prices, sizes, strict=True)))


def book_frame(coin: str, time_ms: int, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]],
               ) -> str:
    """One ``l2Book`` push: a whole book, bids and asks best first."""
    return ('{"channel":"l2Book","data":{"coin":"' + coin + '","time":' + str(time_ms) + ',"levels":[['
            + _levels_json([p for p, _ in bids], [s for _, s in bids]) + "],["
            + _levels_json([p for p, _ in asks], [s for _, s in asks]) + "]]}}")


def ctx_frame(coin: str, *, funding: str, open_interest: str, mark: str, oracle: str) -> str:
    """One ``activeAssetCtx`` push."""
    return _encode({"channel": ACTIVE_ASSET_CTX, "data": {"coin": coin, "ctx": {
        "funding": funding, "openInterest": open_interest, "prevDayPx": mark, "dayNtlVlm": "1000000.0",
        "premium": "0.0", "oraclePx": oracle, "markPx": mark, "midPx": mark, "impactPxs": [mark, mark]}}}).decode()


def sample_frames(kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` distinct valid frames of ``kind``: ``"trade"`` (one trade each, increasing ids and times) or
    ``"book"`` (whole 20-level books, increasing times: Hyperliquid has no deltas)."""
    if kind == "trade":
        frames = [trade_frame(SAMPLE_COIN, SAMPLE_TID + i, SAMPLE_TIME_MS + i, 100_000.0 + (i % 50),
                              0.001 * (1 + i % 97), "B" if i % 3 else "A") for i in range(n)]
    elif kind == "book":
        tails = []
        for v in range(_BOOK_VARIANTS):
            mid = 100_000.0 + v
            bids = _levels_json([mid - 1 - k for k in range(_BOOK_LEVELS)],
                                [round(0.1 + 0.01 * ((k + v) % 13), 5) for k in range(_BOOK_LEVELS)])
            asks = _levels_json([mid + 1 + k for k in range(_BOOK_LEVELS)],
                                [round(0.1 + 0.01 * ((k * 3 + v) % 11), 5) for k in range(_BOOK_LEVELS)])
            tails.append(',"levels":[[' + bids + "],[" + asks + "]]}}")
        head = '{"channel":"l2Book","data":{"coin":"' + SAMPLE_COIN + '","time":'
        frames = [head + str(SAMPLE_TIME_MS + 500 * i) + tails[i % _BOOK_VARIANTS] for i in range(n)]
    else:
        raise ValueError(f"unknown kind {kind!r}; expected 'trade' or 'book'")
    return sample_instruments(), frames
