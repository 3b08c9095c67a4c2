"""The stage machine: per asset and side, the stage of a leverage flush (0-7) and the overheated flag.

Stages, for the crowded side (the mirror flips every sign, see ``crowd``):

* 0 calm -- reported as ``overheated`` while the overheating score is in its hot band;
* 1 shock: a move against the side that is large for its volatility, on one-sided taker flow;
* 2 air pocket: liquidity withdraws while price moves against the side (2 of: 1 %-depth far below its
  median -- sooner while TradFi is closed --, spread far above its median, perp premium leading the move);
* 3 liquidation prices hit: intensity a multiple of its baseline for a while, or an estimated cluster swept;
* 4 forced selling: intensity far above baseline, or liquidations a large share of the taker flow while
  open interest falls with price;
* 5 thin-book impact: liquidations per minute against 1 %-depth (realised SBF ratio), or price impact per
  net taker dollar far above its own baseline on a thinned book;
* 6 snowball: the Hawkes branching ratio of liquidation arrivals high and not falling, and the burst
  spreading (rising minutes, clusters swept one after another, or several assets in stage 3+);
* 7 flushed: exhausted (intensity back near baseline, branching low) and at least ``flush_min_signs`` of
  OI purged, funding reset, depth back, price retraced. Exhausted without them is a *pause*: fuel remains.

Within an episode stages only rise, except the way out (7, or calm after ``episode_timeout_s`` of quiet);
a new trigger after 7 is a second leg of the same episode. Every change keeps the condition bits its
rules looked at, so the alert can say why.
"""

from __future__ import annotations

import math
from typing import Final

from numba import njit

from detector.kernels import compute_features
from detector.params import (
    AIR_DEPTH_RATIO,
    AIR_DEPTH_RATIO_CLOSED,
    AIR_HOLD_S,
    AIR_PREMIUM_BPS,
    AIR_SPREAD_RATIO,
    CASCADE_LIQ_SHARE,
    CASCADE_OI_DROP,
    CASCADE_RATIO,
    EPISODE_TIMEOUT_S,
    EXHAUST_HOLD_S,
    EXHAUST_RATIO,
    FLUSH_BRANCHING,
    FLUSH_DEPTH_RATIO,
    FLUSH_MIN_SIGNS,
    FLUSH_RETRACE,
    FLUSHED_HOLD_S,
    FUNDING_NEUTRAL_8H,
    LIQ_TRIGGER_RATIO,
    OI_PURGE,
    OVERHEAT_DWELL_S,
    OVERHEAT_EXIT,
    OVERHEAT_HOT,
    PROXY_TRIGGER_RATIO,
    SHOCK_IMBALANCE,
    SHOCK_MIN_MOVE,
    SHOCK_TIMEOUT_S,
    SHOCK_Z1,
    SHOCK_Z5,
    SNOWBALL_ASSETS,
    SNOWBALL_BRANCHING,
    THIN_BOOK_RATIO,
    THIN_IMPACT_RATIO,
    TRIGGER_HOLD_S,
)
from detector.state import (
    AIR_POCKET,
    C_AIR_POCKET,
    C_BRANCHING,
    C_BRANCHING_LOW,
    C_CASCADE_FLOW,
    C_CASCADE_RATIO,
    C_CLUSTER_SWEPT,
    C_DEPTH_BACK,
    C_EXHAUST_TIMEOUT,
    C_EXHAUSTED,
    C_FLUSHED_HOLD,
    C_FUNDING_RESET,
    C_OI_PURGED,
    C_OVERHEAT_EXIT,
    C_OVERHEATED,
    C_PAUSED,
    C_PROXY,
    C_RETRACED,
    C_SHOCK_FLOW,
    C_SHOCK_MOVE,
    C_SHOCK_TIMEOUT,
    C_SHOCK_Z,
    C_SNOWBALL_SPREAD,
    C_THIN_BOOK,
    C_TRIGGER_HELD,
    C_TRIGGER_ON,
    CALM,
    CASCADE,
    CHANGED_OVERHEAT,
    CHANGED_PAUSE,
    CHANGED_STAGE,
    F_ASSETS_ACTIVE,
    F_BRANCHING_LONG,
    F_BRANCHING_PREV_LONG,
    F_DEPTH_RATIO,
    F_DEPTH_RATIO_SEASON,
    F_EPISODE_PEAK_AFTER_S_LONG,
    F_EPISODE_PEAK_STAGE_LONG,
    F_FLOW_RATIO_LONG,
    F_IMBALANCE,
    F_IMPACT_RATIO,
    F_LIQ_ACCEL_LONG,
    F_LIQ_OBSERVED,
    F_LIQ_RATIO_LONG,
    F_LIQ_SHARE_LONG,
    F_LIQ_TO_DEPTH_LONG,
    F_OI_CHG_5M,
    F_OI_CHG_EPISODE_LONG,
    F_OVERHEAT_LONG,
    F_PREMIUM_BPS,
    F_R1M,
    F_R5M,
    F_RETRACE_LONG,
    F_SPREAD_RATIO,
    F_SWEEPS_LONG,
    F_TRADFI_CLOSED,
    F_Z1,
    F_Z5,
    FLUSHED,
    LONG,
    SHOCK,
    SNOWBALL,
    THIN_BOOK,
    TM_ACTIVE,
    TM_AIR,
    TM_EXHAUST,
    TM_TRIGGER,
    TRIGGERED,
)

