"""The order book on a log price grid: resting USD per level, the best bid at ``boundary`` and the asks
above it. Market orders walk it; makers and value traders move it toward a target profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flushwatch.simulator.model import SimConfig


def walk(depth: np.ndarray, boundary: int, usd: float) -> int:
    """Fill a market order of ``usd`` (+ buy, - sell) against the book from the best level outward and
    return the new boundary (the highest bid level). Fully consumed levels are emptied; the last one is
    filled partly."""
    if usd == 0.0:
        return boundary
    levels = depth[boundary::-1] if usd < 0 else depth[boundary + 1:]
    want = abs(usd)
    filled = np.cumsum(levels)
    k = min(int(np.searchsorted(filled, want, side="right")), len(levels) - 1)
    levels[k] = max(0.0, levels[k] - (want - (filled[k - 1] if k else 0.0)))
    levels[:k] = 0.0
    return boundary - k if usd < 0 else boundary + k


def relax(depth: np.ndarray, boundary: int, config: SimConfig, factor: float, fair: float) -> None:
    """Move the book around the boundary toward its target: the makers' profile times ``factor`` plus the
    value traders' resting orders, which grow with the distance beyond the fundamental (grid level
    ``fair``): bids below it, asks above it. Orders are cancelled fast and refilled slowly."""
    lo, aim = target(boundary, config, factor, fair)
    window = depth[lo:lo + len(aim)]
    rate = np.where(window < aim, 1.0 / config.refill_s, 1.0 / config.withdraw_s)
    window += (aim - window) * rate


def target(boundary: int, config: SimConfig, factor: float, fair: float, reach: int | None = None,
            ) -> tuple[int, np.ndarray]:
    """The book makers and value traders aim for within ``reach`` levels of the boundary (default: the
    window they tend), starting at the returned level."""
    reach = config.window_levels if reach is None else reach
    lo = boundary - reach + 1
    levels = np.arange(lo, boundary + reach + 1)
    distance = np.abs(levels - (boundary + 0.5)) - 0.5
    beyond = np.where(levels <= boundary, fair - levels, levels - fair) * config.level_bps * 1e-2  # in %
    return lo, factor * (config.level_usd * np.minimum(1.0 + distance / config.slope_levels, config.max_profile)
                         + config.value_usd_per_pct * np.maximum(beyond, 0.0))
