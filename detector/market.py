"""One market per asset: venue events folded into the asset view the kernels work on, plus per-venue detail.

A flush is market-wide, so the detector judges each asset on all its venues together:

* trades and liquidations pass through unchanged: notional adds up across venues. The liquidation
  intensity is a ratio of sums (recent over lagged baseline), which is the baseline-weighted mean of each
  venue's own ratio -- each venue is measured against its own history, and a sampled feed (Binance, OKX:
  a lower bound) weighs what it shows. The venue's coverage says which venues are complete;
* open interest becomes the sum over venues (USD, one side); funding and the mark premium become their
  open-interest-weighted means (funding restated per 8 h, so Hyperliquid's hourly rate compares);
* depth within 1 % becomes the sum over venues with a fresh book, and the spread is the deepest book's.

A venue joining or leaving mid-run (a late connection, an outage) would make a sum jump, which the kernels
would read as open interest or liquidity moving. The sums are *chained*: after a grace period at the start,
the level reported moves only by the changes of venues present before and after, so composition changes are
invisible to the detector; the true sum is kept for display (``venue_views``).

``fold_market`` does this over a segment's columns (``detector.batch.stream_columns``) in stream order,
rewriting the rows of open interest, funding and depth in place into the market's values; its state is
``Market``, arrays per asset x venue with the venue axis last. ``detector.market_reference.MarketView`` is
its plain-Python twin over event objects, and the property test holds one to the other. Everything runs on
event time and in stream order, so replays give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE
from flushwatch.signals import VenueView

MARKET_VENUE: Final = "market"
"""The ``venue`` of folded events (the kernels never see it; replays and tests of the reference do)."""
VENUES: Final = 8
"""Venue columns allocated at first; ``grow_market`` widens them when more venues show up."""
GRACE_S: Final = 60.0
OI_STALE_S: Final = 600.0
DEPTH_STALE_S: Final = 10.0
SUM_OI: Final = 0
SUM_DEPTH: Final = 1
_NS: Final = 1_000_000_000


class Market(NamedTuple):
    """Per asset (row) and venue (last axis): what each venue said last, and the chained sums."""

    oi_usd: np.ndarray  # (n, V) float64, NaN until known
    funding_8h: np.ndarray
    premium_bps: np.ndarray
    depth_usd: np.ndarray  # within 1 % of mid, bid + ask
    spread_bps: np.ndarray
    liq_long_usd: np.ndarray  # (n, V) float64, summed since the start
    liq_short_usd: np.ndarray
    ts_event: np.ndarray  # (n, V) int64: newest event time of anything but trades
    order: np.ndarray  # (n, V) int16: venue ids in the order they joined the asset, -1 after the last
    joined: np.ndarray  # (n,) int32: how many venues joined
    sum_first: np.ndarray  # (n, 2) int64, [SUM_OI | SUM_DEPTH]: first update, -1 before
    sum_expiry: np.ndarray  # (n, 2) int64: next look for silent venues
    sum_total: np.ndarray  # (n, 2) float64: plain sum of the present venues
    sum_level: np.ndarray  # (n, 2) float64: the chained level the kernels see
    sum_value: np.ndarray  # (n, 2, V) float64
    sum_ts: np.ndarray  # (n, 2, V) int64
    sum_present: np.ndarray  # (n, 2, V) bool


def allocate_market(n_slots: int, n_venues: int = VENUES) -> Market:
    def per_venue(fill: float) -> np.ndarray:
        return np.full((n_slots, n_venues), fill)

    return Market(
        per_venue(math.nan), per_venue(math.nan), per_venue(math.nan), per_venue(math.nan), per_venue(math.nan),
        per_venue(0.0), per_venue(0.0), np.zeros((n_slots, n_venues), np.int64),
        np.full((n_slots, n_venues), -1, np.int16), np.zeros(n_slots, np.int32),
        np.full((n_slots, 2), -1, np.int64), np.zeros((n_slots, 2), np.int64), np.zeros((n_slots, 2)),
        np.zeros((n_slots, 2)), np.zeros((n_slots, 2, n_venues)), np.zeros((n_slots, 2, n_venues), np.int64),
        np.zeros((n_slots, 2, n_venues), np.bool_),
    )


def grow_market(market: Market, n_slots: int, n_venues: int) -> Market:
    """``market`` with room for ``n_slots`` assets and ``n_venues`` venues (never fewer than it has)."""
    n, v = market.joined.shape[0], market.oi_usd.shape[1]
    bigger = allocate_market(max(n, n_slots), max(v, n_venues))
    for name, new, old in zip(Market._fields, bigger, market, strict=True):
        if name in _PER_ASSET:
            new[:n] = old
        else:
            new[:n, ..., :v] = old
    return bigger


_PER_ASSET: Final = frozenset({"joined", "sum_first", "sum_expiry", "sum_total", "sum_level"})
"""``Market`` fields without a venue axis."""


@njit(cache=True, nogil=True)
def _join(m, i, v, ts):
    """Venue ``v`` reports on asset ``i`` at ``ts``: joined in order on first sight, newest time kept."""
    count = m.joined[i]
    known = False
    for k in range(count):
        if m.order[i, k] == v:
            known = True
            break
    if not known:
        m.order[i, count] = v
        m.joined[i] = count + 1
    if ts > m.ts_event[i, v]:
        m.ts_event[i, v] = ts


@njit(cache=True, nogil=True)
def _chained(m, i, which, v, value, ts, grace_ns, stale_ns):
    """Venue ``v``'s new ``value`` in chained sum ``which`` of asset ``i``; returns the level (see the module
    docstring). A venue silent for ``stale_ns`` leaves the sum, looked for once a second at most."""
    present, values, stamps = m.sum_present[i, which], m.sum_value[i, which], m.sum_ts[i, which]
    if m.sum_first[i, which] < 0:
        m.sum_first[i, which] = ts
    total, level = m.sum_total[i, which], m.sum_level[i, which]
    if ts >= m.sum_expiry[i, which]:
        n_present = 0
        for g in range(present.shape[0]):
            n_present += present[g]
        if n_present > 1:
            m.sum_expiry[i, which] = ts + _NS
            for g in range(present.shape[0]):
                if present[g] and g != v and ts - stamps[g] > stale_ns:
                    total -= values[g]
                    present[g] = False
    before = total
    if not present[v]:
        total += value  # a venue joining: the level does not move
    else:
        total += value - values[v]
        if level == before:  # no composition change so far: the level is the total, exactly
            level = total
        elif before > 0:
            level *= total / before
    present[v], values[v], stamps[v] = True, value, ts
    if ts - m.sum_first[i, which] <= grace_ns or level <= 0:
        level = total
    m.sum_total[i, which], m.sum_level[i, which] = total, level
    return level


@njit(cache=True, nogil=True)
def _weighted(m, i):
    """Open-interest-weighted funding (per 8 h) and premium (bps) of asset ``i``, over its venues in the order
    they joined. A venue whose open interest is not known yet weighs the mean of the known ones (all weigh
    alike before any is known)."""
    known_sum, known_n = 0.0, 0
    for k in range(m.joined[i]):
        v = m.order[i, k]
        oi = m.oi_usd[i, v]
        if math.isfinite(m.funding_8h[i, v]) and math.isfinite(oi) and oi > 0:
            known_sum += oi
            known_n += 1
    fill = known_sum / known_n if known_n else 1.0
    total = funding = priced_w = premium = 0.0
    priced = 0
    for k in range(m.joined[i]):
        v = m.order[i, k]
        if not math.isfinite(m.funding_8h[i, v]):
            continue
        oi = m.oi_usd[i, v]
        w = oi if math.isfinite(oi) and oi > 0 else fill
        total += w
        funding += w * m.funding_8h[i, v]
        if math.isfinite(m.premium_bps[i, v]):
            priced += 1
            priced_w += w
            premium += w * m.premium_bps[i, v]
    # No venue with a finite rate (this row's is not: the batch kernel refuses the row): nothing to weigh.
    return funding / total if total > 0 else math.nan, premium / priced_w if priced else math.nan


@njit(cache=True, nogil=True)
def _deepest_spread(m, i, own):
    """The spread of the deepest fresh book of asset ``i`` (first joined wins a tie): where size trades."""
    best, spread = -math.inf, own
    for k in range(m.joined[i]):
        v = m.order[i, k]
        depth = m.depth_usd[i, v]
        if math.isfinite(depth) and depth > best:
            best, spread = depth, m.spread_bps[i, v]
    return spread


@njit(cache=True, nogil=True)
def fold_market(m, kind, slot, venue, ts, v0, v1, v2, grace_ns, oi_stale_ns, depth_stale_ns):
    """Fold a segment's rows, in stream order, into ``m``; rows of open interest, funding and depth become the
    market's (columns as in ``detector.batch``). A market of one venue is that venue: its rows pass as they are."""
    for r in range(kind.shape[0]):
        k = kind[r]
        if k == TRADE:  # the hot path: nothing to fold
            continue
        i, v, t = slot[r], venue[r], ts[r]
        _join(m, i, v, t)
        if k == LIQ:
            if v2[r] > 0:
                m.liq_long_usd[i, v] += v1[r]
            else:
                m.liq_short_usd[i, v] += v1[r]
        elif k == OI:
            oi_usd = v0[r]
            m.oi_usd[i, v] = oi_usd
            level = _chained(m, i, SUM_OI, v, oi_usd, t, grace_ns, oi_stale_ns)
            if not (m.joined[i] == 1 and level == oi_usd):
                v1[r] = v1[r] * level / oi_usd if oi_usd > 0 else v1[r]
                v0[r] = level
        elif k == FUNDING:
            mark, index = v0[r], v1[r]
            m.funding_8h[i, v] = v2[r]
            m.premium_bps[i, v] = (mark / index - 1.0) * 1e4 if index > 0 else math.nan
            if m.joined[i] != 1:
                funding, premium = _weighted(m, i)
                index = index if index > 0 else mark
                premium = premium if math.isfinite(premium) else 0.0
                v0[r], v1[r], v2[r] = index * (1.0 + premium / 1e4), index, funding
        elif k == DEPTH:
            depth = v1[r]
            m.depth_usd[i, v], m.spread_bps[i, v] = depth, v2[r]
            level = _chained(m, i, SUM_DEPTH, v, depth, t, grace_ns, depth_stale_ns)
            if not (m.joined[i] == 1 and level == depth):
                v2[r] = _deepest_spread(m, i, v2[r])
                v1[r] = depth * (level / depth) if depth > 0 else depth


