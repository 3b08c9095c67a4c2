"""What to connect to on Binance USDⓈ-M and what to send: pure data, no I/O.

Since the 2026 URL split, ``/market`` carries trades, mark price and liquidations and ``/public`` carries the
order book; a stream subscribed on the wrong one is accepted and then never pushed, so the split is kept
here in one place. Connections use the combined-stream mode (``{base}/stream``) so every frame names its
stream, and subscribe after connecting::

    -> {"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@markPrice@1s"],"id":1}
    <- {"result":null,"id":1}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from flushwatch.settings import BinanceSettings

MAX_STREAMS_PER_CONNECTION: Final = 1024
"""Binance closes a connection that subscribes more."""
MESSAGES_PER_SECOND: Final = 10
"""Incoming messages (SUBSCRIBE, pong, ...) per connection per second; more disconnects, repeatedly more bans
the IP. Pace the subscribe messages below it."""
SUBSCRIBE_CHUNK: Final = 50
"""Streams per SUBSCRIBE message: 1024 streams fit in 21 messages, about 2 s at 10 messages/s."""
CONNECTION_MAX_AGE_S: Final = 24 * 3600
"""Binance drops every connection at this age (``BinanceSettings.max_connection_age_s`` reconnects earlier)."""

ALL_LIQUIDATIONS_STREAM: Final = "!forceOrder@arr"

# Longest first: "USDT" must win over "USD".
_QUOTES: Final = ("USDT", "USDC", "BUSD", "USD")


def asset_of(symbol: str) -> str:
    """The base asset of a contract: ``BTCUSDT`` -> ``BTC``, ``1000PEPEUSDT`` -> ``1000PEPE``,
    ``BTCUSDT_260327`` (quarterly) -> ``BTC``. The multiplier prefix is kept: 1000PEPE is its own unit."""
    base = symbol.upper().partition("_")[0]
    for quote in _QUOTES:
        if base.endswith(quote) and len(base) > len(quote):
            return base[: -len(quote)]
    return base


@dataclass(frozen=True)
class ConnectionPlan:
    """One websocket connection: where to connect and which streams to subscribe once connected."""

    name: str
    url: str
    streams: tuple[str, ...]


def _market_streams(settings: BinanceSettings) -> list[str]:
    streams = [ALL_LIQUIDATIONS_STREAM] if settings.liquidation_stream == "all" else []
    for symbol in settings.symbols:
        sym = symbol.lower()
        streams += [f"{sym}@aggTrade", f"{sym}@markPrice@1s"]
        if settings.liquidation_stream == "per_symbol":
            streams.append(f"{sym}@forceOrder")
    return streams


def _public_streams(settings: BinanceSettings) -> list[str]:
    # The partial book (top 20, full snapshot each push) needs no local book and no REST resync.
    return [f"{symbol.lower()}@depth20@100ms" for symbol in settings.symbols]


def _chunks(items: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def connection_plans(settings: BinanceSettings) -> list[ConnectionPlan]:
    """The market and public connections for the watchlist, each with at most
    ``settings.streams_per_connection`` streams. ``!forceOrder@arr`` (when used) is on ``market-0``."""
    plans = []
    for kind, base, streams in (
        ("market", settings.market_url, _market_streams(settings)),
        ("public", settings.public_url, _public_streams(settings)),
    ):
        url = base.rstrip("/") + "/stream"
        for i, chunk in enumerate(_chunks(streams, settings.streams_per_connection)):
            plans.append(ConnectionPlan(name=f"{kind}-{i}", url=url, streams=chunk))
    return plans


def subscribe_messages(streams: Sequence[str], first_id: int) -> list[str]:
    """SUBSCRIBE messages (JSON text) for ``streams``, ``SUBSCRIBE_CHUNK`` streams each, with ids counting up
    from ``first_id``; each is acknowledged by ``{"result":null,"id":<id>}``."""
    return [
        msgspec.json.encode({"method": "SUBSCRIBE", "params": list(chunk), "id": first_id + n}).decode()
        for n, chunk in enumerate(_chunks(streams, SUBSCRIBE_CHUNK))
    ]
