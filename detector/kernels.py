"""Numba kernels: event ingestion (``apply_batch``) and per-second evaluation (``evaluate``).

Plain ``@njit`` functions over the arrays of ``detector.state.DetectorState``; parameters arrive packed by
``detector.params.pack``. Each building block has a plain-Python twin in ``detector.reference`` that the
property tests compare against. All times are event-time seconds.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE
from detector.params import (
    CASCADE_LIQ_SHARE,
    CASCADE_OI_DROP,
    CASCADE_RATIO,
    EPISODE_TIMEOUT_S,
    EXHAUST_HOLD_S,
    EXHAUST_RATIO,
    FLOW_TAU_S,
    FLUSHED_HOLD_S,
    FUNDING_HOT_8H,
    FUNDING_MAX_8H,
    FUNDING_NEUTRAL_8H,
    FUNDING_PCT_MIN_SAMPLES,
    FUNDING_WARM_8H,
    LIQ_BASELINE_LAG_MIN,
    LIQ_BASELINE_MIN_MINUTES,
    LIQ_BASELINE_WINDOW_MIN,
    LIQ_FAST_TAU_S,
    LIQ_FLOOR_USD_MIN,
    LIQ_TRIGGER_RATIO,
    OI_BUILD_FULL,
    OI_PURGE,
    OVERHEAT_EXIT,
    OVERHEAT_HOT,
    PREMIUM_HOT_BPS,
    PRICE_FALLBACK_S,
    SHOCK_IMBALANCE,
    SHOCK_MIN_MOVE,
    SHOCK_TIMEOUT_S,
    SHOCK_Z1,
    SHOCK_Z5,
    TRIGGER_HOLD_S,
    VOL_FLOOR_1M,
    VOL_HALFLIFE_S,
    WEIGHT_FUNDING,
    WEIGHT_OI_BUILD,
    WEIGHT_PREMIUM,
)
from detector.state import (
    C_CASCADE_FLOW,
    C_CASCADE_RATIO,
    C_EXHAUST_TIMEOUT,
    C_EXHAUSTED,
    C_FLUSHED_HOLD,
    C_FUNDING_RESET,
    C_OI_PURGED,
    C_OVERHEAT_EXIT,
    C_OVERHEATED,
    C_SHOCK_FLOW,
    C_SHOCK_MOVE,
    C_SHOCK_TIMEOUT,
    C_SHOCK_Z,
    C_TRIGGER_HELD,
    C_TRIGGER_ON,
    CALM,
    CASCADE,
    CH_BUY,
    CH_LIQ_FAST,
    CH_SELL,
    CHANGED_OVERHEAT,
    CHANGED_STAGE,
    DEPTH_BUCKET_S,
    F_DEPTH1_USD,
    F_DEPTH_RATIO,
    F_FUNDING_8H,
    F_FUNDING_PCT,
    F_IMBALANCE,
    F_LIQ_BASE_LONG,
    F_LIQ_RATE_LONG,
    F_LIQ_RATIO_LONG,
    F_LIQ_SHARE_LONG,
    F_OI_CHG_1H,
    F_OI_CHG_5M,
    F_OI_CHG_24H,
    F_OI_CHG_EPISODE_LONG,
    F_OI_USD,
    F_OVERHEAT_LONG,
    F_PREMIUM_BPS,
    F_PRICE,
    F_PRICE_CHG_1H,
    F_PRICE_CHG_24H,
    F_R1M,
    F_R5M,
    F_SIGMA1M,
    F_SIGMA5M,
    F_SPREAD_BPS,
    F_Z1,
    F_Z5,
    FLUSHED,
    LONG,
    N_REJECT_REASONS,
    R_BAD_KIND,
    R_BAD_SLOT,
    R_BAD_TIME,
    R_BAD_VALUE,
    SHOCK,
    SHORT,
    T_BUY_USD,
    T_DEPTH,
    T_FUNDING_MARKS,
    T_LIQ_LONG_USD,
    T_LIQUIDATIONS,
    T_OPEN_INTEREST,
    T_SELL_USD,
    T_TRADES,
    TM_ACTIVE,
    TM_EXHAUST,
    TM_TRIGGER,
    TRIGGERED,
    VT_DEPTH,
    VT_MARK,
    VT_OI,
    VT_PRICE,
    VT_TRADE,
)

FUNDING_PCT_SPAN: Final = 0.45  # percentile 0.5 -> 0, 0.95 -> 1

# The conditions each stage's rules look at: a change records only these (plus the overheat pair when the
# flag flipped), so its explanation does not list every unrelated condition that happened to hold.
_ENTRY_BITS: Final = (
    C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW | C_TRIGGER_ON | C_TRIGGER_HELD | C_CASCADE_RATIO | C_CASCADE_FLOW
)
_EPISODE_BITS: Final = (
    C_CASCADE_RATIO | C_CASCADE_FLOW | C_EXHAUSTED | C_EXHAUST_TIMEOUT | C_OI_PURGED | C_FUNDING_RESET
)
_FLUSHED_BITS: Final = C_TRIGGER_ON | C_TRIGGER_HELD | C_FLUSHED_HOLD
_OVERHEAT_BITS: Final = C_OVERHEATED | C_OVERHEAT_EXIT

_NAN: Final = math.nan
_INF: Final = math.inf


# --- 1. decayed accumulators ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def decay_add(acc, acc_t, i, ch, t, x, tau):
    """``acc <- acc * exp(-(t - last) / tau) + x``. A late event (``t <= last``) is added undecayed, as if
    it arrived at the newest time: the sum is only ever decayed forwards, never inflated backwards."""
    last = acc_t[i, ch]
    if t > last:
        acc[i, ch] = acc[i, ch] * math.exp((last - t) / tau) + x
        acc_t[i, ch] = t
    else:
        acc[i, ch] += x


@njit(cache=True, nogil=True)
def decay_value(acc, acc_t, i, ch, t, tau):
    """The accumulator brought forward to ``t`` (not decayed when ``t`` is before its newest event)."""
    last = acc_t[i, ch]
    if t > last:
        return acc[i, ch] * math.exp((last - t) / tau)
    return acc[i, ch]


# --- 3. rings (per-second and per-minute last values, per-minute liquidation sums, 10-s depth) ----


@njit(cache=True, nogil=True)
def ring_put(ring, last, first, i, b, v):
    """Store ``v`` as the value of bucket ``b``; buckets skipped since the newest one carry its value
    forward. Returns how many buckets the ring advanced (0: same bucket or first value), or -1 for a bucket
    older than the newest, which is ignored (history is not rewritten)."""
    cap = ring.shape[1]
    if first[i] < 0:
        first[i] = b
        last[i] = b
        ring[i, b % cap] = v
        return 0
    cur = last[i]
    if b < cur:
        return -1
    if b > cur:
        prev = ring[i, cur % cap]
        for m in range(max(cur + 1, b - cap + 1), b):
            ring[i, m % cap] = prev
        last[i] = b
    ring[i, b % cap] = v
    return b - cur


@njit(cache=True, nogil=True)
def ring_value(ring, last, first, i, b):
    """The value of bucket ``b`` (the newest value for any later bucket), NaN before the first bucket or
    beyond the ring's memory."""
    cap = ring.shape[1]
    f = first[i]
    if f < 0 or b < f:
        return _NAN
    cur = last[i]
    if b >= cur:
        return ring[i, cur % cap]
    if b <= cur - cap:
        return _NAN
    return ring[i, b % cap]


