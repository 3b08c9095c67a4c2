"""A local price-level book for venues that send a snapshot and then deltas (Bybit ``orderbook.200``,
Deribit ``book``, BitMEX ``orderBookL2``), reduced to the shared ``Depth`` bands after each update.

A delta before the first snapshot, a crossed result or a bad number leaves the book marked out of sync until
the next snapshot: the venue resends one on resubscribe, and a stale book must not be reported as liquidity.

Reading the depth must not cost a pass over the book: a venue pushes a delta of a few levels every 20-100 ms
to a book of up to 200 levels a side, and sorting and summing those levels on every push was most of a
collector's time. So each side keeps its prices sorted (a delta moves a few of them: bisect on a list) and
the notional of three rings, the levels between consecutive band edges as of the last read: a delta adds to
one ring, a read moves the edges past the few levels the mid has moved over, and the bands are sums of
rings. A thin side (few levels inside the widest band) is summed best first instead, as
``depth_from_levels`` sums it.

A ring's running sum is not the best-first sum: adding and removing levels rounds differently. Its rounding
error is bounded as it goes (each operation errs by at most half an ulp of its result) and the ring is
recounted best first once that bound could pass ``MAX_DRIFT`` of it, so a band never differs from the
best-first sum by more than about ``MAX_DRIFT`` relative, however long the book lives. Mid, spread and reach
are those of the best-first code, bit for bit.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from functools import reduce
from itertools import accumulate
from operator import add, mul
from typing import Final

from flushwatch.events import DepthBands, Edges, banded_depth, near_mid

Level = tuple[float, float]
Bands = tuple[float, float, float]

MAX_DRIFT: Final = 4e-13
"""Relative error of a running sum allowed before it is recounted: 10x under the 1e-12 that the bands of
a 200-level book may differ from the best-first sum, that sum's own rounding (up to 2.2e-14) included."""
SCAN_LEVELS: Final = 32
"""Up to this many levels inside the widest band, summing them is cheaper than keeping the rings (thin
books: options, a venue's top 20)."""
_ROUNDING: Final = 2.0**-53
_MASS_LIMIT: Final = MAX_DRIFT / _ROUNDING
_INF: Final = float("inf")
_EMPTY: Final = (0.0, 0.0, 0.0)


