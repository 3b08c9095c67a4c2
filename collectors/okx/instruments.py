"""OKX swap metadata: ``GET /api/v5/public/instruments?instType=SWAP`` (what trades, contract value and kind),
``/api/v5/public/open-interest?instType=SWAP`` (``oiUsd``) and ``/api/v5/market/tickers?instType=SWAP``
(``volCcy24h``, in base coins for derivatives, times ``last``) for the ``top:N`` ranking.

Every body is ``{"code":"0","msg":"","data":[...]}``; another ``code`` is the venue refusing. A real SWAP entry
(cryptofeed recording, 2022-05-13, abridged)::

    {"instId":"BTC-USDT-SWAP","instType":"SWAP","ctType":"linear","ctVal":"0.01","ctValCcy":"BTC","ctMult":"1",
     "settleCcy":"USDT","uly":"BTC-USDT","state":"live","listTime":"1611916828000","expTime":""}
    {"instId":"BTC-USD-SWAP","instType":"SWAP","ctType":"inverse","ctVal":"100","ctValCcy":"USD","ctMult":"1",
     "settleCcy":"BTC","uly":"BTC-USD","state":"live","listTime":"1611916828000","expTime":""}

Linear contracts are ``ctVal`` coins each, inverse ones ``ctVal`` USD each; ``Instrument.kind`` carries the
difference into every size conversion. The funding interval is not in the metadata: it is 8 h unless the
``funding-rate`` channel says otherwise (the parser derives it from ``nextFundingTime - fundingTime``).
"""

from __future__ import annotations

import math
from typing import Final, Generic, TypeVar

import httpx
import msgspec

from collectors.instruments import ContractKind, Instrument, common_asset
from collectors.parsing import num

VENUE: Final = "okx"
DEFAULT_FUNDING_INTERVAL_H: Final = 8.0
INSTRUMENTS_PATH: Final = "/api/v5/public/instruments"
OPEN_INTEREST_PATH: Final = "/api/v5/public/open-interest"
TICKERS_PATH: Final = "/api/v5/market/tickers"
_USD_SETTLED: Final = frozenset({"USDT", "USDC", "USD"})
_EMPTY: Final = b'{"code":"0","msg":"","data":[]}'
T = TypeVar("T")


def underlying(symbol: str) -> str:
    """The index an instrument settles against: ``BTC-USDT-SWAP`` -> ``BTC-USDT``, ``BTC-USD-SWAP`` ->
    ``BTC-USD`` (the ``uly`` of the instruments endpoint, and the ``instId`` of ``index-tickers``)."""
    return "-".join(symbol.split("-")[:2])


class InstrumentInfo(msgspec.Struct, frozen=True):
    instId: str
    instType: str
    ctType: str = ""
    ctVal: str = ""
    ctMult: str = ""
    ctValCcy: str = ""
    settleCcy: str = ""
    uly: str = ""
    instFamily: str = ""
    state: str = ""


class OpenInterestInfo(msgspec.Struct, frozen=True):
    instId: str
    oiUsd: str = ""


class TickerInfo(msgspec.Struct, frozen=True):
    instId: str
    last: str = ""
    volCcy24h: str = ""


class Response(msgspec.Struct, Generic[T], frozen=True):
    code: str
    data: list[T]
    msg: str = ""


def _data(body: bytes, item: type[T]) -> list[T]:
    response = msgspec.json.decode(body, type=Response[item])  # type: ignore[valid-type]
    if response.code != "0":
        raise ValueError(f"okx refused: code {response.code}: {response.msg}")
    return response.data


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def parse_instruments(instruments: bytes, open_interest: bytes = _EMPTY, tickers: bytes = _EMPTY,
                      ) -> list[Instrument]:
    """The USD(T/C)-settled linear swaps and the USD-valued inverse ones; instruments without a usable contract
    value (announced, not yet listed) are skipped. Raises ``msgspec.DecodeError`` on a body of the wrong shape
    and ``ValueError`` on an error answer."""
    oi_usd = {o.instId: _finite(num(o.oiUsd)) for o in _data(open_interest, OpenInterestInfo)}
    volume = {t.instId: _finite(num(t.volCcy24h) * num(t.last)) for t in _data(tickers, TickerInfo)}
    out = []
    for info in _data(instruments, InstrumentInfo):
        size = num(info.ctVal) * (num(info.ctMult) if info.ctMult else 1.0)
        if not (0.0 < size < math.inf):
            continue
        kind: ContractKind
        if info.ctType == "linear" and info.settleCcy in _USD_SETTLED:
            kind = "linear"
        elif info.ctType == "inverse" and info.ctValCcy == "USD":
            kind = "inverse"
        else:
            continue
        perpetual = info.instType == "SWAP"
        base = (info.uly or info.instFamily or info.instId).partition("-")[0]
        out.append(Instrument(
            venue=VENUE, symbol=info.instId, asset=common_asset(base), kind=kind, contract_size=size,
            funding_interval_h=DEFAULT_FUNDING_INTERVAL_H if perpetual else 0.0, active=info.state == "live",
            perpetual=perpetual, oi_usd=oi_usd.get(info.instId, 0.0), volume_usd_24h=volume.get(info.instId, 0.0),
        ))
    return out


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    base = rest_url.rstrip("/")
    bodies = []
    for path in (INSTRUMENTS_PATH, OPEN_INTEREST_PATH, TICKERS_PATH):
        response = await client.get(base + path, params={"instType": "SWAP"})
        response.raise_for_status()
        bodies.append(response.content)
    return parse_instruments(*bodies)