# The conditions each group of rules looks at: a change records only these, so its explanation does not
# list every unrelated condition that happened to hold.
_PRE_BITS: Final = C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW | C_AIR_POCKET | C_SHOCK_TIMEOUT
_ENTRY_BITS: Final = (
    C_PROXY | C_TRIGGER_ON | C_TRIGGER_HELD | C_CLUSTER_SWEPT | C_CASCADE_RATIO | C_CASCADE_FLOW | C_THIN_BOOK
    | C_BRANCHING | C_SNOWBALL_SPREAD
)
_EXIT_BITS: Final = (
    C_EXHAUSTED | C_EXHAUST_TIMEOUT | C_BRANCHING_LOW | C_OI_PURGED | C_FUNDING_RESET | C_DEPTH_BACK | C_RETRACED
    | C_PAUSED
)
_FLUSHED_BITS: Final = C_TRIGGER_ON | C_TRIGGER_HELD | C_FLUSHED_HOLD
_OVERHEAT_BITS: Final = C_OVERHEATED | C_OVERHEAT_EXIT
_NAN: Final = math.nan


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
def _pre_trigger_bits(f, cond_since, i, s, now, adverse, p):
    """Shock and air-pocket conditions (stages 1-2); ``f`` is the slot's features row."""
    bits = 0
    if adverse * f[F_Z1] >= p[SHOCK_Z1] or adverse * f[F_Z5] >= p[SHOCK_Z5]:
        bits |= C_SHOCK_Z
    if adverse * f[F_R1M] >= p[SHOCK_MIN_MOVE] or adverse * f[F_R5M] >= p[SHOCK_MIN_MOVE]:
        bits |= C_SHOCK_MOVE
    if adverse * f[F_IMBALANCE] >= p[SHOCK_IMBALANCE]:
        bits |= C_SHOCK_FLOW
    limit = p[AIR_DEPTH_RATIO_CLOSED] if f[F_TRADFI_CLOSED] > 0.5 else p[AIR_DEPTH_RATIO]
    # a book thin for the last hour but normal for this hour of the week is the weekend, not a pocket
    usual = f[F_DEPTH_RATIO_SEASON] >= p[FLUSH_DEPTH_RATIO]
    signs = (
        int(f[F_DEPTH_RATIO] < limit and not usual)
        + int(f[F_SPREAD_RATIO] >= p[AIR_SPREAD_RATIO])
        + int(adverse * f[F_PREMIUM_BPS] >= p[AIR_PREMIUM_BPS])
    )
    # thin books hurt both sides; it is an air pocket for the side the price is moving against
    air_on = signs >= 2 and adverse * f[F_R5M] > 0.0
    if _held(cond_since, i, s, TM_AIR, air_on, now) >= p[AIR_HOLD_S]:
        bits |= C_AIR_POCKET
    return bits


