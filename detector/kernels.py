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
    AIR_DEPTH_RATIO,
    FLOW_BASE_TAU_S,
    FLOW_TAU_S,
    FUEL_DEPTH_HOT,
    FUNDING_HOT_8H,
    FUNDING_MAX_8H,
    FUNDING_NEUTRAL_8H,
    FUNDING_PCT_MIN_SAMPLES,
    FUNDING_WARM_8H,
    IMPACT_TAU_S,
    LIQ_BASELINE_LAG_MIN,
    LIQ_BASELINE_MIN_MINUTES,
    LIQ_BASELINE_WINDOW_MIN,
    LIQ_FAST_TAU_S,
    LIQ_FLOOR_OI_FRAC_MIN,
    LIQ_FLOOR_USD_MIN,
    OI_BUILD_FULL,
    PREMIUM_HOT_BPS,
    PRICE_FALLBACK_S,
    VOL_FLOOR_1M,
    VOL_HALFLIFE_S,
    WEIGHT_FUEL,
    WEIGHT_FUNDING,
    WEIGHT_LIQUIDITY,
    WEIGHT_OI_BUILD,
    WEIGHT_PREMIUM,
)
from detector.state import (
    CH_BUY,
    CH_LIQ_FAST,
    CH_SELL,
    DEPTH_BUCKET_S,
    F_ASSETS_ACTIVE,
    F_DEPTH1_USD,
    F_DEPTH_RATIO,
    F_DEPTH_RATIO_SEASON,
    F_DEPTH_SEASON,
    F_FLOW_RATIO_LONG,
    F_FLOW_RATIO_SHORT,
    F_FUEL_ABOVE_2,
    F_FUEL_BELOW_2,
    F_FUEL_TO_DEPTH_LONG,
    F_FUNDING_8H,
    F_FUNDING_PCT,
    F_IMBALANCE,
    F_IMPACT,
    F_IMPACT_RATIO,
    F_LIQ_ACCEL_LONG,
    F_LIQ_BASE_LONG,
    F_LIQ_OBSERVED,
    F_LIQ_RATE_LONG,
    F_LIQ_RATIO_LONG,
    F_LIQ_SEASON_LONG,
    F_LIQ_SHARE_LONG,
    F_LIQ_TO_DEPTH_LONG,
    F_OI_CHG_1H,
    F_OI_CHG_5M,
    F_OI_CHG_24H,
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
    F_SPREAD_RATIO,
    F_TRADFI_CLOSED,
    F_Z1,
    F_Z5,
    LONG,
    N_REJECT_REASONS,
    R_BAD_KIND,
    R_BAD_SLOT,
    R_BAD_TIME,
    R_BAD_VALUE,
    SHORT,
    T_BUY_USD,
    T_DEPTH,
    T_FUNDING_MARKS,
    T_LIQ_LONG_USD,
    T_LIQUIDATIONS,
    T_OPEN_INTEREST,
    T_SELL_USD,
    T_TRADES,
    TRIGGERED,
    VT_DEPTH,
    VT_MARK,
    VT_OI,
    VT_PRICE,
    VT_TRADE,
)
from detector.sums import interleaved_sum

FUNDING_PCT_SPAN: Final = 0.45  # percentile 0.5 -> 0, 0.95 -> 1

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
    lo, hi = max(m_lo, cur - cap + 1), min(m_hi, cur)
    total = 0.0
    if hi >= lo:  # the held minutes are one run modulo cap: two plain ranges of the row
        row, start, n = ring[i, s], lo % cap, hi - lo + 1
        head = min(n, cap - start)
        total = interleaved_sum(row, start, start + head) + interleaved_sum(row, 0, n - head)
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
    """Record 1 %-depth (or the spread) for its 10-s bucket; when a bucket completes, refresh the median of the
    completed buckets (the baseline excludes the bucket being measured, and is sorted once per 10 s, not per read)."""
    b = math.floor(t / DEPTH_BUCKET_S)
    if ring_put(ring, last, first, i, b, depth) > 0:
        cap = ring.shape[1]
        lo = max(first[i], b - cap + 1)
        done = np.empty(b - lo)
        for j in range(b - lo):
            done[j] = ring[i, (lo + j) % cap]
        med[i] = np.median(done)