def venue_views(market: Market, slots: np.ndarray, names: Sequence[str], coverage: Callable[[str], str]
                ) -> list[dict[str, VenueView]]:
    """Per-venue detail of the assets in ``slots``, each by venue name (sorted); ``names[id]`` names venue
    ``id``. Hundreds of snapshots are built every second, so only the venues that joined are read out, in
    bulk, each column in one call."""
    counts = market.joined[slots]
    width = market.order.shape[1]
    # (row, position) of every joined venue, rows in ``slots`` order; within a row by venue name.
    row, pos = np.nonzero(np.arange(width) < counts[:, None])
    ids = market.order[slots[row], pos]
    rank = np.empty(len(names), np.int64)
    rank[np.argsort(np.array(names, dtype=str), kind="stable")] = np.arange(len(names))
    at = np.lexsort((rank[ids], row))
    row, ids = row[at], ids[at]
    asset, venue = slots[row], ids.tolist()
    known = [[x if -math.inf < x < math.inf else None for x in column[asset, ids].tolist()]
             for column in (market.oi_usd, market.funding_8h, market.premium_bps, market.depth_usd)]
    covers = [coverage(name) for name in names]
    views = list(map(VenueView, [covers[v] for v in venue], *known, market.liq_long_usd[asset, ids].tolist(),
                     market.liq_short_usd[asset, ids].tolist(), market.ts_event[asset, ids].tolist()))
    labels = [names[v] for v in venue]
    out: list[dict[str, VenueView]] = []
    start = 0
    for count in counts.tolist():
        end = start + count
        out.append(dict(zip(labels[start:end], views[start:end], strict=True)))
        start = end
    return out