@njit(cache=True, nogil=True)
def ring_log_change(ring, last, first, i, b_now, window, oldest_fallback):
    """``ln(value[b_now] / value[b_now - window])``. With ``oldest_fallback`` a history shorter than the
    window (but at least one bucket) is measured from its oldest value; without it the result is NaN."""
    f = first[i]
    if f < 0:
        return _NAN
    oldest = max(f, last[i] - ring.shape[1] + 1)
    b_then = b_now - window
    if b_then < oldest:
        if not oldest_fallback or b_now - oldest < 1:
            return _NAN
        b_then = oldest
    now_v = ring_value(ring, last, first, i, b_now)
    then_v = ring_value(ring, last, first, i, b_then)
    if now_v > 0 and then_v > 0:
        return math.log(now_v / then_v)
    return _NAN


@njit(cache=True, nogil=True)
def sum_ring_add(ring, last, i, s, b, x):
    """Add ``x`` to minute ``b`` of the sum ring ``ring[i, s]``. A newer minute first zeroes every bucket
    from the newest one held up to ``b`` (the ring's last lap, or minutes without liquidations); a late
    minute still inside the ring is added to, one older than the ring is dropped."""
    cap = ring.shape[2]
    cur = last[i, s]
    if b > cur:
        for m in range(max(cur + 1, b - cap + 1), b + 1):
            ring[i, s, m % cap] = 0.0
        last[i, s] = b
    elif b <= cur - cap:
        return
    ring[i, s, b % cap] += x