# --- 6. ingestion --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _set_price(price, val_t, px_sec, px_sec_last, px_sec_first, vol_var, vol_w, px_min, px_min_last, px_min_first,
               i, t, value, alpha):
    if t >= val_t[i, VT_PRICE]:
        price[i] = value
        val_t[i, VT_PRICE] = t
        price_put(px_sec, px_sec_last, px_sec_first, vol_var, vol_w, i, t, value, alpha)
        ring_put(px_min, px_min_last, px_min_first, i, math.floor(t / 60.0), value)


@njit(cache=True, nogil=True, inline="always")
def row_reason(k, i, n_slots, t, a, b, c):
    """Why a batch row (``detector.batch`` columns) must be refused, as an index into ``REJECT_REASONS``, or
    -1 for a good row. One set of rules for every kernel that reads the batch, so they skip the same rows."""
    if i < 0 or i >= n_slots:
        return R_BAD_SLOT
    if not (0.0 < t < _INF):
        return R_BAD_TIME
    if k in (TRADE, LIQ):
        ok = 0.0 < a < _INF and 0.0 <= b < _INF and (c == 1.0 or c == -1.0)
    elif k == FUNDING:
        ok = 0.0 < a < _INF and 0.0 < b < _INF and -_INF < c < _INF
    elif k == OI:
        ok = 0.0 <= a < _INF and 0.0 <= b < _INF
    elif k == DEPTH:
        ok = 0.0 < a < _INF and 0.0 <= b < _INF and 0.0 <= c < _INF
    else:
        return R_BAD_KIND
    return -1 if ok else R_BAD_VALUE


