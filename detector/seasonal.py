"""Hour-of-week baselines: what liquidations, depth, spread and volume usually are at this hour of the week.

Crypto trades around the clock but not evenly: weekends carry less volume and thinner books, the US open
more of everything. A burst is judged against the usual level of its hour of the week as well as against
the last hours, so a quiet Sunday does not make an ordinary Monday open look like a cascade.

Per slot and series, ``SEASON_HOURS`` buckets hold a streaming estimate of the median of the hourly values
seen in that bucket, in log space (levels span orders of magnitude): a Robbins-Monro step towards each new
value, ``step = max(1/n, SEASON_MIN_STEP)`` times a running mean absolute deviation, so the first weeks
converge fast and later weeks keep adapting. Hourly values: per-minute means for flows (liquidations by
side, volume) and plain means for levels (depth, spread), accumulated as events arrive and folded in when
the slot's clock enters a later hour. An hour the slot saw nothing of is not a sample.

The arrays are plain NumPy so the engine can persist them (``detector.engine``) and a restart, or a
backtest over recent history, warms them.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from detector.state import with_rows_of

SEASON_HOURS: Final = 168
S_LIQ_LONG, S_LIQ_SHORT, S_DEPTH, S_SPREAD, S_VOLUME = range(5)
SERIES: Final = ("liq_long_usd_min", "liq_short_usd_min", "depth1_usd", "spread_bps", "volume_usd_min")
N_SERIES: Final = len(SERIES)
_FLOWS: Final = (S_LIQ_LONG, S_LIQ_SHORT, S_VOLUME)
SEASON_MIN_STEP: Final = 0.05
LOG_FLOOR: Final = 1.0  # log(1 + x): an hour without liquidations is a real, low value


class SeasonState(NamedTuple):
    median: np.ndarray  # (n, N_SERIES, 168) log1p of the estimated median, NaN before the first sample
    spread: np.ndarray  # (n, N_SERIES, 168) running mean absolute deviation (log space)
    count: np.ndarray  # type: ignore[assignment]  # (n, N_SERIES, 168) samples folded in; hides tuple.count
    hour: np.ndarray  # (n,) absolute hour being accumulated, -1 before the first
    acc_sum: np.ndarray  # (n, N_SERIES) sum of this hour's values
    acc_n: np.ndarray  # (n, N_SERIES) how many level samples (flows: unused, the divisor is 60 minutes)
    seen: np.ndarray  # (n,) 1 once the current hour saw an event


def allocate_season(n_slots: int) -> SeasonState:
    shape = (n_slots, N_SERIES, SEASON_HOURS)
    return SeasonState(
        median=np.full(shape, np.nan),
        spread=np.zeros(shape),
        count=np.zeros(shape, np.int64),
        hour=np.full(n_slots, -1, np.int64),
        acc_sum=np.zeros((n_slots, N_SERIES)),
        acc_n=np.zeros((n_slots, N_SERIES)),
        seen=np.zeros(n_slots, np.int8),
    )


@njit(cache=True, nogil=True)
def hour_of_week(hour):
    """Monday 00:00 UTC is bucket 0 (the epoch began on a Thursday, 72 hours into its week)."""
    return (hour + 72) % SEASON_HOURS


@njit(cache=True, nogil=True)
def season_fold(median, spread, count, i, k, b, value):
    """One hourly ``value`` into bucket ``b`` of series ``k``: a step towards it by the running deviation."""
    x = math.log1p(max(value, 0.0) / LOG_FLOOR)
    n = count[i, k, b]
    m = median[i, k, b]
    if n == 0 or math.isnan(m):
        median[i, k, b] = x
        spread[i, k, b] = 0.0
    else:
        dev = abs(x - m)
        spread[i, k, b] += (dev - spread[i, k, b]) / min(n + 1, 8)
        step = max(1.0 / (n + 1), SEASON_MIN_STEP) * max(spread[i, k, b], 1e-3)
        if x > m:
            median[i, k, b] = min(m + step, x)
        elif x < m:
            median[i, k, b] = max(m - step, x)
    count[i, k, b] = n + 1


@njit(cache=True, nogil=True)
def _close_hour(median, spread, count, hour, acc_sum, acc_n, seen, i):
    b = hour_of_week(hour[i])
    if seen[i]:
        for k in range(N_SERIES):
            if k in _FLOWS:
                season_fold(median, spread, count, i, k, b, acc_sum[i, k] / 60.0)
            elif acc_n[i, k] > 0:
                season_fold(median, spread, count, i, k, b, acc_sum[i, k] / acc_n[i, k])
    acc_sum[i, :] = 0.0
    acc_n[i, :] = 0.0
    seen[i] = 0


@njit(cache=True, nogil=True)
def season_add(median, spread, count, hour, acc_sum, acc_n, seen, i, t, k, value):
    """Account ``value`` of series ``k`` at event time ``t`` (flows: USD of one event; levels: one sample).
    Events of an hour already folded in are late: they are dropped rather than reopen it. Takes the
    ``SeasonState`` arrays in order (``season_add(*state, ...)``): arrays read through a tuple inside a hot
    loop cost a reference-count round trip each."""
    h = math.floor(t / 3600.0)
    if h < hour[i]:
        return
    if h > hour[i]:
        if hour[i] >= 0:
            _close_hour(median, spread, count, hour, acc_sum, acc_n, seen, i)
        hour[i] = h
    seen[i] = 1
    acc_sum[i, k] += value
    if k not in _FLOWS:
        acc_n[i, k] += 1.0


@njit(cache=True, nogil=True)
def season_value(median, count, i, t, k, min_weeks):
    """The usual level of series ``k`` at the hour of week of ``t`` (NaN until ``min_weeks`` samples), from a
    ``SeasonState``'s ``median`` and ``count``."""
    b = hour_of_week(math.floor(t / 3600.0))
    if count[i, k, b] < min_weeks:
        return math.nan
    return math.expm1(median[i, k, b]) * LOG_FLOOR


def grow_season(st: SeasonState, n_slots: int) -> SeasonState:
    return with_rows_of(st, allocate_season(n_slots))
