"""Instrument metadata from each venue's REST API, and the choice of what to watch.

Every venue module has a pure ``parse_instruments(body) -> list[Instrument]`` for its metadata endpoint(s)
and an ``async fetch_instruments(client, rest_url)`` that calls it. The metadata is what normalisation
needs: which asset a symbol trades, whether it is linear (size in coins or contracts of ``contract_size``
coins) or inverse (contracts of ``contract_size`` USD), the funding interval, and whether it trades.
``oi_usd`` and ``volume_usd_24h`` rank the ``top:N`` universe.

The universe is a list of assets (``BTC``, ``ETH``) or ``top:N``; each venue watches its perpetual of each
asset it lists. Asset names are the market's common ticker: BitMEX's ``XBT`` is ``BTC``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal

import msgspec

ContractKind = Literal["linear", "inverse"]
Coverage = Literal["complete", "sampled", "none"]
"""What a venue's public liquidation feed shows: every liquidation, a sample (a lower bound: Binance and
OKX send at most one per symbol per second), or nothing at all (Hyperliquid has no public feed)."""

COVERAGE_VALUE: Final[dict[str, int]] = {"none": 0, "sampled": 1, "complete": 2}

ASSET_ALIASES: Final[dict[str, str]] = {"XBT": "BTC"}


def common_asset(name: str) -> str:
    """The market-wide ticker of a venue's base currency name."""
    upper = name.upper()
    return ASSET_ALIASES.get(upper, upper)


class Instrument(msgspec.Struct, frozen=True):
    venue: str
    symbol: str
    """The venue's own name: ``BTCUSDT``, ``BTC-USDT-SWAP``, ``BTC``, ``BTC-PERPETUAL``, ``XBTUSD``."""
    asset: str
    kind: ContractKind
    contract_size: float
    """Linear: coins per contract (1.0 where sizes are already in coins). Inverse: USD per contract."""
    funding_interval_h: float
    """0 for contracts without funding (dated futures)."""
    active: bool = True
    perpetual: bool = True
    oi_usd: float = 0.0
    volume_usd_24h: float = 0.0

    def notional_usd(self, size: float, price: float) -> float:
        """USD value of ``size`` as the venue counts it (contracts, or coins where ``contract_size`` is 1)."""
        if self.kind == "inverse":
            return size * self.contract_size
        return size * self.contract_size * price

    def base_size(self, size: float, price: float) -> float:
        """``size`` in coins."""
        if self.kind == "inverse":
            return size * self.contract_size / price
        return size * self.contract_size


RankBy = Literal["open_interest", "volume"]


def parse_universe(text: str) -> tuple[int, list[str]]:
    """``"top:20"`` -> ``(20, [])``; ``"BTC,eth,XBT"`` -> ``(0, ["BTC", "ETH"])`` (aliases merged, order
    kept). Raises ValueError."""
    text = text.strip()
    if text.lower().startswith("top:"):
        n = int(text[4:])
        if n < 1:
            raise ValueError(f"top:N needs N >= 1, got {text!r}")
        return n, []
    assets = list(dict.fromkeys(common_asset(a.strip()) for a in text.split(",") if a.strip()))
    if not assets:
        raise ValueError("an empty watchlist")
    return 0, assets


def rank_assets(instruments: Iterable[Instrument], n: int, by: RankBy) -> list[str]:
    """The ``n`` assets with the most open interest (or 24 h volume) in USD summed over all venues'
    active perpetuals; ties broken by name so the choice is deterministic."""
    totals: dict[str, float] = {}
    for inst in instruments:
        if inst.active and inst.perpetual:
            value = inst.oi_usd if by == "open_interest" else inst.volume_usd_24h
            totals[inst.asset] = totals.get(inst.asset, 0.0) + value
    return [a for a, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def pick(instruments: Sequence[Instrument], assets: Iterable[str]) -> list[Instrument]:
    """Each venue's main perpetual for each asset in ``assets``: active, perpetual, and among several
    (USDT and USDC margined, linear and inverse) the one with the most open interest."""
    wanted = set(assets)
    best: dict[tuple[str, str], Instrument] = {}
    for inst in instruments:
        if inst.asset not in wanted or not (inst.active and inst.perpetual):
            continue
        key = (inst.venue, inst.asset)
        held = best.get(key)
        if held is None or (inst.oi_usd, inst.symbol) > (held.oi_usd, held.symbol):
            best[key] = inst
    return sorted(best.values(), key=lambda i: (i.venue, i.asset))
