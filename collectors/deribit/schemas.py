"""Deribit JSON-RPC v2 wire messages, with Deribit's own field names.

Numbers arrive as JSON numbers (never strings), so they decode straight to ``float``: a string where a
number belongs is a ``malformed`` frame, a number out of range (``1e400``) too, and a negative or zero value
is left for the parser to count as ``bad_value``. Unknown fields are ignored, so Deribit adding one never
breaks decoding; only the fields the collector reads are declared. Decode with one reused
``msgspec.json.Decoder`` per type.
"""

from __future__ import annotations

import msgspec


class RpcError(msgspec.Struct, frozen=True, gc=False):
    """The ``error`` member of an answer. Real (an unauthenticated ``raw`` subscription, 2026-09)::

        {"jsonrpc":"2.0","id":5,"error":{"code":13778,"message":"raw_subscriptions_not_available_for_unauthorized"},
         "usIn":1790133842785065,"usOut":1790133842785140,"usDiff":75,"testnet":false}
    """

    code: int
    message: str


class ParamsHeader(msgspec.Struct, frozen=True, gc=False):
    """``params`` of a server-initiated message but its ``data``: a notification (``channel`` + ``data``) or a
    heartbeat (``type``)."""

    channel: str = ""
    type: str = ""


class Params(ParamsHeader, frozen=True, gc=False):
    """Any ``params``, ``data`` kept raw and decoded once ``channel`` has told its type."""

    data: msgspec.Raw = msgspec.Raw()


class Header(msgspec.Struct, frozen=True, gc=False):
    """Every frame's members but ``params``; which members are present tells the kind.

    A notification (real, tardis fixture, 2019-09-01)::

        {"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.raw","data":[...]}}

    A heartbeat probe the client must answer with ``public/test`` (real, Deribit testnet via a public probe)::

        {"params":{"type":"test_request"},"method":"heartbeat","jsonrpc":"2.0"}

    An answer to a request: ``result`` (the subscribed channels, ``"ok"``, an object) or ``error``; real
    (cryptofeed recording, 2021-07-22, abridged)::

        {"jsonrpc":"2.0","id":0,"result":["trades.ETH-30JUL21-2800-C.raw","ticker.ETH-30JUL21-2800-C.raw"]}
    """

    method: str = ""
    id: int | str | None = None
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: RpcError | None = None


class Envelope(Header, frozen=True, gc=False):
    """Any frame, ``params.data`` kept raw."""

    params: Params | None = None


class TradeItem(msgspec.Struct, frozen=True, gc=False):
    """One element of a ``trades.{instrument}.{interval}`` notification's ``data`` list.

    ``amount`` is USD for the inverse perpetuals (``BTC-PERPETUAL``) and the base coin for the linear USDC
    ones; ``direction`` is the taker side. Real (2020-03-13 00:07:24 UTC, a taker sell that liquidated the
    taker -- a long)::

        {"trade_seq":40781986,"trade_id":"66460463","timestamp":1584058044032,"tick_direction":3,
         "price":4469.5,"liquidation":"T","instrument_name":"BTC-PERPETUAL","index_price":4805.41,
         "direction":"sell","amount":1120}
    """

    trade_seq: int  # increasing per instrument
    timestamp: int  # ms
    price: float
    amount: float
    direction: str  # "buy" | "sell": the taker
    instrument_name: str
    liquidation: str = ""
    """Absent unless the trade closed a liquidated position: "M" the maker, "T" the taker, "MT" both."""


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """``data`` of a ``ticker.{instrument}.{interval}`` notification (abridged to what is read).

    ``open_interest`` is one side, in the size unit: USD on the inverse perpetuals, coins on the linear.
    ``funding_8h`` is the funding of the trailing 8 hours; absent on dated futures. Real (2019-08-01)::

        {"timestamp":1564617604229,"stats":{"volume":24618.46215298,"low":9569.5,"high":10131.5},
         "state":"open","settlement_price":9743.97,"open_interest":66128281,"min_price":9942.76,
         "max_price":10245.58,"mark_price":10094.1,"last_price":10095.5,"instrument_name":"BTC-PERPETUAL",
         "index_price":10091.15,"funding_8h":0.00016281,"current_funding":0,"best_bid_price":10095,
         "best_bid_amount":7000,"best_ask_price":10095.5,"best_ask_amount":250}
    """

    timestamp: int  # ms
    instrument_name: str
    mark_price: float
    index_price: float
    open_interest: float
    funding_8h: float | None = None
    current_funding: float | None = None


