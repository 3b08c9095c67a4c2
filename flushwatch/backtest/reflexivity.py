"""The branching ratio of a liquidation timeline, window by window: how self-exciting the cascade was.

Input: binned liquidation counts, such as ``cascade_timing_results.json`` of the Hyperliquid 2025-10-10
reconstruction (``{"event_start": ISO, "timeline": [{"second": s, "liquidations": c}, ...]}``). A bin's
arrivals are spread evenly over the time to the next bin (at most ``MAX_BIN_S``): the data has no finer
timing, so the fit reads excitation between seconds, not within one. Each window is fitted on its own with
the detector's estimator (``detector.hawkes.fit_offsets``, the same kernel the live detector refits), with
the moment estimator beside it. Levels from a burst this violent sit near the clamp: compare windows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from detector.hawkes import fit_offsets

MAX_BIN_S: Final = 6.0
MOMENT_BIN_S: Final = 5.0
FIT_ITERS: Final = 200


def read_timeline(path: Path) -> tuple[dt.datetime, np.ndarray]:
    """The timeline's start and its arrival offsets in seconds (sorted)."""
    data = json.loads(path.read_text())
    start = dt.datetime.fromisoformat(data["event_start"])
    bins = sorted((float(b["second"]), int(b["liquidations"])) for b in data["timeline"])
    parts = []
    for k, (second, count) in enumerate(bins):
        nxt = bins[k + 1][0] if k + 1 < len(bins) else second + 1.0
        width = min(max(nxt - second, 1.0), MAX_BIN_S)
        parts.append(second + width * (np.arange(count) + 0.5) / max(count, 1))
    return start, np.concatenate(parts) if parts else np.empty(0)


def moment_branching(x: np.ndarray, lo: float, hi: float, bin_s: float = MOMENT_BIN_S) -> float:
    """``1 - sqrt(mean / var)`` of the counts in bins of ``bin_s`` over ``[lo, hi)``; NaN when var <= mean."""
    counts = np.histogram(x, bins=np.arange(lo, hi + bin_s / 2, bin_s))[0]
    mean, var = counts.mean(), counts.var()
    return float(1 - math.sqrt(mean / var)) if var > mean > 0 else math.nan


def branching_by_window(x: np.ndarray, windows: Sequence[tuple[str, float, float]], beta_min: float = 0.02,
                        beta_max: float = 2.0) -> list[dict[str, Any]]:
    """Per named window ``(name, lo, hi)`` in seconds from the start: arrivals, rate, fitted n, μ, β, moment n."""
    out = []
    for name, lo, hi in windows:
        inside = x[(x >= lo) & (x < hi)] - lo
        mu, n, beta, _ = fit_offsets(inside, hi - lo, beta_min, beta_max, FIT_ITERS)
        out.append({"window": name, "from_s": lo, "to_s": hi, "arrivals": int(inside.shape[0]),
                    "per_s": inside.shape[0] / (hi - lo), "branching": float(n), "mu_per_s": float(mu),
                    "decay_s": float(1 / beta) if beta > 0 else math.nan,
                    "branching_moment": moment_branching(inside, 0.0, hi - lo)})
    return out


def minute_windows(start: dt.datetime, x: np.ndarray,
                   minutes: Sequence[tuple[str, str]]) -> list[tuple[str, float, float]]:
    """Windows given as ``("HH:MM", "HH:MM")`` wall-clock UTC on the timeline's day, as offsets in seconds."""
    out = []
    for lo, hi in minutes:
        bounds = []
        for hhmm in (lo, hi):
            h, m = (int(v) for v in hhmm.split(":"))
            at = start.replace(hour=h, minute=m, second=0, microsecond=0)
            bounds.append(max((at - start).total_seconds(), 0.0))
        out.append((f"{lo}-{hi}", bounds[0], min(bounds[1], float(x.max()) + 1.0 if x.size else bounds[1])))
    return out
