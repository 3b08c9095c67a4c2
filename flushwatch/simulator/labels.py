"""Ground truth: the true stage (0-7) of the crowded side each simulated second, from the model's state.

"Adverse" means against the crowd: sells and bid depth in a long flush, buys and ask depth in a squeeze.
"Forced" is the crowd's liquidated USD. The episode starts at the shock, or at the first second that meets
rule 3 when there is none; before it the stage is 0 (calm, or armed while the build-up adds leverage).
From then on the stage is the highest rule that holds, never lower than the second before (monotone),
and 7 is final:

1. shock: the episode has started (the exogenous order hit).
2. air pocket: adverse depth within 1 % of mid below ``AIR_POCKET`` of its normal level (the median
   before the episode).
3. liquidation prices hit: forced USD over the last 10 s at least ``TRIGGER`` of the crowd's open
   interest (USD) at the episode start.
4. forced selling: over the last 10 s forced USD is at least ``FORCED_SHARE`` of adverse taker volume,
   and open interest is at least ``OI_FALL`` below its level at the episode start.
5. thin-book impact: forced USD in the second exceeds the adverse depth within 1 %.
6. snowball: forced USD in each of the last three 5-s windows exceeds the window before, the first of
   them at least half the rule-3 amount (each wave triggers a bigger one).
7. flushed: stage 3 was reached; no forced USD for ``QUIET_S``; open interest at least ``PURGED`` below
   its peak before the episode; funding back to the 0.01 %/8 h dead band or beyond (the crowd no longer
   pays more); and spot buyers (sellers in a squeeze) active over the last ``QUIET_S``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np

from flushwatch.events import PositionSide
from flushwatch.simulator.model import INTEREST_8H, Run

AIR_POCKET: Final = 0.5
TRIGGER: Final = 0.002
FORCED_SHARE: Final = 0.25
OI_FALL: Final = 0.005
PURGED: Final = 0.05
QUIET_S: Final = 60
WINDOW_S: Final = 10
WAVE_S: Final = 5


class Label(NamedTuple):
    """A transition: from ``t_ms`` on, ``asset``'s ``side`` is in ``stage``."""

    t_ms: int
    asset: str
    side: PositionSide
    stage: int


def _trailing(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` seconds, this one included."""
    total = np.cumsum(np.concatenate(([0.0], x)))
    return total[1:] - total[np.maximum(np.arange(1, len(x) + 1) - window, 0)]


def rules(run: Run) -> tuple[int, np.ndarray]:
    """The episode start (-1: none) and, per second, the highest of rules 1-6 that holds (0: none)."""
    config, n = run.config, len(run.mid)
    c = 0 if config.crowd > 0 else 1
    forced = run.forced_usd[:, c]
    adverse_depth = run.depth1[:, c]
    adverse_taker = run.taker_usd[:, 1 - c]
    oi = run.oi.sum(axis=1)
    forced10 = _trailing(forced, WINDOW_S)
    calm = run.shock_s if run.shock_s >= 0 else n
    trigger = TRIGGER * run.oi_side[max(calm - 1, 0), c] * run.mid[max(calm - 1, 0)]
    hit = np.flatnonzero(forced10 >= trigger)
    start = run.shock_s if run.shock_s >= 0 else (int(hit[0]) if len(hit) else -1)
    if start < 0:
        return -1, np.zeros(n, np.int64)
    normal = float(np.median(adverse_depth[:max(start, 1)]))
    waves = _trailing(forced, WAVE_S)
    lag = np.arange(n)
    w1, w2, w3 = (waves[np.maximum(lag - k * WAVE_S, 0)] for k in (2, 1, 0))
    conditions = (
        lag >= start,
        adverse_depth < AIR_POCKET * normal,
        forced10 >= trigger,
        (forced10 >= FORCED_SHARE * _trailing(adverse_taker, WINDOW_S)) & (oi <= (1 - OI_FALL) * oi[start]),
        forced > adverse_depth,
        (w3 > w2) & (w2 > w1) & (w1 >= trigger / 2) & (lag >= 3 * WAVE_S),
    )
    stage = np.zeros(n, np.int64)
    for number, holds in enumerate(conditions, 1):
        stage[holds & (lag >= start)] = number
    return start, stage


def flushed(run: Run, start: int) -> np.ndarray:
    """Rule 7 per second (before the stage-3 requirement)."""
    config = run.config
    c = 0 if config.crowd > 0 else 1
    oi = run.oi.sum(axis=1)
    peak = oi[:max(start, 1)].max()
    quiet = _trailing(run.forced_usd[:, c], QUIET_S) == 0.0
    buyers = config.crowd * _trailing(run.spot_usd, QUIET_S) > 0.0
    reset = config.crowd * run.funding <= INTEREST_8H + 1e-12
    return quiet & (oi <= (1 - PURGED) * peak) & reset & buyers & (np.arange(len(oi)) > start)


def stages(run: Run) -> np.ndarray:
    """The true stage of every second."""
    start, stage = rules(run)
    if start < 0:
        return stage
    done = flushed(run, start)
    out = np.maximum.accumulate(stage)
    reached = np.maximum.accumulate(out >= 3)
    final = np.flatnonzero(done & reached)
    if len(final):
        out[final[0]:] = 7
    return out


def labels(run: Run) -> list[Label]:
    """Stage transitions, the first at the start of the run."""
    config = run.config
    stage = stages(run)
    changes = np.flatnonzero(np.diff(stage, prepend=-1))
    asset = config.symbol.removesuffix("USDT")
    return [Label(config.t0_ms + int(t) * 1000, asset, config.side, int(stage[t])) for t in changes]
