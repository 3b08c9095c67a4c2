"""The market of one asset in fixed buckets, from the events: the chart's lines and the baselines' input.

Per bucket of ``res_s`` seconds: the last trade price, liquidated USD per position side (summed), and the
last open interest and funding seen (carried forward). Bucketing is vectorised; ``bucket_sum`` and
``bucket_last`` have plain-Python twins in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flushwatch.events import Event, FundingMark, Liquidation, OpenInterest, Trade


@dataclass(frozen=True)
class Tape:
    t0_ns: int  # start of bucket 0
    res_s: float
    price: np.ndarray  # (n,) float64, NaN before the first trade
    liq_long: np.ndarray  # (n,) USD liquidated in the bucket
    liq_short: np.ndarray
    oi_usd: np.ndarray  # (n,) NaN where unknown
    funding_8h: np.ndarray

    def times_ns(self) -> np.ndarray:
        return self.t0_ns + (np.arange(self.price.shape[0]) * self.res_s * 1e9).astype(np.int64)

    def liq(self, side: str) -> np.ndarray:
        return self.liq_long if side == "long" else self.liq_short


def bucket_sum(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``out[b]`` = the sum of ``values`` whose ``index`` is ``b`` (``(n,)``, 0 where none)."""
    return np.bincount(index, weights=values, minlength=n)[:n]


def bucket_last(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``out[b]`` = the last of ``values`` (in array order) with ``index <= b``: NaN before the first."""
    out = np.full(n, np.nan)
    if not index.shape[0]:
        return out
    # the position of each bucket's last value, carried forward over buckets without one
    last_pos = np.full(n, -1, np.int64)
    np.maximum.at(last_pos, index, np.arange(index.shape[0]))
    last_pos = np.maximum.accumulate(last_pos)
    known = last_pos >= 0
    out[known] = values[last_pos[known]]
    return out


def build_tape(events: Sequence[Event], asset: str, res_s: float, t0_ns: int, t1_ns: int) -> Tape:
    """The tape of ``asset`` over ``[t0_ns, t1_ns]``."""
    n = int((t1_ns - t0_ns) / 1e9 // res_s) + 1
    cols: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in ("px", "long", "short", "oi", "fund")}
    for e in events:
        if e.asset != asset:
            continue
        if isinstance(e, Trade):
            key, value = "px", e.price
        elif isinstance(e, Liquidation):
            key, value = e.side, e.price * e.size
        elif isinstance(e, OpenInterest):
            key, value = "oi", e.oi_usd
        elif isinstance(e, FundingMark):
            key, value = "fund", e.funding_8h
        else:
            continue
        cols[key][0].append(e.ts_event)
        cols[key][1].append(value)

    def index_values(key: str) -> tuple[np.ndarray, np.ndarray]:
        ts = np.array(cols[key][0], np.int64)
        idx = np.clip(((ts - t0_ns) / 1e9 // res_s).astype(np.int64), 0, n - 1)
        return idx, np.array(cols[key][1], np.float64)

    return Tape(
        t0_ns=t0_ns,
        res_s=res_s,
        price=bucket_last(*index_values("px"), n),
        liq_long=bucket_sum(*index_values("long"), n),
        liq_short=bucket_sum(*index_values("short"), n),
        oi_usd=bucket_last(*index_values("oi"), n),
        funding_8h=bucket_last(*index_values("fund"), n),
    )
