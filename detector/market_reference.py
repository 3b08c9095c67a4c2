"""The plain-Python twin of ``detector.market``: the same market fold over event objects, one venue object
and one ``ChainedSum`` per asset, written from the rules in ``detector.market``'s docstring. Used by tests,
which hold the kernel to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from detector.market import DEPTH_STALE_S, GRACE_S, MARKET_VENUE, OI_STALE_S
from flushwatch.events import DEPTH_BANDS_BPS, Depth, Event, FundingMark, Liquidation, OpenInterest, Trade, funding_mark
from flushwatch.signals import VenueView

_BAND_1PCT: Final = DEPTH_BANDS_BPS.index(100)
_NS: Final = 1_000_000_000


class ChainedSum:
    """A sum over venues whose reported ``level`` ignores venues joining or leaving after ``grace_s``.

    ``total`` is the plain sum of the current values. ``level`` equals it during the grace period (venues
    connect a few seconds apart) and afterwards is multiplied by ``(total after / total before)`` over the
    venues present in both, so only their moves move it. A venue silent for ``stale_s`` leaves the sum."""

    __slots__ = ("_first", "_next_expiry", "_values", "grace_ns", "level", "stale_ns", "total")

    def __init__(self, grace_s: float, stale_s: float) -> None:
        self.grace_ns = int(grace_s * _NS)
        self.stale_ns = int(stale_s * _NS)
        self._values: dict[str, tuple[float, int]] = {}
        self._first = -1
        self._next_expiry = 0
        self.total = 0.0
        self.level = 0.0

    def update(self, venue: str, value: float, ts: int) -> float:
        if self._first < 0:
            self._first = ts
        if ts >= self._next_expiry and len(self._values) > 1:  # look for silent venues once a second at most
            self._next_expiry = ts + _NS
            for gone in [v for v, (_, t) in self._values.items() if ts - t > self.stale_ns and v != venue]:
                self.total -= self._values.pop(gone)[0]
        old = self._values.get(venue)
        self._values[venue] = (value, ts)
        before = self.total
        if old is None:
            self.total += value  # a venue joining: the level does not move
        else:
            self.total += value - old[0]
            if self.level == before:  # no composition change so far: the level is the total, exactly
                self.level = self.total
            elif before > 0:
                self.level *= self.total / before
        if ts - self._first <= self.grace_ns or self.level <= 0:
            self.level = self.total
        return self.level


@dataclass
class _Venue:
    coverage: str
    oi_usd: float = math.nan
    funding_8h: float = math.nan
    premium_bps: float = math.nan
    depth_1pct_usd: float = math.nan
    liq_long_usd: float = 0.0
    liq_short_usd: float = 0.0
    spread_bps: float = math.nan
    ts_event: int = 0
    """Newest event time of anything but trades (trades pass through without bookkeeping: they are most of
    the volume)."""

    def view(self) -> VenueView:
        def known(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return VenueView(self.coverage, known(self.oi_usd), known(self.funding_8h), known(self.premium_bps),
                         known(self.depth_1pct_usd), self.liq_long_usd, self.liq_short_usd, self.ts_event)


@dataclass
class _Asset:
    oi: ChainedSum
    depth: ChainedSum
    venues: dict[str, _Venue] = field(default_factory=dict)


class MarketView:
    """Folds the events of every venue into per-asset market events (see the module docstring)."""

    def __init__(self, coverage: Callable[[str], str], *, grace_s: float = GRACE_S, oi_stale_s: float = OI_STALE_S,
                 depth_stale_s: float = DEPTH_STALE_S) -> None:
        self.coverage = coverage
        self._grace_s = grace_s
        self._oi_stale_s = oi_stale_s
        self._depth_stale_s = depth_stale_s
        self._assets: dict[str, _Asset] = {}

    def venues(self, asset: str) -> dict[str, VenueView]:
        """Per-venue detail of ``asset``, by venue name."""
        found = self._assets.get(asset)
        return {name: v.view() for name, v in sorted(found.venues.items())} if found else {}

    def fold(self, events: Sequence[Event]) -> list[Event]:
        out: list[Event] = []
        append = out.append
        for e in events:
            kind = type(e)
            if kind is Trade:  # the hot path: nothing to fold
                append(e)
            elif kind is Liquidation:
                venue = self._venue(e)[1]
                if e.side == "long":  # type: ignore[union-attr]
                    venue.liq_long_usd += e.price * e.size  # type: ignore[union-attr]
                else:
                    venue.liq_short_usd += e.price * e.size  # type: ignore[union-attr]
                append(e)
            elif kind is OpenInterest:
                append(self._open_interest(e))  # type: ignore[arg-type]
            elif kind is FundingMark:
                append(self._funding(e))  # type: ignore[arg-type]
            elif kind is Depth:
                append(self._depth(e))  # type: ignore[arg-type]
            else:
                append(e)  # not ours to judge: the kernel counts unknown kinds
        return out

    def _asset(self, name: str) -> _Asset:
        found = self._assets.get(name)
        if found is None:
            found = self._assets[name] = _Asset(ChainedSum(self._grace_s, self._oi_stale_s),
                                                ChainedSum(self._grace_s, self._depth_stale_s))
        return found

    def _venue(self, e: Event) -> tuple[_Asset, _Venue]:
        asset = self._assets.get(e.asset) or self._asset(e.asset)
        venue = asset.venues.get(e.venue)
        if venue is None:
            venue = asset.venues[e.venue] = _Venue(self.coverage(e.venue))
        if e.ts_event > venue.ts_event:
            venue.ts_event = e.ts_event
        return asset, venue

    def _open_interest(self, e: OpenInterest) -> OpenInterest:
        asset, venue = self._venue(e)
        venue.oi_usd = e.oi_usd
        level = asset.oi.update(e.venue, e.oi_usd, e.ts_event)
        if len(asset.venues) == 1 and level == e.oi_usd:  # a market of one venue is that venue
            return e
        base = e.oi_base * level / e.oi_usd if e.oi_usd > 0 else e.oi_base
        return OpenInterest(MARKET_VENUE, e.asset, e.asset, e.ts_event, e.ts_recv, base, level)

    def _funding(self, e: FundingMark) -> FundingMark:
        asset, venue = self._venue(e)
        venue.funding_8h = e.funding_8h
        venue.premium_bps = e.premium_bps if e.index_price > 0 else math.nan
        if len(asset.venues) == 1:  # a market of one venue is that venue
            return e
        funding, premium = self._weighted(asset)
        index = e.index_price if e.index_price > 0 else e.mark_price
        premium = premium if math.isfinite(premium) else 0.0
        return funding_mark(venue=MARKET_VENUE, symbol=e.asset, asset=e.asset, ts_event=e.ts_event,
                            ts_recv=e.ts_recv, mark_price=index * (1.0 + premium / 1e4), index_price=index,
                            funding_rate=funding, funding_interval_h=8.0, next_funding_ts=e.next_funding_ts)

    @staticmethod
    def _weighted(asset: _Asset) -> tuple[float, float]:
        """Open-interest-weighted funding (per 8 h) and premium (bps). A venue whose open interest is not
        known yet weighs the mean of the known ones (all weigh alike before any is known)."""
        venues = [v for v in asset.venues.values() if math.isfinite(v.funding_8h)]
        known = [v.oi_usd for v in venues if math.isfinite(v.oi_usd) and v.oi_usd > 0]
        fill = sum(known) / len(known) if known else 1.0
        weights = [v.oi_usd if math.isfinite(v.oi_usd) and v.oi_usd > 0 else fill for v in venues]
        total = sum(weights)
        if not total:  # no venue with a finite rate: nothing to weigh
            return math.nan, math.nan
        funding = sum(w * v.funding_8h for w, v in zip(weights, venues, strict=True)) / total
        priced = [(w, v.premium_bps) for w, v in zip(weights, venues, strict=True) if math.isfinite(v.premium_bps)]
        premium = sum(w * p for w, p in priced) / sum(w for w, _ in priced) if priced else math.nan
        return funding, premium

    def _depth(self, e: Depth) -> Depth:
        asset, venue = self._venue(e)
        depth = venue.depth_1pct_usd = e.bid_usd[_BAND_1PCT] + e.ask_usd[_BAND_1PCT]
        venue.spread_bps = e.spread_bps
        level = asset.depth.update(e.venue, depth, e.ts_event)
        if len(asset.venues) == 1 and level == depth:
            return e
        # The deepest book sets the market's spread: it is where size trades.
        deepest = max((v for v in asset.venues.values() if math.isfinite(v.depth_1pct_usd)),
                      key=lambda v: v.depth_1pct_usd, default=venue)
        scale = level / venue.depth_1pct_usd if venue.depth_1pct_usd > 0 else 1.0
        bid_usd = (e.bid_usd[0] * scale, e.bid_usd[1] * scale, e.bid_usd[2] * scale)
        ask_usd = (e.ask_usd[0] * scale, e.ask_usd[1] * scale, e.ask_usd[2] * scale)
        return Depth(MARKET_VENUE, e.asset, e.asset, e.ts_event, e.ts_recv, e.mid, deepest.spread_bps, bid_usd,
                     ask_usd, e.reach_bps)
