"""The event contract: what every collector produces and the detector consumes.

Every venue module converts its own messages into these types in one place. All events carry

* ``venue``     -- lower-case venue id (``binance``),
* ``symbol``    -- the venue's own symbol (``BTCUSDT``),
* ``asset``     -- the normalised base asset (``BTC``),
* ``ts_event``  -- the venue's clock, integer nanoseconds since the epoch,
* ``ts_recv``   -- the local clock when the frame arrived, integer nanoseconds.

The two clocks are never mixed: the detector runs on ``ts_event`` so a replay behaves exactly like the live
run, and latency is measured on ``ts_recv``.

Prices are in the quote currency, which for the USDⓈ-margined contracts watched here is treated as USD.
Sizes are in base units (coins). Notional values carry the suffix ``_usd``.

Events are ``msgspec`` structs: immutable, cheap to build (the hot path builds one per trade), and encoded
as positional arrays in MessagePack for the Redis streams (see ``flushwatch.streams``).
"""

from __future__ import annotations

import math
from typing import Final, Literal

import msgspec

TakerSide = Literal["buy", "sell"]
"""The aggressor of a trade: ``buy`` means the taker bought (lifted the ask)."""

PositionSide = Literal["long", "short"]
"""The side of a position. For a liquidation: the position that was closed by the risk engine."""

DEPTH_BANDS_BPS: Final = (50, 100, 200)
"""Depth is summed within ±0.5 %, ±1 % and ±2 % of mid."""

HOURS_PER_YEAR: Final = 24 * 365


class _Event(msgspec.Struct, frozen=True, gc=False, array_like=True, tag_field="k"):
    venue: str
    symbol: str
    asset: str
    ts_event: int
    ts_recv: int


class Trade(_Event, tag="t", frozen=True):
    """A trade print. ``side`` is the taker side."""

    price: float
    size: float
    side: TakerSide

    @property
    def notional_usd(self) -> float:
        return self.price * self.size


class Liquidation(_Event, tag="l", frozen=True):
    """A forced close. ``side`` is the *position* that was liquidated, whatever the venue calls it.

    Binance reports the side of the liquidation *order*: ``SELL`` closes a long, so ``side == "long"``.
    """

    price: float
    size: float
    side: PositionSide

    @property
    def notional_usd(self) -> float:
        return self.price * self.size


class FundingMark(_Event, tag="f", frozen=True):
    """Mark, index and the current funding estimate.

    ``funding_rate`` is the venue's own rate per ``funding_interval_h`` hours; ``funding_8h`` and
    ``funding_annual`` are the same rate restated per 8 h and per year (simple, not compounded).
    ``next_funding_ts`` is 0 where the venue does not say.
    """

    mark_price: float
    index_price: float
    funding_rate: float
    funding_interval_h: float
    funding_8h: float
    funding_annual: float
    next_funding_ts: int

    @property
    def premium_bps(self) -> float:
        """Mark over index, in basis points."""
        return (self.mark_price / self.index_price - 1.0) * 1e4 if self.index_price > 0 else 0.0


class OpenInterest(_Event, tag="o", frozen=True):
    """Open interest of one side (longs = shorts), in base units and in USD at the mark or last price."""

    oi_base: float
    oi_usd: float


class Depth(_Event, tag="d", frozen=True):
    """Order-book liquidity near mid.

    ``bid_usd[i]`` / ``ask_usd[i]`` are the notionals resting within ``DEPTH_BANDS_BPS[i]`` of mid.
    ``reach_bps`` is how far the visible book extends on its thinner side: a band wider than the reach is
    a lower bound (a top-20 book of a liquid contract covers a few basis points only).
    """

    mid: float
    spread_bps: float
    bid_usd: tuple[float, float, float]
    ask_usd: tuple[float, float, float]
    reach_bps: float


Event = Trade | Liquidation | FundingMark | OpenInterest | Depth

EVENT_TYPES: Final = (Trade, Liquidation, FundingMark, OpenInterest, Depth)


