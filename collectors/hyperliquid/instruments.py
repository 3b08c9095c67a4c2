"""Hyperliquid perpetuals metadata: ``POST /info`` with ``{"type":"metaAndAssetCtxs"}``.

The answer is a pair: the universe, and the asset contexts in the same order (index i of one is index i of
the other). The contexts carry open interest in coins, the mark price and the 24 h notional volume, so one
request gives everything a ``top:N`` ranking needs. Shape (QuickNode's and GoldRush's method pages, the
``@nktkas/hyperliquid`` schema)::

    [{"universe":[{"name":"BTC","szDecimals":5,"maxLeverage":40,"marginTableId":56},
                  {"name":"MATIC","szDecimals":1,"maxLeverage":20,"isDelisted":true},...],
      "marginTables":[...]},
     [{"funding":"0.0000125","openInterest":"28127.5","prevDayPx":"103500.0","dayNtlVlm":"2651234567.1",
       "premium":"0.0002","oraclePx":"104000.0","markPx":"104020.0","midPx":"104019.5",
       "impactPxs":["104019.0","104021.0"],"dayBaseVlm":"25500.1"},...]]

Every perpetual is linear and sized in coins, margined in USDC, and pays funding every hour. Names are the
coins themselves; ``kPEPE`` (1000 PEPE) stays its own asset (``KPEPE``), as Binance's ``1000PEPE`` does.
"""

from __future__ import annotations

from typing import Final

import httpx
import msgspec

from collectors.instruments import Instrument, common_asset
from collectors.parsing import num, positive

VENUE: Final = "hyperliquid"
FUNDING_INTERVAL_H: Final = 1.0
INFO_PATH: Final = "/info"
META_AND_ASSET_CTXS: Final = {"type": "metaAndAssetCtxs"}


class Asset(msgspec.Struct, frozen=True):
    name: str
    szDecimals: int = 0
    maxLeverage: int = 0
    isDelisted: bool = False


class Meta(msgspec.Struct, frozen=True):
    universe: list[Asset]


class AssetCtx(msgspec.Struct, frozen=True):
    # Optional throughout (``midPx``/``impactPxs`` come as null for a coin without a book): one odd context
    # must not cost the whole universe.
    funding: str | None = None
    openInterest: str | None = None
    markPx: str | None = None
    oraclePx: str | None = None
    dayNtlVlm: str | None = None


_decode = msgspec.json.Decoder(tuple[Meta, list[AssetCtx]]).decode


def _usd(value: float) -> float:
    return value if positive(value) else 0.0


def parse_instruments(body: bytes) -> list[Instrument]:
    """Every listed perpetual, delisted ones inactive; raises ``msgspec.DecodeError`` on a body of the wrong
    shape. A coin without a context (the lists differ in length) ranks with zeros."""
    meta, ctxs = _decode(body)
    out = []
    for i, asset in enumerate(meta.universe):
        ctx = ctxs[i] if i < len(ctxs) else AssetCtx()
        mark = num(ctx.markPx)
        out.append(Instrument(
            venue=VENUE, symbol=asset.name, asset=common_asset(asset.name), kind="linear", contract_size=1.0,
            funding_interval_h=FUNDING_INTERVAL_H, active=not asset.isDelisted, perpetual=True,
            oi_usd=_usd(num(ctx.openInterest) * mark), volume_usd_24h=_usd(num(ctx.dayNtlVlm)),
        ))
    return out


async def fetch_instruments(client: httpx.AsyncClient, rest_url: str) -> list[Instrument]:
    response = await client.post(rest_url.rstrip("/") + INFO_PATH, json=META_AND_ASSET_CTXS)
    response.raise_for_status()
    return parse_instruments(response.content)
