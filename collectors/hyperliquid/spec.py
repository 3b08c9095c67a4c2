"""What to connect to on Hyperliquid and what to send: pure data, no I/O.

One endpoint carries everything. Every subscription is one message for one coin and one type -- there is
no batching and no request id; the ack echoes the subscription, and a refusal comes on the ``error``
channel::

    -> {"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}
    <- {"channel":"subscriptionResponse","data":{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}}
    <- {"channel":"error","data":"Already subscribed: {\\"type\\":\\"trades\\",\\"coin\\":\\"BTC\\"}"}

Types per watched perpetual, and why:

* ``activeAssetCtx`` -- the current hourly funding rate, mark and oracle (index) price, open interest in
  coins: ``FundingMark`` and ``OpenInterest``;
* ``trades`` -- taker flow, sizes in coins;
* ``l2Book`` -- a whole 20-level book on every push: no local book, no resync (``Depth.reach_bps`` tells
  how far it reaches).

Liquidations: Hyperliquid has NO public liquidation stream. Liquidations show only in the liquidated
user's own fills (``userFills``/``userEvents``, at most 10 users per IP) or from third parties reading the
node's fills, so this venue produces no ``Liquidation`` events and its coverage is ``none``. Its trades
carry no liquidation marker either; nothing here guesses one.

Limits per IP (documented): 1000 subscriptions, 10 connections, 30 new connections a minute, 2000 messages
sent a minute. The server closes a connection that has sent nothing for 60 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from collectors.base import Heartbeat
from collectors.hyperliquid.instruments import VENUE, fetch_instruments
from collectors.hyperliquid.parse import HyperliquidParser
from collectors.hyperliquid.schemas import CHANNELS, topic
from collectors.instruments import Instrument
from collectors.venue import VenueSpec

WS_URL: Final = "wss://api.hyperliquid.xyz/ws"
REST_URL: Final = "https://api.hyperliquid.xyz"

MAX_SUBSCRIPTIONS_PER_IP: Final = 1000
MAX_CONNECTIONS_PER_IP: Final = 10
MAX_TOPICS_PER_CONNECTION: Final = 99
"""33 coins' three types: a coin never straddles two connections, and the 10 connections an IP may open
hold 990 topics, inside its 1000 subscriptions -- so the connection and subscription caps bind together."""
SUBSCRIBE_INTERVAL_S: Final = 0.2
"""2000 messages a minute per IP, and every subscription is a message of its own: 0.2 s is at most 300 a
minute per connection, and a 100-coin universe (300 topics, 4 connections) costs its 300 messages once,
spread over about 20 s -- a complete resubscription of everything fits in the budget several times over."""
HEARTBEAT_S: Final = 20.0
"""The server closes a connection that sent nothing for 60 s; a ping every 20 s survives a lost one."""


def topics(instruments: Sequence[Instrument]) -> list[str]:
    """Every subscription for ``instruments``: each coin's types together, ``type:coin``."""
    return [topic(kind, inst.symbol) for inst in instruments for kind in CHANNELS]


def subscribe_messages(topic_names: Sequence[str], first_id: int) -> list[str]:
    """One subscribe message per topic. ``first_id`` is unused: Hyperliquid has no request ids, its ack
    echoes the subscription itself (the parser reports the topic as the ack)."""
    out = []
    for name in topic_names:
        kind, _, coin = name.partition(":")
        out.append(msgspec.json.encode(
            {"method": "subscribe", "subscription": {"type": kind, "coin": coin}}).decode())
    return out


def ping() -> str:
    return '{"method":"ping"}'


SPEC: Final = VenueSpec(
    name=VENUE,
    coverage="none",  # no public liquidation feed at all
    ws_url=WS_URL,
    rest_url=REST_URL,
    topics=topics,
    subscribe_messages=subscribe_messages,
    parser=HyperliquidParser,
    fetch_instruments=fetch_instruments,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    subscribe_interval_s=SUBSCRIBE_INTERVAL_S,
    heartbeat=Heartbeat(HEARTBEAT_S, ping),
)
