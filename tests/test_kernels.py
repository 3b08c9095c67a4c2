"""Every detector kernel against its plain-Python reference, on random input (out-of-order times, gaps,
zeros, invalid rows), plus the batch builder that feeds them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from detector import kernels as K
from detector import reference as R
from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE, BatchBuilder
from detector.params import FIELDS, LIQ_TRIGGER_RATIO, pack
from detector.state import (
    C_SHOCK_FLOW,
    C_TRIGGER_HELD,
    CH_LIQ_FAST,
    CONDITIONS,
    F_LIQ_BASE_LONG,
    F_LIQ_BASE_SHORT,
    FEATURE_NAMES,
    LONG,
    MIN_RING,
    REJECT_REASONS,
    SHORT,
    T_LIQ_LONG_USD,
    T_LIQ_SHORT_USD,
    allocate,
    describe,
    thresholds,
)
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade, funding_mark
from flushwatch.settings import DetectorSettings

RTOL = 1e-9
EXAMPLES = settings(max_examples=60, deadline=None)

times = st.floats(0.0, 200.0, allow_nan=False)
amounts = st.one_of(st.just(0.0), st.floats(0.0, 1e6, allow_nan=False))
prices = st.floats(1.0, 2.0, allow_nan=False)


def _ring(cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.full((1, cap), np.nan), np.full(1, -1, np.int64), np.full(1, -1, np.int64)


def _close(actual: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, rel=RTOL, abs=1e-300)


# --- 1. decayed accumulators --------------------------------------------------------------------------


@EXAMPLES
@given(
    events=st.lists(st.tuples(times, amounts), max_size=40),
    tau=st.sampled_from([5.0, 60.0, 3600.0]),
    queries=st.lists(times, min_size=1, max_size=5),
)
def test_decay_accumulator_matches_reference(events, tau, queries) -> None:
    acc, acc_t = np.zeros((2, 3)), np.full((2, 3), -np.inf)
    for t, x in events:
        K.decay_add(acc, acc_t, 1, 2, t, x, tau)
    for q in queries:
        _close(K.decay_value(acc, acc_t, 1, 2, q, tau), R.decay_value(events, q, tau))
    assert acc[0].sum() == 0 and acc[1, :2].sum() == 0  # other slots and channels untouched


# --- 2. per-second prices and volatility ----------------------------------------------------------------


@EXAMPLES
@given(
    ticks=st.lists(st.tuples(times, prices), min_size=1, max_size=60),
    cap=st.integers(4, 20),
    halflife=st.sampled_from([3.0, 60.0, 3600.0]),
    window=st.integers(1, 25),
    now=times,
)
def test_price_ring_returns_and_variance_match_reference(ticks, cap, halflife, window, now) -> None:
    ring, last, first = _ring(cap)
    var, w = np.zeros(1), np.zeros(1)
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    ref = R.Buckets(1.0, cap)
    for t, price in ticks:
        K.price_put(ring, last, first, var, w, 0, t, price, alpha)
        ref.put(t, price)
    _close(K.sigma_1s2(var, w, 0), R.return_variance(ref, halflife))
    sec = math.floor(now)
    _close(K.ring_log_change(ring, last, first, 0, sec, window, False), ref.log_change(sec, window, False))
    for b in range(sec - cap - 2, sec + 3):
        _close(K.ring_value(ring, last, first, 0, b), ref.value(b))


# --- 3. per-minute rings ---------------------------------------------------------------------------------


@EXAMPLES
@given(
    points=st.lists(st.tuples(st.floats(0.0, 3000.0), amounts), min_size=1, max_size=60),
    cap=st.integers(2, 30),
    window=st.sampled_from([1, 5, 12, 60]),
    fallback=st.booleans(),
    now=st.floats(0.0, 3600.0),
)
def test_minute_ring_log_change_matches_reference(points, cap, window, fallback, now) -> None:
    ring, last, first = _ring(cap)
    ref = R.Buckets(60.0, cap)
    for t, v in points:
        K.ring_put(ring, last, first, 0, math.floor(t / 60.0), v)
        ref.put(t, v)
    minute = math.floor(now / 60.0)
    _close(K.ring_log_change(ring, last, first, 0, minute, window, fallback), ref.log_change(minute, window, fallback))


@st.composite
def minute_adds(draw) -> list[tuple[int, float]]:
    """``(minute, usd)`` adds: mostly forwards by 0-3 minutes, now and then past a ring's span or a whole
    era ahead, some arriving late (out of order, up to beyond the ring)."""
    out = []
    newest = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(0, 40))):
        newest += draw(st.sampled_from([0, 0, 1, 1, 2, 3, 17, 40, 10**7]))
        late = draw(st.sampled_from([0, 0, 0, 1, 3, 9, 30]))
        out.append((max(newest - late, 0), draw(amounts)))
    return out


@EXAMPLES
@given(
    adds=minute_adds(),
    cap=st.integers(1, 12),
    ranges=st.lists(st.tuples(st.integers(-45, 8), st.integers(0, 45)), min_size=1, max_size=6),
)
def test_minute_sum_ring_and_lagged_mean_match_reference(adds, cap, ranges) -> None:
    ring, last = np.zeros((2, 2, cap)), np.full((2, 2), -1, np.int64)
    ref = R.MinuteSums(cap)
    for b, x in adds:
        K.sum_ring_add(ring, last, 1, 0, b, x)
        ref.add(b, x)
    top = last[1, 0]
    assert top == (max(b for b, _ in adds) if adds else -1)
    for m in range(top - cap - 2, top + 3):  # every minute the ring holds, and some either side
        _close(K.lagged_mean(ring, last, 1, 0, m, m), ref.total(m))
    for lo, n in ranges:  # ranges around the newest minute: partly forgotten, partly not yet seen
        _close(K.lagged_mean(ring, last, 1, 0, top + lo, top + lo + n), ref.mean(top + lo, top + lo + n))
    assert not ring[0].any() and not ring[1, 1].any() and (last[0] == -1).all() and last[1, 1] == -1


def test_minute_sum_ring_zero_fills_gaps_and_drops_what_it_no_longer_spans() -> None:
    ring, last = np.zeros((1, 2, 4)), np.full((1, 2), -1, np.int64)
    for b, x in ((100, 5.0), (100, 7.0), (102, 1.0), (101, 2.0), (97, 1e9)):  # late 101 kept, 97 too old
        K.sum_ring_add(ring, last, 0, 1, b, x)
    assert [K.lagged_mean(ring, last, 0, 1, m, m) for m in range(98, 104)] == [0.0, 0.0, 12.0, 2.0, 1.0, 0.0]
    assert K.lagged_mean(ring, last, 0, 1, 99, 106) == 15.0 / 8  # minutes after the newest count as zero
    K.sum_ring_add(ring, last, 0, 1, 104, 3.0)  # minute 100 leaves the ring, 103 is a quiet minute
    assert K.lagged_mean(ring, last, 0, 1, 100, 104) == (2.0 + 1.0 + 0.0 + 3.0) / 5
    K.sum_ring_add(ring, last, 0, 1, 1000, 4.0)  # far ahead: the whole ring is a lap old
    assert ring[0, 1].tolist() == [4.0, 0.0, 0.0, 0.0] and last[0, 1] == 1000
    assert not ring[0, 0].any() and last[0, 0] == -1


def test_log_change_uses_the_oldest_value_when_history_is_short() -> None:
    ring, last, first = _ring(1440)
    K.ring_put(ring, last, first, 0, 100, 1000.0)
    assert math.isnan(K.ring_log_change(ring, last, first, 0, 100, 60, True))  # less than a minute
    K.ring_put(ring, last, first, 0, 110, 1100.0)
    assert K.ring_log_change(ring, last, first, 0, 110, 60, True) == pytest.approx(math.log(1.1))
    assert math.isnan(K.ring_log_change(ring, last, first, 0, 110, 60, False))
    assert K.ring_value(ring, last, first, 0, 105) == 1000.0  # minutes 101..109 carry minute 100 forward
    assert K.ring_log_change(ring, last, first, 0, 110, 5, True) == pytest.approx(math.log(1.1))
    assert K.ring_log_change(ring, last, first, 0, 130, 5, True) == 0.0  # no value since: flat


# --- 4. funding percentile ------------------------------------------------------------------------------


@EXAMPLES
@given(
    points=st.lists(st.tuples(st.floats(0.0, 3000.0), st.sampled_from([-2e-4, 0.0, 1e-4, 3e-4, 8e-4])), max_size=60),
    cap=st.integers(2, 30),
    x=st.sampled_from([-2e-4, 0.0, 1e-4, 2e-4, 8e-4, 1e-3, math.nan]),
)
def test_funding_rank_matches_reference(points, cap, x) -> None:
    ring, last, first = _ring(cap)
    ref = R.Buckets(60.0, cap)
    for t, v in points:
        K.ring_put(ring, last, first, 0, math.floor(t / 60.0), v)
        ref.put(t, v)
    pct, n = K.ring_rank(ring, last, first, 0, x)
    ref_pct, ref_n = R.mid_rank(ref.valid(), x)
    assert n == ref_n
    _close(pct, ref_pct)


# --- 5. depth ------------------------------------------------------------------------------------------------


@EXAMPLES
@given(points=st.lists(st.tuples(st.floats(0.0, 600.0), amounts), min_size=1, max_size=60), cap=st.integers(2, 40))
def test_depth_median_of_completed_buckets_matches_reference(points, cap) -> None:
    ring, last, first = _ring(cap)
    med = np.full(1, np.nan)
    ref = R.Buckets(10.0, cap)
    for t, v in points:
        K.depth_put(ring, last, first, med, 0, t, v)
        ref.put(t, v)
    _close(med[0], R.completed_median(ref))


# --- overheating score --------------------------------------------------------------------------------------

maybe_nan = st.one_of(st.just(math.nan), st.floats(-1.0, 1.0))


@EXAMPLES
@given(
    crowd=st.sampled_from([1.0, -1.0]),
    funding=st.one_of(st.just(math.nan), st.floats(-0.002, 0.002)),
    pct=st.floats(0.0, 1.0),
    n_pct=st.integers(0, 200),
    premium=st.one_of(st.just(math.nan), st.floats(-30.0, 30.0)),
    oi24=maybe_nan,
    px24=maybe_nan,
    fuel=st.one_of(st.just(math.nan), st.floats(0.0, 10.0)),
    depth_ratio=st.one_of(st.just(math.nan), st.floats(0.0, 3.0)),
    hot=st.sampled_from([0.0004, 0.0005, 0.0008]),
    weights=st.tuples(*[st.sampled_from([0.0, 0.25, 0.45]) for _ in range(5)]),
)
def test_overheat_score_matches_reference(
    crowd, funding, pct, n_pct, premium, oi24, px24, fuel, depth_ratio, hot, weights
) -> None:
    s = DetectorSettings(
        funding_hot_8h=hot, weight_funding=weights[0], weight_premium=weights[1], weight_oi_build=weights[2],
        weight_fuel=weights[3], weight_liquidity=weights[4],
    )
    got = K.overheat_score(crowd, funding, pct, n_pct, premium, oi24, px24, fuel, depth_ratio, pack(s))
    _close(got, R.overheat_score(crowd, funding, pct, n_pct, premium, oi24, px24, fuel, depth_ratio, s))
    assert 0.0 <= got <= 100.0


# --- 6. apply_batch + features against a whole reference slot -----------------------------------------------

BAD_SLOTS = st.sampled_from([-1, 3, 1000])
BAD_TIMES = st.sampled_from([math.nan, math.inf, -5.0, 0.0])
BAD_VALUES = st.sampled_from([math.nan, math.inf, -1.0, 0.0])


@st.composite
def rows(draw) -> list[tuple[int, int, float, float, float, float]]:
    """Mostly valid rows over 3 slots and ~2 hours, shuffled locally (out of order), with some bad ones."""
    out = []
    t = 1_700_000_000.0
    for _ in range(draw(st.integers(1, 120))):
        t += draw(st.sampled_from([0.0, 0.3, 1.0, 7.0, 61.0, 400.0]))
        te = t - draw(st.sampled_from([0.0, 0.0, 0.0, 2.0, 90.0]))  # some arrive late
        kind = draw(st.sampled_from([TRADE, TRADE, TRADE, LIQ, LIQ, FUNDING, OI, DEPTH]))
        slot = draw(st.integers(0, 2))
        price = draw(st.floats(90.0, 110.0))
        if kind in (TRADE, LIQ):
            row = (kind, slot, te, price, draw(amounts), draw(st.sampled_from([1.0, -1.0])))
        elif kind == FUNDING:
            row = (kind, slot, te, price, price * draw(st.floats(0.998, 1.002)), draw(st.floats(-1e-3, 1e-3)))
        elif kind == OI:
            row = (kind, slot, te, draw(st.sampled_from([0.0, 1e9, 1.1e9, 9e8])), draw(st.floats(0.0, 1e7)), 0.0)
        else:
            row = (kind, slot, te, price, draw(amounts), draw(st.floats(0.0, 20.0)))
        damage = draw(st.sampled_from(["none"] * 12 + ["slot", "time", "kind", "v0", "v1", "v2"]))
        k, s, tt, a, b, c = row
        if damage == "slot":
            s = draw(BAD_SLOTS)
        elif damage == "time":
            tt = draw(BAD_TIMES)
        elif damage == "kind":
            k = draw(st.sampled_from([-1, 5, 9]))
        elif damage == "v0":
            a = draw(BAD_VALUES) if kind != OI else draw(st.sampled_from([math.nan, -1.0]))
        elif damage == "v1":
            b = draw(st.sampled_from([math.nan, -1.0]))
        elif damage == "v2" and kind in (TRADE, LIQ):
            c = draw(st.sampled_from([0.0, 2.0, math.nan]))
        out.append((k, s, tt, a, b, c))
    return out


@settings(max_examples=150, deadline=None)
@given(
    batch=rows(),
    stages=st.lists(st.sampled_from([0, 1, 3, 4, 7]), min_size=6, max_size=6),
    cuts=st.lists(st.integers(0, 120), max_size=4),
    lag=st.sampled_from([-30.0, 0.0, 0.5, 45.0, 400.0]),
    baseline=st.sampled_from([(5, 360, 5), (1, 1, 1), (2, 30, 3), (40, 1400, 10)]),
    fallback=st.sampled_from([60.0, 5.0]),
)
def test_apply_batch_and_features_match_reference(batch, stages, cuts, lag, baseline, fallback) -> None:
    lag_min, window_min, min_minutes = baseline
    s = DetectorSettings(liq_baseline_lag_min=lag_min, liq_baseline_window_min=window_min,
                         liq_baseline_min_minutes=min_minutes, price_fallback_s=fallback)
    p = pack(s)
    state = allocate(3)
    state.stage[:] = np.array(stages, np.int8).reshape(3, 2)
    cols = [np.array([r[k] for r in batch], dtype) for k, dtype in enumerate([np.int8, np.int32] + [np.float64] * 4)]
    rejects = np.zeros(len(REJECT_REASONS), np.int64)
    bounds = sorted({0, len(batch), *(c for c in cuts if c < len(batch))})
    for lo, hi in itertools.pairwise(bounds):  # the same rows in several batches
        part = [c[lo:hi] for c in cols]
        rejects += K.apply_batch(state, *part, np.zeros(hi - lo), p)

    ref_slots = [R.RefSlot() for _ in range(3)]
    assert list(rejects) == list(R.reference_apply(ref_slots, batch, state.stage, s))
    now = max((r[2] for r in batch if math.isfinite(r[2]) and r[2] > 0), default=1_700_000_000.0) + lag
    for i, ref in enumerate(ref_slots):
        np.testing.assert_allclose(state.totals[i], R.reference_totals(ref), rtol=RTOL)
        K.compute_features(state, np.arange(3) == i, now, p, 0.0, 0.0)
        expected = R.reference_features(ref, now, s, state.stage[i])
        for k, name in enumerate(FEATURE_NAMES):
            if FEATURE_NAMES[k] not in R.EPISODE_FEATURES:
                try:
                    _close(state.features[i, k], expected[name])
                except AssertionError as exc:
                    raise AssertionError(f"slot {i} feature {name}") from exc


def _liquidations(state, p, times, usd, sides) -> None:
    n = len(times)
    one = np.ones(n)
    cols = (np.full(n, LIQ, np.int8), np.zeros(n, np.int32), np.array(times, float), 100 * one)
    K.apply_batch(state, *cols, np.array(usd, float), np.array(sides, float), 0 * one, p)


def _base(state, p, now: float) -> tuple[float, float]:
    K.compute_features(state, np.ones(1, np.bool_), now, p, 0.0, 0.0)
    return state.features[0, F_LIQ_BASE_LONG], state.features[0, F_LIQ_BASE_SHORT]


def test_the_baseline_is_the_mean_per_minute_of_the_lagged_minutes() -> None:
    s = DetectorSettings(liq_baseline_lag_min=5, liq_baseline_window_min=6, liq_baseline_min_minutes=1)
    p, floor = pack(s), s.liq_floor_usd_min
    state = allocate(1)
    m0 = 100 * 60.0  # minute 100
    state.t_first[0] = m0 - 60.0  # the slot's history began in minute 99, so minute 100 is whole
    _liquidations(state, p, [m0 + 30, m0 + 50, m0 + 190], [40_000, 20_000, 120_000], [1, 1, 1])
    # minutes 100..104 are all within the lag at minute 104: no lagged minute yet, intensity is not judged
    assert all(math.isnan(b) for b in _base(state, p, m0 + 299))
    assert _base(state, p, m0 + 300) == (60_000, floor)  # minute 100 alone
    assert _base(state, p, m0 + 479) == (60_000 / 3, floor)  # 101, 102: quiet minutes count as zero
    assert _base(state, p, m0 + 480) == (180_000 / 4, floor)  # ... until 103 enters
    # a burst now, and in the lagged minutes, does not move it
    _liquidations(state, p, [m0 + 481, m0 + 420, m0 + 241], [5e6, 5e6, 5e6], [1, 1, 1])
    assert _base(state, p, m0 + 480)[0] == 180_000 / 4
    # the window slides: at minute 113 it spans 103..108, without minute 100 and with the burst's minutes
    # (104, 107, 108), now that they are lag minutes old
    assert _base(state, p, m0 + 780)[0] == pytest.approx((120_000 + 15e6) / 6)
    # an hour on: the quiet minutes since the newest liquidation still count, as zeros
    assert _base(state, p, m0 + 3600) == (floor, floor)


def test_liquidations_during_an_episode_skip_the_baseline() -> None:
    p = pack(DetectorSettings(liq_baseline_min_minutes=1))
    state = allocate(1)
    state.stage[0] = (3, 0)  # long side in an episode, short side calm
    state.t_first[0] = 540.0  # history since minute 9
    _liquidations(state, p, [610.0, 611.0], [700_000, 700_000], [1, -1])

    assert state.liq_min_last[0].tolist() == [-1, 10]  # minute 10 for the short side only
    assert not state.liq_min[0, LONG].any() and state.liq_min[0, SHORT].sum() == 700_000
    assert state.acc[0, CH_LIQ_FAST + LONG] > 0.0  # the fast rate sees both
    assert state.totals[0, T_LIQ_LONG_USD] == state.totals[0, T_LIQ_SHORT_USD] == 700_000
    assert _base(state, p, 1000.0) == (DetectorSettings().liq_floor_usd_min, 700_000 / 2)  # minutes 10..11


def test_too_short_a_history_leaves_the_intensity_unjudged() -> None:
    s = DetectorSettings()  # 5 lagged minutes needed
    p = pack(s)
    state = allocate(1)
    state.t_first[0] = 0.0
    assert all(math.isnan(b) for b in _base(state, p, 9 * 60.0 + 59))  # minutes 1..4: four lagged minutes
    assert _base(state, p, 10 * 60.0) == (s.liq_floor_usd_min, s.liq_floor_usd_min)  # minutes 1..5


def test_an_episode_is_measured_against_the_baseline_it_started_from() -> None:
    s = DetectorSettings(liq_baseline_min_minutes=1)
    p = pack(s)
    state = allocate(1)
    state.t_first[0] = 0.0
    _liquidations(state, p, [70.0, 130.0], [600_000, 600_000], [1, 1])  # minutes 1, 2
    before = _base(state, p, 8 * 60.0)[0]  # minutes 1..3
    assert before == pytest.approx(1_200_000 / 3)
    state.stage[0, LONG] = 3  # the long side enters an episode
    assert _base(state, p, 20 * 60.0)[0] == before  # minutes 1..15 would give 80k: the episode keeps its own
    state.stage[0, LONG] = 0
    assert _base(state, p, 20 * 60.0)[0] == pytest.approx(1_200_000 / 15)


def test_the_baseline_fits_in_the_minute_ring_and_funding_anchors_rise() -> None:
    DetectorSettings(liq_baseline_lag_min=1, liq_baseline_window_min=MIN_RING - 1)
    with pytest.raises(ValidationError, match="liq_baseline_lag_min"):
        DetectorSettings(liq_baseline_lag_min=2, liq_baseline_window_min=MIN_RING - 1)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DetectorSettings(liq_baseline_lag_min=0)
    for bad in (
        {"funding_warm_8h": 0.00005},  # below neutral (0.0001)
        {"funding_warm_8h": 0.0006},  # above hot (0.0005)
        {"funding_hot_8h": 0.001},  # not below max
        {"funding_neutral_8h": 0.0003},  # not below warm
    ):
        with pytest.raises(ValidationError, match="funding anchors must rise"):
            DetectorSettings(**bad)


def test_funding_anchor_follows_its_settings() -> None:
    s = DetectorSettings(funding_warm_8h=0.0002, funding_max_8h=0.002, funding_pct_min_samples=10)
    p = pack(s)
    unknown = (math.nan,) * 4  # OI and price changes, fuel, depth
    score = {x: K.overheat_score(1.0, x, 0.5, 0, 0.0, *unknown, p) for x in (0.0002, 0.0005, 0.002)}
    w = 100 * s.weight_funding / (s.weight_funding + s.weight_premium + s.weight_oi_build)
    assert score == pytest.approx({0.0002: 0.5 * w, 0.0005: 0.8 * w, 0.002: w})
    # the percentile counts from funding_pct_min_samples on: rank 0.95 lifts a low rate to the full anchor
    assert K.overheat_score(1.0, 0.0001, 0.95, 9, 0.0, math.nan, math.nan, math.nan, math.nan, p) == 0.0
    assert K.overheat_score(1.0, 0.0001, 0.95, 10, 0.0, math.nan, math.nan, math.nan, math.nan, p) == pytest.approx(w)


# --- batch builder, params, helpers ---------------------------------------------------------------------------

COMMON = {"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC"}


def test_batch_builder_columns_carry_every_event_kind() -> None:
    builder = BatchBuilder()
    builder.add(Trade(**COMMON, ts_recv=0, ts_event=1_000_000_000_500_000_000, price=100.0, size=2.0, side="sell"), 4)
    builder.add(
        Liquidation(**COMMON, ts_recv=0, ts_event=2_000_000_000_000_000_000, price=99.0, size=3.0, side="short"), 5
    )
    builder.add(
        funding_mark(
            **COMMON,
            ts_recv=0,
            ts_event=3_000_000_000_000_000_000,
            mark_price=101.0,
            index_price=100.0,
            funding_rate=0.0001,
            funding_interval_h=4.0,
            next_funding_ts=0,
        ),
        6,
    )
    builder.add(OpenInterest(**COMMON, ts_recv=0, ts_event=4_000_000_000_000_000_000, oi_base=10.0, oi_usd=1000.0), 7)
    builder.add(
        Depth(
            **COMMON,
            ts_recv=0,
            ts_event=5_000_000_000_000_000_000,
            mid=100.0,
            spread_bps=0.7,
            bid_usd=(1.0, 2.0, 4.0),
            ask_usd=(8.0, 16.0, 32.0),
            reach_bps=90.0,
        ),
        8,
    )
    kind, slot, t, v0, v1, v2, v3 = builder.columns()
    assert len(builder) == 5
    assert kind.tolist() == [TRADE, LIQ, FUNDING, OI, DEPTH]
    assert slot.tolist() == [4, 5, 6, 7, 8]
    assert t.tolist() == [1_000_000_000.5, 2e9, 3e9, 4e9, 5e9]
    assert v0.tolist() == [100.0, 99.0, 101.0, 1000.0, 100.0]
    assert v1.tolist() == [200.0, 297.0, 100.0, 10.0, 18.0]  # depth: bid + ask within 1 %
    assert v2.tolist() == [-1.0, -1.0, 0.0002, 0.0, 0.7]  # funding restated per 8 h
    assert v3.tolist() == [0.0] * 5
    builder.clear()
    assert len(builder) == 0 and builder.columns()[0].size == 0
    assert kind.tolist() == [TRADE, LIQ, FUNDING, OI, DEPTH]  # views handed out before clear() stay valid


def test_bad_events_from_the_builder_are_counted_not_applied() -> None:
    builder = BatchBuilder()
    builder.add(Trade(**COMMON, ts_recv=0, ts_event=10**18, price=math.nan, size=1.0, side="buy"), 0)
    builder.add(Trade(**COMMON, ts_recv=0, ts_event=10**18, price=100.0, size=1.0, side="buy"), 9)
    builder.add(
        FundingMark(
            **COMMON,
            ts_recv=0,
            ts_event=10**18,
            mark_price=100.0,
            index_price=0.0,
            funding_rate=0.0,
            funding_interval_h=8.0,
            funding_8h=0.0,
            funding_annual=0.0,
            next_funding_ts=0,
        ),
        0,
    )
    state = allocate(2)
    rejects = K.apply_batch(state, *builder.columns(), pack(DetectorSettings()))
    assert dict(zip(REJECT_REASONS, rejects.tolist(), strict=True)) == {
        "bad_slot": 1,
        "bad_kind": 0,
        "bad_time": 0,
        "bad_value": 2,
    }
    assert state.totals.sum() == 0 and math.isnan(state.price[0]) and math.isinf(state.t_first[0])


def test_builder_refuses_a_non_event() -> None:
    builder = BatchBuilder()
    with pytest.raises(TypeError):
        builder.add("trade", 0)  # type: ignore[arg-type]
    assert len(builder) == 0 and all(c.size == 0 for c in builder.columns())


def test_pack_thresholds_describe() -> None:
    s = DetectorSettings(liq_trigger_ratio=7.5)
    p = pack(s)
    assert p.shape == (len(FIELDS),) and p[LIQ_TRIGGER_RATIO] == 7.5
    th = thresholds(s)
    assert th["liq_trigger_ratio"] == 7.5 and th["oi_purge_log_chg"] == pytest.approx(math.log(0.95))
    assert describe(C_TRIGGER_HELD | C_SHOCK_FLOW) == [
        "taker imbalance <= -shock_imbalance (against the side)",
        "liq_ratio >= liq_trigger_ratio for trigger_hold_s",
    ]
    assert describe(0) == [] and len(describe((1 << len(CONDITIONS)) - 1)) == len(CONDITIONS)
