"""What to connect to on Deribit and what to send: pure data, no I/O.

One JSON-RPC websocket carries every instrument. After connecting the client asks for heartbeats, then
subscribes; Deribit answers each request by its id::

    -> {"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":10}}
    <- {"jsonrpc":"2.0","id":1,"result":"ok"}
    -> {"jsonrpc":"2.0","id":2,"method":"public/subscribe","params":{"channels":["ticker.BTC-PERPETUAL.100ms",...]}}
    <- {"jsonrpc":"2.0","id":2,"result":["ticker.BTC-PERPETUAL.100ms",...]}

From then on the server sends ``{"method":"heartbeat","params":{"type":"test_request"}}`` every interval and
closes the connection (code 4000) when no ``public/test`` follows: the parser returns that answer as a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import httpx
import msgspec

from collectors.base import Heartbeat
from collectors.instruments import Instrument
from collectors.venue import VenueParser, VenueSpec

VENUE: Final = "deribit"
WS_URL: Final = "wss://www.deribit.com/ws/api/v2"
REST_URL: Final = "https://www.deribit.com"

INTERVAL: Final = "100ms"
"""Notification aggregation: ``raw`` is for authenticated users only (error 13778 otherwise)."""
CHANNEL_KINDS: Final = ("ticker", "trades", "book")

HEARTBEAT_INTERVAL_S: Final = 10
"""``public/set_heartbeat`` interval: the smallest Deribit accepts, so a dead connection shows soonest."""
CLIENT_HEARTBEAT_S: Final = 15.0
"""Our own ``public/test`` every so often: its answer is a frame on a connection whose books are still (a
quiet book sends nothing for a minute), and it keeps the socket busy if ``set_heartbeat`` was refused."""
SUBSCRIBE_CHUNK: Final = 100
"""Channels per ``public/subscribe``: Deribit suggests batches of up to 500, and a client sending 250+ long
names met "request entity too large" (tmatic-trading/crypto-platform#439); 100 stays far from both."""
MAX_TOPICS_PER_CONNECTION: Final = 300
"""No documented cap; 100 instruments (3 channels each) per socket keeps each under ~250 frames/s, and the
~130 perpetuals fit in 2 of the 32 connections Deribit allows per IP."""
SUBSCRIBE_INTERVAL_S: Final = 0.35
"""``public/subscribe`` costs 3,000 of a 30,000-credit pool refilled at ~3.3 calls/s; exhausting it ends the
session with ``too_many_requests`` (10028). One call per 0.35 s never drains it."""

_encode = msgspec.json.Encoder().encode

TEST_MESSAGE: Final = _encode({"jsonrpc": "2.0", "id": 0, "method": "public/test", "params": {}}).decode()
"""Both the answer to ``test_request`` and our own keepalive. Id 0 is never a subscribe request's (those count
from 1), and its answer (``{"version": ...}``) is told apart from a subscribe ack by its shape anyway."""


def channel(kind: str, symbol: str) -> str:
    return f"{kind}.{symbol}.{INTERVAL}"


def topics(instruments: Sequence[Instrument]) -> list[str]:
    """The three channels of each instrument, an instrument's channels next to each other so a connection
    always carries all of them."""
    return [channel(kind, inst.symbol) for inst in instruments for kind in CHANNEL_KINDS]


def request(request_id: int, method: str, params: dict[str, object]) -> str:
    return _encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).decode()


def subscribe_messages(channels: Sequence[str], first_id: int) -> list[str]:
    """``public/set_heartbeat`` (id ``first_id``), then ``public/subscribe`` with ``SUBSCRIBE_CHUNK`` channels
    each, ids counting up."""
    messages = [request(first_id, "public/set_heartbeat", {"interval": HEARTBEAT_INTERVAL_S})]
    for n, start in enumerate(range(0, len(channels), SUBSCRIBE_CHUNK), start=1):
        messages.append(request(first_id + n, "public/subscribe",
                                {"channels": list(channels[start:start + SUBSCRIBE_CHUNK])}))
    return messages


def resubscribe_messages(name: str) -> list[str]:
    """Unsubscribe then subscribe one channel: the way to a fresh book snapshot after a gap, since subscribing
    an already subscribed channel is acknowledged without one."""
    return [request(0, "public/unsubscribe", {"channels": [name]}),
            request(0, "public/subscribe", {"channels": [name]})]


def keepalive_message() -> str:
    return TEST_MESSAGE


HEARTBEAT: Final = Heartbeat(interval_s=CLIENT_HEARTBEAT_S, message=keepalive_message)


# The parser and the REST client import this module's constants, so they are imported when first used.
def make_parser(instruments: Sequence[Instrument], max_frame_bytes: int) -> VenueParser:
    from collectors.deribit.parse import DeribitParser

    return DeribitParser(instruments, max_frame_bytes)


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    from collectors.deribit import instruments

    return await instruments.fetch_instruments(client, rest_url)


SPEC: Final = VenueSpec(
    name=VENUE,
    coverage="complete",  # every trade that closed a liquidated position carries the ``liquidation`` flag
    ws_url=WS_URL,
    rest_url=REST_URL,
    topics=topics,
    subscribe_messages=subscribe_messages,
    parser=make_parser,
    fetch_instruments=fetch_instruments,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    subscribe_interval_s=SUBSCRIBE_INTERVAL_S,
    heartbeat=HEARTBEAT,
    max_connection_age_s=None,  # "WebSocket connections have no fixed expiration timer"
)
