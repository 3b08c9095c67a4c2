"""The whole path with real parts: fake Binance -> collector -> Redis -> detector -> alerts -> MQTT and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from typing import Any

import aiomqtt
import msgspec
import pytest
import redis
from harness import assert_flush_story, flush_daemon

from bench.pipeline import scrape
from collectors.binance.collector import BinanceCollector
from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from flushwatch.daemon import Daemon
from flushwatch.events import Trade
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, free_port
from flushwatch.settings import BinanceSettings, WriterSettings
from flushwatch.streams import DETECTOR_GROUP, decode_events, events_key
from flushwatch.waiting import until


class Subscriber:
    """A real MQTT client collecting everything under a prefix."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.messages: list[tuple[str, Any, bool]] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"sub-{uuid.uuid4().hex[:8]}") as client:
            await client.subscribe(f"{self.prefix}/#", qos=1)
            self.subscribed.set()
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                self.messages.append((str(message.topic), json.loads(payload), bool(message.retain)))

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def on(self, suffix: str) -> list[Any]:
        return [payload for topic, payload, _ in self.messages if topic == f"{self.prefix}/{suffix}"]


@pytest.mark.slow
async def test_scripted_flush_arrives_as_mqtt_alerts_and_metrics(
    fake: FakeBinance, redis_server: RunningServer, mosquitto: RunningServer
) -> None:
    speed = 80.0
    prefix = f"e2e-{uuid.uuid4().hex[:6]}/v1"
    scenario, settings = flush_daemon(fake, redis_server.url, mosquitto.port, prefix, speed)
    daemon = Daemon(settings)
    async with Subscriber(mosquitto.port, prefix) as sub:
        runner = asyncio.create_task(daemon.run())
        await until(lambda: daemon.ready.is_set() and len(fake.open_connections) == 2, within=60)
        fake.attach(scenario)

        def btc_flushed() -> bool:
            return any(e["stage"] == 0 and e["stage_from"] == 7 for e in sub.on("BTC/events"))

        await until(btc_flushed, within=scenario.duration_s / speed + 30)
        metrics = scrape(daemon.metrics_port)
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
        await until(lambda: any(p["status"] == "offline" for p in sub.on("status")), within=10)

    events = sub.on("BTC/events") + sub.on("SOL/events")
    for event in events:
        assert {"asset", "side", "stage", "stage_name", "overheat_score", "ts", "idempotency_key"} <= event.keys()
        assert event["evidence"] and event["thresholds"]
    assert_flush_story(events, scenario)
    states = sub.on("BTC/state")
    assert states and {"asset", "side", "stage", "stage_name", "overheat_score", "ts"} <= states[-1].keys()
    assert any(p["status"] == "online" for p in sub.on("status"))

    assert metrics['flushwatch_liquidations_usd_total{asset="BTC",side="long"}'] > 50e6
    assert metrics['flushwatch_feed_messages_total{venue="binance"}'] > 10_000
    assert 'flushwatch_stage{asset="BTC",side="long"}' in metrics
    assert metrics['flushwatch_overheat_score{asset="SOL",side="long"}'] >= settings.detector.overheat_hot
    assert metrics['flushwatch_open_interest_usd{asset="BTC"}'] > 1e9


def agg_trade(symbol: str, trade_id: int, t_ms: int) -> tuple[str, str]:
    data = {"e": "aggTrade", "E": t_ms, "a": trade_id, "s": symbol, "p": "100.0", "q": "1.0",
            "f": trade_id, "l": trade_id, "T": t_ms, "m": trade_id % 2 == 0}
    return f"{symbol.lower()}@aggTrade", msgspec.json.encode(data).decode()


