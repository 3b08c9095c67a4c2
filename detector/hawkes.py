"""Branching ratio of liquidation arrivals: an exponential-kernel Hawkes process per slot and side.

Model, over the arrivals of one window ``[start, now]``: ``λ(t) = μ + Σ_{t_j < t} n β exp(−β (t − t_j))``.
``n`` is the mean number of liquidations one liquidation triggers directly (n -> 1: criticality), ``1/β``
how long the excitation lasts. Only arrivals inside the window count, and the compensator integrates over the
window alone, so the fit conditions on nothing before ``start``. ``μ, n, β`` come from maximum likelihood by
the branching-structure EM (each arrival's parent is an immigrant or an earlier arrival), O(m) per iteration
through recursive sums; the likelihood is multimodal in β, so a short EM from each point of a log grid of β
picks the start that a long EM then refines. Arrivals at the same instant (one matching batch) are separate
arrivals sharing one intensity: they do not excite each other, since a kernel at lag 0 would make the
likelihood unbounded in β.

``moment_n`` is the fit-free cross-check of Hardiman & Bouchaud (2014): for a stationary Hawkes process the
counts ``N`` of wide bins have ``Var/E -> 1/(1 − n)²``, so ``n = 1 − sqrt(E/Var)``; bins not much wider than
the kernel bias it downwards. Both read a rate that shifts inside the window as self-excitation (spurious
n near 1, Filimonov & Sornette 2013): compare n with itself over time, not with a fixed level.

Arrivals live in a ring per slot and side, ``times[slot, side, k % capacity]`` for the k-th arrival, with
``count`` the total pushed; once the ring has overwritten arrivals, a window starts no earlier than the
oldest one it holds (the data before it is incomplete).
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from detector.state import with_rows_of

MIN_EVENTS: Final = 20  # fewer arrivals in the window: n is not estimated
MIN_BINS: Final = 10  # fewer bins: the count variance means nothing
N_MAX: Final = 0.995  # n >= 1 is an explosive process, not a rate of self-excitation: capped just below
N_GRID: Final = 6  # starting values of β, log-spaced over [beta_min, beta_max]
GRID_ITERS: Final = 8  # EM steps from each grid start before the best one is refined
TOL: Final = 1e-9  # relative parameter change at which the EM has converged
EDGE_DECAYS: Final = 40.0  # e^-40 is below the rounding of 1.0
MOMENT_BIN_S: Final = 30.0  # the research note's sub-window for the count variance

_NAN: Final = math.nan


class HawkesState(NamedTuple):
    times: np.ndarray  # (n, 2, capacity) arrival times, ring
    count: np.ndarray  # type: ignore[assignment]  # (n, 2) arrivals pushed in all; the spec's name hides tuple.count
    n_hat: np.ndarray  # (n, 2) fitted branching ratio, NaN: too few arrivals
    mu_hat: np.ndarray  # (n, 2) immigrant rate, 1/s
    beta_hat: np.ndarray  # (n, 2) kernel decay rate, 1/s
    n_moment: np.ndarray  # (n, 2) 1 - sqrt(mean / var) of binned counts
    n_prev: np.ndarray  # (n, 2) n_hat of the fit before: is n rising?
    t_fit: np.ndarray  # (n, 2) time of the latest fit, -inf before the first
    n_events: np.ndarray  # (n, 2) arrivals in the window of the latest fit


def allocate_hawkes(n_slots: int, capacity: int = 1024) -> HawkesState:
    """A fresh state for ``n_slots`` assets, each side keeping its latest ``capacity`` arrivals."""
    shape = (n_slots, 2)
    return HawkesState(
        times=np.full((n_slots, 2, capacity), np.nan),
        count=np.zeros(shape, np.int64),
        n_hat=np.full(shape, np.nan),
        mu_hat=np.full(shape, np.nan),
        beta_hat=np.full(shape, np.nan),
        n_moment=np.full(shape, np.nan),
        n_prev=np.full(shape, np.nan),
        t_fit=np.full(shape, -np.inf),
        n_events=np.zeros(shape, np.int64),
    )


def grow_hawkes(state: HawkesState, n_slots: int) -> HawkesState:
    """A state for ``n_slots`` (at least as many as ``state`` has) holding the rows of ``state``."""
    return with_rows_of(state, allocate_hawkes(n_slots, state.times.shape[2]))


# --- arrivals ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def hawkes_push(times, count, i, s, t):
    """Record an arrival at ``t``. One earlier than the newest is recorded at the newest time, so the ring
    stays sorted; a non-finite ``t`` is not recorded. Returns whether it was."""
    if not math.isfinite(t):
        return False
    cap = times.shape[2]
    k = count[i, s]
    if k > 0:
        t = max(t, times[i, s, (k - 1) % cap])
    times[i, s, k % cap] = t
    count[i, s] = k + 1
    return True


@njit(cache=True, nogil=True)
def _first_at_least(times, i, s, lo, hi, t, strict):
    """The first arrival index in ``[lo, hi)`` whose time is ``>= t`` (``> t`` when ``strict``), else ``hi``."""
    cap = times.shape[2]
    while lo < hi:
        mid = (lo + hi) // 2
        x = times[i, s, mid % cap]
        if x < t or (strict and x == t):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _window(times, count, i, s, now, window_s):
    """``(first, end, start)``: arrivals ``first..end-1`` lie in ``[start, now]``. An empty range (and a NaN
    start) for a non-finite ``now`` or window."""
    if not (math.isfinite(now) and 0.0 < window_s < math.inf):
        return 0, 0, _NAN
    cap = times.shape[2]
    k = count[i, s]
    oldest = max(0, k - cap)
    start = now - window_s
    if k > cap:
        start = max(start, times[i, s, oldest % cap])
    first = _first_at_least(times, i, s, oldest, k, start, False)
    end = _first_at_least(times, i, s, first, k, now, True)
    return first, end, start


@njit(cache=True, nogil=True)
def window_arrivals(times, count, i, s, now, window_s):
    """The arrivals in the window ending at ``now`` as offsets from its start, and the start."""
    first, end, start = _window(times, count, i, s, now, window_s)
    cap = times.shape[2]
    x = np.empty(end - first)
    for j in range(first, end):
        x[j - first] = times[i, s, j % cap] - start
    return x, start


# --- EM fit ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _edge(x, span, beta):
    """``mass = Σ_j (1 − e^{−β r_j})``, the expected children per unit n the window leaves room for
    (``r_j = span − x_j``), and its derivative in β, ``tail_lag = Σ_j r_j e^{−β r_j}``. Arrivals more
    than ``EDGE_DECAYS`` kernel lengths before the end count 1 and 0, exact to rounding, so only the last
    few kernel lengths cost an exponential."""
    mass = 0.0
    tail_lag = 0.0
    j = x.shape[0] - 1
    while j >= 0 and beta * (span - x[j]) < EDGE_DECAYS:
        rest = span - x[j]
        mass -= math.expm1(-beta * rest)
        tail_lag += rest * math.exp(-beta * rest)
        j -= 1
    return mass + (j + 1), tail_lag


@njit(cache=True, nogil=True)
def _sweep(x, span, mu, n, beta):
    """One pass over the sorted offsets ``x`` in ``[0, span]``: the log-likelihood of ``(mu, n, beta)`` and
    the sums the M-step needs. ``a`` and ``b`` are ``Σ e^{−β Δ}`` and ``Σ Δ e^{−β Δ}`` over the strictly
    earlier arrivals, carried forward from one distinct time to the next (``tied`` arrivals at the previous
    time join them then). ``mass`` and ``tail_lag``: see ``_edge``."""
    nb = n * beta
    a = 0.0
    b = 0.0
    tied = 0
    prev = x[0]
    log_sum = 0.0
    children = 0.0  # expected number of arrivals whose parent is an arrival
    lag_sum = 0.0  # their expected parent-to-child lags, summed
    for j in range(x.shape[0]):
        d = x[j] - prev
        if d > 0.0:
            e = math.exp(-beta * d)
            b = e * (b + d * (a + tied))
            a = e * (a + tied)
            tied = 0
            prev = x[j]
        excited = nb * a
        lam = mu + excited
        log_sum += math.log(lam)
        children += excited / lam
        lag_sum += nb * b / lam
        tied += 1
    mass, tail_lag = _edge(x, span, beta)
    return log_sum - mu * span - n * mass, children, lag_sum, mass, tail_lag


@njit(cache=True, nogil=True)
def _em(x, span, mu, n, beta, beta_min, beta_max, iters):
    """Up to ``iters`` EM steps from ``(mu, n, beta)``; returns the log-likelihood and the parameters. The
    M-step is exact for μ and n (n clamped to ``N_MAX``); β solves ``children/β = lag_sum + n·tail_lag`` with
    the tail taken at the current β, so a fixed point is a stationary point of the window likelihood."""
    m = x.shape[0]
    for _ in range(iters):
        _, children, lag_sum, mass, tail_lag = _sweep(x, span, mu, n, beta)
        new_mu = (m - children) / span
        new_n = min(children / mass, N_MAX)
        new_beta = beta
        if children > 0.0:  # no arrival has an arrival for parent: β is not identified, keep it
            new_beta = min(max(children / (lag_sum + new_n * tail_lag), beta_min), beta_max)
        change = max(abs(new_mu - mu) / mu, abs(new_n - n), abs(new_beta - beta) / beta)
        mu, n, beta = new_mu, new_n, new_beta
        if change < TOL:
            break
    return _sweep(x, span, mu, n, beta)[0], mu, n, beta


@njit(cache=True, nogil=True)
def fit_offsets(x, span, beta_min, beta_max, iters):
    """``(mu, n, beta, log-likelihood)`` of the sorted arrival offsets ``x`` over ``[0, span]``: a short EM
    from each β of the grid, then the best of them refined. NaN when there are fewer than ``MIN_EVENTS``
    arrivals, or they all share one instant (no timing to fit)."""
    m = x.shape[0]
    if m < MIN_EVENTS or not x[m - 1] > x[0] or not span > 0.0 or not 0.0 < beta_min <= beta_max < math.inf:
        return _NAN, _NAN, _NAN, _NAN
    best = -math.inf
    best_mu = best_beta = best_n = _NAN
    for g in range(N_GRID):
        beta0 = beta_min * (beta_max / beta_min) ** (g / (N_GRID - 1))
        ll, mu, n, beta = _em(x, span, 0.5 * m / span, 0.5, beta0, beta_min, beta_max, GRID_ITERS)
        if ll > best:
            best, best_mu, best_n, best_beta = ll, mu, n, beta
    ll, mu, n, beta = _em(x, span, best_mu, best_n, best_beta, beta_min, beta_max, iters)
    return mu, n, beta, ll


@njit(cache=True, nogil=True)
def hawkes_fit(times, count, i, s, now, window_s, beta_min, beta_max, iters):
    """``(mu, n, beta, m)`` fitted to the ``m`` arrivals of slot ``i``, side ``s`` in the window ending at
    ``now`` (NaN parameters when they cannot be estimated, see ``fit_offsets``)."""
    x, start = window_arrivals(times, count, i, s, now, window_s)
    mu, n, beta, _ = fit_offsets(x, now - start, beta_min, beta_max, iters)
    return mu, n, beta, x.shape[0]


# --- moment cross-check -----------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def moment_n(times, count, i, s, now, window_s, bin_s):
    """``1 − sqrt(mean / var)`` of the arrival counts in the bins of ``bin_s`` that end at ``now`` and fit in
    the window (sample variance). NaN for fewer than ``MIN_BINS`` bins, ``var <= mean`` (no clustering), and
    where the fit has no data either: fewer than ``MIN_EVENTS`` arrivals, or all at one instant. Otherwise
    in (0, 1) by construction. The sorted arrivals fill the bins in order, so the count sums are
    taken run by run, in integers: ``var > mean`` is decided exactly (one arrival in one bin is var = mean)."""
    first, end, start = _window(times, count, i, s, now, window_s)
    if not (bin_s > 0.0 and now - start >= MIN_BINS * bin_s):
        return _NAN
    n_bins = int((now - start) / bin_s)
    lo = now - n_bins * bin_s
    cap = times.shape[2]
    total = 0
    squares = 0
    run = 0
    run_bin = -1
    earliest = latest = _NAN
    for j in range(first, end):
        t = times[i, s, j % cap]
        if t < lo:
            continue
        if total == 0:
            earliest = t
        latest = t
        b = min(int((t - lo) / bin_s), n_bins - 1)
        if b != run_bin:
            squares += run * run
            run = 0
            run_bin = b
        run += 1
        total += 1
    squares += run * run
    if total < MIN_EVENTS or not latest > earliest:
        return _NAN
    # var > mean  <=>  (squares - total²/N) / (N - 1) > total / N, times N (N - 1)
    excess = n_bins * squares - total * total
    if not excess > total * (n_bins - 1):
        return _NAN
    return 1.0 - math.sqrt(total * (n_bins - 1) / excess)


# --- periodic refit ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def hawkes_refit(state, now, mask, window_s, every_s, beta_min, beta_max, iters, bin_s=MOMENT_BIN_S):
    """Refit both sides of every slot in ``mask`` whose latest fit is at least ``every_s`` old; the n it
    replaces moves to ``n_prev``. A non-finite ``now`` fits nothing. Returns the number of fits."""
    if not math.isfinite(now):
        return 0
    fits = 0
    for i in range(mask.shape[0]):
        if not mask[i]:
            continue
        for s in range(2):
            if not now - state.t_fit[i, s] >= every_s:
                continue
            mu, n, beta, m = hawkes_fit(state.times, state.count, i, s, now, window_s, beta_min, beta_max, iters)
            state.n_prev[i, s] = state.n_hat[i, s]
            state.n_hat[i, s] = n
            state.mu_hat[i, s] = mu
            state.beta_hat[i, s] = beta
            state.n_events[i, s] = m
            state.n_moment[i, s] = moment_n(state.times, state.count, i, s, now, window_s, bin_s)
            state.t_fit[i, s] = now
            fits += 1
    return fits