class BookSide:
    """The levels of one side: ``keys`` the signed prices (``sign * price``: the bids negated, so that
    ascending order is best first) and ``sizes`` theirs, in that order, and the notional of three rings.
    Ring ``i`` holds the levels with ``edges[i - 1] < key <= edges[i]``, the edges being the band limits of
    the last read (clipped to the last kept level), so that band ``i`` is the sum of rings ``0..i``.
    ``mass[i]`` sums the value of ring ``i`` after each rounding since its last recount: the ring errs by at
    most ``mass[i]`` half-ulps.

    Mapping-like for BitMEX's parser, which edits levels one by one: ``side[price] = size``, ``pop``, ``len``.
    """

    __slots__ = ("edges", "keys", "mass", "sign", "sizes", "sums")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.sizes: list[float] = []
        # Everything in ring 0 until the first read: a snapshot then sums best first, as the reference does.
        self.edges = [_INF, _INF, _INF]
        self.sums = [0.0, 0.0, 0.0]
        self.mass = [0.0, 0.0, 0.0]

    def __len__(self) -> int:
        return len(self.keys)

    def merge(self, levels: Iterable[Level], checked: bool = False) -> bool:
        """Apply ``(price, size)`` levels, size 0 deleting; False at the first bad level (the levels before
        it stay applied: the caller drops the book). ``checked``: the caller has checked every level as this
        would (a positive finite price, a finite size not below 0), so they are not checked again."""
        if not levels:  # one side of most deltas
            return True
        keys, sizes, sign, sums, mass = self.keys, self.sizes, self.sign, self.sums, self.mass
        e0, e1, e2 = self.edges
        s0, s1, s2 = sums
        m0, m1, m2 = mass
        good, count = True, len(keys)
        for price, size in levels:
            if not (checked or (0.0 < price < _INF and 0.0 <= size < _INF)):
                good = False
                break
            key = sign * price
            at = bisect_left(keys, key)
            if at < count and keys[at] == key:
                old = sizes[at]
                if size:
                    sizes[at] = size
                    change = price * size - price * old  # rounds too: booked below with the sum before
                else:
                    del keys[at], sizes[at]
                    count -= 1
                    change = -(price * old)
            elif size:
                keys.insert(at, key)
                sizes.insert(at, size)
                count += 1
                change = price * size
            else:
                continue
            if key <= e0:
                m0 += s0
                s0 += change
                m0 += s0
            elif key <= e1:
                m1 += s1
                s1 += change
                m1 += s1
            elif key <= e2:
                m2 += s2
                s2 += change
                m2 += s2
        sums[0], sums[1], sums[2] = s0, s1, s2
        mass[0], mass[1], mass[2] = m0, m1, m2
        return good

    def __setitem__(self, price: float, size: float) -> None:
        """Set a level as given, unchecked, as a dict would (BitMEX's parser edits levels by id)."""
        self.pop(price)
        key = self.sign * price
        at = bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.sizes.insert(at, size)
        self._add(key, price * size)

    def pop(self, price: float, default: float | None = None) -> float | None:
        key = self.sign * price
        keys = self.keys
        at = bisect_left(keys, key)
        if at == len(keys) or keys[at] != key:
            return default
        old = self.sizes[at]
        del keys[at], self.sizes[at]
        self._add(key, -(price * old))
        return old

    def _add(self, key: float, notional: float) -> None:
        edges = self.edges
        if key <= edges[2]:
            ring = 0 if key <= edges[0] else 1 if key <= edges[1] else 2
            self.sums[ring] += notional
            self.mass[ring] += self.sums[ring]

    def bands(self, limits: Edges, kept: int) -> Bands:
        """Notional of the best ``kept`` levels within each band limit (prices, narrowest first)."""
        keys, sign = self.keys, self.sign
        widest = bisect_right(keys, sign * limits[2], 0, kept)
        if widest <= SCAN_LEVELS:
            if not widest:  # an option's book: often no level near mid
                return _EMPTY
            # Few levels: summed best first, as the reference does. Signed notional: the bids' sums come out
            # negated, exactly (rounding is symmetric).
            inner = bisect_right(keys, sign * limits[0], 0, widest)
            middle = bisect_right(keys, sign * limits[1], inner, widest)
            sums = list(accumulate(map(mul, keys[:widest], self.sizes[:widest])))
            return (sign * sums[inner - 1] if inner else 0.0, sign * sums[middle - 1] if middle else 0.0,
                    sign * sums[-1])
        # Many levels: the rings, after moving their edges to the limits clipped to the worst kept level. Few
        # levels change ring, as the mid moves a few ticks between reads.
        worst = keys[kept - 1]
        edges, sums, mass = self.edges, self.sums, self.mass
        t0 = sign * limits[0]
        if t0 >= worst:  # the whole side inside the narrowest band: rings 1 and 2 stay empty
            e0, e2 = edges[0], edges[2]
            if e0 == e2 != worst:  # and were: the levels between the old and the new worst pass to or from ring 0
                was, now = bisect_right(keys, e0), bisect_right(keys, worst)
                if was < now:
                    self._pass(0, self._sum(was, now), now - was)
                elif now < was:
                    self._pass(0, -self._sum(now, was), was - now)
                edges[:] = worst, worst, worst
            elif e0 != worst or e2 != worst:
                self._move([worst, worst, worst])
        else:
            t1, t2 = sign * limits[1], sign * limits[2]
            targets = [t0 if t0 < worst else worst, t1 if t1 < worst else worst, t2 if t2 < worst else worst]
            if targets != edges:
                self._move(targets)
        s0, s1, s2 = sums
        if not (mass[0] <= s0 * _MASS_LIMIT < _INF and mass[1] <= s1 * _MASS_LIMIT < _INF
                and mass[2] <= s2 * _MASS_LIMIT < _INF):  # recounted when inf or nan too
            for ring in (0, 1, 2):
                if not mass[ring] <= sums[ring] * _MASS_LIMIT < _INF:
                    self._recount(ring)
            s0, s1, s2 = sums
        return s0, s0 + s1, s0 + s1 + s2

    def _move(self, targets: list[float]) -> None:
        """Move the edges to ``targets``, each level that changes ring straight from the old to the new one.

        Between two consecutive edges, old or new, all levels share their old ring and their new ring: the
        number of edges below them (3 = no ring)."""
        keys, edges = self.keys, self.edges
        e0, e1, e2 = edges
        t0, t1, t2 = targets
        points = sorted({e0, e1, e2, t0, t1, t2})
        hi = bisect_right(keys, points[0])
        for top in points[1:]:
            lo, hi = hi, bisect_right(keys, top)
            if lo == hi:
                continue
            old, new = (top > e0) + (top > e1) + (top > e2), (top > t0) + (top > t1) + (top > t2)
            if old == new:
                continue
            passed = self._sum(lo, hi)
            if old < 3:
                self._pass(old, -passed, hi - lo)
            if new < 3:
                self._pass(new, passed, hi - lo)
        edges[:] = targets

    def _pass(self, ring: int, change: float, levels: int) -> None:
        """Add ``change``, the sum of as many ``levels``, to a ring. That sum errs by ``levels - 1`` half-ulps
        of it at most: booked with the addition as ``levels`` of the larger ring value."""
        before = self.sums[ring]
        after = self.sums[ring] = before + change
        self.mass[ring] += levels * (before if before > after else after)

    def _recount(self, i: int) -> None:
        keys, edges = self.keys, self.edges
        lo = bisect_right(keys, edges[i - 1]) if i else 0
        hi = bisect_right(keys, edges[i])
        self.sums[i] = self._sum(lo, hi)
        self.mass[i] = (hi - lo) * self.sums[i]

    def _sum(self, lo: int, hi: int) -> float:
        """Notional of levels ``lo..hi`` (best first), summed best first (a sign flip is exact: the bids'
        sum is that of their prices)."""
        return self.sign * reduce(add, map(mul, self.keys[lo:hi], self.sizes[lo:hi]), 0.0)


