"""A local price-level book for venues that send a snapshot and then deltas (Bybit ``orderbook.50``,
Deribit ``book``), reduced to the shared ``Depth`` bands after each update.

Levels are kept in dicts (price -> size); levels are sorted only when depth is
read, which happens once per message. A delta before the first snapshot, a crossed result or a bad
number leaves the book marked out of sync until the next snapshot: the venue resends one on resubscribe,
and a stale book must not be reported as liquidity.
"""

from __future__ import annotations

from collections.abc import Iterable

from flushwatch.events import depth_from_levels

Level = tuple[float, float]
DepthBands = tuple[float, float, tuple[float, float, float], tuple[float, float, float], float]


class Book:
    __slots__ = ("asks", "bids", "keep", "synced")

    def __init__(self, keep: int = 200) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.synced = False
        self.keep = keep
        """Levels per side used for the bands; venues send at most this many anyway."""

    def snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Replace the book; False (and out of sync) if any level is bad."""
        self.bids, self.asks = {}, {}
        self.synced = _merge(self.bids, bids) and _merge(self.asks, asks)
        return self.synced

    def update(self, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Apply a delta (size 0 deletes the level); False if out of sync or any level is bad."""
        if not self.synced:
            return False
        self.synced = _merge(self.bids, bids) and _merge(self.asks, asks)
        return self.synced

    def depth(self) -> DepthBands | None:
        """``depth_from_levels`` of the best ``keep`` levels; ``None`` when empty, one-sided or crossed."""
        if not self.synced:
            return None
        # A full sort beats heapq.nlargest for books of tens to hundreds of levels.
        bids = sorted(self.bids.items(), reverse=True)[: self.keep]
        asks = sorted(self.asks.items())[: self.keep]
        return depth_from_levels(bids, asks)


def _merge(side: dict[float, float], levels: Iterable[Level]) -> bool:
    for price, size in levels:
        if not (0.0 < price < float("inf") and 0.0 <= size < float("inf")):
            return False
        if size == 0.0:
            side.pop(price, None)
        else:
            side[price] = size
    return True
