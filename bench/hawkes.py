"""The Hawkes branching-ratio kernels: one fit, ring pushes, and the periodic refit of every slot."""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from bench.common import emit, median_of
from detector.hawkes import allocate_hawkes, hawkes_fit, hawkes_push, hawkes_refit
from detector.hawkes_reference import simulate_hawkes

INSTRUMENTS = 1_500
WINDOW_S = 600.0
EVERY_S = 30.0
BETA_MIN, BETA_MAX = 1.0 / 120.0, 2.0  # excitation lasting 0.5 s to 2 min
ITERS = 200
BUSY = 10  # slots in a cascade: ~500 liquidations per side and window
T0 = 1_760_000_000.0


@njit(cache=True, nogil=True)
def _push_all(times, count, slot, side, t):
    """Pushes as ``apply_batch`` will make them: one call per liquidation, inside a kernel."""
    for e in range(t.shape[0]):
        hawkes_push(times, count, slot[e], side[e], t[e])


def _busy_arrivals(rng: np.random.Generator) -> np.ndarray:
    """~500 arrivals in the window: n = 0.7, 5-s kernel, 0.25 immigrants/s."""
    return T0 + simulate_hawkes(0.25, 0.7, 0.2, 500, rng)


def fit(quick: bool) -> None:
    state = allocate_hawkes(1)
    arrivals = _busy_arrivals(np.random.default_rng(3))
    for t in arrivals:
        hawkes_push(state.times, state.count, 0, 0, t)
    now = arrivals[-1] + 1.0
    _, n, _, m = hawkes_fit(state.times, state.count, 0, 0, now, WINDOW_S, BETA_MIN, BETA_MAX, ITERS)

    def once() -> float:
        began = time.perf_counter()
        hawkes_fit(state.times, state.count, 0, 0, now, WINDOW_S, BETA_MIN, BETA_MAX, ITERS)
        return time.perf_counter() - began

    emit("detector.hawkes.fit_us", median_of(5 if quick else 25, once) * 1e6, "us", events=m, window_s=WINDOW_S,
         iters=ITERS, n_true=0.7, n_hat=round(n, 3))


def push(quick: bool) -> None:
    rng = np.random.default_rng(5)
    k = 1_000_000 if quick else 5_000_000
    slot = rng.integers(0, INSTRUMENTS, k)
    side = rng.integers(0, 2, k)
    t = T0 + np.sort(rng.uniform(0.0, 3_600.0, k))
    state = allocate_hawkes(INSTRUMENTS)
    _push_all(state.times, state.count, slot[:10], side[:10], t[:10])  # compile or load from cache
    state = allocate_hawkes(INSTRUMENTS)
    began = time.perf_counter()
    _push_all(state.times, state.count, slot, side, t)
    emit("detector.hawkes.push_per_s", k / (time.perf_counter() - began), "arrivals/s", instruments=INSTRUMENTS)


def refit(quick: bool) -> None:
    """Every slot and side due at once: calm ones hold ~5 arrivals per window, ``BUSY`` slots a cascade."""
    rng = np.random.default_rng(9)
    state = allocate_hawkes(INSTRUMENTS)
    now = T0 + WINDOW_S
    for i in range(INSTRUMENTS):
        for s in range(2):
            busy = i < BUSY
            arrivals = _busy_arrivals(rng) if busy else np.sort(rng.uniform(T0, now, rng.poisson(5.0)))
            for t in arrivals:
                hawkes_push(state.times, state.count, i, s, t)
    mask = np.ones(INSTRUMENTS, np.bool_)
    hawkes_refit(state, now, mask, WINDOW_S, EVERY_S, BETA_MIN, BETA_MAX, ITERS)  # compile or load from cache

    def once() -> float:
        state.t_fit[:] = -np.inf
        began = time.perf_counter()
        hawkes_refit(state, now, mask, WINDOW_S, EVERY_S, BETA_MIN, BETA_MAX, ITERS)
        return time.perf_counter() - began

    emit("detector.hawkes.refit_1500_us", median_of(3 if quick else 11, once) * 1e6, "us", instruments=INSTRUMENTS,
         busy_slots=BUSY, calm_arrivals_per_window=5, busy_arrivals_per_window=500, iters=ITERS,
         fitted=int(np.isfinite(state.n_hat).sum()))


def run(quick: bool) -> None:
    fit(quick)
    push(quick)
    refit(quick)
