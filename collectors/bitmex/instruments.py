"""BitMEX instrument metadata: ``GET /api/v1/instrument/active`` (every listed contract, with its open
interest and 24 h turnover in one call -- no extra tickers endpoint needed).

Contract value, worked out from the fields (values from real instrument rows):

* **Inverse** (``isInverse``; XBTUSD: ``multiplier -100000000``, ``underlyingToSettleMultiplier -100000000``,
  ``quoteCurrency USD``): a contract is worth ``|multiplier / underlyingToSettleMultiplier|`` USD -- 1 USD for
  XBTUSD -- so ``size`` contracts are ``size * 1 / price`` XBT. Cross-check: a 1000-contract XBTUSD trade at
  8544.5 has ``homeNotional 0.11703`` = 1000 / 8544.5.
* **Linear** (not inverse, not quanto; ``quoteCurrency USDT``): a contract is ``1 /
  underlyingToPositionMultiplier`` coins -- XBTUSDT 1e-6 BTC, ETHUSDT 1e-5 ETH, JTOUSDT 1 JTO (``volume24h 450``
  = ``homeNotional24h 450``) -- or, where that field is null, ``multiplier / quoteToSettleMultiplier`` coins
  (ETHM19: 1e8 / 1e8 = 1 ETH), which is the same ratio.
* **Quanto** (``isQuanto``; ETHUSD: ``multiplier 100``): a contract is worth ``price * multiplier`` XBt, a
  fixed amount of *bitcoin* per point of the *ether* price. Its size has no fixed value in ETH nor in USD
  without the XBT price, so quanto contracts are skipped rather than misreported.

Only USD-quoted contracts are kept (``USD``, ``USDT``, ``USDC``): XBT-quoted ones (ETHM19 at 0.0316 XBT)
have prices that are not USD. ``typ`` FFWCSX is a perpetual (FFWCSF the FX-underlier perpetual), FFCCSX a
dated future; spot (IFXXXP) and the rest are ignored. ``oi_usd`` = ``openInterest`` at ``markPrice``;
``volume_usd_24h`` = ``foreignNotional24h`` (quote currency, so USD for both kinds). The fields read, as
they appear on XBTUSD: ``symbol``, ``rootSymbol`` ("XBT"), ``state`` ("Open"), ``typ``, ``quoteCurrency``,
``isInverse``/``isQuanto``, the multipliers above, ``fundingInterval`` ("2000-01-01T08:00:00.000Z"),
``openInterest`` (contracts), ``markPrice`` and ``foreignNotional24h``.
"""

from __future__ import annotations

import math
from typing import Final

import httpx
import msgspec

from collectors.bitmex.schemas import timespan_hours
from collectors.instruments import ContractKind, Instrument, common_asset

VENUE: Final = "bitmex"
INSTRUMENTS_PATH: Final = "/api/v1/instrument/active"
DEFAULT_FUNDING_INTERVAL_H: Final = 8.0
PERPETUAL_TYPES: Final = frozenset({"FFWCSX", "FFWCSF"})
FUTURE_TYPES: Final = frozenset({"FFCCSX"})
USD_QUOTES: Final = frozenset({"USD", "USDT", "USDC"})
OPEN: Final = "Open"


class InstrumentInfo(msgspec.Struct, frozen=True):
    symbol: str
    rootSymbol: str
    typ: str
    state: str
    quoteCurrency: str = ""
    isInverse: bool = False
    isQuanto: bool = False
    multiplier: float | None = None
    underlyingToPositionMultiplier: float | None = None
    underlyingToSettleMultiplier: float | None = None
    quoteToSettleMultiplier: float | None = None
    fundingInterval: str | None = None
    openInterest: float | None = None
    markPrice: float | None = None
    foreignNotional24h: float | None = None


def _finite_positive(value: float | None) -> float:
    return value if value is not None and 0.0 < value < math.inf else 0.0


def contract_size(info: InstrumentInfo) -> tuple[ContractKind, float] | None:
    """``(kind, size)``: USD per inverse contract or coins per linear one; ``None`` when it cannot be told
    (quanto, or multipliers missing)."""
    if info.isQuanto:
        return None
    multiplier = abs(info.multiplier or 0.0)
    if info.isInverse:
        settle = abs(info.underlyingToSettleMultiplier or 0.0)
        size = multiplier / settle if settle else 0.0
        return ("inverse", size) if 0.0 < size < math.inf else None
    position = _finite_positive(info.underlyingToPositionMultiplier)
    quote_settle = _finite_positive(info.quoteToSettleMultiplier)
    size = 1.0 / position if position else (multiplier / quote_settle if quote_settle else 0.0)
    return ("linear", size) if 0.0 < size < math.inf else None


def to_instrument(info: InstrumentInfo) -> Instrument | None:
    """The ``Instrument`` of a USD-quoted perpetual or future, else ``None``."""
    perpetual = info.typ in PERPETUAL_TYPES
    if not (perpetual or info.typ in FUTURE_TYPES) or info.quoteCurrency not in USD_QUOTES:
        return None
    sized = contract_size(info)
    if sized is None:
        return None
    kind, size = sized
    interval = 0.0
    if perpetual:
        interval = (timespan_hours(info.fundingInterval) if info.fundingInterval else None) \
            or DEFAULT_FUNDING_INTERVAL_H
    inst = Instrument(venue=VENUE, symbol=info.symbol, asset=common_asset(info.rootSymbol), kind=kind,
                      contract_size=size, funding_interval_h=interval, active=info.state == OPEN,
                      perpetual=perpetual, volume_usd_24h=_finite_positive(info.foreignNotional24h))
    oi, mark = _finite_positive(info.openInterest), _finite_positive(info.markPrice)
    if oi and mark:
        inst = msgspec.structs.replace(inst, oi_usd=inst.notional_usd(oi, mark))
    return inst


def parse_instruments(body: bytes) -> list[Instrument]:
    """The USD-quoted perpetuals and futures of an ``/api/v1/instrument/active`` body; raises
    ``msgspec.DecodeError`` on a body of the wrong shape."""
    out = []
    for info in msgspec.json.decode(body, type=list[InstrumentInfo]):
        inst = to_instrument(info)
        if inst is not None:
            out.append(inst)
    return out


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    response = await client.get(rest_url.rstrip("/") + INSTRUMENTS_PATH)
    response.raise_for_status()
    return parse_instruments(response.content)
