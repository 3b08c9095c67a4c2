"""Frame receipt -> MQTT delivery of a stage change, with the whole pipeline under a steady frame rate.

Ten assets play a compressed long flush, staggered by a few seconds, at a speed that makes the fake exchange
push about 5,000 frames/s. A real MQTT subscriber times each stage-change message against the receipt time
of the frame that triggered it (``received_ns`` in the payload): both clocks are this machine's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid

import aiomqtt
import numpy as np

from bench.common import emit, note, until
from flushwatch.daemon import Daemon
from flushwatch.fake.scenario import BTC_FLUSH, AssetScript, Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import private_mosquitto, private_redis
from flushwatch.settings import BinanceSettings, load_settings

ASSETS = 10
FRAMES_PER_S = 5_000
PHASE_ENDS = (120, 180, 300, 900)  # build-up, shock, cascade, recovery (scenario seconds)


def compressed_flush(i: int) -> AssetScript:
    shift = 6 * i
    ends = [end + shift for end in PHASE_ENDS[:-1]] + [PHASE_ENDS[-1]]
    segments = tuple(dataclasses.replace(seg, end_s=end) for seg, end in zip(BTC_FLUSH.segments, ends, strict=True))
    return dataclasses.replace(BTC_FLUSH, symbol=f"L{i:02d}USDT", segments=segments)


async def _measure(play_until_s: float) -> tuple[list[float], float, int]:
    scripts = [compressed_flush(i) for i in range(ASSETS)]
    probe = Scenario(scripts, seed=2, t0=1_760_000_000.0)
    per_second = sum(1 for _ in probe.frames(0, 900)) / 900
    speed = FRAMES_PER_S / per_second
    scenario = Scenario(scripts, seed=2, speed=speed)
    latencies: list[float] = []
    with private_redis() as redis, private_mosquitto() as broker:
        async with FakeBinance() as fake:
            fake.register(scenario)
            prefix = f"bench-{uuid.uuid4().hex[:6]}/v1"
            settings = load_settings(
                redis_url=redis.url, mqtt_url=f"mqtt://127.0.0.1:{broker.port}", mqtt_prefix=prefix,
                metrics_port=0,
                binance=BinanceSettings(symbols=scenario.symbols, market_url=fake.market_url,
                                        public_url=fake.public_url, rest_url=fake.rest_url,
                                        oi_poll_interval_s=10.0 / speed),
            )
            daemon = Daemon(settings)
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.subscribe(f"{prefix}/+/events", qos=1)
                runner = asyncio.create_task(daemon.run())
                await until(lambda: daemon.ready.is_set() and len(fake.open_connections) >= 2)
                fake.attach(scenario)
                started = time.monotonic()
                deadline = started + play_until_s / speed
                collector = daemon.collectors[0]

                async def listen() -> None:
                    async for message in client.messages:
                        arrived = time.time_ns()
                        assert isinstance(message.payload, bytes)
                        payload = json.loads(message.payload)
                        if payload["stage"] != payload["stage_from"]:
                            latencies.append((arrived - payload["received_ns"]) / 1e6)

                listener = asyncio.create_task(listen())
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                frames = collector.sink.frames
                elapsed = time.monotonic() - started
                daemon.stop.set()
                await runner
                listener.cancel()
    return latencies, frames / elapsed, len(scenario.symbols)


def run(quick: bool) -> None:
    latencies, rate, assets = asyncio.run(_measure(330 if quick else 900))
    if len(latencies) < 10:
        note(f"only {len(latencies)} stage changes were measured")
    values = np.array(latencies)
    common = {"samples": len(values), "frames_per_s": round(rate), "assets": assets}
    emit("latency.frame_to_mqtt.p50_ms", float(np.percentile(values, 50)), "ms", **common)
    emit("latency.frame_to_mqtt.p99_ms", float(np.percentile(values, 99)), "ms", **common)
    emit("latency.frame_to_mqtt.max_ms", float(values.max()), "ms", **common)
