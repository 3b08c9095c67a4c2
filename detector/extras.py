"""The detector's slower companions, fed from the same columnar batches as ``apply_batch``: the hour-of-week
baselines, the Hawkes arrival rings and the liquidation-fuel map. ``apply_extras`` ingests a batch (rows
``apply_batch`` refuses are skipped here by the same rules, without counting them twice); ``fill_external``
writes their outputs into the ``EXTERNAL_FEATURES`` columns before each evaluation, which is how the stage
machine sees them.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from detector.batch import DEPTH, LIQ, OI, TRADE
from detector.fuel import (
    BANDS,
    LEDGER_NAMES,
    FuelState,
    allocate_fuel,
    fuel_decay,
    fuel_liquidation,
    fuel_oi,
    fuel_query,
    fuel_trade_range,
    grow_fuel,
)
from detector.hawkes import HawkesState, allocate_hawkes, grow_hawkes, hawkes_push
from detector.kernels import lagged_mean, row_reason, sum_ring_add
from detector.seasonal import (
    S_DEPTH,
    S_LIQ_LONG,
    S_SPREAD,
    S_VOLUME,
    SeasonState,
    allocate_season,
    grow_season,
    season_add,
    season_value,
)
from detector.state import (
    F_BRANCHING_LONG,
    F_BRANCHING_MOMENT_LONG,
    F_BRANCHING_PREV_LONG,
    F_DEPTH_SEASON,
    F_FUEL_ABOVE_1,
    F_FUEL_BELOW_1,
    F_FUEL_CALIB_LONG,
    F_LIQ_SEASON_LONG,
    F_SPREAD_SEASON,
    F_SWEEPS_LONG,
    SWEEP_WINDOW_S,
    with_rows_of,
)

SEASON_MIN_WEEKS: Final = 2  # samples of an hour-of-week bucket before it is trusted
SWEPT: Final = LEDGER_NAMES.index("swept")


class Extras(NamedTuple):
    season: SeasonState
    hawkes: HawkesState
    fuel: FuelState
    tape: np.ndarray  # (n, N_TAPE) what the fuel map needs of the tape, kept in event order (TP_* columns)
    swept_seen: np.ndarray  # (n, 2) the fuel ledger's swept USD at the previous fill
    swept_ring: np.ndarray  # (n, 2, SWEPT_RING) estimated USD swept per minute
    swept_last: np.ndarray  # (n, 2) newest minute of that ring


SWEPT_RING: Final = int(SWEEP_WINDOW_S // 60) + 1
TP_OI, TP_PRICE, TP_BUY, TP_SELL, TP_DONE_LO, TP_DONE_HI = range(6)
"""Tape columns: the OI the map has accounted for, the last trade price, taker buy and sell USD since the last
OI update, and the price range traded since the map last changed (trading inside it again sweeps nothing)."""
N_TAPE: Final = 6


def allocate_extras(n_slots: int) -> Extras:
    tape = np.full((n_slots, N_TAPE), np.nan)
    tape[:, TP_BUY:TP_SELL + 1] = 0.0
    return Extras(allocate_season(n_slots), allocate_hawkes(n_slots), allocate_fuel(n_slots), tape,
                  np.zeros((n_slots, 2)), np.zeros((n_slots, 2, SWEPT_RING)), np.full((n_slots, 2), -1, np.int64))


def grow_extras(extras: Extras, n_slots: int) -> Extras:
    own = with_rows_of(tuple(extras[3:]), tuple(allocate_extras(n_slots)[3:]))
    return Extras(grow_season(extras.season, n_slots), grow_hawkes(extras.hawkes, n_slots),
                  grow_fuel(extras.fuel, n_slots), *own)


@njit(cache=True, nogil=True)
def _map_changed(tape, i):
    tape[i, TP_DONE_LO] = np.nan
    tape[i, TP_DONE_HI] = np.nan


@njit(cache=True, nogil=True)
def _trade(liq_pending, tape, i, price, usd, buy):
    """Book one trade, in event order, on the tape; True when it may sweep fuel (``_sweep``): it trades outside
    the range already swept since the map last changed, or a realised liquidation waits for a range. The fuel
    tuple is not passed here: this runs for every trade, and passing a tuple costs a reference-count round
    trip per array."""
    tape[i, TP_PRICE] = price
    tape[i, TP_BUY if buy else TP_SELL] += usd
    lo, hi = tape[i, TP_DONE_LO], tape[i, TP_DONE_HI]
    return not (lo <= price <= hi and liq_pending[i, 0] == 0.0 and liq_pending[i, 1] == 0.0)


@njit(cache=True, nogil=True)
def _sweep(fuel, tape, i, t, price, calib_window_s):
    """A trade at ``price`` outside the swept range: sweep the fuel it reaches and widen the range."""
    lo, hi = tape[i, TP_DONE_LO], tape[i, TP_DONE_HI]
    fuel_trade_range(fuel, i, t, price, price, calib_window_s)
    tape[i, TP_DONE_LO] = price if not lo <= price else lo
    tape[i, TP_DONE_HI] = price if not hi >= price else hi


@njit(cache=True, nogil=True)
def _open_interest(fuel, tape, i, t, oi_usd, lev, weight, mmr, width):
    """Open interest changed: the fuel map opens or closes positions at the last trade price, the aggressor
    share being the taker flow since the previous OI update."""
    prev = tape[i, TP_OI]
    price = tape[i, TP_PRICE]
    if prev == prev and price > 0.0:
        flow = tape[i, TP_BUY] + tape[i, TP_SELL]
        share = tape[i, TP_BUY] / flow if flow > 0.0 else np.nan
        fuel_oi(fuel, i, t, price, oi_usd - prev, share, lev, weight, mmr, width)
        _map_changed(tape, i)
    tape[i, TP_OI] = oi_usd
    tape[i, TP_BUY] = 0.0
    tape[i, TP_SELL] = 0.0


@njit(cache=True, nogil=True)
def apply_extras(season, hawkes, fuel, tape, kind, slot, t, v0, v1, v2, lev, weight, mmr, width, calib_window_s):
    """Fold one columnar batch into the companions, row by row in event order, so the result does not depend
    on how the rows were split into batches. Rows ``apply_batch`` refuses are skipped by the same
    ``row_reason`` (counted there, not twice)."""
    n_slots = tape.shape[0]
    # arrays out of their tuples once (see ``detector.kernels.apply_batch``)
    median, spread, count, hour, acc_sum, acc_n, seen = season
    times, arrivals = hawkes.times, hawkes.count
    liq_pending = fuel.liq_pending
    for e in range(kind.shape[0]):
        i, te, k = slot[e], t[e], kind[e]
        a, b, c = v0[e], v1[e], v2[e]
        if row_reason(k, i, n_slots, te, a, b, c) >= 0:
            continue
        if k == TRADE:
            season_add(median, spread, count, hour, acc_sum, acc_n, seen, i, te, S_VOLUME, b)
            if _trade(liq_pending, tape, i, a, b, c > 0):
                _sweep(fuel, tape, i, te, a, calib_window_s)
        elif k == LIQ:
            side = 0 if c > 0 else 1
            season_add(median, spread, count, hour, acc_sum, acc_n, seen, i, te, S_LIQ_LONG + side, b)
            hawkes_push(times, arrivals, i, side, te)
            fuel_liquidation(fuel, i, te, side, b)
            _map_changed(tape, i)
        elif k == DEPTH:
            season_add(median, spread, count, hour, acc_sum, acc_n, seen, i, te, S_DEPTH, b)
            season_add(median, spread, count, hour, acc_sum, acc_n, seen, i, te, S_SPREAD, c)
        elif k == OI:
            _open_interest(fuel, tape, i, te, a, lev, weight, mmr, width)


@njit(cache=True, nogil=True)
def fill_external(state, season, hawkes, fuel, swept_seen, swept_ring, swept_last, now, mask, half_life_s,
                  sweep_share):
    """Write the companions' outputs as of ``now`` into the ``EXTERNAL_FEATURES`` of every slot in ``mask``.
    ``sweeps_*`` counts clusters' worth of fuel swept in the last ``SWEEP_WINDOW_S``: estimated USD swept over
    ``sweep_share`` of open interest (a tick-by-tick sweep of one cluster is one cluster, not many)."""
    below = np.empty(len(BANDS))
    above = np.empty(len(BANDS))
    median, count = season.median, season.count  # out of the tuple once (see ``detector.kernels.apply_batch``)
    minute = math.floor(now / 60.0)
    window = int(SWEEP_WINDOW_S // 60)
    for i in range(mask.shape[0]):
        if not mask[i]:
            continue
        f = state.features[i]
        fuel_decay(fuel, i, now, half_life_s)
        fuel_query(fuel, i, state.price[i], below, above)
        for n in range(len(BANDS)):
            f[F_FUEL_BELOW_1 + n] = below[n]
            f[F_FUEL_ABOVE_1 + n] = above[n]
        oi = state.oi_usd[i]
        for s in range(2):
            f[F_BRANCHING_LONG + s] = hawkes.n_hat[i, s]
            f[F_BRANCHING_PREV_LONG + s] = hawkes.n_prev[i, s]
            f[F_BRANCHING_MOMENT_LONG + s] = hawkes.n_moment[i, s]
            f[F_FUEL_CALIB_LONG + s] = fuel.calib_ratio[i, s]
            f[F_LIQ_SEASON_LONG + s] = season_value(median, count, i, now, S_LIQ_LONG + s, SEASON_MIN_WEEKS)
            swept = fuel.ledger[i, s, SWEPT]
            sum_ring_add(swept_ring, swept_last, i, s, minute, swept - swept_seen[i, s])
            swept_seen[i, s] = swept
            recent = lagged_mean(swept_ring, swept_last, i, s, minute - window + 1, minute) * window
            f[F_SWEEPS_LONG + s] = recent / (sweep_share * oi) if oi > 0.0 else np.nan
        f[F_DEPTH_SEASON] = season_value(median, count, i, now, S_DEPTH, SEASON_MIN_WEEKS)
        f[F_SPREAD_SEASON] = season_value(median, count, i, now, S_SPREAD, SEASON_MIN_WEEKS)
