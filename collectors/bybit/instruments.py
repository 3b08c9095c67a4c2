"""Bybit v5 linear instrument metadata: ``GET /v5/market/instruments-info?category=linear`` (what trades; paged
by ``cursor``) and ``GET /v5/market/tickers?category=linear`` (open interest and turnover, for ranking).

Bybit answers HTTP 200 with ``retCode != 0`` for a refused request, so a body is checked, not just the
status. Linear sizes are in base coins (``contract_size`` 1). ``oi_usd`` is one side, like every other
venue's: ``singleOpenInterestValue``, or half of the two-sided ``openInterestValue`` where Bybit gives only
that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx
import msgspec

from collectors.bybit import schemas
from collectors.bybit.spec import VENUE
from collectors.instruments import Instrument, common_asset
from collectors.parsing import num

INSTRUMENTS_PATH: Final = "/v5/market/instruments-info"
TICKERS_PATH: Final = "/v5/market/tickers"
PAGE_LIMIT: Final = 1000
"""Bybit's maximum page size (default 500; more than 500 linear symbols were listed in 2026)."""
MAX_PAGES: Final = 20
"""A cursor that never ends (a misbehaving proxy) must not loop forever; 20,000 symbols is far beyond Bybit's."""
PERPETUAL: Final = "LinearPerpetual"
TRADING: Final = "Trading"
_USD_QUOTES: Final = frozenset({"USDT", "USDC"})

_body = msgspec.json.Decoder(schemas.ApiBody)
_instruments = msgspec.json.Decoder(schemas.InstrumentsResult)
_tickers = msgspec.json.Decoder(schemas.TickersResult)


class BybitApiError(ValueError):
    """A REST answer with ``retCode != 0``."""


def _result(body: bytes, what: str) -> msgspec.Raw:
    decoded = _body.decode(body)
    if decoded.retCode != 0:
        raise BybitApiError(f"{what}: retCode {decoded.retCode}: {decoded.retMsg}")
    return decoded.result


def instruments_page(body: bytes) -> schemas.InstrumentsResult:
    """One page of ``instruments-info``; raises ``msgspec.DecodeError`` or ``BybitApiError``."""
    return _instruments.decode(_result(body, INSTRUMENTS_PATH))


def _positive_or_zero(text: str) -> float:
    value = num(text)
    return value if 0.0 <= value < float("inf") else 0.0


def ticker_figures(body: bytes) -> dict[str, tuple[float, float]]:
    """``symbol -> (one-side open interest USD, 24 h turnover USD)`` from ``tickers``; 0 where unknown."""
    figures = {}
    for row in _tickers.decode(_result(body, TICKERS_PATH)).entries:
        oi = _positive_or_zero(row.singleOpenInterestValue) if row.singleOpenInterestValue else (
            _positive_or_zero(row.openInterestValue) / 2.0)
        figures[row.symbol] = (oi, _positive_or_zero(row.turnover24h))
    return figures


def parse_instruments(pages: bytes | Iterable[bytes], tickers: bytes | None = None) -> list[Instrument]:
    """USDT- and USDC-margined linear contracts from ``instruments-info`` page bodies, ranked by ``tickers``
    when given. Raises ``msgspec.DecodeError`` or ``BybitApiError`` on a body of the wrong shape."""
    figures = ticker_figures(tickers) if tickers is not None else {}
    out = []
    for body in [pages] if isinstance(pages, bytes) else pages:
        for info in instruments_page(body).entries:
            if info.quoteCoin not in _USD_QUOTES:
                continue
            perpetual = info.contractType == PERPETUAL
            oi_usd, volume = figures.get(info.symbol, (0.0, 0.0))
            out.append(Instrument(
                venue=VENUE, symbol=info.symbol, asset=common_asset(info.baseCoin), kind="linear",
                contract_size=1.0,
                funding_interval_h=info.fundingInterval / 60.0 if perpetual and info.fundingInterval > 0 else 0.0,
                active=info.status == TRADING, perpetual=perpetual, oi_usd=oi_usd, volume_usd_24h=volume,
            ))
    return out


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    """Every page of ``instruments-info``, then ``tickers``; raises on HTTP or API errors."""
    base = rest_url.rstrip("/")
    pages: list[bytes] = []
    cursor = ""
    for _ in range(MAX_PAGES):
        params = {"category": "linear", "limit": str(PAGE_LIMIT)}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(base + INSTRUMENTS_PATH, params=params)
        response.raise_for_status()
        pages.append(response.content)
        cursor = instruments_page(response.content).nextPageCursor
        if not cursor:
            break
    else:
        raise BybitApiError(f"{INSTRUMENTS_PATH}: still paging after {MAX_PAGES} pages")
    response = await client.get(base + TICKERS_PATH, params={"category": "linear"})
    response.raise_for_status()
    return parse_instruments(pages, response.content)