@njit(cache=True, nogil=True)
def apply_batch(state, kind, slot, t, v0, v1, v2, v3, p):
    """Fold one columnar batch (see ``detector.batch``) into ``state``. Returns the number of refused rows
    per ``REJECT_REASONS`` entry. ``v3`` is reserved (0)."""
    # Arrays taken out of the state tuple once: read through the tuple inside the loop, every access costs a
    # reference-count round trip (measured: 850 against 150 ns per trade).
    acc = state.acc
    acc_t = state.acc_t
    depth1 = state.depth1
    depth_first = state.depth_first
    depth_last = state.depth_last
    depth_med = state.depth_med
    depth_ring = state.depth_ring
    fund_min = state.fund_min
    fund_min_first = state.fund_min_first
    fund_min_last = state.fund_min_last
    funding_8h = state.funding_8h
    index_px = state.index_px
    liq_min = state.liq_min
    liq_min_last = state.liq_min_last
    liq_recent = state.liq_recent
    liq_recent_last = state.liq_recent_last
    mark = state.mark
    oi_min = state.oi_min
    oi_min_first = state.oi_min_first
    oi_min_last = state.oi_min_last
    oi_usd = state.oi_usd
    price = state.price
    px_min = state.px_min
    px_min_first = state.px_min_first
    px_min_last = state.px_min_last
    px_sec = state.px_sec
    px_sec_first = state.px_sec_first
    px_sec_last = state.px_sec_last
    spread = state.spread
    spread_first = state.spread_first
    spread_last = state.spread_last
    spread_med = state.spread_med
    spread_ring = state.spread_ring
    stage = state.stage
    t_first = state.t_first
    t_last = state.t_last
    totals = state.totals
    val_t = state.val_t
    vol_var = state.vol_var
    vol_w = state.vol_w
    rejects = np.zeros(N_REJECT_REASONS, np.int64)
    n_slots = t_first.shape[0]
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
        reason = row_reason(k, i, n_slots, te, a, b, c)
        if reason >= 0:
            rejects[reason] += 1
            continue
        if k in (TRADE, LIQ):
            if k == TRADE:
                if c > 0:
                    decay_add(acc, acc_t, i, CH_BUY, te, b, tau_flow)
                    totals[i, T_BUY_USD] += b
                else:
                    decay_add(acc, acc_t, i, CH_SELL, te, b, tau_flow)
                    totals[i, T_SELL_USD] += b
                totals[i, T_TRADES] += 1
                val_t[i, VT_TRADE] = max(val_t[i, VT_TRADE], te)
                _set_price(price, val_t, px_sec, px_sec_last, px_sec_first, vol_var, vol_w, px_min, px_min_last,
                           px_min_first, i, te, a, alpha)
            else:
                side = LONG if c > 0 else SHORT
                decay_add(acc, acc_t, i, CH_LIQ_FAST + side, te, b, tau_fast)
                # a running episode must not raise its own baseline (its minutes count as quiet ones)
                minute = math.floor(te / 60.0)
                if stage[i, side] < TRIGGERED:
                    sum_ring_add(liq_min, liq_min_last, i, side, minute, b)
                sum_ring_add(liq_recent, liq_recent_last, i, side, minute, b)
                totals[i, T_LIQ_LONG_USD + side] += b
                totals[i, T_LIQUIDATIONS] += 1
        elif k == FUNDING:
            totals[i, T_FUNDING_MARKS] += 1
            if te >= val_t[i, VT_MARK]:
                mark[i] = a
                index_px[i] = b
                funding_8h[i] = c
                val_t[i, VT_MARK] = te
                ring_put(fund_min, fund_min_last, fund_min_first, i, math.floor(te / 60.0), c)
            if te - val_t[i, VT_TRADE] > fallback_s:
                _set_price(price, val_t, px_sec, px_sec_last, px_sec_first, vol_var, vol_w, px_min, px_min_last,
                           px_min_first, i, te, a, alpha)
        elif k == OI:
            totals[i, T_OPEN_INTEREST] += 1
            if te >= val_t[i, VT_OI]:
                oi_usd[i] = a
                val_t[i, VT_OI] = te
                ring_put(oi_min, oi_min_last, oi_min_first, i, math.floor(te / 60.0), a)
        else:
            totals[i, T_DEPTH] += 1
            if te >= val_t[i, VT_DEPTH]:
                depth1[i] = b
                spread[i] = c
                val_t[i, VT_DEPTH] = te
                depth_put(depth_ring, depth_last, depth_first, depth_med, i, te, b)
                depth_put(spread_ring, spread_last, spread_first, spread_med, i, te, c)
        t_first[i] = min(t_first[i], te)
        t_last[i] = max(t_last[i], te)
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
def overheat_score(crowd, funding, pct, n_pct, premium_bps, oi_chg_24h, price_chg_24h, fuel_to_depth, depth_ratio, p):
    """0..100 for the side whose positions are crowded in direction ``crowd`` (+1 long, -1 short).
    ``fuel_to_depth`` is the crowd's estimated fuel within 2 % over 1 %-depth; it and ``depth_ratio`` weigh in
    only when known (NaN leaves their weight out rather than scoring them 0)."""
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
    total = p[WEIGHT_FUNDING] * s_f + p[WEIGHT_PREMIUM] * s_p + p[WEIGHT_OI_BUILD] * s_o
    if fuel_to_depth == fuel_to_depth:
        weights += p[WEIGHT_FUEL]
        total += p[WEIGHT_FUEL] * _clip01(fuel_to_depth / p[FUEL_DEPTH_HOT])
    if depth_ratio == depth_ratio:
        # thinner than the book's own recent median counts fully at the air-pocket level
        weights += p[WEIGHT_LIQUIDITY]
        total += p[WEIGHT_LIQUIDITY] * _clip01((1.0 - depth_ratio) / (1.0 - p[AIR_DEPTH_RATIO]))
    if not weights > 0.0:
        return 0.0
    return 100.0 * total / weights


# --- features -------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ratio(x, y):
    return x / y if y > 0.0 else _NAN