@njit(cache=True, nogil=True)
def lagged_mean(ring, last, i, s, m_lo, m_hi):
    """Mean per minute over minutes ``m_lo..m_hi`` (``m_lo <= m_hi``) of the sum ring ``ring[i, s]``. The
    divisor is always the number of minutes in the range: a minute the ring does not hold counts as zero
    (after its newest minute: no liquidation since; the settings keep the range inside the ring)."""
    cap = ring.shape[2]
    cur = last[i, s]
    total = 0.0
    for m in range(max(m_lo, cur - cap + 1), min(m_hi, cur) + 1):
        total += ring[i, s, m % cap]
    return total / (m_hi - m_lo + 1)


# --- 2. per-second price and volatility ----------------------------------------------------------------


@njit(cache=True, nogil=True)
def price_put(ring, last, first, var, w, i, t, price, alpha):
    """Record the last price of second ``floor(t)``. When a new second starts, the newest one is complete:
    its log return (against the second before) enters the EWMA variance, and the seconds skipped since
    carried the same price, i.e. zero returns, applied in closed form."""
    b = math.floor(t)
    cur = last[i]
    if first[i] >= 0 and b > cur:
        keep = 1.0 - alpha
        if cur > first[i]:
            cap = ring.shape[1]
            r = math.log(ring[i, cur % cap] / ring[i, (cur - 1) % cap])
            var[i] = keep * var[i] + alpha * r * r
            w[i] = keep * w[i] + alpha
        decay = keep ** (b - cur - 1)
        var[i] *= decay
        w[i] = w[i] * decay + 1.0 - decay
    ring_put(ring, last, first, i, b, price)


@njit(cache=True, nogil=True)
def sigma_1s2(var, w, i):
    """Bias-corrected variance of 1-second log returns (0 before the first completed return)."""
    return var[i] / w[i] if w[i] > 0 else 0.0


# --- 4. funding percentile -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def ring_rank(ring, last, first, i, value):
    """Mid-rank of ``value`` among the ring's valid buckets, and their count. Ties count half, so a funding
    rate that sits at the same level all day ranks 0.5, not 1."""
    f = first[i]
    if f < 0 or math.isnan(value):
        return _NAN, 0
    cap = ring.shape[1]
    lo = max(f, last[i] - cap + 1)
    n = last[i] - lo + 1
    start = lo % cap
    below = 0
    equal = 0
    # the valid buckets are one contiguous run modulo cap: walk it as two plain ranges
    for j in range(start, min(start + n, cap)):
        x = ring[i, j]
        below += x < value
        equal += x == value
    for j in range(0, start + n - cap):
        x = ring[i, j]
        below += x < value
        equal += x == value
    return (below + 0.5 * equal) / n, n