@njit(cache=True, nogil=True)
def _episode_bits(f, cond_since, stage, quiet_s, funding_8h, depth_low, i, s, now, dt, adverse, p):
    """Trigger, escalation and exhaustion conditions (stages 3-7); ``f`` is the slot's features row."""
    ratio = f[F_LIQ_RATIO_LONG + s]
    bits = 0
    if f[F_LIQ_OBSERVED] == 0.0:
        # No liquidation feed: market orders against the side stand in, once a shock opened the episode and
        # while price keeps moving against it (a burst of volume alone is no flush).
        bits |= C_PROXY
        moving = adverse * f[F_R1M] > 0.0 or adverse * f[F_R5M] > 0.0
        opened = stage[i, s] != CALM
        scale = p[LIQ_TRIGGER_RATIO] / p[PROXY_TRIGGER_RATIO]
        ratio = f[F_FLOW_RATIO_LONG + s] * scale if moving and opened else 0.0
    trig_on = ratio >= p[LIQ_TRIGGER_RATIO]
    if trig_on:
        bits |= C_TRIGGER_ON
    if _held(cond_since, i, s, TM_TRIGGER, trig_on, now) >= p[TRIGGER_HOLD_S]:
        bits |= C_TRIGGER_HELD
    if f[F_SWEEPS_LONG + s] >= 1.0 and ratio >= p[EXHAUST_RATIO]:
        bits |= C_CLUSTER_SWEPT
    if ratio >= p[CASCADE_RATIO]:
        bits |= C_CASCADE_RATIO
    if (
        f[F_LIQ_SHARE_LONG + s] >= p[CASCADE_LIQ_SHARE]
        and f[F_OI_CHG_5M] <= -p[CASCADE_OI_DROP]
        and adverse * f[F_R5M] > 0.0
    ):
        bits |= C_CASCADE_FLOW
    if f[F_LIQ_TO_DEPTH_LONG + s] >= p[THIN_BOOK_RATIO] or (
        f[F_IMPACT_RATIO] >= p[THIN_IMPACT_RATIO] and f[F_DEPTH_RATIO] < 0.5 and adverse * f[F_R1M] > 0.0
    ):
        bits |= C_THIN_BOOK
    n_hat = f[F_BRANCHING_LONG + s]
    n_prev = f[F_BRANCHING_PREV_LONG + s]
    if n_hat >= p[SNOWBALL_BRANCHING] and not n_hat < n_prev:
        bits |= C_BRANCHING
    if f[F_LIQ_ACCEL_LONG + s] >= 2.0 or f[F_SWEEPS_LONG + s] >= 2.0 or f[F_ASSETS_ACTIVE] >= p[SNOWBALL_ASSETS]:
        bits |= C_SNOWBALL_SPREAD
    if not n_hat >= p[FLUSH_BRANCHING]:
        bits |= C_BRANCHING_LOW
    exhausted_for = _held(cond_since, i, s, TM_EXHAUST, ratio < p[EXHAUST_RATIO], now)
    if exhausted_for >= p[EXHAUST_HOLD_S]:
        bits |= C_EXHAUSTED
    # The episode timeout counts quiet time in total, not continuously: in a calm tape single liquidations
    # lift the ratio over exhaust_ratio now and then, and a continuous 30-minute lull would never come.
    if trig_on:
        quiet_s[i, s] = 0.0
    elif exhausted_for >= 0.0:
        quiet_s[i, s] += dt
    if quiet_s[i, s] >= p[EPISODE_TIMEOUT_S]:
        bits |= C_EXHAUST_TIMEOUT
    if f[F_OI_CHG_EPISODE_LONG + s] <= math.log1p(-p[OI_PURGE]):
        bits |= C_OI_PURGED
    crowd = -adverse
    if crowd * funding_8h[i] <= p[FUNDING_NEUTRAL_8H]:
        bits |= C_FUNDING_RESET
    if f[F_DEPTH_RATIO] >= p[FLUSH_DEPTH_RATIO] and depth_low[i, s] < p[AIR_DEPTH_RATIO_CLOSED]:
        bits |= C_DEPTH_BACK
    if f[F_RETRACE_LONG + s] >= p[FLUSH_RETRACE]:
        bits |= C_RETRACED
    return bits


@njit(cache=True, nogil=True)
def _level(bits, stage):
    """The highest stage from 3 up that the escalation conditions support now."""
    escalated = (bits & (C_CASCADE_RATIO | C_CASCADE_FLOW)) != 0 or stage >= CASCADE
    level = CASCADE if (bits & (C_CASCADE_RATIO | C_CASCADE_FLOW)) != 0 else TRIGGERED
    if escalated and bits & C_THIN_BOOK:
        level = THIN_BOOK
    if escalated and bits & C_BRANCHING and bits & C_SNOWBALL_SPREAD:
        level = SNOWBALL
    return level


