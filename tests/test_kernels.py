"""Every detector kernel against its plain-Python reference, on random input (out-of-order times, gaps,
zeros, invalid rows), plus the batch builder that feeds them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import kernels as K
from detector import reference as R
from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE, BatchBuilder
from detector.params import FIELDS, LIQ_TRIGGER_RATIO, pack
from detector.state import (
    C_SHOCK_FLOW,
    C_TRIGGER_HELD,
    CONDITIONS,
    F_OI_CHG_EPISODE_LONG,
    F_OI_CHG_EPISODE_SHORT,
    FEATURE_NAMES,
    REJECT_REASONS,
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


@EXAMPLES
@given(acc=amounts, tau=st.floats(1.0, 1e5), elapsed=st.floats(1e-3, 1e7, allow_nan=False, allow_infinity=False))
def test_bias_corrected_baseline_matches_reference(acc, tau, elapsed) -> None:
    _close(K.baseline_per_min(acc, tau, elapsed), R.baseline_per_min(acc, tau, elapsed))


def test_bias_corrected_baseline_is_the_plain_average_early_and_the_rate_late() -> None:
    tau = 3600.0
    # 1000 USD/s for 10 s fed into a decayed sum: the corrected rate is ~1000 USD/s = 60000/min
    acc, acc_t = np.zeros((1, 1)), np.full((1, 1), -np.inf)
    for k in range(11):
        K.decay_add(acc, acc_t, 0, 0, float(k), 1000.0, tau)
    early = K.baseline_per_min(K.decay_value(acc, acc_t, 0, 0, 10.0, tau), tau, 11.0)
    assert early == pytest.approx(60_000, rel=0.01)
    # a steady state sum (rate * tau) after a long history reads as the rate itself
    assert K.baseline_per_min(1000.0 * tau, tau, 1e9) == pytest.approx(60_000, rel=1e-12)


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
    hot=st.sampled_from([0.0004, 0.0005, 0.0008]),
    weights=st.tuples(*[st.sampled_from([0.0, 0.25, 0.45]) for _ in range(3)]),
)
def test_overheat_score_matches_reference(crowd, funding, pct, n_pct, premium, oi24, px24, hot, weights) -> None:
    s = DetectorSettings(
        funding_hot_8h=hot, weight_funding=weights[0], weight_premium=weights[1], weight_oi_build=weights[2]
    )
    got = K.overheat_score(crowd, funding, pct, n_pct, premium, oi24, px24, pack(s))
    _close(got, R.overheat_score(crowd, funding, pct, n_pct, premium, oi24, px24, s))
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
)
def test_apply_batch_and_features_match_reference(batch, stages, cuts, lag) -> None:
    s = DetectorSettings()
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
    assert list(rejects) == list(R.reference_apply(ref_slots, batch, state.stage))
    now = max((r[2] for r in batch if math.isfinite(r[2]) and r[2] > 0), default=1_700_000_000.0) + lag
    for i, ref in enumerate(ref_slots):
        np.testing.assert_allclose(state.totals[i], R.reference_totals(ref), rtol=RTOL)
        K.compute_features(state, i, now, p)
        expected = R.reference_features(ref, now, s)
        for k, name in enumerate(FEATURE_NAMES):
            if k not in (F_OI_CHG_EPISODE_LONG, F_OI_CHG_EPISODE_SHORT):
                try:
                    _close(state.features[i, k], expected[name])
                except AssertionError as exc:
                    raise AssertionError(f"slot {i} feature {name}") from exc


def test_a_young_baseline_is_averaged_over_at_least_the_fast_window() -> None:
    p = pack(DetectorSettings())
    state = allocate(1)
    one = np.ones(1)
    K.apply_batch(
        state,
        np.array([LIQ], np.int8),
        np.zeros(1, np.int32),
        np.array([1000.0]),
        100 * one,
        50_000 * one,
        one,
        0 * one,
        p,
    )
    K.compute_features(state, 0, 1005.0, p)
    # 50 kUSD five seconds into the history: 50 kUSD over one 60-s window, not 600 kUSD/min
    assert state.features[0, FEATURE_NAMES.index("liq_base_long")] == pytest.approx(50_000, rel=1e-2)
    assert state.features[0, FEATURE_NAMES.index("liq_base_short")] == DetectorSettings().liq_floor_usd_min


def test_liquidations_during_an_episode_skip_the_slow_baseline() -> None:
    p = pack(DetectorSettings())
    state = allocate(1)
    state.stage[0] = (3, 0)  # long side in an episode, short side calm
    one = np.ones(2)
    K.apply_batch(
        state,
        np.array([LIQ, LIQ], np.int8),
        np.zeros(2, np.int32),
        np.array([10.0, 11.0]),
        100 * one,
        5000 * one,
        np.array([1.0, -1.0]),
        0 * one,
        p,
    )
    from detector.state import CH_LIQ_FAST, CH_LIQ_SLOW, LONG, SHORT, T_LIQ_LONG_USD, T_LIQ_SHORT_USD

    assert state.acc[0, CH_LIQ_SLOW + LONG] == 0.0
    assert state.acc[0, CH_LIQ_SLOW + SHORT] == 5000.0
    assert state.acc[0, CH_LIQ_FAST + LONG] > 0.0
    assert state.totals[0, T_LIQ_LONG_USD] == state.totals[0, T_LIQ_SHORT_USD] == 5000.0


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
