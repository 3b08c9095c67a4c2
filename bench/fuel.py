"""The liquidation-fuel map: OI updates, trade ranges and queries over 1,500 slots of 512 buckets.

Each figure is measured through a jitted loop over pre-drawn inputs, so it is the kernel's cost; the cost of
one call from Python (what a per-slot call from the engine would add) is given alongside the query figure.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from bench.common import emit, median_of
from detector.fuel import (
    BANDS,
    DEFAULT_LEVERAGE,
    DEFAULT_WEIGHT,
    FuelState,
    allocate_fuel,
    fuel_oi,
    fuel_query,
    fuel_trade_range,
)

INSTRUMENTS = 1_500
BUCKETS = 512
WIDTH = 0.0025
MMR = 0.005
CALIB_WINDOW_S = 180.0
T0 = 1_760_000_000.0


@njit(cache=True, nogil=True)
def _oi_loop(state, slot, t, price, d_oi, buy, lev, weight):
    for e in range(slot.shape[0]):
        fuel_oi(state, slot[e], t[e], price[e], d_oi[e], buy[e], lev, weight, MMR, WIDTH)


@njit(cache=True, nogil=True)
def _range_loop(state, slot, t, lo, hi):
    for e in range(slot.shape[0]):
        fuel_trade_range(state, slot[e], t[e], lo[e], hi[e], CALIB_WINDOW_S)


@njit(cache=True, nogil=True)
def _query_loop(state, price, rounds, below, above):
    for _ in range(rounds):
        for i in range(price.shape[0]):
            fuel_query(state, i, price[i], below, above)


def _market(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` events over the slots in time order: prices walk around 100 (one walk for all slots), open
    interest moves by up to $1M either way (rising a little more often)."""
    slot = rng.integers(0, INSTRUMENTS, n)
    t = T0 + np.sort(rng.uniform(0.0, n / 2_000.0, n))
    price = 100.0 * np.exp(rng.normal(0.0, 0.001, n).cumsum() / np.sqrt(INSTRUMENTS))
    d_oi = rng.uniform(-0.8e6, 1.0e6, n)
    buy = rng.uniform(0.3, 0.7, n)
    return slot, t, price, d_oi, buy


def _seeded(rng: np.random.Generator) -> FuelState:
    state = allocate_fuel(INSTRUMENTS, BUCKETS)
    slot, t, price, d_oi, buy = _market(20 * INSTRUMENTS, rng)
    _oi_loop(state, slot, t, price, np.abs(d_oi), buy, DEFAULT_LEVERAGE, DEFAULT_WEIGHT)
    return state


def run(quick: bool) -> None:
    rng = np.random.default_rng(11)
    n = 200_000 if quick else 1_000_000
    runs = 3 if quick else 5
    state = _seeded(rng)  # compiles (or loads) the loops too
    slot, t, price, d_oi, buy = _market(n, rng)
    t = t + 3600.0

    def oi() -> float:
        began = time.perf_counter()
        _oi_loop(state, slot, t, price, d_oi, buy, DEFAULT_LEVERAGE, DEFAULT_WEIGHT)
        return n / (time.perf_counter() - began)

    emit("detector.fuel.oi_updates_per_s", median_of(runs, oi), "updates/s", instruments=INSTRUMENTS,
         buckets=BUCKETS, leverage_classes=len(DEFAULT_LEVERAGE))

    swing = rng.uniform(0.0, 0.004, n)  # 1-s ranges of up to 0.4 %: most sweep nothing, some a bucket or two
    lo, hi = price * (1.0 - swing), price * (1.0 + swing)
    _range_loop(state, slot[:10], t[:10], lo[:10], hi[:10])

    def ranges() -> float:
        began = time.perf_counter()
        _range_loop(state, slot, t + 7200.0, lo, hi)
        return n / (time.perf_counter() - began)

    emit("detector.fuel.trade_ranges_per_s", median_of(runs, ranges), "ranges/s", instruments=INSTRUMENTS,
         buckets=BUCKETS)

    at = price[:INSTRUMENTS]
    below, above = np.empty(len(BANDS)), np.empty(len(BANDS))
    rounds = 20 if quick else 100
    _query_loop(state, at, 1, below, above)

    def query() -> float:
        began = time.perf_counter()
        _query_loop(state, at, rounds, below, above)
        return (time.perf_counter() - began) / (rounds * INSTRUMENTS) * 1e6

    def python_call() -> float:
        began = time.perf_counter()
        for i in range(INSTRUMENTS):
            fuel_query(state, i, at[i], below, above)
        return (time.perf_counter() - began) / INSTRUMENTS * 1e6

    emit("detector.fuel.query_us", median_of(runs, query), "us", instruments=INSTRUMENTS, bands=len(BANDS),
         python_call_us=round(median_of(runs, python_call), 3))


if __name__ == "__main__":
    run(quick=True)