# --- 5. depth --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def depth_put(ring, last, first, med, i, t, depth):
    """Record 1 %-depth for its 10-s bucket; when a bucket completes, refresh the median of the completed
    buckets (the baseline excludes the bucket being measured, and is sorted once per 10 s, not per read)."""
    b = math.floor(t / DEPTH_BUCKET_S)
    if ring_put(ring, last, first, i, b, depth) > 0:
        cap = ring.shape[1]
        lo = max(first[i], b - cap + 1)
        done = np.empty(b - lo)
        for j in range(b - lo):
            done[j] = ring[i, (lo + j) % cap]
        med[i] = np.median(done)


# --- 6. ingestion --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _set_price(state, i, t, price, alpha):
    if t >= state.val_t[i, VT_PRICE]:
        state.price[i] = price
        state.val_t[i, VT_PRICE] = t
        price_put(state.px_sec, state.px_sec_last, state.px_sec_first, state.vol_var, state.vol_w, i, t, price, alpha)
        ring_put(state.px_min, state.px_min_last, state.px_min_first, i, math.floor(t / 60.0), price)


@njit(cache=True, nogil=True)
def apply_batch(state, kind, slot, t, v0, v1, v2, v3, p):
    """Fold one columnar batch (see ``detector.batch``) into ``state``. Returns the number of refused rows
    per ``REJECT_REASONS`` entry. ``v3`` is reserved (0)."""
    rejects = np.zeros(N_REJECT_REASONS, np.int64)
    n_slots = state.t_first.shape[0]
    tau_fast = p[LIQ_FAST_TAU_S]
    tau_flow = p[FLOW_TAU_S]
    fallback_s = p[PRICE_FALLBACK_S]
    alpha = 1.0 - 0.5 ** (1.0 / p[VOL_HALFLIFE_S])
    for e in range(kind.shape[0]):
        i = slot[e]
        te = t[e]
        k = kind[e]
        a = v0[e]
        b = v1[e]
        c = v2[e]
        if i < 0 or i >= n_slots:
            rejects[R_BAD_SLOT] += 1
            continue
        if not (0.0 < te < _INF):
            rejects[R_BAD_TIME] += 1
            continue
        if k in (TRADE, LIQ):
            if not (0.0 < a < _INF and 0.0 <= b < _INF and (c == 1.0 or c == -1.0)):
                rejects[R_BAD_VALUE] += 1
                continue
            if k == TRADE:
                if c > 0:
                    decay_add(state.acc, state.acc_t, i, CH_BUY, te, b, tau_flow)
                    state.totals[i, T_BUY_USD] += b
                else:
                    decay_add(state.acc, state.acc_t, i, CH_SELL, te, b, tau_flow)
                    state.totals[i, T_SELL_USD] += b
                state.totals[i, T_TRADES] += 1
                state.val_t[i, VT_TRADE] = max(state.val_t[i, VT_TRADE], te)
                _set_price(state, i, te, a, alpha)
            else:
                side = LONG if c > 0 else SHORT
                decay_add(state.acc, state.acc_t, i, CH_LIQ_FAST + side, te, b, tau_fast)
                # a running episode must not raise its own baseline (its minutes count as quiet ones)
                if state.stage[i, side] < TRIGGERED:
                    sum_ring_add(state.liq_min, state.liq_min_last, i, side, math.floor(te / 60.0), b)
                state.totals[i, T_LIQ_LONG_USD + side] += b
                state.totals[i, T_LIQUIDATIONS] += 1
        elif k == FUNDING:
            if not (0.0 < a < _INF and 0.0 < b < _INF and -_INF < c < _INF):
                rejects[R_BAD_VALUE] += 1
                continue
            state.totals[i, T_FUNDING_MARKS] += 1
            if te >= state.val_t[i, VT_MARK]:
                state.mark[i] = a
                state.index_px[i] = b
                state.funding_8h[i] = c
                state.val_t[i, VT_MARK] = te
                ring_put(state.fund_min, state.fund_min_last, state.fund_min_first, i, math.floor(te / 60.0), c)
            if te - state.val_t[i, VT_TRADE] > fallback_s:
                _set_price(state, i, te, a, alpha)
        elif k == OI:
            if not (0.0 <= a < _INF and 0.0 <= b < _INF):
                rejects[R_BAD_VALUE] += 1
                continue
            state.totals[i, T_OPEN_INTEREST] += 1
            if te >= state.val_t[i, VT_OI]:
                state.oi_usd[i] = a
                state.val_t[i, VT_OI] = te
                ring_put(state.oi_min, state.oi_min_last, state.oi_min_first, i, math.floor(te / 60.0), a)
        elif k == DEPTH:
            if not (0.0 < a < _INF and 0.0 <= b < _INF and 0.0 <= c < _INF):
                rejects[R_BAD_VALUE] += 1
                continue
            state.totals[i, T_DEPTH] += 1
            if te >= state.val_t[i, VT_DEPTH]:
                state.depth1[i] = b
                state.spread[i] = c
                state.val_t[i, VT_DEPTH] = te
                depth_put(state.depth_ring, state.depth_last, state.depth_first, state.depth_med, i, te, b)
        else:
            rejects[R_BAD_KIND] += 1
            continue
        state.t_first[i] = min(state.t_first[i], te)
        state.t_last[i] = max(state.t_last[i], te)
    return rejects


