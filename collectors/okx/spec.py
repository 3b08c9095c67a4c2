"""What to connect to on OKX v5 public and what to send: pure data, no I/O.

One public endpoint carries every channel used here. A topic is ``"<channel>:<instId>"`` (or
``"<channel>:<instType>"`` for the venue-wide ``liquidation-orders``); each becomes one subscribe *arg*, and
many args travel in one request, because the venue counts requests, not args::

    -> {"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT-SWAP"},
                                          {"channel":"liquidation-orders","instType":"SWAP"}]}
    <- {"id":"1","event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"connId":"a4d3ae55"}
    <- {"id":"1","event":"subscribe","arg":{"channel":"liquidation-orders","instType":"SWAP"},"connId":"a4d3ae55"}
    <- {"event":"error","msg":"Wrong URL or channel:trades,instId:X-SWAP doesn't exist. ...","code":"60018",...}

Channels per watched perpetual, and why:

* ``trades`` -- taker flow (``sz`` in contracts; ``tradeId`` orders and dedupes them);
* ``books5`` -- a full 5-level book on every push (no local book, no resync); shallow: ``Depth.reach_bps``
  says how far it reaches;
* ``mark-price`` -- the mark of ``FundingMark`` and the USD value of open interest;
* ``index-tickers`` (per underlying, ``BTC-USDT``) -- the index of ``FundingMark``: ``funding-rate``'s own
  ``premium`` is an impact-price premium, not mark over index, so it does not stand in for it;
* ``funding-rate`` -- the rate and, from ``nextFundingTime - fundingTime``, the interval (8/6/4/2/1 h);
* ``open-interest`` -- ``oiCcy`` (coins, one side) and ``oiUsd``;
* ``liquidation-orders`` with ``instType`` SWAP, once: it carries every swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from collectors.base import Heartbeat
from collectors.instruments import Instrument
from collectors.okx.instruments import VENUE, fetch_instruments, underlying
from collectors.okx.parse import OkxParser
from collectors.venue import VenueSpec

WS_URL: Final = "wss://ws.okx.com:8443/ws/v5/public"
REST_URL: Final = "https://www.okx.com"

PER_INSTRUMENT_CHANNELS: Final = ("trades", "books5", "mark-price", "funding-rate", "open-interest")
INDEX_CHANNEL: Final = "index-tickers"
LIQUIDATION_CHANNEL: Final = "liquidation-orders"
LIQUIDATION_INST_TYPE: Final = "SWAP"
INST_TYPE_CHANNELS: Final = frozenset({LIQUIDATION_CHANNEL})
"""Channels subscribed by ``instType`` rather than ``instId``."""

ARGS_PER_SUBSCRIBE: Final = 100
"""OKX caps one request's args at 64 KB in total; 100 args of ~60 bytes stay far below it, and batching
matters because each request counts against the 480 subscribe requests per connection per hour."""
MAX_TOPICS_PER_CONNECTION: Final = 240
"""OKX publishes no per-connection channel cap; 240 topics keep a top-40 universe (6 topics per perpetual)
on one connection, so startup never opens more than the 3 connections per second an IP is allowed."""
SUBSCRIBE_INTERVAL_S: Final = 0.1
"""Requests are limited per hour (480 per connection), not per second; a short pause keeps them ordered."""
HEARTBEAT_S: Final = 20.0
"""OKX closes a connection after 30 s without traffic; the client sends text ``ping`` (answered by text
``pong``) well inside that, so a quiet instrument never costs its connection."""


def topic(channel: str, key: str) -> str:
    return f"{channel}:{key}"


def topics(instruments: Sequence[Instrument]) -> list[str]:
    """Every topic for ``instruments``: the swap liquidations once, then each instrument's channels followed by
    its index (once per underlying)."""
    out = [topic(LIQUIDATION_CHANNEL, LIQUIDATION_INST_TYPE)]
    indices: set[str] = set()
    for inst in instruments:
        out += [topic(channel, inst.symbol) for channel in PER_INSTRUMENT_CHANNELS]
        index = underlying(inst.symbol)
        if index not in indices:
            indices.add(index)
            out.append(topic(INDEX_CHANNEL, index))
    return out


def arg_of(topic_name: str) -> dict[str, str]:
    """The subscribe arg of a topic: ``{"channel": .., "instId": ..}`` or ``{"channel": .., "instType": ..}``."""
    channel, _, key = topic_name.partition(":")
    return {"channel": channel, ("instType" if channel in INST_TYPE_CHANNELS else "instId"): key}


def subscribe_messages(topic_names: Sequence[str], first_id: int) -> list[str]:
    """Subscribe requests of ``ARGS_PER_SUBSCRIBE`` args each, ids (strings, as OKX wants them) counting up from
    ``first_id``; every arg is acknowledged on its own with the request's id."""
    return [
        msgspec.json.encode({
            "id": str(first_id + n),
            "op": "subscribe",
            "args": [arg_of(t) for t in topic_names[i:i + ARGS_PER_SUBSCRIBE]],
        }).decode()
        for n, i in enumerate(range(0, len(topic_names), ARGS_PER_SUBSCRIBE))
    ]


def ping() -> str:
    return "ping"


CONNECT_INTERVAL_S: Final = 0.4
"""OKX accepts 3 connection requests per second per IP; one every 0.4 s stays under it."""

SPEC: Final = VenueSpec(
    name=VENUE,
    # At most one liquidation per contract per second, out of time order: totals are lower bounds.
    coverage="sampled",
    ws_url=WS_URL,
    rest_url=REST_URL,
    topics=topics,
    subscribe_messages=subscribe_messages,
    parser=OkxParser,
    fetch_instruments=fetch_instruments,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    subscribe_interval_s=SUBSCRIBE_INTERVAL_S,
    heartbeat=Heartbeat(HEARTBEAT_S, ping),
    connect_interval_s=CONNECT_INTERVAL_S,
)
