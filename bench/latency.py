"""Frame receipt -> MQTT delivery, with the whole pipeline under a steady 5,000 frames/s.

A few assets play a long flush at one steady trade rate (so the frame rate is the same in every phase),
staggered by half a minute, at the speed that makes the fake exchange push about 5,000 frames/s. The calm
part lasts 12 minutes, as the detector judges liquidation intensity only once its baseline has history.
A real MQTT subscriber times every message against ``received_ns`` in its payload (the receipt of the
frame that triggered a stage change; of the newest frame behind a state snapshot): both clocks are this
machine's. Stage changes are few (about five per asset); snapshots give the many samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid

import aiomqtt
import numpy as np

from bench.common import emit, note
from flushwatch.daemon import Daemon
from flushwatch.fake.scenario import BTC_FLUSH, AssetScript, Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import private_mosquitto, private_redis
from flushwatch.settings import BinanceSettings, load_settings
from flushwatch.waiting import until

ASSETS = 4
FRAMES_PER_S = 5_000
TRADES_PER_S = 60.0
PHASE_ENDS = (720, 780, 900, 1600)  # build-up, shock, cascade, recovery (scenario seconds)


def steady_flush(i: int) -> AssetScript:
    shift = 30 * i
    ends = [end + shift for end in PHASE_ENDS[:-1]] + [PHASE_ENDS[-1]]
    segments = tuple(dataclasses.replace(seg, end_s=end, trades_per_s=TRADES_PER_S)
                     for seg, end in zip(BTC_FLUSH.segments, ends, strict=True))
    return dataclasses.replace(BTC_FLUSH, symbol=f"L{i:02d}USDT", segments=segments)


async def _measure(play_until_s: float) -> tuple[list[float], list[float], float, int]:
    scripts = [steady_flush(i) for i in range(ASSETS)]
    probe = Scenario(scripts, seed=2, t0=1_760_000_000.0)
    per_second = sum(1 for _ in probe.frames(0, 600)) / 600
    speed = FRAMES_PER_S / per_second
    scenario = Scenario(scripts, seed=2, speed=speed)
    changes: list[float] = []
    states: list[float] = []
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
                await client.subscribe(f"{prefix}/+/state", qos=1)
                runner = asyncio.create_task(daemon.run())
                await until(lambda: daemon.ready.is_set() and len(fake.open_connections) >= 2, within=120.0)
                fake.attach(scenario)
                started = time.monotonic()
                deadline = started + play_until_s / speed
                assert daemon.markets is not None
                collector = daemon.markets.collector("binance")
                assert collector is not None

                async def listen() -> None:
                    async for message in client.messages:
                        arrived = time.time_ns()
                        assert isinstance(message.payload, bytes)
                        payload = json.loads(message.payload)
                        latency = (arrived - payload["received_ns"]) / 1e6
                        if message.topic.value.endswith("/state"):
                            if not message.retain:
                                states.append(latency)
                        elif payload["stage"] != payload["stage_from"]:
                            changes.append(latency)

                listener = asyncio.create_task(listen())
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                frames = collector.sink.frames
                elapsed = time.monotonic() - started
                daemon.stop.set()
                await runner
                listener.cancel()
    return changes, states, frames / elapsed, len(scenario.symbols)


def run(quick: bool) -> None:
    changes, states, rate, assets = asyncio.run(_measure(840 if quick else 1300))
    if len(changes) < 2 * ASSETS:
        note(f"only {len(changes)} stage changes were measured")
    for name, values in (("frame_to_mqtt", np.array(changes)), ("state_to_mqtt", np.array(states))):
        common = {"samples": len(values), "frames_per_s": round(rate), "assets": assets}
        emit(f"latency.{name}.p50_ms", float(np.percentile(values, 50)), "ms", **common)
        emit(f"latency.{name}.p99_ms", float(np.percentile(values, 99)), "ms", **common)
        emit(f"latency.{name}.max_ms", float(values.max()), "ms", **common)