Level = tuple[str, float, float]
"""``[action, price, amount]``, action ``new`` | ``change`` | ``delete`` (a delete carries amount 0)."""


class BookData(msgspec.Struct, frozen=True, gc=False):
    """``data`` of a ``book.{instrument}.{interval}`` notification: a snapshot first, then changes chained by
    ``prev_change_id`` == the previous ``change_id``. Messages before 2021 carry no ``type``; there the
    snapshot is the one without ``prev_change_id``. Real snapshot (2022-05-31; asks empty)::

        {"type":"snapshot","timestamp":1654041599955,"instrument_name":"LINK_USDC-PERPETUAL",
         "prev_change_id":20,"change_id":1232767964,"bids":[["new",7.562,34],["new",7.561,329],
         ["new",7.56,401],["new",7.559,133],["new",7.558,660]],"asks":[]}

    Real change (2019-08-01)::

        {"timestamp":1564617654272,"prev_change_id":1776294621,"instrument_name":"ETH-PERPETUAL",
         "change_id":1776294623,"bids":[["delete",217.8,0]],"asks":[["change",219.2,64903],["change",219.1,19343]]}
    """

    timestamp: int  # ms
    instrument_name: str
    change_id: int
    bids: list[Level]
    asks: list[Level]
    type: str = ""  # "snapshot" | "change"; "" before 2021
    prev_change_id: int | None = None


class TradesParams(ParamsHeader, frozen=True, gc=False, kw_only=True):
    data: list[TradeItem]


class TickerParams(ParamsHeader, frozen=True, gc=False, kw_only=True):
    data: Ticker


class BookParams(ParamsHeader, frozen=True, gc=False, kw_only=True):
    data: BookData


class TradesNotification(Header, frozen=True, gc=False, kw_only=True):
    """A ``trades`` notification decoded in one pass: the members checked as ``Envelope`` checks them, ``data``
    typed. A frame this does not decode goes the ``Envelope`` way, which says what is wrong with it."""

    params: TradesParams


class TickerNotification(Header, frozen=True, gc=False, kw_only=True):
    """A ``ticker`` notification decoded in one pass, as ``TradesNotification``."""

    params: TickerParams


class BookNotification(Header, frozen=True, gc=False, kw_only=True):
    """A ``book`` notification decoded in one pass, as ``TradesNotification``."""

    params: BookParams


class InstrumentInfo(msgspec.Struct, frozen=True, gc=False):
    """An element of ``public/get_instruments`` ``result``. Real (cryptofeed recording, abridged)::

        {"tick_size":0.01,"settlement_period":"perpetual","settlement_currency":"USDC","quote_currency":"USDC",
         "price_index":"sol_usdc","min_trade_amount":0.1,"kind":"future","is_active":true,
         "instrument_name":"SOL_USDC-PERPETUAL","future_type":"linear","counter_currency":"USDC",
         "contract_size":0.1,"base_currency":"SOL"}
    """

    instrument_name: str
    kind: str  # "future", "option", "spot", "future_combo", ...
    base_currency: str
    quote_currency: str
    is_active: bool
    settlement_period: str = ""  # "perpetual", "month", "week", "day"
    instrument_type: str = ""  # "linear" | "reversed"
    future_type: str = ""  # the deprecated name of instrument_type, alone in older answers
    settlement_currency: str = ""  # absent in 2021 answers (then: the base for inverse, the quote for linear)


class BookSummary(msgspec.Struct, frozen=True, gc=False):
    """An element of ``public/get_book_summary_by_currency`` ``result``; ``currency=any`` is refused (HTTP 400,
    "invalid currency"), so it is asked once per settlement currency. No recorded answer is at hand; the
    fields are Deribit's documented ones (``open_interest`` in the size unit: USD inverse, coins linear)::

        {"instrument_name":"BTC-PERPETUAL","base_currency":"BTC","quote_currency":"USD","volume":...,
         "volume_usd":...,"open_interest":...,"mark_price":...,"funding_8h":...,"current_funding":...}
    """

    instrument_name: str
    open_interest: float | None = None
    mark_price: float | None = None
    volume: float | None = None  # base currency, 24 h
    volume_usd: float | None = None  # futures only


class InstrumentsAnswer(msgspec.Struct, frozen=True, gc=False):
    result: list[InstrumentInfo]


class SummaryAnswer(msgspec.Struct, frozen=True, gc=False):
    result: list[BookSummary]
