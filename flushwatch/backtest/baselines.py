"""The two simple alarms a user might run instead of flushwatch, over the same tape.

* ``fixed_usd_per_min``: liquidations of one side at or above a fixed USD per minute (the bucket's average
  per minute: hourly bars are judged on the hour's mean minute).
* ``liq_6x_baseline``: liquidations of one side per minute above ``ratio`` times their trailing mean over
  ``window_s`` before the bucket (floored at ``floor_usd_min``; judged only once a full window is known).

Alarmed buckets closer than ``merge_s`` merge into one alarm window, with its peak at its largest bucket; its
"stage" is 3 (it claims liquidations are hitting), so its windows are scored like stage-3 episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flushwatch.backtest.tape import Tape

ALARM_STAGE = 3


@dataclass(frozen=True)
class BaselineOptions:
    fixed_usd_per_min: float = 10_000_000.0
    ratio: float = 6.0
    window_s: float = 6 * 3600.0
    floor_usd_min: float = 10_000.0
    merge_s: float = 600.0


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """``out[i]`` = mean of ``x[i - window:i]`` (the ``window`` values before ``i``); NaN for ``i < window``."""
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] > window:
        csum = np.concatenate([[0.0], np.cumsum(x)])
        out[window:] = (csum[window:-1] - csum[:-window - 1]) / window
    return out


def alarm_runs(alarms: np.ndarray, merge_gap: int) -> list[tuple[int, int]]:
    """``(first, last)`` bucket of each run of true ``alarms``, runs fewer than ``merge_gap`` buckets apart
    merged."""
    hits = np.flatnonzero(alarms)
    if not hits.shape[0]:
        return []
    breaks = np.flatnonzero(np.diff(hits) > merge_gap)
    firsts = np.concatenate([[hits[0]], hits[breaks + 1]])
    lasts = np.concatenate([hits[breaks], [hits[-1]]])
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def _windows(tape: Tape, asset: str, side: str, alarms: np.ndarray,
             merge_s: float) -> list[Window]:
    times = tape.times_ns()
    res_ns = int(tape.res_s * 1e9)
    liq = tape.liq(side)
    out = []
    for first, last in alarm_runs(alarms, max(1, math.ceil(merge_s / tape.res_s))):
        peak = first + int(np.argmax(liq[first:last + 1]))
        out.append((asset, side, int(times[first]), int(times[peak]), int(times[last]) + res_ns, ALARM_STAGE))
    return out


Window = tuple[str, str, int, int, int, int]
"""``(asset, side, start_ns, peak_ns, end_ns, stage)`` of one alarm."""


def baseline_alarms(tape: Tape, asset: str, options: BaselineOptions) -> dict[str, list[Window]]:
    """Alarm windows ``(asset, side, start, peak, end, stage)`` of each baseline, both sides, in start order."""
    per_min = 60.0 / tape.res_s
    window = max(1, round(options.window_s / tape.res_s))
    out: dict[str, list[Window]] = {"fixed_usd_per_min": [], "liq_6x_baseline": []}
    for side in ("long", "short"):
        rate = tape.liq(side) * per_min
        base = np.maximum(trailing_mean(rate, window), options.floor_usd_min)
        out["fixed_usd_per_min"] += _windows(tape, asset, side, rate >= options.fixed_usd_per_min, options.merge_s)
        out["liq_6x_baseline"] += _windows(tape, asset, side, rate > options.ratio * base, options.merge_s)
    return {name: sorted(windows, key=lambda w: w[2]) for name, windows in out.items()}
