"""Binance USDⓈ-M wire messages, with Binance's own (terse) field names.

Prices and quantities arrive as JSON strings and stay ``str`` here: the parser converts and checks them, so
a value like ``"NaN"`` becomes a counted ``bad_value`` instead of a decode error. Unknown fields are ignored,
so Binance adding a field never breaks decoding. Decode with one reused ``msgspec.json.Decoder`` per type.
"""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, frozen=True, gc=False):
    code: int
    msg: str


class Header(msgspec.Struct, frozen=True, gc=False):
    """Every frame of a combined-stream connection, but its ``data``; which fields are present tells the kind.

    A market message -- ``data`` is kept raw and decoded once ``stream`` has told its type::

        {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,...}}

    A subscription ack (``result`` is ``null``, or the list for ``LIST_SUBSCRIPTIONS``)::

        {"result":null,"id":1}

    A venue error (message text from Binance's error table; ``id`` is null when the request had none)::

        {"error":{"code":2,"msg":"Invalid request: too many parameters"},"id":1}
    """

    stream: str | None = None
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    """``UNSET`` when absent; a JSON ``null`` result still marks an ack."""
    id: int | None = None
    error: ErrorBody | None = None


class Envelope(Header, frozen=True, gc=False):
    """Any frame, ``data`` kept raw."""

    data: msgspec.Raw = msgspec.Raw()


class AggTrade(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@aggTrade``: fills of one taker order at one price within 100 ms (insurance-fund and ADL
    fills are not included). Real (2021-07-22)::

        {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10",
         "f":23961322,"l":23961322,"T":1626992741421,"m":false}
    """

    e: str  # event type, "aggTrade"
    E: int  # event time, ms
    s: str  # symbol
    p: str  # price
    q: str  # quantity, base units
    f: int  # first trade id in the aggregate
    l: int  # last trade id in the aggregate  # noqa: E741 -- Binance's name
    T: int  # trade time, ms
    m: bool  # buyer is the maker => the taker SOLD
    a: int | None = None
    """Aggregate trade id, increasing per symbol. Absent in some 2019 recordings, where ``l`` stands in."""


class AggTradeFrame(Header, frozen=True, gc=False, kw_only=True):
    """An ``aggTrade`` message decoded in one pass: the header checked as ``Envelope`` checks it, ``data``
    typed. A frame this does not decode goes the ``Envelope`` way, which says what is wrong with it."""

    data: AggTrade


class MarkPriceUpdate(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@markPrice`` (every 3 s) and ``<symbol>@markPrice@1s``.

    Real (2020-08-16)::

        {"e":"markPriceUpdate","E":1597536008000,"s":"BTCUSDT","p":"11857.56000000",
         "i":"11851.86949091","r":"0.00015640","T":1597564800000}
    """

    e: str  # "markPriceUpdate"
    E: int  # event time, ms
    s: str  # symbol
    p: str  # mark price
    r: str  # funding rate estimate for the next settlement; "" for delivery contracts
    T: int  # next funding time, ms; 0 for delivery contracts
    i: str = ""  # index price; absent in 2019 messages
    P: str = ""  # estimated settle price, meaningful only in the last hour before delivery


class ForceOrderDetail(msgspec.Struct, frozen=True, gc=False):
    """The ``o`` object of a ``forceOrder`` event: the liquidation *order*."""

    s: str  # symbol
    S: str  # order side: SELL closes a LONG, BUY closes a SHORT
    o: str  # order type, "LIMIT"
    f: str  # time in force, "IOC"
    q: str  # original quantity
    p: str  # order price (near the bankruptcy price)
    ap: str  # average fill price; "0" when nothing filled
    X: str  # order status, "FILLED" / "PARTIALLY_FILLED" / ...
    l: str  # last filled quantity  # noqa: E741 -- Binance's name
    z: str  # accumulated filled quantity; "0" when nothing filled
    T: int  # trade time, ms


class ForceOrder(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@forceOrder`` and ``!forceOrder@arr``: at most the latest liquidation per symbol per second,
    so totals are lower bounds. Real (2020-03-13 00:23:51 UTC, a short liquidated in the COVID crash)::

        {"e":"forceOrder","E":1584059031426,"o":{"s":"BTCUSDT","S":"BUY","o":"LIMIT","f":"IOC",
         "q":"0.014","p":"4793.91","ap":"4706.04","X":"FILLED","l":"0.015","z":"0.014","T":1584059031421}}
    """

    e: str  # "forceOrder"
    E: int  # event time, ms
    o: ForceOrderDetail


class DepthUpdate(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@depth<5|10|20>[@100ms|@500ms]``: the top N levels, a full snapshot on every push.

    The diff book (``<symbol>@depth[@100ms]``) sends the same event type with changed levels only; it is not
    handled. Real diff-book message of this shape (2021-07-22)::

        {"e":"depthUpdate","E":1626992741037,"T":1626992741024,"s":"SUSHIUSDT","U":600859599090,
         "u":600859600917,"pu":600859598061,"b":[["7.5040","813"],["7.6090","0"],["7.6110","2"]],
         "a":[["7.6150","1563"],["7.6220","3284"]]}
    """

    e: str  # "depthUpdate"
    E: int  # event time, ms
    s: str  # symbol
    U: int  # first update id in this event
    u: int  # final update id in this event; increases with every book change
    # Levels are decimal strings on the wire; the depth decoder is lenient (``strict=False``) so msgspec turns
    # them into floats in C, several times faster than float() per value for a 20-level book.
    b: list[tuple[float, float]]  # bids [price, quantity], best first
    a: list[tuple[float, float]]  # asks [price, quantity], best first
    T: int = 0  # matching-engine time, ms; 0 when absent (then E is used)
    pu: int = 0  # final update id of the previous event


class OpenInterestBody(msgspec.Struct, frozen=True, gc=False):
    """REST ``GET /fapi/v1/openInterest?symbol=BTCUSDT`` (weight 1).

    One side of the market (longs = shorts), in base units. Real (Binance's doc example)::

        {"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}
    """

    openInterest: str
    symbol: str
    time: int  # server time of the answer, ms
