"""Liquidation-fuel map: an ESTIMATE of the notional of leveraged positions whose liquidation price lies near
the current price, below it (longs) and above it (shorts), per slot. Formula only, not observed positions.

Model. Open interest rising by dOI at price P opens dOI of longs and dOI of shorts; the leveraged speculator
is the aggressor, so longs count dOI·b and shorts dOI·(1 − b), b the taker-buy share. Each is spread over
leverage classes ``lev[k]`` (shares ``weight[k]``) and lands at its liquidation price, P·(1 − 1/L + mmr) for
longs and P·(1 + 1/L − mmr) for shorts, on a log-price grid (absolute bucket ``floor(ln(price) / width)``).
Open interest falling closes both maps pro rata (sells close longs: |dOI|·(1 − b), buys shorts: |dOI|·b);
price trading through a bucket sweeps it; realised liquidations first account for the fuel swept with them
(a calibration window: realised / estimated feeds ``calib_ratio``) and only what the sweep does not explain
takes the fuel nearest the price; the rest decays with a half-life. Every USD that leaves a map is booked in
``ledger`` under its reason, so added = present + swept + closed + liquidated + decayed + dropped.

Layout. Each map keeps a window of B buckets per slot, column j holding absolute bucket ``k_lo[slot, side] + j``.
Long fuel only lies below the price (above it, it has been swept) and short fuel above, so the long window
keeps the price near its top and the short window near its bottom: 512 buckets of 0.25 % reach 2x longs
(-50 %) and shorts (+50 %). A window re-anchors when the price strays B/8 buckets from its place; fuel
falling off is booked as dropped. Kernels return ``APPLIED`` or the reason an input was refused (nothing
changed). Decay is lazy: ``fuel_decay`` brings a slot from its previous call to ``t`` in one step, fuel added
in between included (an error of the call interval over the half-life).
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from detector.state import LONG, SHORT, with_rows_of
from detector.sums import interleaved_sum

BANDS: Final = (0.01, 0.02, 0.05, 0.10)
"""The bands of ``fuel_query``: fuel within this fraction below / above the price."""

DEFAULT_LEVERAGE: Final = np.array([2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 50.0])
DEFAULT_WEIGHT: Final = np.array([0.18, 0.18, 0.30, 0.18, 0.08, 0.05, 0.03])
"""Measured on-chain positions sit mostly below 10x (Hyperliquid, Dec 2025: 36 % at 0-3x, 48 % at 3-7x,
16 % above), not at the 25-100x most public heatmaps assume."""

MAX_USD: Final = 1e15
MIN_ESTIMATE_USD: Final = 0.01
"""Larger amounts are refused: no open interest comes near it (BTC's is ~1e11), and sums stay finite."""

OUTCOMES: Final[tuple[str, ...]] = ("applied", "bad_slot", "bad_time", "bad_value", "bad_param")
APPLIED, REJ_SLOT, REJ_TIME, REJ_VALUE, REJ_PARAM = range(len(OUTCOMES))

LEDGER_NAMES: Final[tuple[str, ...]] = ("added", "swept", "closed", "liquidated", "decayed", "dropped")
"""Cumulative USD per slot and side (``ledger[slot, side, L_*]``): what entered the map and why it left."""
L_ADDED, L_SWEPT, L_CLOSED, L_LIQUIDATED, L_DECAYED, L_DROPPED = range(len(LEDGER_NAMES))
N_LEDGER: Final = len(LEDGER_NAMES)

_INF: Final = math.inf
_NAN: Final = math.nan
_EXACT_INT: Final = 2.0**52  # bucket indices beyond this are no longer exact in float64


class FuelState(NamedTuple):
    long_fuel: np.ndarray  # (n, B) USD of long positions by liquidation-price bucket
    short_fuel: np.ndarray  # (n, B)
    k_lo: np.ndarray  # (n, 2) absolute bucket of column 0, per map
    width: np.ndarray  # (n,) log-price width of a bucket, NaN until the first OI update lays the grid
    t_decay: np.ndarray  # (n,) time the maps are decayed to, -inf before the first decay
    ledger: np.ndarray  # (n, 2, N_LEDGER)
    sweep_t: np.ndarray  # (n, 2) time of the latest sweep, NaN before the first
    sweep_usd: np.ndarray  # (n, 2) estimated USD of the latest sweep
    sweeps: np.ndarray  # (n, 2) number of sweeps
    liq_pending: np.ndarray  # (n, 2) realised liquidations since the latest trade range, outside a window:
    # the next range decides whether a sweep explains them
    calib_until: np.ndarray  # (n, 2) end of the open calibration window
    calib_est: np.ndarray  # (n, 2) estimated USD swept in the open window, 0: none open
    calib_real: np.ndarray  # (n, 2) realised liquidation USD in the open window
    calib_est_total: np.ndarray  # (n, 2) the same over the windows scored, decayed with the maps
    calib_real_total: np.ndarray
    calib_ratio: np.ndarray  # (n, 2) calib_real_total / calib_est_total, NaN before the first window closes
    calib_sweeps: np.ndarray  # (n, 2) windows scored


def allocate_fuel(n_slots: int, buckets: int = 512) -> FuelState:
    """A fresh state for ``n_slots`` assets, each map a window of ``buckets`` buckets."""
    if buckets < 8:
        raise ValueError(f"a fuel map needs at least 8 buckets, not {buckets}")
    shape = (n_slots, 2)
    return FuelState(
        long_fuel=np.zeros((n_slots, buckets)),
        short_fuel=np.zeros((n_slots, buckets)),
        k_lo=np.zeros(shape, np.int64),
        width=np.full(n_slots, np.nan),
        t_decay=np.full(n_slots, -np.inf),
        ledger=np.zeros((n_slots, 2, N_LEDGER)),
        sweep_t=np.full(shape, np.nan),
        sweep_usd=np.zeros(shape),
        sweeps=np.zeros(shape, np.int64),
        liq_pending=np.zeros(shape),
        calib_until=np.full(shape, np.nan),
        calib_est=np.zeros(shape),
        calib_real=np.zeros(shape),
        calib_est_total=np.zeros(shape),
        calib_real_total=np.zeros(shape),
        calib_ratio=np.full(shape, np.nan),
        calib_sweeps=np.zeros(shape, np.int64),
    )


def grow_fuel(state: FuelState, n_slots: int) -> FuelState:
    """A state for ``n_slots`` (at least as many as ``state`` has) holding the rows of ``state``."""
    return with_rows_of(state, allocate_fuel(n_slots, state.long_fuel.shape[1]))


# --- grid ----------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _map(state, side):
    return state.long_fuel if side == LONG else state.short_fuel


@njit(cache=True, nogil=True)
def _slack(b):
    """How far (buckets) the price may stray from its place before the window follows."""
    return b // 8


@njit(cache=True, nogil=True)
def _target(side, b):
    """Where the price sits in a window: near the top of the long one, near the bottom of the short one."""
    return b - 1 - _slack(b) if side == LONG else _slack(b)


@njit(cache=True, nogil=True)
def _offset(price, w, k_lo, b):
    """Column of the bucket of ``price`` (> 0, not NaN), clamped to -1 (below the window) .. b (above it)."""
    f = np.floor(math.log(price) / w) - k_lo
    return int(min(max(f, -1.0), float(b)))


@njit(cache=True, nogil=True)
def _shift(row, d):
    """Move the window up by ``d`` buckets (down when negative); returns the USD that fell off."""
    b = row.shape[0]
    lost = 0.0
    if abs(d) >= b:
        lost = row.sum()
        row[:] = 0.0
    elif d > 0:
        lost = row[:d].sum()
        for j in range(b - d):
            row[j] = row[j + d]
        row[b - d :] = 0.0
    elif d < 0:
        lost = row[b + d :].sum()
        for j in range(b - 1, -d - 1, -1):
            row[j] = row[j + d]
        row[:-d] = 0.0
    return lost


@njit(cache=True, nogil=True)
def _anchor(state, i, side, kp):
    """Re-anchor a window whose price bucket ``kp`` strayed more than B/8 buckets from its place: shifting
    on every tick would cost O(B) per update."""
    row = _map(state, side)[i]
    b = row.shape[0]
    d = kp - _target(side, b) - state.k_lo[i, side]
    if abs(d) > _slack(b):
        state.k_lo[i, side] += d
        state.ledger[i, side, L_DROPPED] += _shift(row, d)


@njit(cache=True, nogil=True)
def _scale(row, keep, total):
    """Multiply a map row holding ``total`` USD by ``keep`` (0..1); returns the USD removed."""
    row *= keep
    return total * (1.0 - keep)


# --- realised liquidations and calibration ---------------------------------------------------------------


@njit(cache=True, nogil=True)
def _take_nearest(state, i, side, usd):
    """Remove ``usd`` of fuel nearest the price (the top of the long map, the bottom of the short one): the
    positions liquidated beyond what the map had swept. Booked as liquidated, clipped at what there is."""
    row = _map(state, side)[i]
    b = row.shape[0]
    left = usd
    for n in range(b):
        if left <= 0.0:
            break
        j = b - 1 - n if side == LONG else n
        take = min(row[j], left)
        row[j] -= take
        left -= take
    state.ledger[i, side, L_LIQUIDATED] += usd - left


@njit(cache=True, nogil=True)
def _window_due(calib_est, calib_until, i, side, t):
    """Whether the side's calibration window is open and ``t`` has reached its end."""
    return calib_est[i, side] > 0.0 and t >= calib_until[i, side]


@njit(cache=True, nogil=True)
def _expire(state, i, side, t):
    """Score the open calibration window once ``t`` has reached its end; liquidations beyond its estimate
    were positions the map did not have where price went, so they take the nearest fuel left."""
    est = state.calib_est[i, side]
    if _window_due(state.calib_est, state.calib_until, i, side, t):
        real = state.calib_real[i, side]
        state.calib_est_total[i, side] += est
        state.calib_real_total[i, side] += real
        # an estimate of less than a cent is no estimate: the ratio of such dust is not a calibration
        total = state.calib_est_total[i, side]
        state.calib_ratio[i, side] = state.calib_real_total[i, side] / total if total >= MIN_ESTIMATE_USD else _NAN
        state.calib_sweeps[i, side] += 1
        state.calib_est[i, side] = 0.0
        state.calib_real[i, side] = 0.0
        if real > est:
            _take_nearest(state, i, side, real - est)


@njit(cache=True, nogil=True)
def _open_window(state, i, side, t, swept, window_s):
    """Count a sweep into the open window (extending it), or open one: the liquidations reported since the
    previous trade range may belong to this sweep, since it happened somewhere in that range."""
    if state.calib_est[i, side] > 0.0:
        state.calib_est[i, side] += swept
    else:
        state.calib_est[i, side] = swept
        state.calib_real[i, side] = state.liq_pending[i, side]
    state.calib_until[i, side] = t + window_s


# --- kernels ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _weight_sum(lev, weight):
    """Sum of the leverage weights, or -1 when a class is invalid (leverage not above 1x, weight negative)."""
    if lev.shape[0] != weight.shape[0]:
        return -1.0
    total = 0.0
    for k in range(lev.shape[0]):
        if not (1.0 < lev[k] < _INF and 0.0 <= weight[k] < _INF):
            return -1.0
        total += weight[k]
    return total


@njit(cache=True, nogil=True)
def _deposit(row, k_lo, price, usd, sign, lev, weight, wsum, mmr, w):
    """Spread ``usd`` over the leverage classes at their liquidation prices (``sign`` -1 long, +1 short);
    returns the USD that fell outside the window."""
    b = row.shape[0]
    dropped = 0.0
    for k in range(lev.shape[0]):
        x = usd * weight[k] / wsum
        j = _offset(price * (1.0 + sign * (1.0 / lev[k] - mmr)), w, k_lo, b)
        if 0 <= j < b:
            row[j] += x
        else:
            dropped += x
    return dropped


@njit(cache=True, nogil=True)
def fuel_oi(state, i, t, price, d_oi_usd, buy_share, lev, weight, mmr, width):
    """Open interest changed by ``d_oi_usd`` at ``price``, the taker-buy share being ``buy_share`` (NaN:
    0.5). The first update of a slot lays its grid with ``width``; a later one with another width is
    refused (the grid would have to be rebuilt)."""
    if not 0 <= i < state.width.shape[0]:
        return REJ_SLOT
    if not 0.0 < t < _INF:
        return REJ_TIME
    if not (0.0 < price < _INF and abs(d_oi_usd) <= MAX_USD and (buy_share != buy_share or 0.0 <= buy_share <= 1.0)):
        return REJ_VALUE
    wsum = _weight_sum(lev, weight)
    known = state.width[i] == state.width[i]
    if not (wsum > 0.0 and 0.0 <= mmr < 1.0 and 0.0 < width < 1.0) or (known and width != state.width[i]):
        return REJ_PARAM
    x = math.log(price) / width
    if not abs(x) < _EXACT_INT:
        return REJ_VALUE
    kp = math.floor(x)
    if not known:
        state.width[i] = width
        for side in range(2):
            state.k_lo[i, side] = kp - _target(side, state.long_fuel.shape[1])
    if state.t_decay[i] == -_INF:
        state.t_decay[i] = t
    b = 0.5 if buy_share != buy_share else buy_share
    for side in range(2):
        _anchor(state, i, side, kp)
        row = _map(state, side)[i]
        share = b if side == LONG else 1.0 - b  # of new positions; the other side's aggressors close them
        if d_oi_usd > 0.0:
            usd = d_oi_usd * share
            state.ledger[i, side, L_ADDED] += usd
            state.ledger[i, side, L_DROPPED] += _deposit(
                row, state.k_lo[i, side], price, usd, 2 * side - 1, lev, weight, wsum, mmr, width
            )
        elif d_oi_usd < 0.0:
            total = interleaved_sum(row, 0, row.shape[0])
            if total > 0.0:
                state.ledger[i, side, L_CLOSED] += _scale(row, 1.0 - min(1.0, -d_oi_usd * (1.0 - share) / total), total)
    return APPLIED


@njit(cache=True, nogil=True)
def fuel_trade_range(state, i, t, lo, hi, calib_window_s):
    """Price traded over ``[lo, hi]`` since the previous call: long buckets at or above ``lo`` and short
    buckets at or below ``hi`` are swept, and each side that lost fuel opens (or extends) a calibration
    window of ``calib_window_s``."""
    if not 0 <= i < state.width.shape[0]:
        return REJ_SLOT
    if not 0.0 < t < _INF:
        return REJ_TIME
    if not 0.0 < lo <= hi < _INF:
        return REJ_VALUE
    if not 0.0 < calib_window_s < _INF:
        return REJ_PARAM
    w = state.width[i]
    for side in range(2):
        _expire(state, i, side, t)
        row = _map(state, side)[i]
        b = row.shape[0]
        swept = 0.0
        if w == w:
            if side == LONG:
                first, last = max(_offset(lo, w, state.k_lo[i, side], b), 0), b - 1
            else:
                first, last = 0, min(_offset(hi, w, state.k_lo[i, side], b), b - 1)
            for j in range(first, last + 1):
                swept += row[j]
                row[j] = 0.0
        if swept > 0.0:
            state.ledger[i, side, L_SWEPT] += swept
            state.sweep_t[i, side] = t
            state.sweep_usd[i, side] = swept
            state.sweeps[i, side] += 1
            _open_window(state, i, side, t, swept, calib_window_s)
        elif state.liq_pending[i, side] > 0.0:
            _take_nearest(state, i, side, state.liq_pending[i, side])
        state.liq_pending[i, side] = 0.0
    return APPLIED


@njit(cache=True, nogil=True)
def fuel_liquidation(state, i, t, side, usd):
    """``usd`` of ``side`` positions were liquidated. Inside a calibration window it counts against the
    window's sweeps; otherwise it waits for the next trade range, which either swept fuel (the liquidations
    were that fuel: they open its window) or did not (they take the fuel nearest the price). Removing fuel
    at once would remove swept fuel twice and hide, in calibration, a map with too little fuel."""
    if not 0 <= i < state.width.shape[0]:
        return REJ_SLOT
    if not 0.0 < t < _INF:
        return REJ_TIME
    if not ((side == 0 or side == 1) and 0.0 <= usd <= MAX_USD):
        return REJ_VALUE
    _expire(state, i, side, t)
    if state.calib_est[i, side] > 0.0:
        state.calib_real[i, side] += usd
    else:
        state.liq_pending[i, side] += usd
    return APPLIED


@njit(cache=True, nogil=True)
def fuel_decay(state, i, t, half_life_s):
    """Decay the slot's fuel (and its calibration totals, so calibration follows the same memory) from the
    previous call to ``t``, and score calibration windows that have ended. An earlier ``t`` decays nothing."""
    if not 0 <= i < state.width.shape[0]:
        return REJ_SLOT
    if not 0.0 < t < _INF:
        return REJ_TIME
    if not 0.0 < half_life_s < _INF:
        return REJ_PARAM
    last = state.t_decay[i]
    # This runs for every slot at every evaluation: the helpers that take the state tuple are called only when
    # there is something to do, since passing the tuple costs a reference-count round trip per array.
    for side in range(2):
        if _window_due(state.calib_est, state.calib_until, i, side, t):
            _expire(state, i, side, t)
        if last < t and last > -_INF:
            keep = 0.5 ** ((t - last) / half_life_s)
            row = state.long_fuel[i] if side == LONG else state.short_fuel[i]
            state.ledger[i, side, L_DECAYED] += _scale(row, keep, interleaved_sum(row, 0, row.shape[0]))
            state.calib_est_total[i, side] *= keep
            state.calib_real_total[i, side] *= keep
    state.t_decay[i] = max(last, t)
    return APPLIED


@njit(cache=True, nogil=True)
def _band(row, k_lo, w, lo, hi):
    """USD in the buckets from that of ``lo`` to that of ``hi``, inclusive, clipped to the window."""
    b = row.shape[0]
    total = 0.0
    for j in range(max(_offset(lo, w, k_lo, b), 0), min(_offset(hi, w, k_lo, b), b - 1) + 1):
        total += row[j]
    return total


@njit(cache=True, nogil=True)
def fuel_query(state, i, price, out_below, out_above):
    """Long fuel within each of ``BANDS`` below ``price`` into ``out_below`` and short fuel above it into
    ``out_above`` (shape ``(len(BANDS),)``, cumulative: each band includes the price's own bucket). NaN for a
    slot without a grid yet."""
    out_below[:] = np.nan
    out_above[:] = np.nan
    if not 0 <= i < state.width.shape[0]:
        return REJ_SLOT
    if not 0.0 < price < _INF:
        return REJ_VALUE
    w = state.width[i]
    if w == w:
        for n in range(len(BANDS)):
            out_below[n] = _band(state.long_fuel[i], state.k_lo[i, LONG], w, price * (1.0 - BANDS[n]), price)
            out_above[n] = _band(state.short_fuel[i], state.k_lo[i, SHORT], w, price, price * (1.0 + BANDS[n]))
    return APPLIED


@njit(cache=True, nogil=True)
def fuel_clusters(state, i, price, k, out_price, out_usd, side):
    """The ``k`` largest buckets of ``side``'s fuel at or beyond the price's bucket (below it for longs,
    above for shorts), largest first, the nearer one first among equals: their mid prices and USD. Returns
    how many there are; the rest of the outputs is NaN."""
    out_price[:] = np.nan
    out_usd[:] = np.nan
    if not 0 <= i < state.width.shape[0]:
        return 0
    w = state.width[i]
    if not (0.0 < price < _INF and (side == 0 or side == 1) and w == w and k > 0):
        return 0
    k = min(k, out_price.shape[0], out_usd.shape[0])
    row = _map(state, side)[i]
    b = row.shape[0]
    k_lo = state.k_lo[i, side]
    start = _offset(price, w, k_lo, b)
    # walk away from the price, so that of equal buckets the nearer is met, and kept, first
    if side == LONG:
        first = min(start, b - 1)
        step, count = -1, first + 1
    else:
        first = max(start, 0)
        step, count = 1, b - first
    found = 0
    for n in range(count):
        j = first + step * n
        usd = row[j]
        if usd > 0.0 and (found < k or usd > out_usd[k - 1]):
            m = min(found, k - 1)
            while m > 0 and usd > out_usd[m - 1]:
                out_usd[m] = out_usd[m - 1]
                out_price[m] = out_price[m - 1]
                m -= 1
            out_usd[m] = usd
            out_price[m] = math.exp((k_lo + j + 0.5) * w)
            found = min(found + 1, k)
    return found
