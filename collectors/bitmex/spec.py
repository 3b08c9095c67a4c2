"""What to connect to on BitMEX and what to send: pure data, no I/O.

One endpoint carries every public table; a topic is ``"<table>:<symbol>"`` and many travel in one command
(``https://www.bitmex.com/app/wsAPI``)::

    <- {"info":"Welcome to the BitMEX Realtime API.","version":"2.0.0",...,"limit":{}}
    -> {"op":"subscribe","args":["instrument:XBTUSD","liquidation:XBTUSD","trade:XBTUSD","orderBookL2_25:XBTUSD"]}
    <- {"success":true,"subscribe":"instrument:XBTUSD","request":{"op":"subscribe","args":[...]}}   (one per topic)
    <- {"table":"instrument","action":"partial","keys":["symbol"],...,"filter":{"symbol":"XBTUSD"},"data":[...]}
    <- {"status":400,"error":"Unknown table: tradeBin5dm","meta":{},"request":{...}}   (a refused command)

Tables per watched contract, in this order so the instrument image (which carries the venue time that
liquidation rows lack) arrives before the liquidation one:

* ``instrument`` -- mark, index (``indicativeSettlePrice``), funding, open interest;
* ``liquidation`` -- every liquidation order entering the book;
* ``trade`` -- taker flow;
* ``orderBookL2_25`` -- the top 25 levels per side, partial then id-keyed deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from collectors.base import Heartbeat
from collectors.bitmex.instruments import VENUE, fetch_instruments
from collectors.bitmex.parse import BitmexParser
from collectors.bitmex.schemas import command
from collectors.instruments import Instrument
from collectors.venue import VenueSpec

WS_URL: Final = "wss://ws.bitmex.com/realtime"
REST_URL: Final = "https://www.bitmex.com"

TABLES: Final = ("instrument", "liquidation", "trade", "orderBookL2_25")
ARGS_PER_SUBSCRIBE: Final = 10
"""BitMEX documents no cap on the args of one command; 10 per command is what cryptofeed sends, and a
refused command (one bad topic refuses the whole command) then costs at most 10 topics."""
MAX_TOPICS_PER_CONNECTION: Final = 25 * len(TABLES)
"""No per-connection topic cap is documented; connections are what BitMEX limits (60 per hour per IP since
its "Updates to Rate Limits" announcement, 20 when first introduced), so 25 contracts share one. A multiple of
the tables per contract, so a contract's topics never straddle two connections."""
SUBSCRIBE_INTERVAL_S: Final = 0.1
"""Subscriptions are not rate-limited once connected (wsAPI: "This access is not rate-limited once
connected"); a short pause just keeps the commands in order."""
PING_INTERVAL_S: Final = 5.0
"""BitMEX's recommended liveness check: text ``ping`` after 5 s without a message, answered by text ``pong``."""


def ping() -> str:
    return "ping"


PING_HEARTBEAT: Final = Heartbeat(PING_INTERVAL_S, ping)


def topics(instruments: Sequence[Instrument]) -> list[str]:
    """Every topic of ``instruments``, a contract's tables together in ``TABLES`` order."""
    return [f"{table}:{inst.symbol}" for inst in instruments for table in TABLES]


def subscribe_messages(topic_names: Sequence[str], first_id: int) -> list[str]:
    """``subscribe`` commands of ``ARGS_PER_SUBSCRIBE`` topics each. BitMEX commands carry no id (each ack
    names its topic instead), so ``first_id`` is not used."""
    return [command("subscribe", list(topic_names[i:i + ARGS_PER_SUBSCRIBE]))
            for i in range(0, len(topic_names), ARGS_PER_SUBSCRIBE)]


SPEC: Final = VenueSpec(
    name=VENUE,
    # The liquidation table shows every liquidation order the engine enters in the book.
    coverage="complete",
    ws_url=WS_URL,
    rest_url=REST_URL,
    topics=topics,
    subscribe_messages=subscribe_messages,
    parser=BitmexParser,
    fetch_instruments=fetch_instruments,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    subscribe_interval_s=SUBSCRIBE_INTERVAL_S,
    # BitMEX documents no idle cut-off, but recommends its text ping as the liveness check; a pong carries no
    # data, so it does not hold off the staleness watchdog (which counts events, not frames).
    heartbeat=PING_HEARTBEAT,
)
