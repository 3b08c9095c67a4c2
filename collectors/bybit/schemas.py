"""Bybit v5 public (linear) wire messages, with Bybit's own field names.

Trade and liquidation prices and sizes arrive as JSON strings and stay ``str``: the parser converts and
checks them, so ``"NaN"`` becomes a counted ``bad_value`` rather than a decode error. Book levels are
decoded straight to floats (``strict=False`` decoder) because a 50-level book is the hot path. Unknown
fields are ignored, so Bybit adding one never breaks decoding.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec


class Header(msgspec.Struct, frozen=True, gc=False):
    """Every frame's members but ``data``; ``topic`` tells a push from a control answer.

    A push (real, 2026-08-09)::

        {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,...}]}

    A subscribe ack (real, the same session; ``req_id`` echoes the request's, "" when it had none)::

        {"success":true,"ret_msg":"","conn_id":"d8bu1olkndm7crnfs1e0-j6akw","req_id":"","op":"subscribe"}

    A refused subscription (sieblyio/bybit-api issue #561)::

        {"success":false,"ret_msg":"error:handler not found,topic:dcp.future","conn_id":"d9jhogatbetvf6evjmc0-8eoj",
         "req_id":"dcp.future","op":"subscribe"}

    A pong (Bybit's connect guide)::

        {"success":true,"ret_msg":"pong","conn_id":"465772b1-7630-4fdc-a492-e003e6f0f260","req_id":"","op":"ping"}
    """

    topic: str | None = None
    type: str = ""  # "snapshot" or "delta"
    ts: int = 0  # when Bybit generated the message, ms
    cs: int = 0  # tickers: cross sequence, increasing per symbol
    cts: int = 0  # orderbook: matching-engine time of the book state, ms
    op: str = ""
    success: bool | None = None
    ret_msg: str = ""
    req_id: str = ""
    conn_id: str = ""


class Envelope(Header, frozen=True, gc=False):
    """Any frame, ``data`` kept raw and decoded once ``topic`` has told its type."""

    data: msgspec.Raw = msgspec.Raw()


class PublicTrade(msgspec.Struct, frozen=True, gc=False):
    """One item of ``publicTrade.{symbol}`` (a list of up to 1024, sorted by match time). Real (2026-08-09)::

        {"T":1786310819680,"s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick",
         "i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","BT":false,"RPI":false,"seq":753843954913}
    """

    T: int  # match time, ms
    s: str  # symbol
    S: str  # taker side, "Buy" | "Sell"
    v: str  # size, base coin
    p: str  # price
    i: str  # trade id, a uuid: unique, but not ordered
    L: str = ""  # tick direction
    BT: bool = False  # block trade
    RPI: bool = False  # retail-price-improvement order filled
    seq: int = 0  # cross sequence; shared by the trades of one match, and by several messages


class TradesFrame(Header, frozen=True, gc=False, kw_only=True):
    """A ``publicTrade`` push decoded in one pass: the header checked as ``Envelope`` checks it, ``data`` typed.
    A frame this does not decode goes the ``Envelope`` way, which says what is wrong with it."""

    data: list[PublicTrade]


class LiquidationItem(msgspec.Struct, frozen=True, gc=False):
    """One item of ``allLiquidation.{symbol}`` (a list; pushed every 500 ms). Real (2025-02-25)::

        {"T":1740480207110,"s":"PIPPINUSDT","S":"Sell","v":"2846","p":"0.02456"}

    ``S`` is the side of the *position*: ``Buy`` means a long was liquidated (Binance's ``S`` is the order's).
    """

    T: int  # ms
    s: str
    S: str  # liquidated position: "Buy" = long, "Sell" = short
    v: str  # executed size, base coin
    p: str  # bankruptcy price


MAX_FLOAT = 1.7976931348623157e308

Price = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_FLOAT)]
Size = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_FLOAT)]
BookLevel = TypeVar("BookLevel")
"""A level of ``OrderbookData``: ``tuple[float, float]`` as sent, or ``tuple[Price, Size]`` when the decoder
checks what ``collectors.book.BookSide`` would (a positive finite price, a finite size, 0 or more)."""


class OrderbookData(msgspec.Struct, Generic[BookLevel], frozen=True, gc=False):
    """``data`` of ``orderbook.{depth}.{symbol}``: a full book (``type`` snapshot) or changed levels (delta,
    size 0 deletes). Real delta (2023-04-05)::

        {"s":"BTCPERP","b":[["28555.20","0.677"]],"a":[["28555.30","0.029"]],"u":20683569,"seq":10916156553}
    """

    s: str
    b: list[BookLevel]  # bids [price, size], best first
    a: list[BookLevel]  # asks [price, size], best first
    u: int  # update id: +1 per message of the topic; 1 on a snapshot after a service restart
    seq: int = 0  # cross sequence


Scalar = bool | int | float | str | None
"""Any JSON scalar, which even a lenient decoder (``strict=False``) takes as it is."""


class BookFrame(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An ``orderbook`` push decoded in one pass by a lenient decoder (its levels are decimal strings), with
    every level checked. ``Header``'s members that such a decoder would coerce ("1" to 1, 1.0 to 1, "true"
    to True) are taken as sent, and the parser checks their types as ``Envelope``'s strict decoder does. A
    frame this does not decode, or whose members fail that check, goes the ``Envelope`` way."""

    topic: str | None = None
    type: str = ""
    ts: Scalar = 0
    cs: Scalar = 0
    cts: Scalar = 0
    op: str = ""
    success: Scalar = None
    ret_msg: str = ""
    req_id: str = ""
    conn_id: str = ""
    data: OrderbookData[tuple[Price, Size]]


TickerData = dict[str, Scalar]
"""``data`` of ``tickers.{symbol}``: every field on ``snapshot``, only the changed ones on ``delta`` ("if a
response param is not found in the message, then its value has not changed"), so the parser merges it
into a per-symbol dict keyed by Bybit's names. Real snapshot (2026-08-09; ``openInterest`` counts both
sides, ``singleOpenInterest`` one)::

    {"symbol":"BTCUSDT","tickDirection":"ZeroPlusTick","price24hPcnt":"0.001624","lastPrice":"65114.30",
     "prevPrice24h":"65008.70","highPrice24h":"65282.30","lowPrice24h":"64694.40","prevPrice1h":"65083.80",
     "markPrice":"65117.44","indexPrice":"65137.76","openInterest":"59891.732",
     "openInterestValue":"3899996265.01","turnover24h":"1142118412.9021","volume24h":"17573.9120",
     "fundingIntervalHour":"8","fundingCap":"0.005","singleOpenInterest":"29945.866",
     "singleOpenInterestValue":"1949998132.50","nextFundingTime":"1786320000000","fundingRate":"0.0001",
     "bid1Price":"65114.20","bid1Size":"5.954","ask1Price":"65114.30","ask1Size":"10.470","preOpenPrice":"",
     "preQty":"","curPreListingPhase":""}

and a real delta: ``{"symbol":"ETHUSDT","fundingRate":"0.00004709"}``.
"""


class InstrumentInfo(msgspec.Struct, frozen=True, gc=False):
    """An entry of ``GET /v5/market/instruments-info?category=linear`` (abridged, real, 2026-08-09)::

        {"symbol":"BTCUSDT","contractType":"LinearPerpetual","status":"Trading","baseCoin":"BTC",
         "quoteCoin":"USDT","launchTime":"1584230400000","deliveryTime":"0","fundingInterval":480,
         "settleCoin":"USDT","upperFundingRate":"0.005","lowerFundingRate":"-0.005"}
    """

    symbol: str
    contractType: str  # "LinearPerpetual" | "LinearFutures"
    status: str  # "Trading", "PreLaunch", "Delivering", "Closed"
    baseCoin: str
    quoteCoin: str
    fundingInterval: int = 0  # minutes; 0 for dated futures


class InstrumentsResult(msgspec.Struct, frozen=True, gc=False):
    entries: list[InstrumentInfo] = msgspec.field(name="list")
    nextPageCursor: str = ""


class ApiBody(msgspec.Struct, frozen=True, gc=False):
    """Every REST answer; ``result`` is decoded once ``retCode`` is 0 (a refusal carries ``"result":{}``)."""

    retCode: int
    retMsg: str
    result: msgspec.Raw = msgspec.Raw()


class TickerRow(msgspec.Struct, frozen=True, gc=False):
    """An entry of ``GET /v5/market/tickers?category=linear`` (same fields as the websocket ticker)::

        {"symbol":"BTCUSDT","lastPrice":"65114.30","markPrice":"65117.44","openInterest":"59891.732",
         "openInterestValue":"3899996265.01","singleOpenInterest":"29945.866",
         "singleOpenInterestValue":"1949998132.50","turnover24h":"1142118412.9021","fundingRate":"0.0001"}
    """

    symbol: str
    openInterestValue: str = ""  # both sides, USD
    singleOpenInterestValue: str = ""  # one side, USD (since 2026-06)
    turnover24h: str = ""  # 24 h traded value, quote currency


class TickersResult(msgspec.Struct, frozen=True, gc=False):
    entries: list[TickerRow] = msgspec.field(name="list")


class TickerFrame(Header, frozen=True, gc=False, kw_only=True):
    """A ``tickers`` push decoded in one pass, as ``TradesFrame``."""

    data: TickerData
