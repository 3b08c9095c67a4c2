"""Hyperliquid websocket messages, with Hyperliquid's own field names.

Every server message is ``{"channel": <name>, "data": ...}``, so a frame decodes in one pass as a tagged
union on ``channel``. The decoder is lenient (``strict=False``): prices and sizes arrive as decimal strings
and msgspec turns them into floats in C, several times faster than ``float()`` per value; a value like
``"NaN"`` still decodes (as NaN) and becomes a counted ``bad_value`` in the parser. The asset context keeps
its numbers as ``str``: it is compared as text to emit only on change. Unknown fields are ignored, so a new
field never breaks decoding.
"""

from __future__ import annotations

from typing import Final

import msgspec

TRADES: Final = "trades"
L2_BOOK: Final = "l2Book"
ACTIVE_ASSET_CTX: Final = "activeAssetCtx"
CHANNELS: Final = (ACTIVE_ASSET_CTX, TRADES, L2_BOOK)
"""The subscription types used, one subscription per coin each."""


def topic(kind: str, coin: str) -> str:
    """The collector's name of one subscription: ``trades:BTC``. Coins never contain the type's name, and
    types contain no colon, so the first colon splits it (HIP-3 coins such as ``xyz:TSLA`` keep theirs)."""
    return f"{kind}:{coin}"


class Subscription(msgspec.Struct, frozen=True, gc=False):
    type: str
    coin: str = ""


class SubscriptionAck(msgspec.Struct, frozen=True, gc=False):
    method: str  # "subscribe" / "unsubscribe"
    subscription: Subscription


class WsTrade(msgspec.Struct, frozen=True, gc=False):
    """One trade. ``tid`` is unique across all coins but NOT increasing (three BTC trades of one frame come
    as 1016375172059570, 479312521152049, 229986151112628), so ordering uses ``time``."""

    coin: str
    side: str  # "B": the taker bought (hit the ask); "A": the taker sold
    px: float
    sz: float  # coins
    time: int  # ms
    tid: int
    hash: str = ""


class WsLevel(msgspec.Struct, frozen=True, gc=False):
    px: float
    sz: float  # coins resting at px
    n: int = 0  # orders at the level


class WsBook(msgspec.Struct, frozen=True, gc=False):
    coin: str
    time: int  # ms
    levels: tuple[list[WsLevel], list[WsLevel]]  # bids (best first), asks (best first); up to 20 each


class PerpsAssetCtx(msgspec.Struct, frozen=True, gc=False):
    funding: str  # the current HOURLY funding rate
    openInterest: str  # coins, one side
    oraclePx: str  # the index funding is computed against
    markPx: str
    premium: str | None = None
    prevDayPx: str | None = None
    dayNtlVlm: str | None = None
    midPx: str | None = None
    impactPxs: list[str] | None = None


class WsActiveAssetCtx(msgspec.Struct, frozen=True, gc=False):
    coin: str
    ctx: PerpsAssetCtx


class _Frame(msgspec.Struct, frozen=True, gc=False, tag_field="channel"):
    pass


class Trades(_Frame, tag=TRADES, frozen=True):
    """Real (tardis fixture, 2024-10-29)::

        {"channel":"trades","data":[{"coin":"FXS","side":"A","px":"1.9008","sz":"10.5","time":1730160015113,
         "hash":"0xdde3d6b67214c97cb88704156eee8e016e010eb52dcf2a855bdaea517a5b45a9","tid":611279506717453}]}

    The first frame after subscribing replays the coin's latest trades (tardis-node drops it per coin).
    """

    data: list[WsTrade]


class L2Book(_Frame, tag=L2_BOOK, frozen=True):
    """A whole book on every push, no deltas. Real (tardis fixture, 2024-10-29)::

        {"channel":"l2Book","data":{"coin":"BANANA","time":1730160007687,"levels":[[{"px":"59.8","sz":"3.4","n":1},
         {"px":"59.778","sz":"1.6","n":1}],[{"px":"59.811","sz":"2.9","n":1},{"px":"59.832","sz":"17.6","n":1}]]}}
    """

    data: WsBook


class ActiveAssetCtx(_Frame, tag=ACTIVE_ASSET_CTX, frozen=True):
    """Pushed again and again, changed or not; carries no time. Real (tardis fixture, 2024-10-29)::

        {"channel":"activeAssetCtx","data":{"coin":"MOODENG","ctx":{"funding":"0.00004863",
         "openInterest":"18617460.0","prevDayPx":"0.20296","dayNtlVlm":"7665220.55613","premium":"0.00008521",
         "oraclePx":"0.1995","markPx":"0.19963","midPx":"0.19957","impactPxs":["0.199517","0.199725"]}}}
    """

    data: WsActiveAssetCtx


class SubscriptionResponse(_Frame, tag="subscriptionResponse", frozen=True):
    """The ack, echoing the subscription as sent (no request id)::

        {"channel":"subscriptionResponse","data":{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}}
    """

    data: SubscriptionAck


class Pong(_Frame, tag="pong", frozen=True):
    """The answer to ``{"method":"ping"}``: ``{"channel":"pong"}``."""


class Error(_Frame, tag="error", frozen=True):
    """A refused request, as text (nktkas/hyperliquid issue #78, gemwalletcom/wallet issue #462)::

        {"channel":"error","data":"Cannot subscribe to more than 1000 channels."}
        {"channel":"error","data":"Already subscribed: {\\"type\\":\\"activeAssetCtx\\",\\"coin\\":\\"UNI\\"}"}
    """

    data: msgspec.Raw = msgspec.Raw()


Frame = Trades | L2Book | ActiveAssetCtx | SubscriptionResponse | Pong | Error

KNOWN_CHANNELS: Final = frozenset({TRADES, L2_BOOK, ACTIVE_ASSET_CTX, "subscriptionResponse", "pong", "error"})


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """Only to tell an unknown channel (``bbo``, ``activeSpotAssetCtx``) from a known one of the wrong shape
    once the typed decode has failed."""

    channel: str