@njit(cache=True, nogil=True)
def _episode_track(f, oi_usd, price_, stage, oi_at_start, px_at_start, px_extreme, depth_low, i, s, crowd, p):
    """OI change since the episode began, how much of its adverse price move has been retraced (once the
    move is a shock-sized one) and how thin the book got: recovery signs must recover from something."""
    oi = oi_usd[i]
    price = price_[i]
    if stage[i, s] == CALM:
        f[F_OI_CHG_EPISODE_LONG + s] = _NAN
        f[F_RETRACE_LONG + s] = _NAN
        return
    if math.isnan(oi_at_start[i, s]) and oi > 0.0:
        oi_at_start[i, s] = oi  # the episode began before the first OI poll
    f[F_OI_CHG_EPISODE_LONG + s] = math.log(oi / oi_at_start[i, s]) if oi > 0.0 else _NAN
    if price > 0.0:
        if math.isnan(px_at_start[i, s]):
            # the episode is detected after its first move: measure it from the price 5 minutes earlier
            r5 = f[F_R5M]
            px_at_start[i, s] = price * math.exp(-r5) if r5 == r5 else price
        ext = px_extreme[i, s]
        if math.isnan(ext) or crowd * (price - ext) < 0.0:
            px_extreme[i, s] = price
    move = crowd * (px_at_start[i, s] - px_extreme[i, s])
    big = move >= p[SHOCK_MIN_MOVE] * px_at_start[i, s]
    f[F_RETRACE_LONG + s] = crowd * (price - px_extreme[i, s]) / move if big and move > 0.0 else _NAN
    ratio = f[F_DEPTH_RATIO]
    if ratio == ratio and not depth_low[i, s] <= ratio:
        depth_low[i, s] = ratio


@njit(cache=True, nogil=True)
def _transition(cond_since, since, i, s, stage, bits, now, p):
    pre = bits & (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW)
    shock = pre == (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW)
    air = (bits & C_AIR_POCKET) != 0
    triggered = (bits & (C_TRIGGER_HELD | C_CLUSTER_SWEPT)) != 0
    exhausted = (bits & C_EXHAUSTED) != 0 and (bits & C_BRANCHING_LOW) != 0
    signs = (
        int((bits & C_OI_PURGED) != 0) + int((bits & C_FUNDING_RESET) != 0) + int((bits & C_DEPTH_BACK) != 0)
        + int((bits & C_RETRACED) != 0)
    )
    if stage < TRIGGERED:
        if triggered:
            return _level(bits, stage)
        if air and stage < AIR_POCKET:
            return AIR_POCKET
        if stage == CALM and shock:
            return SHOCK
        if stage != CALM and now - cond_since[i, s, TM_ACTIVE] >= p[SHOCK_TIMEOUT_S]:
            return CALM
        return stage
    if stage < FLUSHED:
        if exhausted and signs >= p[FLUSH_MIN_SIGNS]:
            return FLUSHED
        if bits & C_EXHAUST_TIMEOUT:
            return CALM  # the episode ends without a flush
        return max(stage, _level(bits, stage))
    if triggered:
        return max(TRIGGERED, _level(bits, TRIGGERED))  # second leg, same episode
    if now - since[i, s] >= p[FLUSHED_HOLD_S]:
        return CALM
    return stage


@njit(cache=True, nogil=True)
def _kept_bits(stage, new):
    """The conditions that explain a move from ``stage`` to ``new``."""
    if new == FLUSHED or (new == CALM and stage >= TRIGGERED):
        return _FLUSHED_BITS if stage == FLUSHED else _EXIT_BITS
    if new < TRIGGERED:
        return _PRE_BITS
    keep = _ENTRY_BITS
    if new < SNOWBALL:
        keep &= ~(C_BRANCHING | C_SNOWBALL_SPREAD)
    if new < THIN_BOOK:
        keep &= ~C_THIN_BOOK
    return keep


