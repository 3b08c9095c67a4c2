"""Binance USDⓈ-M instrument metadata: ``GET /fapi/v1/exchangeInfo`` (what trades), ``/fapi/v1/fundingInfo``
(the contracts whose funding interval is not 8 h) and ``/fapi/v1/ticker/24hr`` (quote volume, for ranking).

Binance has no bulk open-interest endpoint (``/fapi/v1/openInterest`` is one symbol per request), so its
instruments carry ``oi_usd = 0`` and count towards a ``top:N`` ranking by volume only.

A real ``exchangeInfo`` symbol (abridged)::

    {"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","deliveryDate":4133404800000,
     "status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":2}

A ``fundingInfo`` entry: ``{"symbol":"BLZUSDT","adjustedFundingRateCap":"0.02500000",
"adjustedFundingRateFloor":"-0.02500000","fundingIntervalHours":8,"disclaimer":false}``.
"""

from __future__ import annotations

from typing import Final

import httpx
import msgspec

from collectors.instruments import Instrument, common_asset
from collectors.parsing import num

VENUE: Final = "binance"
DEFAULT_FUNDING_INTERVAL_H: Final = 8.0
_USD_QUOTES: Final = frozenset({"USDT", "USDC"})


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    contractType: str
    status: str
    baseAsset: str
    quoteAsset: str


class ExchangeInfo(msgspec.Struct, frozen=True):
    symbols: list[SymbolInfo]


class FundingInfo(msgspec.Struct, frozen=True):
    symbol: str
    fundingIntervalHours: float


class Ticker24h(msgspec.Struct, frozen=True):
    symbol: str
    quoteVolume: str


def parse_instruments(exchange_info: bytes, funding_info: bytes = b"[]", tickers: bytes = b"[]",
                      ) -> list[Instrument]:
    """USDT- and USDC-margined contracts (linear, sizes in coins); raises ``msgspec.DecodeError`` on a
    body of the wrong shape."""
    intervals = {f.symbol: f.fundingIntervalHours
                 for f in msgspec.json.decode(funding_info, type=list[FundingInfo]) if f.fundingIntervalHours > 0}
    volume = {t.symbol: num(t.quoteVolume) for t in msgspec.json.decode(tickers, type=list[Ticker24h])}
    out = []
    for info in msgspec.json.decode(exchange_info, type=ExchangeInfo).symbols:
        if info.quoteAsset not in _USD_QUOTES:
            continue
        perpetual = info.contractType == "PERPETUAL"
        vol = volume.get(info.symbol, 0.0)
        out.append(Instrument(
            venue=VENUE, symbol=info.symbol, asset=common_asset(info.baseAsset), kind="linear", contract_size=1.0,
            funding_interval_h=intervals.get(info.symbol, DEFAULT_FUNDING_INTERVAL_H) if perpetual else 0.0,
            active=info.status == "TRADING", perpetual=perpetual, volume_usd_24h=vol if vol == vol else 0.0,
        ))
    return out


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    base = rest_url.rstrip("/")
    bodies = []
    for path in ("/fapi/v1/exchangeInfo", "/fapi/v1/fundingInfo", "/fapi/v1/ticker/24hr"):
        response = await client.get(base + path)
        response.raise_for_status()
        bodies.append(response.content)
    return parse_instruments(*bodies)