@njit(cache=True, nogil=True)
def compute_features(state, mask, now, p, tradfi_closed, assets_active):
    """Fill ``state.features`` of every slot where ``mask`` is true as of ``now``, except the episode columns
    (set by the stage step) and the ``EXTERNAL_FEATURES`` (filled by the engine from the Hawkes and fuel
    states). The loop over slots is in here, not in the caller: the state tuple passed per slot would cost a
    reference-count round trip per array (see ``detector.stages.evaluate``)."""
    sec = math.floor(now)
    floor_1m = p[VOL_FLOOR_1M]
    tau_fast = p[LIQ_FAST_TAU_S]
    tau_flow = p[FLOW_TAU_S]
    minute = math.floor(now / 60.0)
    # The baseline ends liq_baseline_lag_min minutes before now, so the minutes a burst is measured in are
    # never part of what it is measured against, and starts no earlier than the slot's history.
    m_hi = minute - int(p[LIQ_BASELINE_LAG_MIN])
    m_window_lo = m_hi - int(p[LIQ_BASELINE_WINDOW_MIN]) + 1
    oi_ring = (state.oi_min, state.oi_min_last, state.oi_min_first)
    px_ring = (state.px_min, state.px_min_last, state.px_min_first)
    for i in range(mask.shape[0]):
        if not mask[i]:
            continue
        f = state.features[i]
        f[F_PRICE] = state.price[i]
        r1 = ring_log_change(state.px_sec, state.px_sec_last, state.px_sec_first, i, sec, 60, False)
        r5 = ring_log_change(state.px_sec, state.px_sec_last, state.px_sec_first, i, sec, 300, False)
        var = sigma_1s2(state.vol_var, state.vol_w, i)
        sigma1 = max(math.sqrt(60.0 * var), floor_1m)
        sigma5 = max(math.sqrt(300.0 * var), floor_1m * math.sqrt(5.0))
        f[F_R1M] = r1
        f[F_R5M] = r5
        f[F_SIGMA1M] = sigma1
        f[F_SIGMA5M] = sigma5
        f[F_Z1] = r1 / sigma1
        f[F_Z5] = r5 / sigma5

        m_lo = m_window_lo
        if state.t_first[i] < _INF:  # the first minute is partial: it would understate the mean
            m_lo = max(m_lo, math.floor(state.t_first[i] / 60.0) + 1)
        buy = decay_value(state.acc, state.acc_t, i, CH_BUY, now, tau_flow)
        sell = decay_value(state.acc, state.acc_t, i, CH_SELL, now, tau_flow)
        # what counts as a burst scales with the market: a share of open interest per minute, when known
        floor = p[LIQ_FLOOR_USD_MIN]
        oi_floor = p[LIQ_FLOOR_OI_FRAC_MIN] * state.oi_usd[i]
        if oi_floor > floor:
            floor = oi_floor
        for side in range(2):
            liq_fast = decay_value(state.acc, state.acc_t, i, CH_LIQ_FAST + side, now, tau_fast)
            rate = liq_fast / tau_fast * 60.0
            held = state.liq_base_held[i, side]
            if state.stage[i, side] >= TRIGGERED and held == held:
                base = held  # an episode is measured against the baseline it started from, to its end
            elif m_hi - m_lo + 1 >= p[LIQ_BASELINE_MIN_MINUTES]:
                base = max(lagged_mean(state.liq_min, state.liq_min_last, i, side, m_lo, m_hi), floor)
                # the usual level of this hour of the week, once known, is a floor: a quiet spell before a busy
                # hour must not make the busy hour's ordinary liquidations look like a burst
                season = f[F_LIQ_SEASON_LONG + side]
                if season > base:
                    base = season
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
        f[F_OI_CHG_5M] = ring_log_change(*oi_ring, i, minute, 5, True)
        f[F_OI_CHG_1H] = ring_log_change(*oi_ring, i, minute, 60, True)
        f[F_OI_CHG_24H] = ring_log_change(*oi_ring, i, minute, 1440, True)
        f[F_PRICE_CHG_1H] = ring_log_change(*px_ring, i, minute, 60, True)
        f[F_PRICE_CHG_24H] = ring_log_change(*px_ring, i, minute, 1440, True)
        funding = state.funding_8h[i]
        pct, n_pct = ring_rank(state.fund_min, state.fund_min_last, state.fund_min_first, i, funding)
        f[F_FUNDING_8H] = funding
        f[F_FUNDING_PCT] = pct
        f[F_PREMIUM_BPS] = (state.mark[i] / state.index_px[i] - 1.0) * 1e4
        f[F_DEPTH1_USD] = state.depth1[i]
        f[F_DEPTH_RATIO] = _ratio(state.depth1[i], state.depth_med[i])
        f[F_SPREAD_BPS] = state.spread[i]
        f[F_SPREAD_RATIO] = _ratio(state.spread[i], state.spread_med[i])
        f[F_DEPTH_RATIO_SEASON] = _ratio(state.depth1[i], f[F_DEPTH_SEASON])
        depth = state.depth1[i]
        for side in range(2):
            f[F_LIQ_TO_DEPTH_LONG + side] = _ratio(f[F_LIQ_RATE_LONG + side], depth)
            f[F_LIQ_ACCEL_LONG + side] = rising_minutes(state.liq_recent, state.liq_recent_last, i, side, minute)
            f[F_FUEL_TO_DEPTH_LONG + side] = _ratio(f[F_FUEL_BELOW_2 if side == LONG else F_FUEL_ABOVE_2], depth)
        _impact(state.impact_base, state.stage, state.t_eval, i, now, f, buy - sell, p)
        _flow_proxy(state.totals, state.t_first, state.t_eval, state.flow_base, state.stage, i, now, f,
                    buy / tau_flow * 60.0, sell / tau_flow * 60.0, p)
        f[F_TRADFI_CLOSED] = tradfi_closed
        f[F_ASSETS_ACTIVE] = assets_active
        for side in range(2):
            crowd = 1.0 if side == LONG else -1.0
            f[F_OVERHEAT_LONG + side] = overheat_score(
                crowd, funding, pct, n_pct, f[F_PREMIUM_BPS], f[F_OI_CHG_24H], f[F_PRICE_CHG_24H],
                f[F_FUEL_TO_DEPTH_LONG + side], f[F_DEPTH_RATIO], p,
            )


