"""Plain NumPy/Python twins of ``detector.hawkes``, written from the model rather than from the kernels, and a
Hawkes simulator.

The reference keeps every arrival in a list and builds the full matrix of parent-to-child lags, O(m²) per EM
step where the kernels use recursive sums: used by tests only, on small samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from detector.hawkes import GRID_ITERS, MIN_BINS, MIN_EVENTS, N_GRID, N_MAX, TOL


@dataclass
class Arrivals:
    """Every arrival of one slot and side; a ring of ``capacity`` remembers only the latest ones."""

    capacity: int
    times: list[float] = field(default_factory=list)

    def push(self, t: float) -> bool:
        if not math.isfinite(t):
            return False
        self.times.append(max([t, *self.times[-1:]]))  # a late arrival counts at the newest time
        return True

    def window(self, now: float, window_s: float) -> tuple[list[float], float]:
        """The arrivals in ``[start, now]`` and ``start``: ``now - window_s``, or the oldest arrival the ring
        still holds once it has forgotten some."""
        if not (math.isfinite(now) and 0.0 < window_s < math.inf):
            return [], math.nan
        held = self.times[-self.capacity :]
        start = now - window_s
        if len(self.times) > self.capacity:
            start = max(start, held[0])
        return [t for t in held if start <= t <= now], start


def _lags(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lag[i, j] = x_i − x_j`` and whether ``j`` can be the parent of ``i`` (strictly earlier)."""
    lag = x[:, None] - x[None, :]
    return lag, lag > 0


def loglik(x: np.ndarray, span: float, mu: float, n: float, beta: float) -> float:
    """Log-likelihood of the offsets ``x`` on ``[0, span]``, straight from the definition."""
    lag, parent = _lags(x)
    lam = mu + n * beta * np.where(parent, np.exp(-beta * np.where(parent, lag, 0.0)), 0.0).sum(axis=1)
    compensator = mu * span + n * np.sum(1.0 - np.exp(-beta * (span - x)))
    return float(np.log(lam).sum() - compensator)


def em(x: np.ndarray, span: float, mu: float, n: float, beta: float, beta_min: float, beta_max: float,
       iters: int) -> tuple[float, float, float, float]:
    """The branching-structure EM: ``p[i, j]`` is the probability that arrival ``j`` is the parent of ``i``,
    ``p0[i]`` that ``i`` is an immigrant. M-step: μ = Σp0 / span, n = Σp / Σ_j ∫ kernel/n over the window,
    β from ``∂Q/∂β = 0`` with the window-end term at the current β. Returns ``(loglik, mu, n, beta)``."""
    lag, parent = _lags(x)
    rest = span - x
    for _ in range(iters):
        kernel = np.where(parent, n * beta * np.exp(-beta * np.where(parent, lag, 0.0)), 0.0)
        lam = mu + kernel.sum(axis=1)
        p = kernel / lam[:, None]
        children = p.sum()
        new_mu = float((mu / lam).sum() / span)
        new_n = min(float(children / np.sum(1.0 - np.exp(-beta * rest))), N_MAX)
        new_beta = beta
        if children > 0:
            tail = np.sum(rest * np.exp(-beta * rest))
            new_beta = float(np.clip(children / ((p * lag).sum() + new_n * tail), beta_min, beta_max))
        change = max(abs(new_mu - mu) / mu, abs(new_n - n), abs(new_beta - beta) / beta)
        mu, n, beta = new_mu, new_n, new_beta
        if change < TOL:
            break
    return loglik(x, span, mu, n, beta), mu, n, beta


def fit(x: np.ndarray, span: float, beta_min: float, beta_max: float,
        iters: int) -> tuple[float, float, float, float]:
    """``(mu, n, beta, loglik)``: the best of short EMs from a log grid of β, refined; NaN with fewer than
    ``MIN_EVENTS`` arrivals or all at one instant."""
    if len(x) < MIN_EVENTS or x.max() == x.min():
        return math.nan, math.nan, math.nan, math.nan
    m = len(x)
    starts = [em(x, span, 0.5 * m / span, 0.5, b, beta_min, beta_max, GRID_ITERS)
              for b in np.geomspace(beta_min, beta_max, N_GRID)]
    _, mu, n, beta = max(starts, key=lambda r: r[0])
    ll, mu, n, beta = em(x, span, mu, n, beta, beta_min, beta_max, iters)
    return mu, n, beta, ll


def moment_n(arrivals: list[float], start: float, now: float, bin_s: float) -> float:
    """``1 − sqrt(mean / var)`` of the counts in the whole bins of ``bin_s`` ending at ``now`` after ``start``;
    NaN with fewer than ``MIN_BINS`` bins, fewer than ``MIN_EVENTS`` arrivals in them or all at one instant,
    or no excess variance (decided in exact fractions)."""
    if not (bin_s > 0 and now - start >= MIN_BINS * bin_s):
        return math.nan
    n_bins = int((now - start) / bin_s)
    lo = now - n_bins * bin_s
    inside = np.array([t for t in arrivals if t >= lo])
    if len(inside) < MIN_EVENTS or inside.max() == inside.min():
        return math.nan
    counts = np.bincount(np.minimum(((inside - lo) / bin_s).astype(np.int64), n_bins - 1), minlength=n_bins)
    mean = Fraction(int(counts.sum()), n_bins)
    var = sum((Fraction(int(c)) - mean) ** 2 for c in counts) / (n_bins - 1)
    return 1.0 - math.sqrt(mean / var) if var > mean else math.nan


def simulate_hawkes(mu: float, n: float, beta: float, n_events: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``n_events`` arrival times of the process started empty at 0, by Ogata thinning: between
    arrivals the intensity only decays, so its current value bounds it until the next candidate."""
    out = np.empty(n_events)
    t = 0.0
    excited = 0.0  # intensity above mu
    k = 0
    while k < n_events:
        bound = mu + excited
        wait = rng.exponential(1.0 / bound)
        t += wait
        excited *= math.exp(-beta * wait)
        if rng.uniform() * bound <= mu + excited:
            out[k] = t
            excited += n * beta
            k += 1
    return out
