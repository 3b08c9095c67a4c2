"""Roles in separate processes on a real Redis and Mosquitto: two collector processes (Binance, Bybit), two
detector shards and an alert process, fed by the fake exchanges. One shard is killed with SIGKILL in the
middle of a cascade and started again. Nothing is lost, no signal or alert is doubled, and every shard's
signals are, byte for byte, what one uninterrupted detector makes of the same stream. Redis's MONITOR shows
that no command or transaction of any role touched two shards (two Redis Cluster slots)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from harness import fetch

from collectors.instruments import Instrument
from detector.engine import Detector
from flushwatch.events import Event, Trade
from flushwatch.fake import Scenario
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.server import FakeBinance
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, free_port
from flushwatch.settings import load_settings
from flushwatch.signals import Signal, StageChange
from flushwatch.simulator import SimConfig, SimulatedBybit, Simulation
from flushwatch.streams import DETECTOR_GROUP, decode_events, decode_signals, events_key, shard_of, signals_key
from flushwatch.waiting import until
from tests.test_end_to_end import Subscriber

SPEED = 40.0
SHARDS = 2
XRP = Instrument("bybit", "XRPUSDT", "XRP", "linear", 1.0, 8.0, oi_usd=5e8, volume_usd_24h=1e8)


class Role:
    """One ``flushwatch <role>`` process with its own metrics port; its log goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.args, self.port = args, free_port()
        self.log = log_dir / f"{'-'.join(args).replace('/', '_')}-{uuid.uuid4().hex[:4]}.log"
        self.env = {**env, "FLUSHWATCH_METRICS_PORT": str(self.port)}
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "flushwatch", *self.args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)

    def answers(self, path: str) -> bool:
        try:
            return fetch(self.port, path)[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = self._spawn()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


async def xrange_all(redis: Any, key: str) -> list[tuple[bytes, dict[Any, Any]]]:
    return [(entry_id, fields) for entry_id, fields in await redis.xrange(key)]


class Monitor:
    """Every command the Redis server runs (``MONITOR``), by connection, collected in a thread."""

    def __init__(self, url: str) -> None:
        self.commands: list[tuple[str, str]] = []
        self._client = redis.Redis.from_url(url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError, ValueError), self._client.monitor() as monitor:
            for command in monitor.listen():
                self.commands.append((f"{command['client_address']}:{command['client_port']}", command["command"]))

    def close(self) -> None:
        self._client.close()


def cross_shard(commands: list[tuple[str, str]]) -> list[str]:
    """Commands, or MULTI/EXEC blocks, naming the keys of more than one shard: on Redis Cluster the shards'
    hash tags map to different slots, and one command or transaction may touch one slot only."""
    problems, open_blocks = [], {}
    for client, text in commands:
        tags = set(re.findall(r"fw:\{(s\d+)\}", text))
        verb = text.split(" ", 1)[0].upper()
        if verb == "MULTI":
            open_blocks[client] = set()
        elif verb in ("EXEC", "DISCARD"):
            block = open_blocks.pop(client, set())
            if len(block) > 1:
                problems.append(f"a transaction of {client} over {sorted(block)}")
        elif client in open_blocks:
            open_blocks[client] |= tags
        if len(tags) > 1 and verb not in ("DEL", "UNLINK"):  # the test's own cleanup may span shards
            problems.append(text[:120])
    return problems


def wire(signals: list[Signal]) -> list[bytes]:
    return [msgspec.msgpack.encode(s) for s in signals]


@pytest.mark.slow
async def test_a_shard_killed_mid_cascade_resumes_without_loss_or_duplicates(
        redis_server: RunningServer, mosquitto: RunningServer, tmp_path: Path) -> None:
    assert shard_of("BTC", SHARDS) == 0 and shard_of("ETH", SHARDS) == 1  # BTC's cascade is shard 0's
    prefix = f"scale-{uuid.uuid4().hex[:6]}/v1"
    scenario = Scenario("flush", seed=3, speed=SPEED)
    bybit_market = SimulatedBybit(Simulation(SimConfig(minutes=15, symbol="XRPUSDT", price=2.5, tick=0.0001,
                                                       price_decimals=4, qty_decimals=1), venues=("bybit",)),
                                  speed=SPEED)
    async with FakeBinance() as binance, FakeVenue(BybitProtocol([XRP])) as bybit:
        binance.register(scenario)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLUSHWATCH_")},
            "FLUSHWATCH_REDIS_URL": redis_server.url,
            "FLUSHWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
            "FLUSHWATCH_MQTT_PREFIX": prefix,
            "FLUSHWATCH_SHARDS": str(SHARDS),
            "FLUSHWATCH_UNIVERSE__WATCH": "BTC,ETH,SOL,XRP",
            "FLUSHWATCH_BINANCE__SYMBOLS": msgspec.json.encode(scenario.symbols).decode(),
            "FLUSHWATCH_BINANCE__MARKET_URL": binance.market_url,
            "FLUSHWATCH_BINANCE__PUBLIC_URL": binance.public_url,
            "FLUSHWATCH_BINANCE__REST_URL": binance.rest_url,
            "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": "0.25",
            "FLUSHWATCH_BYBIT__ENABLED": "true",
            "FLUSHWATCH_BYBIT__WS_URL": bybit.ws_url,
            "FLUSHWATCH_BYBIT__REST_URL": bybit.rest_url,
            "FLUSHWATCH_DETECTOR__CHECKPOINT_S": "1",
            "FLUSHWATCH_LOG_LEVEL": "INFO",
        }
        roles = {
            "alert": Role(["alert"], {**env, "FLUSHWATCH_MQTT_CLIENT_ID": f"fw-{uuid.uuid4().hex[:6]}"}, tmp_path),
            "detect0": Role(["detect", "--shard", "0/2"], env, tmp_path),
            "detect1": Role(["detect", "--shard", "1/2"], env, tmp_path),
        }
        client = connect_redis(redis_server.url)
        monitor = Monitor(redis_server.url)
        async with Subscriber(mosquitto.port, prefix) as sub:
            try:
                await until(lambda: all(r.answers("/readyz") for r in roles.values()), within=180)
                roles["binance"] = Role(["collect", "--venue", "binance"], env, tmp_path)
                roles["bybit"] = Role(["collect", "--venue", "bybit"], env, tmp_path)
                trades = {f"{symbol.lower()}@aggTrade" for symbol in scenario.symbols}
                await until(lambda: trades <= {s for c in binance.open_connections for s in c.streams}, within=60)
                await until(lambda: {"publicTrade.XRPUSDT", "tickers.XRPUSDT"} <= bybit.subscribed(), within=30)
                playing = [binance.attach(scenario), bybit.attach(bybit_market)]

                # Kill shard 0 once BTC's cascade is under way (its signals show stage 3 or more).
                async def btc_cascading() -> bool:
                    found = await xrange_all(client, signals_key(0))
                    return any(isinstance(s, StageChange) and s.asset == "BTC" and s.stage >= 3
                               for _, fields in found for s in decode_signals(fields))

                deadline = time.monotonic() + 60
                while not await btc_cascading():
                    assert time.monotonic() < deadline, "BTC never reached stage 3"
                    await asyncio.sleep(0.2)
                roles["detect0"].kill()
                await asyncio.sleep(2.0)  # the cascade goes on without shard 0: its entries wait in Redis
                roles["detect0"].restart()
                await asyncio.wait_for(asyncio.gather(*playing), timeout=120)
                await asyncio.sleep(2.0)  # the last frames reach the writer
            finally:
                for name in ("binance", "bybit", "detect0", "detect1", "alert"):  # the order that loses nothing
                    if name in roles:
                        assert roles[name].stop() == 0, f"{name} did not stop cleanly: {roles[name].log.read_text()}"
            events_by_shard = {s: await xrange_all(client, events_key(s)) for s in range(SHARDS)}
            signals_by_shard = {s: await xrange_all(client, signals_key(s)) for s in range(SHARDS)}
            pending = [await client.xpending(events_key(s), DETECTOR_GROUP) for s in range(SHARDS)]
            groups = [await client.xinfo_groups(events_key(s)) for s in range(SHARDS)]
            await client.aclose()
            monitor.close()
        published = sub.messages

    # The layout fits Redis Cluster: no command and no transaction of any role touched two shards' slots.
    verbs = {text.split(" ", 1)[0].upper() for _, text in monitor.commands}
    assert {"XADD", "XREADGROUP", "MULTI", "EXEC", "XACK", "XAUTOCLAIM", "XTRIM"} <= verbs
    assert cross_shard(monitor.commands) == []
    settings = load_settings(shards=SHARDS, detector={"checkpoint_s": 1.0})
    changes: list[StageChange] = []
    for shard in range(SHARDS):
        events: list[Event] = [e for _, fields in events_by_shard[shard] for e in decode_events(fields)]
        expected = Detector(settings).process(events)
        written = [s for _, fields in signals_by_shard[shard] for s in decode_signals(fields)]
        # Exactly what one detector that never stopped makes of the whole stream: none lost, none twice.
        assert wire(written) == wire(expected), f"shard {shard}"
        assert {e.asset for e in events} == ({"BTC", "SOL", "XRP"} if shard == 0 else {"ETH"})
        assert pending[shard]["pending"] == 0  # every entry acknowledged
        assert groups[shard][0]["last-delivered-id"] == events_by_shard[shard][-1][0]  # every entry read
        changes += [s for s in written if isinstance(s, StageChange)]

    # No event lost between the exchange and the detector: every trade the scenario played is in a stream.
    played = Counter(symbol for _, stream, _ in scenario.frames() for symbol in [stream.split("@")[0].upper()]
                     if stream.endswith("@aggTrade"))
    streamed = Counter(e.symbol for shard in range(SHARDS) for _, f in events_by_shard[shard]
                       for e in decode_events(f) if isinstance(e, Trade) and e.venue == "binance")
    assert streamed == played
    # The run went through what it claims to test: a cascade on shard 0 across the kill, and one on shard 1.
    assert max(c.stage for c in changes if c.asset == "BTC") >= 5
    assert max(c.stage for c in changes if c.asset == "ETH") >= 4
    # The alert role published every event once, however many times shard 0 computed it, and events of both
    # shards' cascades are among them.
    alerts = [payload for topic, payload, _ in published if topic.endswith("/events")]
    keys = [payload["idempotency_key"] for payload in alerts]
    assert len(keys) == len(set(keys))
    assert {p["asset"] for p in alerts if p["stage"] >= 3} >= {"BTC", "ETH"}
    logs = roles["detect0"].log.read_text()
    assert "resumed from its checkpoint" in logs and "Traceback" not in logs