@njit(cache=True, nogil=True)
def evaluate(state, now, mask, p, tradfi_closed):
    """Recompute features, overheat scores and stages of the slots where ``mask`` is true, as of event time
    ``now`` (``tradfi_closed``: 1.0 while the calendar says traditional markets are shut). ``changed`` is
    cleared for every slot first; returns how many (slot, side) pairs changed.

    The loops are here and the helpers take arrays, never the state tuple: a tuple of a hundred arrays passed
    to a function per slot, even an inlined one, costs a reference-count round trip per array (measured: the
    stage step took 1.6 us per side that way, against ~0.1 us)."""
    state.changed[:] = 0
    # Several assets in stage 3+ at once is the market-wide snowball; counted as of the previous evaluation.
    active = 0
    for i in range(state.t_first.shape[0]):
        if mask[i] and max(state.stage[i, 0], state.stage[i, 1]) >= TRIGGERED:
            active += 1
    # every slot's features first: a slot's stage step reads only its own row, as of its previous evaluation
    compute_features(state, mask, now, p, tradfi_closed, float(active))
    n_changed = 0
    for i in range(state.t_first.shape[0]):
        if not mask[i]:
            continue
        dt = now - state.t_eval[i] if now > state.t_eval[i] else 0.0
        state.t_eval[i] = now
        f = state.features[i]
        for s in range(2):
            # Advance the stage, pause and overheat flags of side s (dt: seconds since the slot's previous
            # evaluation).
            crowd = 1.0 if s == LONG else -1.0
            adverse = -crowd  # the move that hurts the crowded side
            stage = state.stage[i, s]
            _episode_track(f, state.oi_usd, state.price, state.stage, state.oi_at_start, state.px_at_start,
                           state.px_extreme, state.depth_low, i, s, crowd, p)
            bits = _pre_trigger_bits(f, state.cond_since, i, s, now, adverse, p) | _episode_bits(
                f, state.cond_since, state.stage, state.quiet_s, state.funding_8h, state.depth_low, i, s, now, dt,
                adverse, p)
            shock = (bits & (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW)) == (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW)
            if stage in (SHOCK, AIR_POCKET) and (shock or bits & C_AIR_POCKET):
                state.cond_since[i, s, TM_ACTIVE] = now
            if stage in (SHOCK, AIR_POCKET) and now - state.cond_since[i, s, TM_ACTIVE] >= p[SHOCK_TIMEOUT_S]:
                bits |= C_SHOCK_TIMEOUT
            if stage == FLUSHED and now - state.since[i, s] >= p[FLUSHED_HOLD_S]:
                bits |= C_FLUSHED_HOLD

            new = _transition(state.cond_since, state.since, i, s, stage, bits, now, p)
            changed = 0
            if new != stage:
                changed = CHANGED_STAGE
                state.stage_from[i, s] = stage
                state.stage[i, s] = new
                state.since[i, s] = now
                if stage == CALM:
                    oi = state.oi_usd[i]
                    state.episode_start[i, s] = now
                    state.oi_at_start[i, s] = oi if oi > 0.0 else _NAN
                    state.px_at_start[i, s] = _NAN
                    state.px_extreme[i, s] = _NAN
                    state.depth_low[i, s] = _NAN
                    state.peak_stage[i, s] = new
                    state.peak_t[i, s] = now
                    _episode_track(f, state.oi_usd, state.price, state.stage, state.oi_at_start, state.px_at_start,
                           state.px_extreme, state.depth_low, i, s, crowd, p)
                elif new > state.peak_stage[i, s]:
                    state.peak_stage[i, s] = new
                    state.peak_t[i, s] = now
                if new in (SHOCK, AIR_POCKET):
                    state.cond_since[i, s, TM_ACTIVE] = now

            # the episode so far (kept on its closing change): its highest stage and how long after the start it came
            open_or_closing = new != CALM or changed
            f[F_EPISODE_PEAK_STAGE_LONG + s] = state.peak_stage[i, s] if open_or_closing else _NAN
            f[F_EPISODE_PEAK_AFTER_S_LONG + s] = (state.peak_t[i, s] - state.episode_start[i, s] if open_or_closing
                                                  else _NAN)
            exhausted = (bits & C_EXHAUSTED) != 0 and (bits & C_BRANCHING_LOW) != 0
            # A pause ends when liquidations come back to the trigger level, not at the first one over the exhaustion
            # line: a lull with stray liquidations is still a lull.
            resumed = (bits & C_TRIGGER_ON) != 0
            held = state.paused[i, s] == 1 and not resumed
            paused = 1 if TRIGGERED <= new < FLUSHED and (exhausted or held) else 0
            if paused:
                bits |= C_PAUSED
            if paused != state.paused[i, s]:
                state.paused[i, s] = paused
                changed |= CHANGED_PAUSE

            score = state.features[i, F_OVERHEAT_LONG + s]
            if score >= p[OVERHEAT_HOT]:
                bits |= C_OVERHEATED
            if score < p[OVERHEAT_EXIT]:
                bits |= C_OVERHEAT_EXIT
            hot = state.overheated[i, s]
            flip = (hot == 0 and bits & C_OVERHEATED) or (hot == 1 and bits & C_OVERHEAT_EXIT)
            if flip and now - state.overheat_since[i, s] >= p[OVERHEAT_DWELL_S]:
                state.overheated[i, s] = 1 - hot
                state.overheat_since[i, s] = now
                changed |= CHANGED_OVERHEAT
            if changed:
                keep = _OVERHEAT_BITS if changed & CHANGED_OVERHEAT else 0
                if changed & CHANGED_PAUSE:
                    keep |= _EXIT_BITS
                if changed & CHANGED_STAGE:
                    keep |= _kept_bits(stage, new)
                state.cond_bits[i, s] = bits & keep
            state.changed[i, s] = changed
            n_changed += changed != 0
    return n_changed
