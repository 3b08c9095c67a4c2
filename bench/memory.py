"""Memory: the detector's resident set per 1,000 instruments, and the daemon's and Redis's memory over an
hour of market replayed as fast as the pipeline keeps up.

* ``memory.detector.rss_mb_per_1000_instruments``: a fresh process compiles the kernels, feeds one
  instrument a few simulated minutes of trades, marks, depth, open interest and liquidations and reads its
  RSS; then feeds 1,000 more the same and reads it again. The difference is what 1,000 instruments cost,
  the arrays the detector allocates for them (``state_mb``) included.
* ``memory.hour.*``: the simulator's first hour (BTC on Binance and Bybit, shock and cascade included)
  pushed at 20x its peak frame rate through ``flushwatch run`` (``bench.pipeline``), the daemon's RSS and
  Redis's ``used_memory`` sampled every simulated 5 minutes; the slope over the second half says whether
  either grows. Three times: with the default trimming (entries older than ``writer.retention_s``, 15
  minutes of wall time, which the accelerated hour (about 20 s of wall time) does not reach, and ``MAXLEN ~
  20,000``, which it does not reach either, so Redis grows by what was written), with a 5-second retention
  (what 15 minutes are to a real hour: Redis must level off once it applies), and with the streams capped
  at 200 entries (at 20x an hour writes about 1,300 entries of about a hundred events each), where Redis must
  level off too.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from typing import Any

import numpy as np

from bench.common import emit
from bench.pipeline import ROOT, Pipeline, rss_mb, slope_per_hour
from flushwatch.events import Depth, Event, Liquidation, OpenInterest, Trade, funding_mark
from flushwatch.fake.load import SteadyCascade, peak_rate
from flushwatch.simulator import SimConfig, Simulation

INSTRUMENTS = 1000
SAMPLE_EVERY_SIMULATED_S = 300.0
HOUR_MULTIPLE = 20
TRIMMED_MAXLEN = 200
RETENTION_S = 5
_T0 = 1_760_000_000_000_000_000


def _events(assets: list[str], second: int) -> list[Event]:
    """One simulated second of a calm but complete market for each asset."""
    t = _T0 + second * 1_000_000_000
    out: list[Event] = []
    for i, asset in enumerate(assets):
        price = 100.0 + i + (second % 60) * 0.01
        common: dict[str, Any] = {"venue": "binance", "symbol": f"{asset}USDT", "asset": asset, "ts_recv": t}
        out += [Trade(**common, ts_event=t + 1000, price=price, size=1.0, side="buy"),
                Trade(**common, ts_event=t + 2000, price=price, size=2.0, side="sell"),
                funding_mark(**common, ts_event=t + 3000, mark_price=price, index_price=price, funding_rate=1e-4,
                             funding_interval_h=8.0, next_funding_ts=0),
                Depth(**common, ts_event=t + 4000, mid=price, spread_bps=1.0, bid_usd=(1e5, 2e5, 4e5),
                      ask_usd=(1e5, 2e5, 4e5), reach_bps=300.0)]
        if second % 10 == 0:
            out.append(OpenInterest(**common, ts_event=t + 5000, oi_base=1e4, oi_usd=1e4 * price))
        if second % 7 == 0:
            out.append(Liquidation(**common, ts_event=t + 6000, price=price, size=0.5, side="long"))
    return out


def _nbytes(item: Any) -> int:
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    if isinstance(item, tuple):
        return sum(_nbytes(x) for x in item)
    return 0


def detector_rss(instruments: int, seconds: int) -> None:
    """Run in a fresh process: prints the RSS with one instrument and with ``instruments`` more, as JSON."""
    import os

    from detector.engine import Detector
    from flushwatch.daemon import warm_up_kernels
    from flushwatch.settings import load_settings

    settings = load_settings()
    warm_up_kernels(settings)
    detector = Detector(settings)
    pid = os.getpid()

    def feed(assets: list[str]) -> None:
        for second in range(seconds):
            detector.process(_events(assets, second))

    feed(["A0000"])
    gc.collect()
    before = rss_mb(pid)
    feed([f"A{i + 1:04d}" for i in range(instruments)])
    gc.collect()
    after = rss_mb(pid)
    state = (_nbytes(detector.state) + _nbytes(detector.extras)) / 2**20
    print(json.dumps({"before": before, "after": after, "state_mb": state, "assets": len(detector.assets)}))


def _per_instruments(seconds: int) -> None:
    code = f"from bench.memory import detector_rss; detector_rss({INSTRUMENTS}, {seconds})"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    emit("memory.detector.rss_mb_per_1000_instruments", (result["after"] - result["before"]) * 1000 / INSTRUMENTS,
         "MB", instruments=INSTRUMENTS, simulated_s=seconds, rss_one_instrument_mb=round(result["before"], 1),
         rss_mb=round(result["after"], 1), state_mb=round(result["state_mb"], 1))


async def _hour(env: dict[str, str]) -> tuple[list[Any], float, float, int]:
    simulation = Simulation(SimConfig(seed=0))
    t0_ms = simulation.config.t0_ms
    hour = sum(1 for ts, *_ in simulation.frames() if ts < t0_ms + 3_600_000)
    rate = HOUR_MULTIPLE * peak_rate(simulation)[0]
    load = SteadyCascade(simulation, rate, hour / rate)
    async with Pipeline(simulation, env=env) as pipe:
        await pipe.start_daemon(load)
        played = await pipe.play(load, every_simulated_s=SAMPLE_EVERY_SIMULATED_S)
        entries = await pipe.redis.xlen("fw:{s0}:events")
        await pipe.stop()
    samples = played.samples
    return ([[round(s.simulated_s / 60, 1), round(s.rss_mb, 1), round(s.redis_used_mb, 2)] for s in samples],
            slope_per_hour(samples, lambda s: s.rss_mb), slope_per_hour(samples, lambda s: s.redis_used_mb),
            entries)


def run(quick: bool) -> None:
    _per_instruments(120 if quick else 600)
    trimmed = {"FLUSHWATCH_WRITER__EVENTS_MAXLEN": str(TRIMMED_MAXLEN),
               "FLUSHWATCH_WRITER__SIGNALS_MAXLEN": str(TRIMMED_MAXLEN)}
    retention = {"FLUSHWATCH_WRITER__RETENTION_S": str(RETENTION_S), "FLUSHWATCH_DETECTOR__CHECKPOINT_S": "1"}
    for name, env in (("default_trim", {}), (f"retention_{RETENTION_S}s", retention),
                      (f"maxlen_{TRIMMED_MAXLEN}", trimmed)):
        samples, rss_slope, redis_slope, entries = asyncio.run(_hour(env))
        extra = {"samples_min_rss_redis": samples, "events_entries": entries,
                 "note": f"simulated hour at {HOUR_MULTIPLE}x peak; slopes over the second half"}
        emit(f"memory.hour.{name}.rss_slope_mb_per_h", rss_slope, "MB/h", **extra)
        emit(f"memory.hour.{name}.redis_slope_mb_per_h", redis_slope, "MB/h", **extra)
        emit(f"memory.hour.{name}.redis_used_mb_end", samples[-1][2], "MB", events_entries=entries)
