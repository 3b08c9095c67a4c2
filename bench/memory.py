"""Resident memory of ``flushwatch run`` watching 300 instruments on the fake exchange.

The daemon runs as its own process (as in production) against a fake exchange in this one, which plays a
calm but busy market for 300 perpetuals; its RSS is sampled from /proc while it works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time

from bench.common import emit
from flushwatch.fake.scenario import SOL_OVERHEATED, Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import free_port, private_redis
from flushwatch.waiting import until

INSTRUMENTS = 300


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _measure(seconds: float) -> list[tuple[float, float]]:
    scripts = [dataclasses.replace(SOL_OVERHEATED, symbol=f"M{i:03d}USDT") for i in range(INSTRUMENTS)]
    scenario = Scenario(scripts, seed=4, speed=1.0)
    samples: list[tuple[float, float]] = []
    with private_redis() as redis:
        async with FakeBinance() as fake:
            fake.register(scenario)
            env = {
                **os.environ,
                "FLUSHWATCH_REDIS_URL": redis.url,
                "FLUSHWATCH_MQTT_URL": "mqtt://127.0.0.1:1",  # unreachable: alerts queue, bounded
                "FLUSHWATCH_METRICS_PORT": str(free_port()),
                "FLUSHWATCH_LOG_LEVEL": "ERROR",
                "FLUSHWATCH_BINANCE__SYMBOLS": json.dumps(scenario.symbols),
                "FLUSHWATCH_BINANCE__MARKET_URL": fake.market_url,
                "FLUSHWATCH_BINANCE__PUBLIC_URL": fake.public_url,
                "FLUSHWATCH_BINANCE__REST_URL": fake.rest_url,
            }
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "flushwatch", "run", env=env,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL)
            try:
                expected = INSTRUMENTS * 3 + 1
                await until(lambda: sum(len(c.streams) for c in fake.open_connections) >= expected, within=120.0)
                fake.attach(scenario)
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < seconds:
                    await asyncio.sleep(1.0)
                    samples.append((elapsed, rss_mb(proc.pid)))
            finally:
                proc.terminate()
                await proc.wait()
    return samples


def run(quick: bool) -> None:
    samples = asyncio.run(_measure(12.0 if quick else 60.0))
    half = samples[len(samples) // 2][1]
    emit("memory.run_300_instruments.rss_mb", samples[-1][1], "MB", instruments=INSTRUMENTS,
         seconds=round(samples[-1][0]), rss_mb_at_half_time=round(half, 1),
         max_rss_mb=round(max(rss for _, rss in samples), 1))