# --- overheating --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _clip01(x):
    """Clip to [0, 1]; NaN (an unknown input) scores 0."""
    if x > 0.0:
        return min(x, 1.0)
    return 0.0


@njit(cache=True, nogil=True)
def funding_anchor(x, neutral, warm, hot, top):
    """Piecewise-linear funding score: 0 at ``neutral``, 0.5 at ``warm``, 0.8 at ``hot``, 1 from ``top`` on
    (the settings keep the four in rising order)."""
    if not x > neutral:
        return 0.0
    if x <= warm:
        return 0.5 * (x - neutral) / (warm - neutral)
    if x <= hot:
        return 0.5 + 0.3 * (x - warm) / (hot - warm)
    if x < top:
        return 0.8 + 0.2 * (x - hot) / (top - hot)
    return 1.0


@njit(cache=True, nogil=True)
def overheat_score(crowd, funding, pct, n_pct, premium_bps, oi_chg_24h, price_chg_24h, p):
    """0..100 for the side whose positions are crowded in direction ``crowd`` (+1 long, -1 short)."""
    on_side = crowd * funding
    s_f = funding_anchor(on_side, p[FUNDING_NEUTRAL_8H], p[FUNDING_WARM_8H], p[FUNDING_HOT_8H], p[FUNDING_MAX_8H])
    if n_pct >= p[FUNDING_PCT_MIN_SAMPLES] and on_side > 0.0:
        rank = pct if crowd > 0 else 1.0 - pct
        s_f = max(s_f, _clip01((rank - 0.5) / FUNDING_PCT_SPAN))
    s_p = _clip01(crowd * premium_bps / p[PREMIUM_HOT_BPS])
    # OI built without price progress is credited to the side funding says is paying
    s_o = 0.0
    if (crowd > 0 and funding >= 0.0) or (crowd < 0 and funding < 0.0):
        s_o = _clip01((oi_chg_24h - abs(price_chg_24h)) / p[OI_BUILD_FULL])
    weights = p[WEIGHT_FUNDING] + p[WEIGHT_PREMIUM] + p[WEIGHT_OI_BUILD]
    if not weights > 0.0:
        return 0.0
    return 100.0 * (p[WEIGHT_FUNDING] * s_f + p[WEIGHT_PREMIUM] * s_p + p[WEIGHT_OI_BUILD] * s_o) / weights


# --- features -------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ratio(x, y):
    return x / y if y > 0.0 else _NAN


