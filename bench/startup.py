"""Start-up of ``flushwatch run``: cold (an empty ``NUMBA_CACHE_DIR``: every kernel compiled) and warm (the
same folder again: kernels loaded from the cache), each in a fresh process, median of three.

Per run: ``kernels_s``, what ``warm_up_kernels`` took (the daemon logs it: "detector kernels ready in ...");
``kernels_line_s``, from the spawn of the process to that log line (imports included); ``healthz_s``, from
the spawn to ``/healthz`` answering 200. ``/readyz`` is not timed: it waits for feed data, which says more
about the venue than about the start. Redis, the MQTT broker and the fake Binance are up beforehand, so
their start is not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from urllib.error import URLError

from bench.common import emit, note
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import RunningServer, free_port, private_mosquitto, private_redis

RUNS = 3
KERNELS_LINE = "detector kernels ready in "


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except (URLError, OSError):
        return False


async def _start_once(cache: str, redis: RunningServer, broker: RunningServer, fake: FakeBinance
                      ) -> tuple[float, float, float]:
    port = free_port()
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "FLUSHWATCH_REDIS_URL": redis.url,
           "FLUSHWATCH_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}", "FLUSHWATCH_METRICS_PORT": str(port),
           "FLUSHWATCH_LOG_LEVEL": "INFO", "FLUSHWATCH_BINANCE__SYMBOLS": json.dumps(["BTCUSDT"]),
           "FLUSHWATCH_BINANCE__MARKET_URL": fake.market_url, "FLUSHWATCH_BINANCE__PUBLIC_URL": fake.public_url,
           "FLUSHWATCH_BINANCE__REST_URL": fake.rest_url}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "flushwatch", "run", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        kernels_s = line_s = float("nan")
        async for raw in proc.stderr:
            line = raw.decode(errors="replace")
            if KERNELS_LINE in line:
                line_s = time.perf_counter() - started
                kernels_s = float(json.loads(line)["msg"].removeprefix(KERNELS_LINE).split()[0])
                break
        while not await asyncio.to_thread(_healthy, port):
            if proc.returncode is not None:
                raise RuntimeError(f"flushwatch run exited with {proc.returncode}")
            await asyncio.sleep(0.01)
        healthz_s = time.perf_counter() - started
    finally:
        proc.terminate()
        await proc.communicate()  # drains stderr so the daemon is not blocked writing its shutdown lines
    return kernels_s, line_s, healthz_s


async def _measure() -> dict[str, list[tuple[float, float, float]]]:
    runs: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": []}
    with private_redis() as redis, private_mosquitto() as broker:
        async with FakeBinance() as fake:
            for i in range(RUNS):
                with tempfile.TemporaryDirectory(prefix="flushwatch-numba-") as cache:
                    for kind in ("cold", "warm"):
                        runs[kind].append(await _start_once(cache, redis, broker, fake))
                        note(f"startup: run {i + 1} {kind}: {runs[kind][-1]}")
    return runs


def run(quick: bool) -> None:
    # Three cold runs even when quick: a compile takes about a minute, and one run says nothing about spread.
    for kind, results in asyncio.run(_measure()).items():
        for index, name in enumerate(("kernels_s", "kernels_line_s", "healthz_s")):
            values = [r[index] for r in results]
            emit(f"startup.{kind}.{name}", statistics.median(values), "s", runs=len(values),
                 min=round(min(values), 2), max=round(max(values), 2))
