"""What to connect to on Bybit v5 (linear) and what to send: pure data, no I/O.

One endpoint carries everything public for USDT/USDC perpetuals and USDT futures. Topics are subscribed after
connecting and acknowledged with the request's ``req_id``::

    -> {"req_id":"1","op":"subscribe","args":["tickers.BTCUSDT","publicTrade.BTCUSDT"]}
    <- {"success":true,"ret_msg":"","conn_id":"d8bu1olkndm7crnfs1e0-j6akw","req_id":"1","op":"subscribe"}
    <- {"success":false,"ret_msg":"error:handler not found,topic:dcp.future","conn_id":"…","req_id":"2",
        "op":"subscribe"}

The client keeps the connection alive with its own ping (``{"req_id":"…","op":"ping"}``), answered by
``{"success":true,"ret_msg":"pong","conn_id":"…","req_id":"…","op":"ping"}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import httpx
import msgspec

from collectors.base import Heartbeat
from collectors.instruments import Instrument
from collectors.venue import VenueParser, VenueSpec

VENUE: Final = "bybit"
WS_URL: Final = "wss://stream.bybit.com/v5/public/linear"
REST_URL: Final = "https://api.bybit.com"

BOOK_DEPTH: Final = 50
"""``orderbook.50`` pushes every 20 ms and reaches well past the ±2 % band on all but the thinnest books;
``orderbook.200`` is 100 ms and five times the bytes, ``orderbook.1`` says nothing about depth."""

MAX_ARGS_CHARS: Final = 21_000
"""Bybit refuses a public connection whose ``args`` add up to more than this many characters."""
MAX_TOPIC_CHARS: Final = 48
"""Budget per topic in ``args``: ``allLiquidation.`` (15) + a symbol of up to 30 characters (the longest
listed in 2026-08 is 19, ``1000000BABYDOGEUSDT``) + quotes and comma (3)."""
MAX_TOPICS_PER_CONNECTION: Final = 400
"""100 instruments of 4 topics; 400 x ``MAX_TOPIC_CHARS`` = 19,200 stays under ``MAX_ARGS_CHARS``, and a
multiple of 4 keeps an instrument's topics on one connection."""
SUBSCRIBE_CHUNK: Final = 40
"""Topics per subscribe request. Bybit sets no per-request cap for linear, but a request naming a topic it
does not know fails, so smaller requests lose fewer instruments to one delisted symbol."""
SUBSCRIBE_INTERVAL_S: Final = 0.05
HEARTBEAT_INTERVAL_S: Final = 20.0
"""Bybit's recommendation; without ping-pong and data it cuts a connection after 10 minutes."""

TICKERS: Final = "tickers"
TRADES: Final = "publicTrade"
LIQUIDATIONS: Final = "allLiquidation"
ORDERBOOK: Final = "orderbook"

_encode = msgspec.json.Encoder().encode


def instrument_topics(symbol: str) -> list[str]:
    return [f"{TICKERS}.{symbol}", f"{TRADES}.{symbol}", f"{LIQUIDATIONS}.{symbol}",
            f"{ORDERBOOK}.{BOOK_DEPTH}.{symbol}"]


def topics(instruments: Sequence[Instrument]) -> list[str]:
    """Every topic of ``instruments``, an instrument's four together."""
    return [t for inst in instruments for t in instrument_topics(inst.symbol)]


def args_chars(args: Sequence[str]) -> int:
    """The length Bybit counts against ``MAX_ARGS_CHARS``: the JSON text of the ``args`` array."""
    return len(_encode(list(args)))


def request(op: str, args: Sequence[str], req_id: str) -> str:
    return _encode({"req_id": req_id, "op": op, "args": list(args)}).decode()


def subscribe_messages(topics: Sequence[str], first_id: int) -> list[str]:
    """Subscribe requests of ``SUBSCRIBE_CHUNK`` topics, ``req_id`` counting up from ``first_id`` (as text:
    Bybit echoes it as a string)."""
    return [request("subscribe", topics[i:i + SUBSCRIBE_CHUNK], str(first_id + n))
            for n, i in enumerate(range(0, len(topics), SUBSCRIBE_CHUNK))]


def _pings() -> Heartbeat:
    counter = itertools.count(1)
    return Heartbeat(HEARTBEAT_INTERVAL_S, lambda: f'{{"req_id":"ping-{next(counter)}","op":"ping"}}')


HEARTBEAT: Final = _pings()


def _parser(instruments: Sequence[Instrument], max_frame_bytes: int) -> VenueParser:
    # Imported here: the parser module reads this one's constants.
    from collectors.bybit.parse import BybitParser

    return BybitParser(instruments, max_frame_bytes)


async def _fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    from collectors.bybit.instruments import fetch_instruments

    return await fetch_instruments(client, rest_url)


SPEC: Final = VenueSpec(
    name=VENUE,
    coverage="complete",  # allLiquidation pushes every liquidation, batched every 500 ms
    ws_url=WS_URL,
    rest_url=REST_URL,
    topics=topics,
    subscribe_messages=subscribe_messages,
    parser=_parser,
    fetch_instruments=_fetch_instruments,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    subscribe_interval_s=SUBSCRIBE_INTERVAL_S,
    heartbeat=HEARTBEAT,
    max_connection_age_s=None,  # Bybit sets no maximum age on public connections
)