@njit(cache=True, nogil=True)
def compute_features(state, i, now, p):
    """Fill ``state.features[i]`` as of ``now``, except the episode columns (set by the stage step)."""
    f = state.features[i]
    f[F_PRICE] = state.price[i]
    sec = math.floor(now)
    r1 = ring_log_change(state.px_sec, state.px_sec_last, state.px_sec_first, i, sec, 60, False)
    r5 = ring_log_change(state.px_sec, state.px_sec_last, state.px_sec_first, i, sec, 300, False)
    var = sigma_1s2(state.vol_var, state.vol_w, i)
    floor_1m = p[VOL_FLOOR_1M]
    sigma1 = max(math.sqrt(60.0 * var), floor_1m)
    sigma5 = max(math.sqrt(300.0 * var), floor_1m * math.sqrt(5.0))
    f[F_R1M] = r1
    f[F_R5M] = r5
    f[F_SIGMA1M] = sigma1
    f[F_SIGMA5M] = sigma5
    f[F_Z1] = r1 / sigma1
    f[F_Z5] = r5 / sigma5

    tau_fast = p[LIQ_FAST_TAU_S]
    tau_flow = p[FLOW_TAU_S]
    minute = math.floor(now / 60.0)
    # The baseline ends liq_baseline_lag_min minutes before now, so the minutes a burst is measured in are
    # never part of what it is measured against, and starts no earlier than the slot's history.
    m_hi = minute - int(p[LIQ_BASELINE_LAG_MIN])
    m_lo = m_hi - int(p[LIQ_BASELINE_WINDOW_MIN]) + 1
    if state.t_first[i] < _INF:  # the first minute is partial: it would understate the mean
        m_lo = max(m_lo, math.floor(state.t_first[i] / 60.0) + 1)
    buy = decay_value(state.acc, state.acc_t, i, CH_BUY, now, tau_flow)
    sell = decay_value(state.acc, state.acc_t, i, CH_SELL, now, tau_flow)
    for side in range(2):
        liq_fast = decay_value(state.acc, state.acc_t, i, CH_LIQ_FAST + side, now, tau_fast)
        rate = liq_fast / tau_fast * 60.0
        held = state.liq_base_held[i, side]
        if state.stage[i, side] >= TRIGGERED and held == held:
            base = held  # an episode is measured against the baseline it started from, to its end
        elif m_hi - m_lo + 1 >= p[LIQ_BASELINE_MIN_MINUTES]:
            base = max(lagged_mean(state.liq_min, state.liq_min_last, i, side, m_lo, m_hi), p[LIQ_FLOOR_USD_MIN])
        else:
            base = math.nan  # too little history to judge intensity: the ratio stays unknown
        state.liq_base_held[i, side] = base
        f[F_LIQ_RATE_LONG + side] = rate
        f[F_LIQ_BASE_LONG + side] = base
        f[F_LIQ_RATIO_LONG + side] = rate / base
        # longs are liquidated by sell orders, shorts by buys
        f[F_LIQ_SHARE_LONG + side] = _ratio(liq_fast, sell if side == LONG else buy)
    f[F_IMBALANCE] = (buy - sell) / (buy + sell) if buy + sell > 0.0 else 0.0

    f[F_OI_USD] = state.oi_usd[i]
    f[F_OI_CHG_5M] = ring_log_change(state.oi_min, state.oi_min_last, state.oi_min_first, i, minute, 5, True)
    f[F_OI_CHG_1H] = ring_log_change(state.oi_min, state.oi_min_last, state.oi_min_first, i, minute, 60, True)
    f[F_OI_CHG_24H] = ring_log_change(state.oi_min, state.oi_min_last, state.oi_min_first, i, minute, 1440, True)
    f[F_PRICE_CHG_1H] = ring_log_change(state.px_min, state.px_min_last, state.px_min_first, i, minute, 60, True)
    f[F_PRICE_CHG_24H] = ring_log_change(state.px_min, state.px_min_last, state.px_min_first, i, minute, 1440, True)
    funding = state.funding_8h[i]
    pct, n_pct = ring_rank(state.fund_min, state.fund_min_last, state.fund_min_first, i, funding)
    f[F_FUNDING_8H] = funding
    f[F_FUNDING_PCT] = pct
    f[F_PREMIUM_BPS] = (state.mark[i] / state.index_px[i] - 1.0) * 1e4
    f[F_DEPTH1_USD] = state.depth1[i]
    f[F_DEPTH_RATIO] = _ratio(state.depth1[i], state.depth_med[i])
    f[F_SPREAD_BPS] = state.spread[i]
    for side in range(2):
        crowd = 1.0 if side == LONG else -1.0
        f[F_OVERHEAT_LONG + side] = overheat_score(
            crowd, funding, pct, n_pct, f[F_PREMIUM_BPS], f[F_OI_CHG_24H], f[F_PRICE_CHG_24H], p
        )


