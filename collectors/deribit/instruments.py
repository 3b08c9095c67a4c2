"""Deribit instrument metadata: ``GET /api/v2/public/get_instruments?currency=any&kind=future`` (what trades)
and ``GET /api/v2/public/get_book_summary_by_currency?currency=<C>&kind=future`` per settlement currency
(open interest and 24 h volume, for ranking; ``currency=any`` is refused there).

Sizes on Deribit are already in a fixed unit whatever the contract: USD on the inverse perpetuals
(``BTC-PERPETUAL``, whose ``contract_size`` 10 only sets the order increment) and coins on the linear USDC
ones (whose ``contract_size`` 0.0001 is again an increment, not a multiplier). So every instrument here has
``contract_size`` 1.0, and ``Instrument.base_size`` / ``notional_usd`` read Deribit's amounts directly.

Funding accrues continuously; the ticker states it per 8 hours, hence ``funding_interval_h`` 8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import httpx
import msgspec

from collectors.deribit import schemas
from collectors.deribit.spec import VENUE
from collectors.instruments import ContractKind, Instrument, common_asset

INSTRUMENTS_PATH: Final = "/api/v2/public/get_instruments"
SUMMARY_PATH: Final = "/api/v2/public/get_book_summary_by_currency"
FUNDING_INTERVAL_H: Final = 8.0
_USD_QUOTES: Final = frozenset({"USD", "USDC", "USDT"})

_instruments = msgspec.json.Decoder(schemas.InstrumentsAnswer)
_summaries = msgspec.json.Decoder(schemas.SummaryAnswer)


def kind_of(info: schemas.InstrumentInfo) -> ContractKind:
    """``reversed`` is inverse; answers without the type field are inverse exactly when quoted in USD."""
    declared = info.instrument_type or info.future_type
    if declared:
        return "inverse" if declared == "reversed" else "linear"
    return "inverse" if info.quote_currency == "USD" else "linear"


def settlement_currency(info: schemas.InstrumentInfo) -> str:
    if info.settlement_currency:
        return info.settlement_currency
    return info.base_currency if kind_of(info) == "inverse" else info.quote_currency


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) and value > 0 else 0.0


def parse_instruments(instruments: bytes, *summaries: bytes) -> list[Instrument]:
    """The USD-quoted futures (perpetual and dated) of a ``get_instruments`` body, ranked by the
    ``get_book_summary_by_currency`` bodies; raises ``msgspec.DecodeError`` on a body of the wrong shape
    (a JSON-RPC ``error`` answer included)."""
    infos = [i for i in _instruments.decode(instruments).result
             if i.kind == "future" and i.quote_currency in _USD_QUOTES]
    kinds = {i.instrument_name: kind_of(i) for i in infos}
    oi_usd: dict[str, float] = {}
    volume_usd: dict[str, float] = {}
    for body in summaries:
        for row in _summaries.decode(body).result:
            kind = kinds.get(row.instrument_name)
            if kind is None:
                continue
            mark, oi = _finite(row.mark_price), _finite(row.open_interest)
            oi_usd[row.instrument_name] = oi if kind == "inverse" else oi * mark
            volume = _finite(row.volume_usd)
            volume_usd[row.instrument_name] = volume if volume else _finite(row.volume) * mark
    out = []
    for info in infos:
        perpetual = info.settlement_period == "perpetual"
        out.append(Instrument(
            venue=VENUE, symbol=info.instrument_name, asset=common_asset(info.base_currency),
            kind=kinds[info.instrument_name], contract_size=1.0,
            funding_interval_h=FUNDING_INTERVAL_H if perpetual else 0.0, active=info.is_active,
            perpetual=perpetual, oi_usd=oi_usd.get(info.instrument_name, 0.0),
            volume_usd_24h=volume_usd.get(info.instrument_name, 0.0),
        ))
    return out


def summary_currencies(instruments: bytes) -> list[str]:
    """The settlement currencies whose book summaries cover the perpetuals of a ``get_instruments`` body."""
    return sorted({settlement_currency(i) for i in _instruments.decode(instruments).result
                   if i.kind == "future" and i.settlement_period == "perpetual" and i.quote_currency in _USD_QUOTES})


async def _get(client: httpx.AsyncClient, url: str, params: Iterable[tuple[str, str]]) -> bytes:
    response = await client.get(url, params=list(params))
    response.raise_for_status()
    return response.content


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    base = rest_url.rstrip("/")
    body = await _get(client, base + INSTRUMENTS_PATH, [("currency", "any"), ("kind", "future")])
    summaries = [await _get(client, base + SUMMARY_PATH, [("currency", currency), ("kind", "future")])
                 for currency in summary_currencies(body)]
    return parse_instruments(body, *summaries)