def funding_mark(
    *,
    venue: str,
    symbol: str,
    asset: str,
    ts_event: int,
    ts_recv: int,
    mark_price: float,
    index_price: float,
    funding_rate: float,
    funding_interval_h: float,
    next_funding_ts: int,
) -> FundingMark:
    """Build a ``FundingMark``, deriving the 8-hour and annual restatements from the venue's interval."""
    return FundingMark(
        venue=venue,
        symbol=symbol,
        asset=asset,
        ts_event=ts_event,
        ts_recv=ts_recv,
        mark_price=mark_price,
        index_price=index_price,
        funding_rate=funding_rate,
        funding_interval_h=funding_interval_h,
        funding_8h=funding_rate * 8.0 / funding_interval_h,
        funding_annual=funding_rate * HOURS_PER_YEAR / funding_interval_h,
        next_funding_ts=next_funding_ts,
    )


DepthBands = tuple[float, float, tuple[float, float, float], tuple[float, float, float], float]
"""``(mid, spread_bps, bid_usd, ask_usd, reach_bps)``: the fields of ``Depth`` a book reduces to."""

_INF: Final = math.inf

Edges = tuple[float, float, float]
"""The price limits of the depth bands on one side of mid, narrowest first."""

# One name per band: near_mid runs on every book update, and a loop over the bands costs more than the bands.
_BELOW_0, _BELOW_1, _BELOW_2 = (1 - b / 1e4 for b in DEPTH_BANDS_BPS)
_ABOVE_0, _ABOVE_1, _ABOVE_2 = (1 + b / 1e4 for b in DEPTH_BANDS_BPS)


def near_mid(best_bid: float, best_ask: float) -> tuple[float, float, Edges, Edges] | None:
    """``(mid, spread_bps, bid edges, ask edges)`` of a book's best prices, the edges being the band limits
    below and above mid; ``None`` for a crossed book."""
    if best_bid <= 0 or best_ask <= best_bid:
        return None
    mid = 0.5 * (best_bid + best_ask)
    return (mid, (best_ask - best_bid) / mid * 1e4, (mid * _BELOW_0, mid * _BELOW_1, mid * _BELOW_2),
            (mid * _ABOVE_0, mid * _ABOVE_1, mid * _ABOVE_2))


def banded_depth(mid: float, spread_bps: float, bid_usd: tuple[float, float, float],
                 ask_usd: tuple[float, float, float], worst_bid: float, worst_ask: float) -> DepthBands | None:
    """The ``DepthBands`` of banded sums, given the last level used on each side; ``None`` when a sum
    overflowed (finite prices and sizes can still overflow their product)."""
    if not -_INF < bid_usd[2] + ask_usd[2] < _INF:  # math.isfinite without a call: once per book update
        return None
    below, above = (mid - worst_bid) / mid, (worst_ask - mid) / mid
    return mid, spread_bps, bid_usd, ask_usd, (above if above < below else below) * 1e4


def _banded(levels: list[tuple[float, float]], edges: Edges, direction: float) -> tuple[float, float, float]:
    """Cumulative notional of ``levels`` (best first) inside each band edge, in one pass: bands are nested,
    so each edge takes the running sum at the first level beyond it."""
    out = [0.0, 0.0, 0.0]
    band, total = 0, 0.0
    for price, size in levels:
        while band < 3 and (price - edges[band]) * direction > 0:
            out[band] = total
            band += 1
        if band == 3:
            break
        total += price * size
    for rest in range(band, 3):
        out[rest] = total
    return out[0], out[1], out[2]


def depth_from_levels(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> DepthBands | None:
    """Sum book levels into the depth bands.

    ``bids`` and ``asks`` are ``(price, size)`` pairs, best first. Returns ``(mid, spread_bps, bid_usd,
    ask_usd, reach_bps)``, or ``None`` for a book that is one-sided or crossed.
    """
    if not bids or not asks:
        return None
    near = near_mid(bids[0][0], asks[0][0])
    if near is None:
        return None
    mid, spread_bps, bid_edges, ask_edges = near
    return banded_depth(mid, spread_bps, _banded(bids, bid_edges, -1.0), _banded(asks, ask_edges, 1.0),
                        bids[-1][0], asks[-1][0])