def stored_trade_ids(url: str) -> list[int]:
    client = redis.Redis.from_url(url)
    ids = []
    for _, fields in client.xrange(events_key(0)):
        ids += [e.ts_event // 1_000_000 for e in decode_events(fields) if isinstance(e, Trade)]
    return ids


async def test_reconnect_after_a_drop_loses_and_duplicates_nothing(
    fake: FakeBinance, redis_server: RunningServer
) -> None:
    """Every frame the exchange delivered is stored exactly once, across a dropped connection and a
    replacement connection on which the exchange repeats its last frames."""
    settings = BinanceSettings(symbols=["BTCUSDT"], market_url=fake.market_url, public_url=fake.public_url,
                               rest_url=fake.rest_url, backoff_initial_s=0.05, backoff_max_s=0.2)
    queue = EventQueue(100_000)
    collector = BinanceCollector(settings, queue)
    client = connect_redis(redis_server.url)
    writer = StreamWriter(client, queue, WriterSettings(), shards=1)
    stop, writer_stop = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(writer.run(writer_stop))]

    def market(exclude: set[int] = frozenset()) -> list[Any]:  # type: ignore[assignment]
        return [c for c in fake.open_connections
                if c.route == "market" and "btcusdt@aggTrade" in c.streams and c.id not in exclude]

    t0 = 1_760_000_000_000
    try:
        await until(lambda: bool(market()), within=10)
        await fake.publish([agg_trade("BTCUSDT", i, t0 + i) for i in range(1, 501)])
        await until(lambda: collector.sink.frames >= 500, within=10)
        first = {c.id for c in fake.connections}
        assert await fake.drop_connections(None) >= 1  # abort without a close frame: 1006
        await until(lambda: bool(market(first)), within=10)
        # The venue repeats what the old connection already delivered (451-500), then carries on.
        await fake.publish([agg_trade("BTCUSDT", i, t0 + i) for i in range(451, 1001)])
        await until(lambda: collector.sink.frames >= 1050, within=10)
        fake.resend_last(50)  # and repeats its last 50 frames on the new connection
        await until(lambda: collector.sink.frames >= 1100, within=10)
    finally:
        stop.set()
        await asyncio.gather(tasks[0])
        writer_stop.set()
        queue.wake()
        await asyncio.gather(tasks[1])
        await client.aclose()
    delivered = {json.loads(s.data)["data"]["a"] for c in fake.connections for s in c.sent
                 if s.stream == "btcusdt@aggTrade"}
    stored = [ms - t0 for ms in stored_trade_ids(redis_server.url)]  # the frames carry T = t0 + id
    assert sorted(stored) == sorted(delivered) == list(range(1, 1001))
    assert len(stored) == len(set(stored))
    assert sum(collector.connections[0].reconnects.values()) >= 1


@pytest.mark.slow
async def test_sigterm_mid_stream_flushes_acknowledges_and_says_offline(
    fake: FakeBinance, redis_server: RunningServer, mosquitto: RunningServer
) -> None:
    speed = 80.0
    scenario = Scenario("flush", seed=5, speed=speed)
    fake.register(scenario)
    prefix = f"term-{uuid.uuid4().hex[:6]}/v1"
    env = {
        **os.environ,
        "FLUSHWATCH_REDIS_URL": redis_server.url,
        "FLUSHWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
        "FLUSHWATCH_MQTT_PREFIX": prefix,
        "FLUSHWATCH_METRICS_PORT": str(free_port()),
        "FLUSHWATCH_BINANCE__SYMBOLS": json.dumps(scenario.symbols),
        "FLUSHWATCH_BINANCE__MARKET_URL": fake.market_url,
        "FLUSHWATCH_BINANCE__PUBLIC_URL": fake.public_url,
        "FLUSHWATCH_BINANCE__REST_URL": fake.rest_url,
        "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": str(10.0 / speed),
    }
    async with Subscriber(mosquitto.port, prefix) as sub:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "flushwatch", "run", env=env,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            await until(lambda: len(fake.open_connections) == 2, within=60)
            fake.attach(scenario)
            # Mid-cascade: BTC has reached stage 3 or more.
            await until(lambda: any(e["stage"] >= 3 for e in sub.on("BTC/events")), within=60)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        code, output = proc.returncode, stdout.decode()
        assert code == 0, output
        await until(lambda: bool(sub.on("status")) and sub.on("status")[-1]["status"] == "offline", within=10)
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen(events_key(0)) > 0
    pending = client.xpending(events_key(0), DETECTOR_GROUP)
    assert pending["pending"] == 0, pending  # everything written was processed and acknowledged
    groups = {g["name"].decode(): g for g in client.xinfo_groups(events_key(0))}
    assert groups[DETECTOR_GROUP]["lag"] == 0  # and nothing was left unread
    assert "not written to Redis" not in output
    # off a terminal the daemon logs JSON lines, one object per line, with the logger and level as fields
    logged = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert logged and all({"ts", "level", "logger", "msg"} <= line.keys() for line in logged)
    assert any(line["msg"].startswith("shutting down") for line in logged)