# --- stage machine ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _held(timers, i, s, k, on, now):
    """How long condition ``k`` has held continuously as of ``now`` (-1 when it does not hold)."""
    if not on:
        timers[i, s, k] = _NAN
        return -1.0
    if math.isnan(timers[i, s, k]):
        timers[i, s, k] = now
    return now - timers[i, s, k]


@njit(cache=True, nogil=True)
def step_side(state, i, s, now, dt, p):
    """Advance the stage and overheat flag of one side (``dt``: seconds since the slot's previous
    evaluation); returns its ``changed`` bits."""
    f = state.features[i]
    crowd = 1.0 if s == LONG else -1.0
    adverse = -crowd  # the move that hurts the crowded side
    ratio = f[F_LIQ_RATIO_LONG + s]
    stage = state.stage[i, s]
    oi = state.oi_usd[i]
    if stage != CALM and math.isnan(state.oi_at_start[i, s]) and oi > 0.0:
        state.oi_at_start[i, s] = oi  # the episode began before the first OI poll
    oi_episode = math.log(oi / state.oi_at_start[i, s]) if stage != CALM and oi > 0.0 else _NAN

    bits = 0
    if adverse * f[F_Z1] >= p[SHOCK_Z1] or adverse * f[F_Z5] >= p[SHOCK_Z5]:
        bits |= C_SHOCK_Z
    if adverse * f[F_R1M] >= p[SHOCK_MIN_MOVE] or adverse * f[F_R5M] >= p[SHOCK_MIN_MOVE]:
        bits |= C_SHOCK_MOVE
    if adverse * f[F_IMBALANCE] >= p[SHOCK_IMBALANCE]:
        bits |= C_SHOCK_FLOW
    shock = bits == (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW)

    trig_on = ratio >= p[LIQ_TRIGGER_RATIO]
    trig_held = _held(state.cond_since, i, s, TM_TRIGGER, trig_on, now) >= p[TRIGGER_HOLD_S]
    exhausted_for = _held(state.cond_since, i, s, TM_EXHAUST, ratio < p[EXHAUST_RATIO], now)
    if trig_on:
        bits |= C_TRIGGER_ON
    if trig_held:
        bits |= C_TRIGGER_HELD
    if ratio >= p[CASCADE_RATIO]:
        bits |= C_CASCADE_RATIO
    if (
        f[F_LIQ_SHARE_LONG + s] >= p[CASCADE_LIQ_SHARE]
        and f[F_OI_CHG_5M] <= -p[CASCADE_OI_DROP]
        and adverse * f[F_R5M] > 0.0
    ):
        bits |= C_CASCADE_FLOW
    cascade = (bits & (C_CASCADE_RATIO | C_CASCADE_FLOW)) != 0
    if exhausted_for >= p[EXHAUST_HOLD_S]:
        bits |= C_EXHAUSTED
    # The episode timeout counts quiet time in total, not continuously: in a calm tape single liquidations
    # lift the ratio over exhaust_ratio now and then, and a continuous 30-minute lull would never come.
    if trig_on:
        state.quiet_s[i, s] = 0.0
    elif exhausted_for >= 0.0:
        state.quiet_s[i, s] += dt
    if state.quiet_s[i, s] >= p[EPISODE_TIMEOUT_S]:
        bits |= C_EXHAUST_TIMEOUT
    if oi_episode <= math.log1p(-p[OI_PURGE]):
        bits |= C_OI_PURGED
    if crowd * state.funding_8h[i] <= p[FUNDING_NEUTRAL_8H]:
        bits |= C_FUNDING_RESET
    flush = (bits & C_EXHAUSTED) != 0 and (bits & (C_OI_PURGED | C_FUNDING_RESET)) != 0
    if stage == SHOCK and shock:
        state.cond_since[i, s, TM_ACTIVE] = now
    if stage == SHOCK and now - state.cond_since[i, s, TM_ACTIVE] >= p[SHOCK_TIMEOUT_S]:
        bits |= C_SHOCK_TIMEOUT
    if stage == FLUSHED and now - state.since[i, s] >= p[FLUSHED_HOLD_S]:
        bits |= C_FLUSHED_HOLD

    new = stage
    if stage in (CALM, SHOCK):
        if trig_held:
            new = CASCADE if cascade else TRIGGERED
        elif stage == CALM and shock:
            new = SHOCK
        elif bits & C_SHOCK_TIMEOUT:
            new = CALM
    elif stage in (TRIGGERED, CASCADE):
        if stage == TRIGGERED and cascade:
            new = CASCADE
        elif flush:
            new = FLUSHED
        elif bits & C_EXHAUST_TIMEOUT:
            new = CALM  # the episode ends without a purge
    elif stage == FLUSHED:
        if trig_held:
            new = TRIGGERED  # second leg, same episode
        elif bits & C_FLUSHED_HOLD:
            new = CALM

    changed = 0
    if new != stage:
        changed = CHANGED_STAGE
        state.stage_from[i, s] = stage
        state.stage[i, s] = new
        state.since[i, s] = now
        if stage == CALM:
            state.episode_start[i, s] = now
            state.oi_at_start[i, s] = oi if oi > 0.0 else _NAN
            state.peak_stage[i, s] = new
            oi_episode = 0.0 if oi > 0.0 else _NAN
        else:
            state.peak_stage[i, s] = max(state.peak_stage[i, s], new)
        if new == SHOCK:
            state.cond_since[i, s, TM_ACTIVE] = now
    f[F_OI_CHG_EPISODE_LONG + s] = oi_episode

    score = f[F_OVERHEAT_LONG + s]
    if score >= p[OVERHEAT_HOT]:
        bits |= C_OVERHEATED
    if score < p[OVERHEAT_EXIT]:
        bits |= C_OVERHEAT_EXIT
    hot = state.overheated[i, s]
    if (hot == 0 and bits & C_OVERHEATED) or (hot == 1 and bits & C_OVERHEAT_EXIT):
        state.overheated[i, s] = 1 - hot
        changed |= CHANGED_OVERHEAT
    if changed:
        keep = _OVERHEAT_BITS if changed & CHANGED_OVERHEAT else 0
        if changed & CHANGED_STAGE:
            if stage == CALM:
                keep |= _ENTRY_BITS
            elif stage == SHOCK:
                keep |= _ENTRY_BITS | C_SHOCK_TIMEOUT
            elif stage == FLUSHED:
                keep |= _FLUSHED_BITS
            else:
                keep |= _EPISODE_BITS
        state.cond_bits[i, s] = bits & keep
    state.changed[i, s] = changed
    return changed


@njit(cache=True, nogil=True)
def evaluate(state, now, mask, p):
    """Recompute features, overheat scores and stages of the slots where ``mask`` is true, as of event time
    ``now``. ``changed`` is cleared for every slot first; returns how many (slot, side) pairs changed."""
    state.changed[:] = 0
    n_changed = 0
    for i in range(state.t_first.shape[0]):
        if not mask[i]:
            continue
        compute_features(state, i, now, p)
        dt = now - state.t_eval[i] if now > state.t_eval[i] else 0.0
        state.t_eval[i] = now
        for s in range(2):
            n_changed += step_side(state, i, s, now, dt, p) != 0
    return n_changed
