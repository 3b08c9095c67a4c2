"""OKX v5 public wire messages, with OKX's own field names.

Every push is ``{"arg":{"channel":..,"instId":..},"data":[..]}``; every answer to a request is an event
(``subscribe``, ``unsubscribe``, ``error``, ``notice``). Numbers and times arrive as JSON strings and stay
``str`` here: the parser converts and checks them, so ``"NaN"`` becomes a counted ``bad_value`` rather than a
decode error. Unknown fields are ignored, so a field OKX adds never breaks decoding. Book levels are the
exception: the book decoder is lenient (``strict=False``) so msgspec turns the decimal strings into floats
in C. Decode with one reused ``msgspec.json.Decoder`` per type.
"""

from __future__ import annotations

import msgspec


class Arg(msgspec.Struct, frozen=True, gc=False):
    """The subscription a push or an ack belongs to."""

    channel: str
    instId: str = ""
    instType: str = ""


class Header(msgspec.Struct, frozen=True, gc=False):
    """Every JSON frame's members but ``data``; ``event`` tells an answer from a push.

    A push -- ``data`` is decoded once ``arg.channel`` has told its type. An ack, one per
    subscribed arg, carrying the request's ``id`` (real, OKX docs; the 2022 recording's acks have no id
    because cryptofeed sent none)::

        {"id":"1512","event":"subscribe","arg":{"channel":"funding-rate","instId":"BTC-USD-SWAP"},
         "connId":"a4d3ae55"}

    An error (real, sieblyio/okx-api issue #106)::

        {"event":"error","msg":"Wrong URL or channel:candle1s,instId:BTC-USDT-SWAP doesn't exist. Please use
         the correct URL, channel and parameters referring to API document.","code":"60018","connId":"2b5dc6ac"}
    """

    arg: Arg | None = None
    event: str | None = None
    id: str | int | None = None
    code: str | None = None
    msg: str = ""


class Envelope(Header, frozen=True, gc=False):
    """Any frame, ``data`` kept raw."""

    data: msgspec.Raw = msgspec.Raw()


class TradeItem(msgspec.Struct, frozen=True, gc=False):
    """``trades``: one message per taker order, price and source (``count`` fills aggregated; ``tradeId`` is
    the last of them). Real (tardis fixture, 2021-12-22)::

        {"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",
         "tradeId":"148266905","px":"48938.5","sz":"5","side":"buy","ts":"1640131236050"}]}
    """

    instId: str
    tradeId: str  # increasing per instrument
    px: str
    sz: str  # contracts for swaps
    side: str  # taker side, "buy" / "sell"
    ts: str  # fill time, ms


class TradesFrame(Header, frozen=True, gc=False, kw_only=True):
    """A ``trades`` push decoded in one pass: the header checked as ``Envelope`` checks it, ``data`` typed. A
    frame this does not decode goes the ``Envelope`` way, which says what is wrong with it."""

    data: list[TradeItem]


class BookItem(msgspec.Struct, frozen=True, gc=False):
    """``books5``: the top 5 levels on every push (every 100 ms when they change; the latest again after about
    a minute without change). Levels are ``[price, size in contracts, "0" (deprecated), orders]``, best first.
    OKX's documented example (no recording holds ``books5``; the real ``bbo-tbt`` push of the tardis fixture
    has the same item shape)::

        {"arg":{"channel":"books5","instId":"BCH-USDT-SWAP"},"data":[{"asks":[["111.06","55154","0","2"],
         ["111.07","53276","0","2"],...],"bids":[["111.05","57745","0","2"],...],"instId":"BCH-USDT-SWAP",
         "ts":"1670324386802","seqId":363996337}]}
    """

    asks: list[tuple[float, ...]]
    bids: list[tuple[float, ...]]
    ts: str
    seqId: int = -1


class MarkPriceItem(msgspec.Struct, frozen=True, gc=False):
    """``mark-price``: every 200 ms when it changes, every 10 s otherwise. Real (tardis fixture, 2021-12-22)::

        {"arg":{"channel":"mark-price","instId":"WNCG-USDT-SWAP"},"data":[{"instId":"WNCG-USDT-SWAP",
         "instType":"SWAP","markPx":"2.1729","ts":"1640131259180"}]}
    """

    instId: str
    markPx: str
    ts: str


class IndexTickerItem(msgspec.Struct, frozen=True, gc=False):
    """``index-tickers`` (``instId`` is the index, the swap's ``uly``): every 100 ms on change, else once a
    minute. Real (tardis fixture, 2021-12-22)::

        {"arg":{"channel":"index-tickers","instId":"WNCG-USDT"},"data":[{"instId":"WNCG-USDT",
         "idxPx":"2.1675","open24h":"2.1599","high24h":"2.2499","low24h":"2.1524","sodUtc0":"2.1658",
         "sodUtc8":"2.1641","ts":"1640131290649"}]}
    """

    instId: str
    idxPx: str
    ts: str


class FundingRateItem(msgspec.Struct, frozen=True, gc=False):
    """``funding-rate``: pushed every 30-90 s. ``fundingTime`` is the coming settlement, ``nextFundingTime``
    the one after: their difference is the interval. Real (tardis fixture, 2021-12-22, the older shape without
    ``nextFundingTime`` or ``ts``)::

        {"arg":{"channel":"funding-rate","instId":"WNCG-USDT-SWAP"},"data":[{"fundingRate":"0.00048105",
         "fundingTime":"1640131200000","instId":"WNCG-USDT-SWAP","instType":"SWAP","nextFundingRate":"0.00114"}]}

    The current shape (OKX docs, 2026-07) adds ``nextFundingTime``, ``premium``, ``settState``, ``ts``, ...
    """

    instId: str
    fundingRate: str = ""
    fundingTime: str = ""
    nextFundingTime: str = ""
    ts: str = ""


class OpenInterestItem(msgspec.Struct, frozen=True, gc=False):
    """``open-interest``: every 3 s when it changes; one side of the market. ``oi`` is in contracts, ``oiCcy`` in
    coins, ``oiUsd`` (in current pushes) in USD. Real (tardis fixture, 2021-12-22)::

        {"arg":{"channel":"open-interest","instId":"WNCG-USDT-SWAP"},"data":[{"instId":"WNCG-USDT-SWAP",
         "instType":"SWAP","oi":"644195","oiCcy":"644195","ts":"1640131258756"}]}
    """

    instId: str
    oiCcy: str
    ts: str
    oi: str = ""
    oiUsd: str = ""


class LiquidationDetail(msgspec.Struct, frozen=True, gc=False):
    """One liquidation order: ``side`` is the order's, ``posSide`` the position's (``long``/``short`` in hedge
    mode, ``net`` in one-way mode, where a ``sell`` closes a long)."""

    side: str
    posSide: str
    bkPx: str  # bankruptcy price
    sz: str  # contracts for swaps and futures
    ts: str


class LiquidationItem(msgspec.Struct, frozen=True, gc=False):
    """``liquidation-orders`` (by ``instType``): a sample, not every liquidation, and not in time order. Real
    (tardis fixture, 2023-03-30, a short liquidated)::

        {"arg":{"channel":"liquidation-orders","instType":"FUTURES"},"data":[{"details":[{"bkLoss":"0",
         "bkPx":"0.55205","ccy":"","posSide":"short","side":"buy","sz":"39","ts":"1680173247614"}],
         "instFamily":"XRP-USD","instId":"XRP-USD-230929","instType":"FUTURES","uly":"XRP-USD"}]}
    """

    instId: str
    details: list[LiquidationDetail]
