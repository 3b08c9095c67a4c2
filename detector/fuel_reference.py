"""Plain-Python twin of ``detector.fuel``, written from the model rather than from the kernels: one object per
slot, each map a dict from absolute bucket to USD (no columns, no shifting: a window is just the range of
buckets kept), the calibration windows kept as a list. Slow on purpose; used by tests only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.fuel import (
    APPLIED,
    BANDS,
    L_ADDED,
    L_CLOSED,
    L_DECAYED,
    L_DROPPED,
    L_LIQUIDATED,
    L_SWEPT,
    MAX_USD,
    MIN_ESTIMATE_USD,
    N_LEDGER,
    REJ_PARAM,
    REJ_TIME,
    REJ_VALUE,
)

LONG, SHORT = 0, 1


def bucket(price: float, width: float) -> int:
    return math.floor(math.log(price) / width)


def liquidation_price(price: float, lev: float, mmr: float, side: int) -> float:
    """Where a position opened at ``price`` with leverage ``lev`` is liquidated."""
    if side == LONG:
        return price * (1.0 - (1.0 / lev - mmr))
    return price * (1.0 + (1.0 / lev - mmr))


@dataclass
class Window:
    """One calibration window: estimate swept, liquidations realised, until when it is open."""

    est: float
    real: float
    until: float


@dataclass
class FuelSlot:
    buckets: int
    width: float = math.nan
    fuel: tuple[dict[int, float], dict[int, float]] = field(default_factory=lambda: ({}, {}))
    first_bucket: list[int] = field(default_factory=lambda: [0, 0])  # absolute bucket where each window starts
    t_decay: float = -math.inf
    ledger: list[list[float]] = field(default_factory=lambda: [[0.0] * N_LEDGER, [0.0] * N_LEDGER])
    sweep_t: list[float] = field(default_factory=lambda: [math.nan, math.nan])
    sweep_usd: list[float] = field(default_factory=lambda: [0.0, 0.0])
    sweeps: list[int] = field(default_factory=lambda: [0, 0])
    pending: list[float] = field(default_factory=lambda: [0.0, 0.0])
    open: list[Window | None] = field(default_factory=lambda: [None, None])
    scored: list[list[Window]] = field(default_factory=lambda: [[], []])
    dust: list[bool] = field(default_factory=lambda: [False, False])
    est_total: list[float] = field(default_factory=lambda: [0.0, 0.0])
    real_total: list[float] = field(default_factory=lambda: [0.0, 0.0])

    # --- the window ------------------------------------------------------------------------------------

    @property
    def slack(self) -> int:
        return self.buckets // 8

    def home(self, side: int) -> int:
        """The price's place in a window, counted from its first bucket."""
        return self.buckets - 1 - self.slack if side == LONG else self.slack

    def inside(self, side: int, k: int) -> bool:
        return self.first_bucket[side] <= k < self.first_bucket[side] + self.buckets

    def follow(self, side: int, kp: int) -> None:
        if abs(kp - self.first_bucket[side] - self.home(side)) <= self.slack:
            return
        self.first_bucket[side] = kp - self.home(side)
        kept = {k: v for k, v in self.fuel[side].items() if self.inside(side, k)}
        self.ledger[side][L_DROPPED] += sum(v for k, v in sorted(self.fuel[side].items()) if k not in kept)
        self.fuel[side].clear()
        self.fuel[side].update(kept)

    def total(self, side: int) -> float:
        return sum(v for _, v in sorted(self.fuel[side].items()))

    def scale(self, side: int, keep: float) -> float:
        total = self.total(side)
        for k in self.fuel[side]:
            self.fuel[side][k] *= keep
        return total * (1.0 - keep)

    # --- calibration ------------------------------------------------------------------------------------

    def expire(self, side: int, t: float) -> None:
        window = self.open[side]
        if window is not None and t >= window.until:
            self.scored[side].append(window)
            self.est_total[side] += window.est
            self.real_total[side] += window.real
            self.dust[side] = self.est_total[side] < MIN_ESTIMATE_USD  # judged when scored, as the kernel does
            self.open[side] = None
            self.take_nearest(side, max(0.0, window.real - window.est))  # liquidated beyond the estimate

    def take_nearest(self, side: int, usd: float) -> None:
        left = usd
        for k in sorted(self.fuel[side], reverse=side == LONG):  # nearest the price first
            take = min(self.fuel[side][k], left)
            self.fuel[side][k] -= take
            left -= take
        self.ledger[side][L_LIQUIDATED] += usd - left

    @property
    def calib_ratio(self) -> list[float]:
        return [self.real_total[s] / self.est_total[s] if self.scored[s] and not self.dust[s] else math.nan
                for s in (LONG, SHORT)]

    # --- updates ------------------------------------------------------------------------------------------

    def oi(
        self,
        t: float,
        price: float,
        d_oi: float,
        buy_share: float,
        lev: Sequence[float] | np.ndarray,
        weight: Sequence[float] | np.ndarray,
        mmr: float,
        width: float,
    ) -> int:
        lev, weight = [float(x) for x in lev], [float(x) for x in weight]  # Python floats: inf, not warnings
        if not (math.isfinite(t) and t > 0):
            return REJ_TIME
        if math.isnan(buy_share):
            buy_share = 0.5
        if not (math.isfinite(price) and price > 0 and math.isfinite(d_oi) and abs(d_oi) <= MAX_USD):
            return REJ_VALUE
        if not 0 <= buy_share <= 1:
            return REJ_VALUE
        classes_ok = len(lev) == len(weight) and all(
            math.isfinite(x) and x > 1 and math.isfinite(y) and y >= 0 for x, y in zip(lev, weight, strict=False)
        )
        if not (classes_ok and sum(weight) > 0 and 0 <= mmr < 1 and 0 < width < 1):
            return REJ_PARAM
        if not math.isnan(self.width) and width != self.width:
            return REJ_PARAM
        if abs(math.log(price) / width) >= 2.0**52:
            return REJ_VALUE
        kp = bucket(price, width)
        if math.isnan(self.width):
            self.width = width
            self.first_bucket = [kp - self.home(LONG), kp - self.home(SHORT)]
        if self.t_decay == -math.inf:
            self.t_decay = t
        opened = (buy_share, 1.0 - buy_share)  # new longs follow taker buys, new shorts taker sells
        for side in (LONG, SHORT):
            self.follow(side, kp)
            if d_oi > 0:
                usd = d_oi * opened[side]
                self.ledger[side][L_ADDED] += usd
                wsum = sum(weight)
                for lev_k, weight_k in zip(lev, weight, strict=True):
                    x = usd * weight_k / wsum
                    liq = liquidation_price(price, lev_k, mmr, side)
                    k = bucket(liq, width) if 0 < liq < math.inf else None
                    if k is not None and self.inside(side, k):
                        self.fuel[side][k] = self.fuel[side].get(k, 0.0) + x
                    else:
                        self.ledger[side][L_DROPPED] += x
            elif d_oi < 0:
                closing = -d_oi * (1.0 - opened[side])  # taker sells close longs, taker buys close shorts
                total = self.total(side)
                if total > 0:
                    self.ledger[side][L_CLOSED] += self.scale(side, 0.0 if closing >= total else 1.0 - closing / total)
        return APPLIED

    def trade_range(self, t: float, lo: float, hi: float, window_s: float) -> int:
        if not (math.isfinite(t) and t > 0):
            return REJ_TIME
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            return REJ_VALUE
        if not (math.isfinite(window_s) and window_s > 0):
            return REJ_PARAM
        for side in (LONG, SHORT):
            self.expire(side, t)
            swept = 0.0
            if not math.isnan(self.width):
                edge = bucket(lo, self.width) if side == LONG else bucket(hi, self.width)
                for k in sorted(self.fuel[side]):
                    if (k >= edge) if side == LONG else (k <= edge):
                        swept += self.fuel[side][k]
                        self.fuel[side][k] = 0.0
            if swept > 0:
                self.ledger[side][L_SWEPT] += swept
                self.sweep_t[side] = t
                self.sweep_usd[side] = swept
                self.sweeps[side] += 1
                window = self.open[side]
                if window is None:
                    self.open[side] = Window(swept, self.pending[side], t + window_s)
                else:
                    window.est += swept
                    window.until = t + window_s
            else:
                self.take_nearest(side, self.pending[side])  # no sweep explains them
            self.pending[side] = 0.0
        return APPLIED

    def liquidation(self, t: float, side: int, usd: float) -> int:
        if not (math.isfinite(t) and t > 0):
            return REJ_TIME
        if side not in (LONG, SHORT) or not (math.isfinite(usd) and 0 <= usd <= MAX_USD):
            return REJ_VALUE
        self.expire(side, t)
        window = self.open[side]
        if window is not None:
            window.real += usd
        else:
            self.pending[side] += usd  # the next trade range tells whether a sweep explains it
        return APPLIED

    def decay(self, t: float, half_life_s: float) -> int:
        if not (math.isfinite(t) and t > 0):
            return REJ_TIME
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            return REJ_PARAM
        for side in (LONG, SHORT):
            self.expire(side, t)
            if -math.inf < self.t_decay < t:
                keep = 0.5 ** ((t - self.t_decay) / half_life_s)
                self.ledger[side][L_DECAYED] += self.scale(side, keep)
                self.est_total[side] *= keep
                self.real_total[side] *= keep
        self.t_decay = max(self.t_decay, t)
        return APPLIED

    # --- reads ----------------------------------------------------------------------------------------------

    def query(self, price: float) -> tuple[list[float], list[float]]:
        if math.isnan(self.width):
            return [math.nan] * len(BANDS), [math.nan] * len(BANDS)
        w = self.width
        kp = bucket(price, w)
        below = [
            sum(v for k, v in sorted(self.fuel[LONG].items()) if bucket(price * (1 - d), w) <= k <= kp) for d in BANDS
        ]
        above = [
            sum(v for k, v in sorted(self.fuel[SHORT].items()) if kp <= k <= bucket(price * (1 + d), w)) for d in BANDS
        ]
        return below, above

    def clusters(self, price: float, n: int, side: int) -> list[tuple[float, float]]:
        if math.isnan(self.width):
            return []
        kp = bucket(price, self.width)
        beyond = [k for k in self.fuel[side] if (k <= kp if side == LONG else k >= kp)]
        candidates = [(self.fuel[side][k], abs(k - kp), k) for k in beyond if self.fuel[side][k] > 0]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        return [(math.exp((k + 0.5) * self.width), v) for v, _, k in candidates[:n]]