class Book:
    __slots__ = ("_asks", "_best", "_bids", "_near", "keep", "synced")

    def __init__(self, keep: int = 200) -> None:
        self._bids = BookSide(-1.0)
        self._asks = BookSide(1.0)
        self.synced = False
        self.keep = keep
        """Levels per side used for the bands; venues send at most this many anyway."""
        # near_mid of the best prices at the last read: most deltas leave them as they were.
        self._best = (0.0, 0.0)
        self._near: tuple[float, float, Edges, Edges] | None = None

    @property
    def bids(self) -> BookSide:
        return self._bids

    @bids.setter
    def bids(self, levels: Mapping[float, float]) -> None:
        self._bids = _side(-1.0, levels)

    @property
    def asks(self) -> BookSide:
        return self._asks

    @asks.setter
    def asks(self, levels: Mapping[float, float]) -> None:
        self._asks = _side(1.0, levels)

    def snapshot(self, bids: Iterable[Level], asks: Iterable[Level], checked: bool = False) -> bool:
        """Replace the book; False (and out of sync) if any level is bad (``checked``: as ``BookSide.merge``)."""
        self._bids, self._asks = BookSide(-1.0), BookSide(1.0)
        self.synced = self._bids.merge(bids, checked) and self._asks.merge(asks, checked)
        return self.synced

    def update(self, bids: Iterable[Level], asks: Iterable[Level], checked: bool = False) -> bool:
        """Apply a delta (size 0 deletes the level); False if out of sync or any level is bad (``checked``: as
        ``BookSide.merge``)."""
        if not self.synced:
            return False
        self.synced = self._bids.merge(bids, checked) and self._asks.merge(asks, checked)
        return self.synced

    def depth(self) -> DepthBands | None:
        """``depth_from_levels`` of the best ``keep`` levels; ``None`` when empty, one-sided or crossed."""
        bids, asks, keep = self._bids, self._asks, self.keep
        bid_keys, ask_keys = bids.keys, asks.keys
        if not (self.synced and bid_keys and ask_keys and keep > 0):
            return None
        best = bid_keys[0], ask_keys[0]
        if best == self._best:
            near = self._near
        else:
            near = self._near = near_mid(-best[0], best[1])
            self._best = best
        if near is None:
            return None
        mid, spread_bps, bid_edges, ask_edges = near
        bid_kept, ask_kept = len(bid_keys), len(ask_keys)
        bid_kept, ask_kept = bid_kept if bid_kept < keep else keep, ask_kept if ask_kept < keep else keep
        return banded_depth(mid, spread_bps, bids.bands(bid_edges, bid_kept), asks.bands(ask_edges, ask_kept),
                            -bid_keys[bid_kept - 1], ask_keys[ask_kept - 1])


def _side(sign: float, levels: Mapping[float, float]) -> BookSide:
    side = BookSide(sign)
    for price, size in levels.items():
        side[price] = size
    return side
