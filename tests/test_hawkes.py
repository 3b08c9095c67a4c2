"""The Hawkes branching-ratio kernels: recovery of a known n on simulated processes, what a Poisson process and
a rate shift give, the kernels against their NumPy references on random input, and degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import hawkes as H
from detector import hawkes_reference as R

EXAMPLES = settings(max_examples=60, deadline=None)
BETA_MIN, BETA_MAX = 1e-3, 10.0
ITERS = 1000
T0 = 1_760_000_000.0  # event-time seconds are large: offsets from the window start keep the precision


def _filled(arrivals: np.ndarray, capacity: int = 8192, slot: int = 0, side: int = 0, n_slots: int = 1):
    state = H.allocate_hawkes(n_slots, capacity)
    for t in arrivals:
        H.hawkes_push(state.times, state.count, slot, side, t)
    return state


def _fit_all(arrivals: np.ndarray, iters: int = ITERS) -> tuple[float, float, float, int]:
    """One window over the whole sample, from the process start (0) to its last arrival."""
    state = _filled(T0 + arrivals)
    now = T0 + arrivals[-1]
    return H.hawkes_fit(state.times, state.count, 0, 0, now, arrivals[-1], BETA_MIN, BETA_MAX, iters)


def _moment_all(arrivals: np.ndarray, bin_s: float) -> float:
    state = _filled(T0 + arrivals)
    return H.moment_n(state.times, state.count, 0, 0, T0 + arrivals[-1], arrivals[-1], bin_s)


# --- validation on simulated processes ------------------------------------------------------------------


@pytest.mark.parametrize("n_true", [0.3, 0.5, 0.7, 0.9])
def test_recovers_the_branching_ratio_of_a_simulated_hawkes_process(n_true: float) -> None:
    mu, beta = 0.05, 0.1  # 20 s between immigrants, excitation lasting ~10 s: liquidation-like
    arrivals = R.simulate_hawkes(mu, n_true, beta, 5_000, np.random.default_rng(int(n_true * 10)))
    mu_hat, n_hat, beta_hat, m = _fit_all(arrivals)
    assert m == 5_000
    assert n_hat == pytest.approx(n_true, abs=0.05)
    assert beta_hat == pytest.approx(beta, rel=0.25)
    assert mu_hat == pytest.approx(mu, rel=0.25)
    # bins 10 kernel lengths wide: clusters straddling bin edges bias the moment estimate downwards (measured
    # 0.27 / 0.45 / 0.63-0.66 / 0.81-0.85 for 0.3 / 0.5 / 0.7 / 0.9), so it is a cross-check, not a gauge
    moment = _moment_all(arrivals, 100.0)
    assert n_true - 0.15 < moment < n_true + 0.02, moment


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_poisson_process_has_no_branching(seed: int) -> None:
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(20.0, 5_000))
    mu_hat, n_hat, _, _ = _fit_all(arrivals)
    assert 0.0 <= n_hat < 0.1
    assert mu_hat == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_rate_shift_passes_for_near_critical_branching(seed: int) -> None:
    """Documented limitation (Filimonov & Sornette 2013): a Poisson process whose rate jumps 5x halfway has
    n = 0, yet the fit explains the jump as one slow self-excitation: n ~ 0.95 with a kernel lasting minutes
    (1/β ~ 400 s, 40x a genuine liquidation kernel). The moment estimator is fooled too (~0.64). A kernel
    that slow is the fingerprint: callers should bound ``beta_min`` (e.g. 1/60 s) and read changes of n."""
    rng = np.random.default_rng(seed)
    calm = np.cumsum(rng.exponential(20.0, 2_500))
    busy = calm[-1] + np.cumsum(rng.exponential(4.0, 2_500))
    arrivals = np.concatenate([calm, busy])
    _, n_hat, beta_hat, _ = _fit_all(arrivals)
    assert n_hat > 0.9
    assert beta_hat < 0.01
    assert _moment_all(arrivals, 100.0) > 0.5


def test_the_fit_is_a_stationary_point_of_the_window_likelihood() -> None:
    """The M-step's window-edge terms are right: the gradient of the direct likelihood vanishes at the fit,
    and no parameter nearby does better."""
    arrivals = R.simulate_hawkes(0.2, 0.6, 0.5, 400, np.random.default_rng(4))
    span = arrivals[-1] + 30.0  # the window ends after a quiet spell: the compensator's edge matters
    mu, n, beta, ll = H.fit_offsets(arrivals, span, BETA_MIN, BETA_MAX, 5_000)
    assert 0.0 < n < H.N_MAX and BETA_MIN < beta < BETA_MAX
    assert ll == pytest.approx(R.loglik(arrivals, span, mu, n, beta), rel=1e-12)
    for k, theta in enumerate((mu, n, beta)):
        h = 1e-5 * theta
        up, down = [mu, n, beta], [mu, n, beta]
        up[k] += h
        down[k] -= h
        slope = (R.loglik(arrivals, span, *up) - R.loglik(arrivals, span, *down)) / (2 * h)
        assert abs(slope * theta) < 1e-3, (k, slope)
        assert R.loglik(arrivals, span, *up) < ll and R.loglik(arrivals, span, *down) < ll


# --- kernels against references -----------------------------------------------------------------------


@st.composite
def samples(draw) -> tuple[np.ndarray, float, float]:
    """Simulated arrivals (some duplicated into ties), a window start inside them and a window end after."""
    mu = draw(st.sampled_from([0.1, 1.0]))
    n = draw(st.sampled_from([0.0, 0.3, 0.8, 0.95]))
    beta = draw(st.sampled_from([0.2, 2.0]))
    m = draw(st.integers(0, 90))
    x = R.simulate_hawkes(mu, n, beta, m, np.random.default_rng(draw(st.integers(0, 2**32))))
    ties = draw(st.lists(st.integers(0, max(m - 1, 0)), max_size=8)) if m else []
    x = np.sort(np.concatenate([x, x[ties]]))
    start = draw(st.floats(0.0, 0.3)) * (x[-1] if len(x) else 1.0)
    end = (x[-1] if len(x) else 1.0) + draw(st.floats(0.0, 20.0))
    return x, start, end


@EXAMPLES
@given(
    sample=samples(),
    bounds=st.sampled_from([(0.01, 10.0), (0.5, 0.5), (0.05, 1.0)]),
    iters=st.sampled_from([1, 30, 200]),
)
def test_fit_matches_reference(sample, bounds, iters) -> None:
    x, start, end = sample
    beta_min, beta_max = bounds
    state = _filled(T0 + x)
    ref = R.Arrivals(8192)
    for t in T0 + x:
        ref.push(t)
    now, window_s = T0 + end, end - start
    arrivals, ref_start = ref.window(now, window_s)
    want = R.fit(np.array(arrivals) - ref_start, now - ref_start, beta_min, beta_max, iters)
    mu, n, beta, m = H.hawkes_fit(state.times, state.count, 0, 0, now, window_s, beta_min, beta_max, iters)
    assert m == len(arrivals)
    np.testing.assert_allclose((mu, n, beta), want[:3], rtol=1e-7, atol=1e-12)
    offsets, _ = H.window_arrivals(state.times, state.count, 0, 0, now, window_s)
    ll = H.fit_offsets(offsets, now - ref_start, beta_min, beta_max, iters)[3]
    assert ll == pytest.approx(want[3], rel=1e-9, nan_ok=True)
    if not math.isnan(n):
        assert 0.0 <= n <= H.N_MAX and beta_min <= beta <= beta_max and mu > 0


@EXAMPLES
@given(
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 30.0)), max_size=150),
    capacity=st.integers(1, 200),
    window_s=st.floats(10.0, 2000.0),
    after=st.floats(0.0, 100.0),
    bin_s=st.sampled_from([5.0, 30.0, 100.0]),
)
def test_moment_estimator_matches_reference(gaps, capacity, window_s, after, bin_s) -> None:
    x = T0 + np.cumsum(gaps)
    state = _filled(x, capacity)
    ref = R.Arrivals(capacity)
    for t in x:
        ref.push(t)
    now = (x[-1] if len(x) else T0) + after
    arrivals, start = ref.window(now, window_s)
    got = H.moment_n(state.times, state.count, 0, 0, now, window_s, bin_s)
    want = R.moment_n(arrivals, start, now, bin_s)
    assert got == pytest.approx(want, rel=1e-9, nan_ok=True)
    assert math.isnan(got) or 0.0 < got < 1.0


finite_or_not = st.one_of(st.floats(0.0, 1000.0), st.sampled_from([math.nan, math.inf, -math.inf]))


@EXAMPLES
@given(
    pushes=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), finite_or_not), max_size=80),
    capacity=st.integers(1, 12),
    queries=st.lists(st.tuples(finite_or_not, st.one_of(st.floats(0.0, 400.0), st.just(math.inf))), max_size=6),
)
def test_ring_push_and_window_match_a_list(pushes, capacity, queries) -> None:
    state = H.allocate_hawkes(3, capacity)
    refs = {(i, s): R.Arrivals(capacity) for i in range(3) for s in range(2)}
    for i, s, t in pushes:
        assert H.hawkes_push(state.times, state.count, i, s, t) == refs[i, s].push(t)
    for (i, s), ref in refs.items():
        assert state.count[i, s] == len(ref.times)
        for now, window_s in queries:
            x, start = H.window_arrivals(state.times, state.count, i, s, now, window_s)
            arrivals, want_start = ref.window(now, window_s)
            assert start == pytest.approx(want_start, nan_ok=True)
            np.testing.assert_allclose(x + start, arrivals, rtol=1e-12, atol=1e-9)  # offsets round
            assert (np.diff(x) >= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(-5.0, 40.0), st.lists(st.booleans(), min_size=3, max_size=3)), max_size=12),
    every_s=st.sampled_from([0.0, 10.0, 30.0]),
)
def test_refit_only_when_every_s_has_elapsed(steps, every_s) -> None:
    arrivals = np.cumsum(np.random.default_rng(0).exponential(2.0, 60))
    state = _filled(arrivals, capacity=64, slot=1, side=1, n_slots=3)
    has_arrivals = np.zeros((3, 2), np.bool_)
    has_arrivals[1, 1] = True
    last = np.full((3, 2), -math.inf)
    n_before = np.full((3, 2), math.nan)
    now = arrivals[-1] + 1.0
    for advance, mask in steps:
        now += advance
        previous_hat = state.n_hat.copy()
        due = np.array(mask)[:, None] & (now - last >= every_s)
        assert H.hawkes_refit(state, now, np.array(mask), 600.0, every_s, 0.01, 10.0, 20) == due.sum()
        last[due] = now
        n_before[due] = previous_hat[due]
        np.testing.assert_array_equal(state.t_fit, last)
        np.testing.assert_array_equal(state.n_prev, n_before)
        np.testing.assert_array_equal(np.isnan(state.n_hat), ~((last > -math.inf) & has_arrivals))
    assert state.n_events[1, 1] == (arrivals <= last[1, 1]).sum()  # the window never cuts off the oldest
    moment = H.moment_n(state.times, state.count, 1, 1, last[1, 1], 600.0, H.MOMENT_BIN_S)
    assert state.n_moment[1, 1] == pytest.approx(moment, nan_ok=True)


# --- degenerate input -------------------------------------------------------------------------------------


def _nan_fit(state, now: float, window_s: float = 600.0, beta_min: float = BETA_MIN) -> None:
    mu, n, beta, _ = H.hawkes_fit(state.times, state.count, 0, 0, now, window_s, beta_min, BETA_MAX, 50)
    assert math.isnan(mu) and math.isnan(n) and math.isnan(beta)


def _nan_both(state, now: float, window_s: float = 600.0) -> None:
    _nan_fit(state, now, window_s)
    assert math.isnan(H.moment_n(state.times, state.count, 0, 0, now, window_s, 10.0))


def test_an_empty_ring_gives_nan() -> None:
    state = H.allocate_hawkes(1)
    _nan_both(state, T0)
    assert H.hawkes_fit(state.times, state.count, 0, 0, T0, 600.0, BETA_MIN, BETA_MAX, 50)[3] == 0


def test_arrivals_at_one_instant_give_nan() -> None:
    state = _filled(np.full(50, T0))
    _nan_both(state, T0 + 300.0)
    _nan_both(state, T0)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_non_finite_now_gives_nan_and_fits_nothing(now: float) -> None:
    state = _filled(T0 + np.cumsum(np.random.default_rng(1).exponential(1.0, 100)))
    _nan_both(state, now)
    assert H.hawkes_refit(state, now, np.ones(1, np.bool_), 600.0, 0.0, BETA_MIN, BETA_MAX, 50) == 0
    assert (state.t_fit == -math.inf).all() and np.isnan(state.n_prev).all()


def test_bad_settings_give_nan() -> None:
    state = _filled(T0 + np.cumsum(np.random.default_rng(1).exponential(1.0, 100)))
    now = T0 + 100.0
    _nan_both(state, now, window_s=math.nan)
    _nan_both(state, now, window_s=0.0)
    assert math.isnan(H.moment_n(state.times, state.count, 0, 0, now, 600.0, 0.0))
    _nan_fit(state, now, beta_min=2 * BETA_MAX)


def test_too_few_arrivals_give_nan_but_are_counted() -> None:
    state = _filled(T0 + np.arange(H.MIN_EVENTS - 1, dtype=float))
    assert math.isnan(H.hawkes_fit(state.times, state.count, 0, 0, T0 + 30.0, 600.0, BETA_MIN, BETA_MAX, 50)[1])
    H.hawkes_push(state.times, state.count, 0, 0, T0 + 25.0)
    assert not math.isnan(H.hawkes_fit(state.times, state.count, 0, 0, T0 + 30.0, 600.0, BETA_MIN, BETA_MAX, 50)[1])


def test_a_lone_burst_reads_as_near_critical() -> None:
    """40 arrivals within 2 s and nothing else for 5 minutes is one cluster: one immigrant and 39 descendants,
    the signature of n near 1. The fit says so (it is the snowball this estimator is for); the moment
    estimator agrees. The same burst as one matching batch (a single instant) is not fitted."""
    burst = T0 + 100.0 + np.sort(np.random.default_rng(1).uniform(0.0, 2.0, 40))
    state = _filled(burst)
    mu, n, beta, m = H.hawkes_fit(state.times, state.count, 0, 0, T0 + 300.0, 300.0, BETA_MIN, BETA_MAX, ITERS)
    assert m == 40 and 0.9 < n <= H.N_MAX and beta > 1.0 and mu * 300.0 < 2.0
    assert H.moment_n(state.times, state.count, 0, 0, T0 + 300.0, 300.0, 10.0) > 0.5
    batch = _filled(np.concatenate([T0 + np.array([10.0, 60.0, 150.0]), np.full(40, T0 + 200.0)]))
    mu, n, beta, m = H.hawkes_fit(batch.times, batch.count, 0, 0, T0 + 300.0, 300.0, BETA_MIN, BETA_MAX, ITERS)
    assert m == 43 and 0.0 <= n <= H.N_MAX and mu > 0.0 and BETA_MIN <= beta <= BETA_MAX


def test_a_full_ring_starts_the_window_at_its_oldest_arrival() -> None:
    """Arrivals the ring has forgotten would otherwise read as a quiet spell and drag μ down."""
    arrivals = T0 + np.arange(100, dtype=float)
    state = _filled(arrivals, capacity=30)
    x, start = H.window_arrivals(state.times, state.count, 0, 0, T0 + 100.0, 600.0)
    assert start == T0 + 70.0 and len(x) == 30
    mu, n, _, _ = H.hawkes_fit(state.times, state.count, 0, 0, T0 + 100.0, 600.0, BETA_MIN, BETA_MAX, ITERS)
    assert mu * 30.0 == pytest.approx(30.0, rel=0.1) and n < 0.05  # a regular clock: 1/s, nothing triggered


def test_grow_keeps_rows_and_adds_fresh_ones() -> None:
    state = _filled(T0 + np.arange(30, dtype=float), capacity=16, slot=1, n_slots=2)
    H.hawkes_refit(state, T0 + 40.0, np.ones(2, np.bool_), 600.0, 0.0, BETA_MIN, BETA_MAX, 50)
    bigger = H.grow_hawkes(state, 5)
    assert bigger.times.shape == (5, 2, 16)
    for new, old, fresh in zip(bigger, state, H.allocate_hawkes(3, 16), strict=True):
        np.testing.assert_array_equal(new[:2], old)
        np.testing.assert_array_equal(new[2:], fresh)
    with pytest.raises(ValueError):
        H.grow_hawkes(state, 1)
