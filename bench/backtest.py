"""The backtest over an hourly CoinGlass-sized input (synthesised: four months of BTC hours with
liquidations, open interest and funding): bars turned into events, and events through the detector."""

from __future__ import annotations

import numpy as np

from bench.common import Stopwatch, emit
from flushwatch.backtest.bars import Bars
from flushwatch.backtest.feed import bar_events
from flushwatch.backtest.profiles import backtest_settings
from flushwatch.backtest.runner import run_detector

HOURS = 2_832  # 2025-12-04 .. 2026-03-31
T0_MS = 1_764_828_000_000


def synthetic_hours(n: int, rng: np.random.Generator) -> Bars:
    close = 93_000.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.003, n))
    liq = rng.lognormal(np.log(1.5e6), 1.0, (2, n))
    columns = {
        "open": open_, "close": close, "high": np.maximum(open_, close) * (1 + wick),
        "low": np.minimum(open_, close) * (1 - wick), "liq_long_usd": liq[0], "liq_short_usd": liq[1],
        "oi_usd": 8e9 * np.exp(np.cumsum(rng.normal(0, 0.003, n))), "funding_8h": rng.normal(5e-5, 5e-5, n),
    }
    return Bars(T0_MS + np.arange(n, dtype=np.int64) * 3_600_000, 3600.0, columns, "generic")


def run(quick: bool) -> None:
    bars = synthetic_hours(HOURS // 4 if quick else HOURS, np.random.default_rng(5))
    settings = backtest_settings(bars.interval_s, {})
    run_detector(bar_events(synthetic_hours(48, np.random.default_rng(1))), settings)  # compile or load from cache
    with Stopwatch() as feed:
        events = bar_events(bars)
    result = run_detector(events, settings)
    total = feed.seconds + result.seconds
    emit("backtest.bars_per_s", len(bars) / total, "bars/s", bars=len(bars), interval_s=bars.interval_s)
    emit("backtest.events_per_s", len(events) / result.seconds, "events/s", events=len(events),
         feed_s=round(feed.seconds, 3), detector_s=round(result.seconds, 3))


if __name__ == "__main__":
    run(quick=True)