@njit(cache=True, nogil=True)
def rising_minutes(ring, last, i, s, minute):
    """How many of the last completed minutes (at most ``RECENT_RING - 2``) each liquidated more than the one
    before: 3 rising bins is acceleration."""
    cap = ring.shape[2]
    cur = last[i, s]
    rises = 0
    for m in range(minute - 1, minute - cap + 1, -1):
        now_v = ring[i, s, m % cap] if cur - cap < m <= cur else 0.0
        before = ring[i, s, (m - 1) % cap] if cur - cap < m - 1 <= cur else 0.0
        if not now_v > before:
            break
        rises += 1
    return float(rises)


@njit(cache=True, nogil=True)
def _flow_proxy(totals, t_first, t_eval, flow_base, stage, i, now, f, buy_min, sell_min, p):
    """Taker flow against each side per minute over its slow time-weighted mean (frozen during the side's
    episodes): where no liquidation was ever seen (no feed, or bar data without liquidations) it stands in for
    the liquidation intensity, since forced orders are market orders."""
    f[F_LIQ_OBSERVED] = 1.0 if totals[i, T_LIQUIDATIONS] > 0 else 0.0
    if now - t_first[i] < 3.0 * p[FLOW_TAU_S]:  # the decayed flow is still filling up: not a rate yet
        f[F_FLOW_RATIO_LONG] = _NAN
        f[F_FLOW_RATIO_SHORT] = _NAN
        return
    t_prev = t_eval[i]
    w = 1.0 - math.exp(-(now - t_prev) / p[FLOW_BASE_TAU_S]) if now > t_prev else 0.0
    for side in range(2):
        rate = sell_min if side == LONG else buy_min
        base = flow_base[i, side]
        f[F_FLOW_RATIO_LONG + side] = rate / base if base > 0.0 else _NAN
        if stage[i, side] >= TRIGGERED:
            continue
        if math.isnan(base):
            flow_base[i, side] = rate
        else:
            flow_base[i, side] = base + w * (rate - base)


@njit(cache=True, nogil=True)
def _impact(impact_base, stage, t_eval, i, now, f, net_flow, p):
    """Price impact per net taker dollar (bps per $1M over the flow window) and its ratio to the slot's slow
    time-weighted mean, which an episode does not feed (a cascade must not become its own baseline)."""
    impact = _NAN
    net_musd = abs(net_flow) / 1e6
    if net_musd > 0.0 and f[F_R1M] == f[F_R1M]:
        impact = abs(f[F_R1M]) * 1e4 / net_musd
    f[F_IMPACT] = impact
    base = impact_base[i]
    f[F_IMPACT_RATIO] = impact / base if base > 0.0 else _NAN
    if impact == impact and max(stage[i, LONG], stage[i, SHORT]) < TRIGGERED:
        t_prev = t_eval[i]
        if math.isnan(base):
            impact_base[i] = impact
        elif now > t_prev:
            w = 1.0 - math.exp(-(now - t_prev) / p[IMPACT_TAU_S])
            impact_base[i] = base + w * (impact - base)
