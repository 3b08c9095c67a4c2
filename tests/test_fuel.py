"""The liquidation-fuel map against its plain-Python reference on random operation sequences, plus the
model's promises: conservation, liquidation prices where the formula puts them, monotone bands, calibration,
refused inputs that change nothing, re-anchoring that loses nothing it can keep."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detector import fuel as F
from detector.fuel_reference import FuelSlot, bucket, liquidation_price
from detector.state import LONG, SHORT

EXAMPLES = settings(max_examples=80, deadline=None)
SLOT = 1  # of three: the others must stay untouched
N_SLOTS = 3
WEEK = 7 * 86400.0


@dataclass(frozen=True)
class Params:
    buckets: int
    width: float
    mmr: float
    lev: np.ndarray
    weight: np.ndarray
    half_life_s: float
    window_s: float


@st.composite
def params(draw) -> Params:
    if draw(st.booleans()):
        lev, weight = F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT
    else:
        n = draw(st.integers(1, 4))
        lev = np.array(draw(st.lists(st.sampled_from([1.5, 2.0, 5.0, 25.0, 100.0]), min_size=n, max_size=n)))
        weight = np.array(draw(st.lists(st.sampled_from([0.0, 0.1, 1.0, 3.0]), min_size=n, max_size=n)))
        if weight.sum() == 0:
            weight[0] = 1.0
    return Params(
        buckets=draw(st.sampled_from([8, 16, 64, 512])),
        width=draw(st.sampled_from([0.0025, 0.01, 0.04])),
        mmr=draw(st.sampled_from([0.0, 0.005, 0.02])),
        lev=lev,
        weight=weight,
        half_life_s=draw(st.sampled_from([30.0, 3600.0, WEEK])),
        window_s=draw(st.sampled_from([5.0, 180.0])),
    )


usd = st.floats(1e-3, 5e6)  # amounts of USD; subnormal ones only overflow ratios in the reference's checks


@st.composite
def operations(draw, max_size: int = 40) -> list[tuple]:
    """A market walk: OI changes at the current price, trade ranges around it, liquidations, decays and
    queries; times mostly forwards, now and then late."""
    ops: list[tuple] = []
    log_px, t = draw(st.floats(-3.0, 8.0)), 1.0
    for _ in range(draw(st.integers(1, max_size))):
        log_px += draw(st.sampled_from([0.0, 0.0, 0.003, -0.003, 0.02, -0.02, 0.1, -0.1, 0.6, -0.6]))
        t += draw(st.sampled_from([0.0, 0.5, 1.0, 4.0, 30.0, 200.0]))
        at = t - draw(st.sampled_from([0.0, 0.0, 0.0, 3.0, 500.0]))
        at = max(at, 0.5)
        px = math.exp(log_px)
        kind = draw(st.sampled_from(["oi", "oi", "oi", "range", "range", "liq", "decay", "query"]))
        if kind == "oi":
            d = draw(st.one_of(st.just(0.0), usd, usd.map(lambda x: -x), st.sampled_from([-1e9, 1e9])))
            b = draw(st.one_of(st.just(math.nan), st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
            ops.append(("oi", at, px, d, b))
        elif kind == "range":
            down, up = draw(st.floats(0.0, 0.15)), draw(st.floats(0.0, 0.15))
            ops.append(("range", at, px * (1 - down), px * (1 + up)))
        elif kind == "liq":
            ops.append(("liq", at, draw(st.sampled_from([LONG, SHORT])), draw(st.one_of(st.just(0.0), usd))))
        elif kind == "decay":
            ops.append(("decay", at))
        else:
            ops.append(("query", px * draw(st.sampled_from([1.0, 0.97, 1.05, 0.5]))))
    return ops


def apply(state: F.FuelState, ref: FuelSlot | None, p: Params, op: tuple, slot: int = SLOT) -> int:
    """One operation on the kernel state (and the reference); the two must agree on its outcome."""
    kind = op[0]
    if kind == "oi":
        _, t, price, d, b = op
        code = F.fuel_oi(state, slot, t, price, d, b, p.lev, p.weight, p.mmr, p.width)
        expected = ref.oi(t, price, d, b, p.lev, p.weight, p.mmr, p.width) if ref else None
    elif kind == "range":
        _, t, lo, hi = op
        code = F.fuel_trade_range(state, slot, t, lo, hi, p.window_s)
        expected = ref.trade_range(t, lo, hi, p.window_s) if ref else None
    elif kind == "liq":
        _, t, side, usd = op
        code = F.fuel_liquidation(state, slot, t, side, usd)
        expected = ref.liquidation(t, side, usd) if ref else None
    elif kind == "decay":
        _, t = op
        code = F.fuel_decay(state, slot, t, p.half_life_s)
        expected = ref.decay(t, p.half_life_s) if ref else None
    else:
        _, price = op
        below, above = np.empty(len(F.BANDS)), np.empty(len(F.BANDS))
        code = F.fuel_query(state, slot, price, below, above)
        if ref:
            _compare_query(state, ref, price)
        expected = F.APPLIED if ref else None
    if ref:
        assert code == expected, op
    return code


def _scale(state: F.FuelState) -> float:
    return 1e-9 * max(1.0, state.ledger[SLOT, :, F.L_ADDED].sum())


def _dense(ref: FuelSlot, side: int) -> np.ndarray:
    row = np.zeros(ref.buckets)
    for k, v in ref.fuel[side].items():
        row[k - ref.first_bucket[side]] = v
    return row


def _compare_query(state: F.FuelState, ref: FuelSlot, price: float) -> None:
    below, above = np.empty(len(F.BANDS)), np.empty(len(F.BANDS))
    assert F.fuel_query(state, SLOT, price, below, above) == F.APPLIED
    ref_below, ref_above = ref.query(price)
    np.testing.assert_allclose(below, ref_below, rtol=1e-9, atol=_scale(state))
    np.testing.assert_allclose(above, ref_above, rtol=1e-9, atol=_scale(state))
    for side in (LONG, SHORT):
        out_price, out_usd = np.empty(4), np.empty(4)
        found = F.fuel_clusters(state, SLOT, price, 3, out_price, out_usd, side)
        expected = ref.clusters(price, 3, side)
        assert found == len(expected)
        np.testing.assert_allclose(out_usd[:found], [u for _, u in expected], rtol=1e-9, atol=_scale(state))
        np.testing.assert_allclose(out_price[:found], [q for q, _ in expected], rtol=1e-12)
        assert np.isnan(out_price[found:]).all() and np.isnan(out_usd[found:]).all()


def _compare(state: F.FuelState, ref: FuelSlot) -> None:
    tol = _scale(state)
    width = state.width[SLOT]
    assert (math.isnan(width) and math.isnan(ref.width)) or width == ref.width
    assert state.t_decay[SLOT] == ref.t_decay
    for side, fuel in ((LONG, state.long_fuel), (SHORT, state.short_fuel)):
        if not math.isnan(width):
            assert state.k_lo[SLOT, side] == ref.first_bucket[side]
        np.testing.assert_allclose(fuel[SLOT], _dense(ref, side), rtol=1e-9, atol=tol)
        np.testing.assert_allclose(state.ledger[SLOT, side], ref.ledger[side], rtol=1e-9, atol=tol)
        assert state.sweeps[SLOT, side] == ref.sweeps[side]
        np.testing.assert_equal(state.sweep_t[SLOT, side], ref.sweep_t[side])
        assert state.sweep_usd[SLOT, side] == pytest.approx(ref.sweep_usd[side], rel=1e-9, abs=tol)
        assert state.liq_pending[SLOT, side] == pytest.approx(ref.pending[side], rel=1e-12)
        window = ref.open[side]
        assert state.calib_est[SLOT, side] == pytest.approx(window.est if window else 0.0, rel=1e-9, abs=tol)
        assert state.calib_real[SLOT, side] == pytest.approx(window.real if window else 0.0, rel=1e-12)
        assert state.calib_sweeps[SLOT, side] == len(ref.scored[side])
        assert state.calib_est_total[SLOT, side] == pytest.approx(ref.est_total[side], rel=1e-9, abs=tol)
        assert state.calib_real_total[SLOT, side] == pytest.approx(ref.real_total[side], rel=1e-9, abs=tol)
    np.testing.assert_allclose(state.calib_ratio[SLOT], ref.calib_ratio, rtol=1e-6, atol=1e-12)


def _untouched_elsewhere(state: F.FuelState) -> None:
    fresh = F.allocate_fuel(N_SLOTS, state.long_fuel.shape[1])
    for got, new in zip(state, fresh, strict=True):
        for other in (0, 2):
            np.testing.assert_array_equal(got[other], new[other])


# --- kernels against the reference ------------------------------------------------------------------------


@EXAMPLES
@given(p=params(), ops=operations(), probes=st.lists(st.floats(-0.2, 0.2), min_size=1, max_size=4))
@example(  # dust: a subnormal OI change must not make an infinite calibration ratio
    p=Params(8, 0.04, 0.0, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 30.0, 5.0),
    ops=[("oi", 1.0, 1.0, 2.0, 5e-324), ("decay", 1.0), ("oi", 1.0, 1.0, -1.0, math.nan)], probes=[0.0],
)
def test_fuel_map_matches_reference(p, ops, probes) -> None:
    state = F.allocate_fuel(N_SLOTS, p.buckets)
    ref = FuelSlot(p.buckets)
    for op in ops:
        apply(state, ref, p, op)
    _compare(state, ref)
    for x in probes:
        _compare_query(state, ref, _last_price(ops) * math.exp(x))
    _untouched_elsewhere(state)


@EXAMPLES
@given(p=params(), ops=operations())
def test_every_usd_added_is_present_or_booked_where_it_went(p, ops) -> None:
    state = F.allocate_fuel(N_SLOTS, p.buckets)
    for op in ops:
        apply(state, None, p, op)
        for side, fuel in ((LONG, state.long_fuel), (SHORT, state.short_fuel)):
            row = fuel[SLOT]
            assert np.isfinite(row).all() and (row >= 0).all()
            ledger = state.ledger[SLOT, side]
            gone = sum(ledger[c] for c in (F.L_SWEPT, F.L_CLOSED, F.L_LIQUIDATED, F.L_DECAYED, F.L_DROPPED))
            assert ledger[F.L_ADDED] == pytest.approx(row.sum() + gone, rel=1e-9, abs=1e-6)


@EXAMPLES
@given(p=params(), ops=operations(), shifts=st.lists(st.floats(-0.3, 0.3), min_size=1, max_size=5))
def test_bands_are_cumulative_and_nonnegative(p, ops, shifts) -> None:
    state = F.allocate_fuel(N_SLOTS, p.buckets)
    for op in ops:
        apply(state, None, p, op)
    below, above = np.empty(len(F.BANDS)), np.empty(len(F.BANDS))
    for x in shifts:
        assert F.fuel_query(state, SLOT, _last_price(ops) * math.exp(x), below, above) == F.APPLIED
        for out in (below, above):
            assert np.isnan(out).all() == math.isnan(state.width[SLOT])
            if not math.isnan(state.width[SLOT]):
                assert (out >= 0).all() and (np.diff(out) >= 0).all()


def _last_price(ops: list[tuple]) -> float:
    return next((op[2] for op in reversed(ops) if op[0] == "oi"), 100.0)


# --- the model's promises ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    lev=st.floats(1.05, 150.0),
    mmr=st.floats(0.0, 0.05),
    price=st.floats(1e-4, 1e6),
    d=st.floats(1.0, 1e9),
    b=st.floats(0.0, 1.0),
    width=st.sampled_from([0.001, 0.0025, 0.01]),
)
def test_liquidation_prices_land_where_the_formula_puts_them(lev, mmr, price, d, b, width) -> None:
    state = F.allocate_fuel(1, 4096)
    weight = np.array([1.0])
    assert F.fuel_oi(state, 0, 1.0, price, d, b, np.array([lev]), weight, mmr, width) == F.APPLIED
    for side, fuel, share, liq in (
        (LONG, state.long_fuel, b, price * (1 - 1 / lev + mmr)),
        (SHORT, state.short_fuel, 1 - b, price * (1 + 1 / lev - mmr)),
    ):
        (cols,) = np.nonzero(fuel[0])
        if share == 0:
            assert cols.size == 0
            continue
        assert cols.size == 1 and fuel[0, cols[0]] == pytest.approx(d * share, rel=1e-12)
        k = state.k_lo[0, side] + cols[0]
        assert math.exp(k * width) <= liq * (1 + 1e-12) and liq <= math.exp((k + 1) * width) * (1 + 1e-12)


def test_default_leverage_prior_places_and_sweeps_the_expected_levels() -> None:
    state = F.allocate_fuel(1)
    lev, weight = F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT
    assert weight.sum() == pytest.approx(1.0)
    assert weight[lev <= 3].sum() == pytest.approx(0.36) and weight[lev > 7].sum() == pytest.approx(0.16)
    F.fuel_oi(state, 0, 10.0, 100.0, 1e6, 0.75, lev, weight, 0.005, 0.0025)
    prices, usd = np.empty(7), np.empty(7)
    assert F.fuel_clusters(state, 0, 100.0, 7, prices, usd, LONG) == 7
    # 5x longs, the largest class, at 100 * (1 - 0.2 + 0.005) = 80.5, within half a bucket of its mid price
    assert usd[0] == pytest.approx(0.75e6 * 0.30) and prices[0] == pytest.approx(80.5, rel=0.00125)
    # a dip to 95 liquidates the 50x (98.5) and 20x (95.5) longs, not the 10x (90.5)
    F.fuel_trade_range(state, 0, 11.0, 95.0, 100.0, 180.0)
    assert state.ledger[0, LONG, F.L_SWEPT] == pytest.approx(0.75e6 * (0.05 + 0.03))
    assert state.sweep_t[0, LONG] == 11.0 and state.sweeps[0, LONG] == 1
    # shorts are liquidated above the price: 50x at 101.5 lies beyond the range's top of 100, not swept
    assert state.sweeps[0, SHORT] == 0
    below, above = np.empty(4), np.empty(4)
    F.fuel_query(state, 0, 100.0, below, above)
    assert below.tolist() == [0.0, 0.0, 0.0, pytest.approx(0.75e6 * 0.08)]  # 10x at 90.5: within 10 % only
    assert above[1] == pytest.approx(0.25e6 * 0.03)  # 50x shorts at 101.5


def test_oi_decrease_closes_pro_rata_by_aggressor_and_liquidations_take_nearest_first() -> None:
    state = F.allocate_fuel(1)
    F.fuel_oi(state, 0, 1.0, 100.0, 1e6, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    before = state.long_fuel[0].copy()
    shorts = state.short_fuel[0].copy()
    F.fuel_oi(state, 0, 2.0, 100.0, -2e5, 0.8, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    # sells (20 %) close longs: 40k of 500k, every vintage alike; buys (80 %) close 160k of the shorts
    np.testing.assert_allclose(state.long_fuel[0], before * (1 - 40e3 / 500e3))
    np.testing.assert_allclose(state.short_fuel[0], shorts * (1 - 160e3 / 500e3))
    nearest = np.nonzero(state.long_fuel[0])[0][::-1]  # highest liquidation price first
    top, second = state.long_fuel[0, nearest[0]], state.long_fuel[0, nearest[1]]
    F.fuel_liquidation(state, 0, 3.0, LONG, top + second / 2)
    F.fuel_liquidation(state, 0, 4.0, SHORT, 1e12)  # more than there is: clipped
    assert (state.long_fuel[0] == before * (1 - 40e3 / 500e3)).all()  # taken only once a range shows no sweep
    F.fuel_trade_range(state, 0, 5.0, 100.0, 100.0, 180.0)
    assert state.sweeps[0].tolist() == [0, 0]
    assert state.long_fuel[0, nearest[0]] == 0 and state.long_fuel[0, nearest[1]] == pytest.approx(second / 2)
    assert state.ledger[0, LONG, F.L_LIQUIDATED] == pytest.approx(top + second / 2)
    assert not state.short_fuel[0].any()
    assert state.ledger[0, SHORT, F.L_LIQUIDATED] == pytest.approx(shorts.sum() * (1 - 160e3 / 500e3))


@pytest.mark.parametrize(
    ("realised_share", "early_share"), [(1.0, 0.0), (1.0, 0.4), (0.5, 0.0), (0.0, 0.0), (3.0, 0.2)]
)
def test_sweep_followed_by_realised_liquidations_calibrates(realised_share, early_share) -> None:
    state = F.allocate_fuel(1)
    F.fuel_oi(state, 0, 1.0, 100.0, 1e7, 0.6, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    F.fuel_liquidation(state, 0, 40.0, LONG, 1e5)
    F.fuel_trade_range(state, 0, 50.0, 99.9, 100.0, 180.0)  # no sweep: the 1e5 were elsewhere, not this sweep's
    assert state.ledger[0, LONG, F.L_LIQUIDATED] == pytest.approx(1e5) and state.sweeps[0, LONG] == 0
    est = _long_fuel_at_or_above(state, 92.0)
    realised = realised_share * est
    # part of the sweep's liquidations arrive during the trade range that reports it
    F.fuel_liquidation(state, 0, 62.0, LONG, early_share * realised)
    assert F.fuel_trade_range(state, 0, 63.0, 92.0, 100.0, 180.0) == F.APPLIED
    assert state.ledger[0, LONG, F.L_SWEPT] == pytest.approx(est) and est > 0
    for n in range(4):
        F.fuel_liquidation(state, 0, 70.0 + 30 * n, LONG, (1 - early_share) * realised / 4)
    assert state.calib_sweeps[0, LONG] == 0  # the window is still open
    F.fuel_liquidation(state, 0, 63.0 + 180.0, LONG, 5e6)  # the window has ended: not this sweep's
    assert F.fuel_decay(state, 0, 400.0, WEEK) == F.APPLIED
    assert state.calib_sweeps[0, LONG] == 1 and state.calib_sweeps[0, SHORT] == 0
    assert state.calib_ratio[0, LONG] == pytest.approx(realised_share, rel=1e-6, abs=1e-12)
    assert math.isnan(state.calib_ratio[0, SHORT])
    # the sweep explained the liquidations up to its estimate; only the rest took more fuel
    assert state.ledger[0, LONG, F.L_LIQUIDATED] == pytest.approx(1e5 + max(0.0, realised - est))


def _long_fuel_at_or_above(state: F.FuelState, price: float) -> float:
    k = bucket(price, state.width[0]) - state.k_lo[0, LONG]
    return float(state.long_fuel[0, k:].sum())


def test_sweeps_inside_one_window_are_scored_together() -> None:
    state = F.allocate_fuel(1)
    F.fuel_oi(state, 0, 1.0, 100.0, 1e7, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    F.fuel_trade_range(state, 0, 10.0, 97.0, 100.0, 180.0)
    first = state.sweep_usd[0, LONG]
    F.fuel_trade_range(state, 0, 100.0, 94.0, 97.0, 180.0)  # extends the window to 280
    second = state.sweep_usd[0, LONG]
    assert first > 0 and second > 0 and state.sweeps[0, LONG] == 2
    F.fuel_liquidation(state, 0, 250.0, LONG, first + second)
    F.fuel_decay(state, 0, 279.0, WEEK)
    assert state.calib_sweeps[0, LONG] == 0  # still open
    F.fuel_decay(state, 0, 280.0, WEEK)
    assert state.calib_sweeps[0, LONG] == 1 and state.calib_ratio[0, LONG] == pytest.approx(1.0)


def test_decay_halves_the_map_per_half_life_and_never_runs_backwards() -> None:
    state = F.allocate_fuel(1)
    F.fuel_decay(state, 0, 100.0, 3600.0)
    F.fuel_oi(state, 0, 100.0, 100.0, 1e6, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    before = state.long_fuel[0].copy()
    F.fuel_decay(state, 0, 100.0 + 7200.0, 3600.0)
    np.testing.assert_allclose(state.long_fuel[0], before / 4)
    F.fuel_decay(state, 0, 50.0, 3600.0)
    np.testing.assert_allclose(state.long_fuel[0], before / 4)
    assert state.t_decay[0] == 7300.0
    assert state.ledger[0, LONG, F.L_DECAYED] == pytest.approx(before.sum() * 0.75)


# --- refused inputs --------------------------------------------------------------------------------------

BAD = (math.nan, math.inf, -math.inf, -1.0, 0.0)


@st.composite
def invalid_operation(draw) -> tuple[str, tuple]:
    """A call with one field wrong: ``(kernel name, its arguments after the state)``."""
    p, lev, w = 100.0, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT
    bad = draw(st.sampled_from(BAD))
    choice = draw(st.integers(0, 13))
    calls: list[tuple[str, tuple]] = [
        ("oi", (SLOT, bad, p, 1e6, 0.5, lev, w, 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, bad, 1e6, 0.5, lev, w, 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, p, draw(st.sampled_from([math.nan, math.inf, 1e16, -1e16])), 0.5, lev, w, 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, p, 1e6, draw(st.sampled_from([-0.1, 1.5, math.inf])), lev, w, 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, p, 1e6, 0.5, draw(_bad_classes()), w[:1], 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, p, 1e6, 0.5, lev, draw(st.sampled_from([-w, w * math.nan, w * 0, w[:3]])), 0.005, 0.0025)),
        ("oi", (SLOT, 5.0, p, 1e6, 0.5, lev, w, draw(st.sampled_from([math.nan, -0.1, 1.0])), 0.0025)),
        ("oi", (SLOT, 5.0, p, 1e6, 0.5, lev, w, 0.005, draw(st.sampled_from([*BAD, 0.01, 2.0])))),
        ("oi", (draw(st.sampled_from([-1, N_SLOTS])), 5.0, p, 1e6, 0.5, lev, w, 0.005, 0.0025)),
        ("range", (SLOT, 5.0, bad, p, 180.0) if draw(st.booleans()) else (SLOT, 5.0, p, p * 0.9, 180.0)),
        ("range", (SLOT, 5.0, 90.0, draw(st.sampled_from([math.nan, math.inf])), 180.0)),
        ("range", (SLOT, 5.0, 90.0, 110.0, bad)),
        ("liq", (SLOT, 5.0, draw(st.sampled_from([-1, 2])), 1e6) if draw(st.booleans()) else (SLOT, 5.0, LONG, bad)),
        ("decay", (SLOT, 5.0, bad) if draw(st.booleans()) else (SLOT, bad, 3600.0)),
    ]
    name, args = calls[choice]
    if name == "liq" and args[3] == 0.0:  # a zero liquidation is a valid no-op report
        args = (SLOT, 5.0, LONG, -1.0)
    return name, args


@st.composite
def _bad_classes(draw) -> np.ndarray:
    return np.array([draw(st.sampled_from([1.0, 0.5, math.nan, math.inf, -3.0]))])


KERNELS = {"oi": F.fuel_oi, "range": F.fuel_trade_range, "liq": F.fuel_liquidation, "decay": F.fuel_decay}


@EXAMPLES
@given(p=params(), ops=operations(max_size=20), bad=st.lists(st.tuples(st.integers(0, 20), invalid_operation()),
                                                             min_size=1, max_size=6))
def test_refused_inputs_change_nothing(p, ops, bad) -> None:
    clean, dirty = F.allocate_fuel(N_SLOTS, p.buckets), F.allocate_fuel(N_SLOTS, p.buckets)
    p = Params(p.buckets, 0.0025, p.mmr, p.lev, p.weight, p.half_life_s, p.window_s)  # the width `bad` expects
    for state in (clean, dirty):  # lay the grid: a width of 0.01 is then refused as well
        apply(state, None, p, ("oi", 0.5, 100.0, 0.0, 0.5))
    for n, op in enumerate(ops):
        for at, (name, args) in bad:
            if at == n:
                assert KERNELS[name](dirty, *args) != F.APPLIED
        assert apply(clean, None, p, op) == apply(dirty, None, p, op)
    for got, expected in zip(dirty, clean, strict=True):
        np.testing.assert_array_equal(got, expected)
    below, above = np.zeros(4), np.zeros(4)
    for price in BAD:
        assert F.fuel_query(dirty, SLOT, price, below, above) == F.REJ_VALUE
        assert np.isnan(below).all() and np.isnan(above).all()
        for side in (LONG, SHORT, 2):
            assert F.fuel_clusters(dirty, SLOT, price, 3, below, above, side) == 0
    assert F.fuel_query(dirty, N_SLOTS, 100.0, below, above) == F.REJ_SLOT
    assert F.fuel_clusters(dirty, SLOT, 100.0, 0, below, above, LONG) == 0
    assert F.fuel_clusters(dirty, SLOT, 100.0, -2, below, above, LONG) == 0


def test_a_slot_without_open_interest_reports_unknown_not_zero() -> None:
    state = F.allocate_fuel(1)
    below, above = np.zeros(4), np.zeros(4)
    assert F.fuel_query(state, 0, 100.0, below, above) == F.APPLIED
    assert np.isnan(below).all() and np.isnan(above).all()


# --- re-anchoring ------------------------------------------------------------------------------------------


def _by_bucket(state: F.FuelState, side: int) -> dict[int, float]:
    row = (state.long_fuel if side == LONG else state.short_fuel)[0]
    return {int(state.k_lo[0, side] + j): float(row[j]) for j in np.nonzero(row)[0]}


@pytest.mark.parametrize(("move", "away_from"), [(1.2, LONG), (0.82, SHORT), (1.5, LONG)])
def test_reanchoring_keeps_every_bucket_still_in_reach(move, away_from) -> None:
    state = F.allocate_fuel(1)
    F.fuel_oi(state, 0, 1.0, 100.0, 1e6, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    k_lo, held = state.k_lo[0].copy(), [_by_bucket(state, s) for s in (LONG, SHORT)]
    F.fuel_oi(state, 0, 2.0, 100.0 * move, 0.0, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    assert (state.k_lo[0] != k_lo).all()  # both windows followed the price
    for side in (LONG, SHORT):
        lo = state.k_lo[0, side]
        reach = {k: v for k, v in held[side].items() if lo <= k < lo + 512}
        assert _by_bucket(state, side) == reach
        assert state.ledger[0, side, F.L_DROPPED] == pytest.approx(sum(held[side].values()) - sum(reach.values()))
    # the side the price moved away from loses nothing: its fuel is all on the near side of the new window
    assert _by_bucket(state, away_from) == held[away_from]


def test_reanchoring_books_what_falls_off_as_dropped() -> None:
    state = F.allocate_fuel(1)
    F.fuel_oi(state, 0, 1.0, 100.0, 1e6, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    F.fuel_oi(state, 0, 2.0, 300.0, 0.0, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.0025)
    for side, fuel in ((LONG, state.long_fuel), (SHORT, state.short_fuel)):
        dropped = state.ledger[0, side, F.L_DROPPED]
        assert fuel[0].sum() + dropped == pytest.approx(0.5e6)
    # the long window now reaches 447 buckets below 300, down to 98.1: of the longs only the 50x (98.5) stay
    assert state.ledger[0, LONG, F.L_DROPPED] == pytest.approx(0.5e6 * 0.97)
    assert state.ledger[0, SHORT, F.L_DROPPED] == pytest.approx(0.5e6)  # every short lies below 300


def test_grow_keeps_rows_and_adds_fresh_ones() -> None:
    state = F.allocate_fuel(2, 64)
    F.fuel_oi(state, 1, 1.0, 100.0, 1e6, 0.5, F.DEFAULT_LEVERAGE, F.DEFAULT_WEIGHT, 0.005, 0.01)
    bigger = F.grow_fuel(state, 5)
    fresh = F.allocate_fuel(5, 64)
    for old, new, blank in zip(state, bigger, fresh, strict=True):
        np.testing.assert_array_equal(new[:2], old)
        np.testing.assert_array_equal(new[2:], blank[2:])
    with pytest.raises(ValueError, match="shrink"):
        F.grow_fuel(bigger, 4)
    with pytest.raises(ValueError, match="8 buckets"):
        F.allocate_fuel(1, 4)


def test_reference_liquidation_price_is_the_research_formula() -> None:
    assert liquidation_price(100.0, 10.0, 0.005, LONG) == pytest.approx(90.5)
    assert liquidation_price(100.0, 10.0, 0.005, SHORT) == pytest.approx(109.5)
