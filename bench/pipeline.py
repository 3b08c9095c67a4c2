"""The whole pipeline under a steady cascade load, laid out as in production, for load tests and benchmarks.

This process runs the fake Binance and Bybit (``flushwatch.fake.load.SteadyCascade``); ``flushwatch run``
runs in its own process (through ``bench.probe``, which records when each snapshot reaches ``/metrics``)
with a private redis-server and mosquitto; a C subscriber (``mosquitto_sub``) stamps every MQTT arrival
with its own clock, so neither the measuring nor the fake exchange shares the daemon's interpreter. The
daemon watches BTC on both venues through the real collectors, writer, Redis, detector and alert role.

``Pipeline.play`` pushes a load while sampling, per ``Sample``: the detector group's backlog on the events
stream (entries not yet read, and read but not acknowledged), the daemon's resident set and Redis's
``used_memory``; then waits until everything pushed has gone through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from collectors.instruments import Instrument
from detector.engine import Detector
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.load import SteadyCascade
from flushwatch.fake.server import FakeBinance
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, free_port, start_mosquitto, start_redis
from flushwatch.settings import Settings
from flushwatch.signals import AssetState, StageChange
from flushwatch.simulator.simulation import Simulation
from flushwatch.streams import ALERTS_GROUP, DETECTOR_GROUP, decode_events, decode_signals, events_key, signals_key
from flushwatch.waiting import until

ROOT = Path(__file__).resolve().parents[1]
"""Where ``python -m bench.probe`` is found."""
OI_POLL_SIMULATED_S = 10.0
"""The open-interest poll interval of the real poller, kept in simulated time whatever the rate."""
KEEP_SENT = 10_000_000
"""The fake Binance keeps every frame it sent, so a run can count them all."""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``{series: value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(metrics: dict[str, float], name: str) -> float:
    """The sum of every series of ``name`` (all label values)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


Change = tuple[str, str, int, int, bool, int]
"""``(asset, side, stage_from, stage, paused, ts)`` of a ``StageChange``."""


def _change(change: StageChange) -> Change:
    return change.asset, change.side, change.stage_from, change.stage, change.paused, change.ts


@dataclass(frozen=True)
class Sample:
    wall_s: float
    """Since the load started."""
    simulated_s: float
    """The simulated second the load had reached."""
    stream_lag: int
    """Entries of the events stream not yet read by the detector group."""
    pending: int
    """Entries read by the detector but not acknowledged (it acknowledges with each state checkpoint)."""
    detector_lag_s: float
    """``flushwatch_detector_lag_seconds``: local time minus receipt of the newest event processed."""
    rss_mb: float
    redis_used_mb: float


@dataclass
class Played:
    """What a load run pushed, what came through and what was seen on the way."""

    frames: int
    seconds: float
    samples: list[Sample]
    sent: dict[str, int]
    """Per venue: frames the fake sent (pushes and replies), by its own books."""
    pushed: dict[str, int]
    """Per venue: pushes the fake sent."""
    subscribed: dict[str, int]
    """Per venue: frames of the load on topics the daemon subscribed (what the fake had to push)."""
    drain_s: float
    """From the last frame due to everything through the alert role."""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds


class Pipeline:
    """``async with Pipeline(simulation) as pipe: played = await pipe.play(load)``; then ``stop`` the daemon
    before reading what it recorded (``visible_ms``, ``mqtt``)."""

    def __init__(self, simulation: Simulation, *, env: dict[str, str] | None = None) -> None:
        self.simulation = simulation
        self.symbol = simulation.config.symbol
        self.asset = self.symbol.removesuffix("USDT")
        self._env = env or {}
        self._stack = contextlib.AsyncExitStack()
        self._dir = Path(tempfile.mkdtemp(prefix="flushwatch-load-"))
        self.prefix = f"load-{uuid.uuid4().hex[:6]}/v1"
        self.metrics_port = 0
        """Picked when the daemon's environment is made: picked before the servers and fake venues started,
        one of them could take it first (they bind port 0 too)."""
        self.daemon: asyncio.subprocess.Process | None = None
        self._sub: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Pipeline:
        stack = self._stack
        stack.callback(shutil.rmtree, self._dir, ignore_errors=True)
        self.redis_server = self._server(start_redis)
        self.broker = self._server(start_mosquitto)
        self.redis = connect_redis(self.redis_server.url)
        stack.push_async_callback(self.redis.aclose)
        self.binance = await stack.enter_async_context(FakeBinance(keep_sent=KEEP_SENT))
        instrument = Instrument("bybit", self.symbol, self.asset, "linear", 1.0, 8.0, oi_usd=1e9, volume_usd_24h=1e9)
        self.bybit = await stack.enter_async_context(FakeVenue(BybitProtocol([instrument])))
        stack.push_async_callback(self.stop)
        out = stack.enter_context((self._dir / "mqtt.txt").open("wb"))
        self._sub = await asyncio.create_subprocess_exec(
            "stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1",
            "-t", f"{self.prefix}/+/events", "-t", f"{self.prefix}/+/state", "-F", "%U %r %t %p",
            stdout=out, stderr=asyncio.subprocess.DEVNULL)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _server(self, start: Callable[[], RunningServer]) -> RunningServer:
        server = start()
        self._stack.callback(server.stop)
        return server

    def daemon_env(self, oi_poll_s: float) -> dict[str, str]:
        self.metrics_port = free_port()
        return {
            **os.environ,
            "FLUSHWATCH_REDIS_URL": self.redis_server.url,
            "FLUSHWATCH_MQTT_URL": f"mqtt://127.0.0.1:{self.broker.port}",
            "FLUSHWATCH_MQTT_PREFIX": self.prefix,
            "FLUSHWATCH_METRICS_PORT": str(self.metrics_port),
            "FLUSHWATCH_LOG_LEVEL": "WARNING",
            "FLUSHWATCH_UNIVERSE__WATCH": self.asset,
            "FLUSHWATCH_BINANCE__SYMBOLS": json.dumps([self.symbol]),
            "FLUSHWATCH_BINANCE__MARKET_URL": self.binance.market_url,
            "FLUSHWATCH_BINANCE__PUBLIC_URL": self.binance.public_url,
            "FLUSHWATCH_BINANCE__REST_URL": self.binance.rest_url,
            "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": f"{oi_poll_s:.4f}",
            "FLUSHWATCH_BYBIT__ENABLED": "true",
            "FLUSHWATCH_BYBIT__WS_URL": self.bybit.ws_url,
            "FLUSHWATCH_BYBIT__REST_URL": self.bybit.rest_url,
            **self._env,
        }

    async def start_daemon(self, load: SteadyCascade) -> None:
        """Start ``flushwatch run`` (through the probe) and wait until both venues' subscriptions are live."""
        compression = load.simulated_s / load.duration_s
        self.binance.register(load.binance)
        log = self._stack.enter_context((self._dir / "daemon.log").open("wb"))
        self.daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.probe", str(self._dir / "visible.npy"),
            env=self.daemon_env(max(0.05, OI_POLL_SIMULATED_S / compression)),
            stdout=asyncio.subprocess.DEVNULL, stderr=log, cwd=ROOT)
        lower = self.symbol.lower()
        try:
            await until(lambda: {f"{lower}@aggTrade", f"{lower}@depth20@100ms"} <= self._binance_streams()
                        and f"tickers.{self.symbol}" in self.bybit.subscribed(), within=120)
        except TimeoutError:
            raise RuntimeError(f"the daemon did not subscribe; its log:\n{self.daemon_log()[-3000:]}") from None

    def daemon_log(self) -> str:
        return (self._dir / "daemon.log").read_text(errors="replace")

    def _binance_streams(self) -> set[str]:
        return {s for c in self.binance.open_connections for s in c.streams}

    async def sample(self, load: SteadyCascade, started: float) -> Sample:
        assert self.daemon is not None
        groups = {g["name"].decode(): g for g in await self.redis.xinfo_groups(events_key(0))} \
            if await self.redis.exists(events_key(0)) else {}
        group = groups.get(DETECTOR_GROUP, {"lag": 0, "pending": 0})
        used = (await self.redis.info("memory"))["used_memory"]
        lag_s = total(await asyncio.to_thread(scrape, self.metrics_port), "flushwatch_detector_lag_seconds")
        return Sample(time.monotonic() - started, load.simulated_now_s(), int(group["lag"] or 0),
                      int(group["pending"]), lag_s, rss_mb(self.daemon.pid), used / 2**20)

    async def play(self, load: SteadyCascade, *, every_s: float = 1.0,
                   every_simulated_s: float | None = None) -> Played:
        """Push ``load`` (the daemon must be running), sampling every ``every_s`` wall seconds or, when given,
        each time the load crosses a multiple of ``every_simulated_s``; then wait for the pipeline to drain."""
        samples: list[Sample] = []
        started = time.monotonic()
        samples.append(await self.sample(load, started))
        pumps = [self.binance.attach(load.binance), self.bybit.attach(load.bybit)]
        mark = 0
        while not all(p.done() for p in pumps):
            if every_simulated_s is None:
                await asyncio.sleep(every_s)
                samples.append(await self.sample(load, started))
            else:
                await asyncio.sleep(0.02)
                if int(load.simulated_now_s() // every_simulated_s) > mark:
                    mark = int(load.simulated_now_s() // every_simulated_s)
                    samples.append(await self.sample(load, started))
        for pump in pumps:
            pump.result()
        pushed_s = time.monotonic() - started
        await self._drained()
        drain_s = time.monotonic() - started - pushed_s
        samples.append(await self.sample(load, started))
        sent = {"binance": sum(len(c.sent) for c in self.binance.connections),
                "bybit": sum(len(c.sent) for c in self.bybit.connections)}
        played = Played(
            frames=len(load.frames), seconds=pushed_s, samples=samples, sent=sent,
            pushed={"binance": self.binance.counts.frames_sent, "bybit": self.bybit.counts.frames_sent},
            subscribed={"binance": load.count("binance", self._binance_streams()),
                        "bybit": load.count("bybit", self.bybit.subscribed())},
            drain_s=drain_s)
        # The collectors publish their counters about once a second, while the writer counts as it writes:
        # wait for the last frames to show and for the events counted to catch up with the events written
        # (the open-interest poller's last answer can be written after the frames' counts were published).
        def settled() -> bool:
            metrics = played.metrics = scrape(self.metrics_port)
            return all(metrics.get(f'flushwatch_feed_messages_total{{venue="{v}"}}', 0.0) >= n
                       for v, n in sent.items()) and total(metrics, "flushwatch_feed_events_total") \
                >= total(metrics, "flushwatch_writer_written_events_total")

        with contextlib.suppress(TimeoutError):
            await until(settled, within=10)
        return played

    async def _drained(self) -> None:
        """Until the fake Binance's send queues are empty, the detector has processed every event written and
        the alert role has read and acknowledged every signal (twice in a row, a writer flush apart). The
        detector's acknowledgements wait for its next checkpoint, so they are no sign of progress."""
        async def backlog() -> float:
            left: float = sum(c.backlog for c in self.binance.open_connections)
            for key, group in ((events_key(0), DETECTOR_GROUP), (signals_key(0), ALERTS_GROUP)):
                for info in await self.redis.xinfo_groups(key):
                    if info["name"].decode() == group:
                        left += int(info["lag"] or 0) + (int(info["pending"]) if group == ALERTS_GROUP else 0)
            metrics = await asyncio.to_thread(scrape, self.metrics_port)
            return left + total(metrics, "flushwatch_writer_queue_events") + abs(
                total(metrics, "flushwatch_writer_written_events_total")
                              - total(metrics, "flushwatch_detector_events_total"))

        quiet = 0
        deadline = time.monotonic() + 120
        while quiet < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            quiet = quiet + 1 if await backlog() == 0 else 0

    async def stop(self) -> None:
        """SIGTERM the daemon (it drains and exits) and the MQTT subscriber."""
        for proc in (self.daemon, self._sub):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    # --- what the run left behind ----------------------------------------------------------------

    def visible_ms(self) -> np.ndarray:
        """Frame receipt -> snapshot visible on /metrics, every snapshot, ms (after ``stop``)."""
        return np.load(self._dir / "visible.npy") / 1e6

    def mqtt(self) -> tuple[np.ndarray, np.ndarray]:
        """Frame receipt -> MQTT delivery, ms, of live snapshots and of stage changes (after ``stop``)."""
        states: list[float] = []
        changes: list[float] = []
        for line in (self._dir / "mqtt.txt").read_text().splitlines():
            stamp, retained, topic, payload = line.split(" ", 3)
            message = json.loads(payload)
            arrived_ns = int(stamp.replace(".", ""))
            latency = (arrived_ns - message["received_ns"]) / 1e6
            if topic.endswith("/state") and retained == "0":
                states.append(latency)
            elif topic.endswith("/events") and message["stage"] != message["stage_from"]:
                changes.append(latency)
        return np.array(states), np.array(changes)

    async def _entries(self, key: str) -> list[tuple[bytes, dict[Any, Any]]]:
        return cast(list[tuple[bytes, dict[Any, Any]]], await self.redis.xrange(key))

    async def stage_changes(self) -> tuple[list[Change], dict[tuple[str, str], int]]:
        """The stage changes (and pauses) the daemon's detector wrote, in order, and each side's final stage."""
        changes: list[Change] = []
        final: dict[tuple[str, str], int] = {}
        for _, fields in await self._entries(signals_key(0)):
            for signal_ in decode_signals(fields):
                if isinstance(signal_, StageChange):
                    changes.append(_change(signal_))
                elif isinstance(signal_, AssetState):
                    final.update({(signal_.asset, s.side): s.stage for s in (signal_.long, signal_.short)})
        return changes, final

    async def replayed_stage_changes(self, settings: Settings
                                     ) -> tuple[list[Change], dict[tuple[str, str], int], int]:
        """The same from a fresh ``Detector`` fed the events stream as Redis holds it, one entry at a time
        (the smallest reads possible); also the number of events."""
        detector = Detector(settings)
        changes: list[Change] = []
        final: dict[tuple[str, str], int] = {}
        events = 0
        for _, fields in await self._entries(events_key(0)):
            batch = decode_events(fields)
            events += len(batch)
            for signal_ in detector.process(batch):
                if isinstance(signal_, StageChange):
                    changes.append(_change(signal_))
                elif isinstance(signal_, AssetState):
                    final.update({(signal_.asset, s.side): s.stage for s in (signal_.long, signal_.short)})
        return changes, final, events


def percentiles(values: np.ndarray) -> dict[str, float]:
    """p50, p99, p99.9 and max in the units given (NaN when there are no values)."""
    if not len(values):
        return {"p50": float("nan"), "p99": float("nan"), "p99_9": float("nan"), "max": float("nan")}
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9]).tolist()
    return {"p50": p50, "p99": p99, "p99_9": p999, "max": float(values.max())}


def slope_per_hour(samples: list[Sample], value: Callable[[Sample], float]) -> float:
    """Least-squares slope of ``value`` against simulated time over the second half of ``samples``, per
    simulated hour."""
    half = samples[len(samples) // 2:]
    x = np.array([s.simulated_s for s in half]) / 3600.0
    return float(np.polyfit(x, [value(s) for s in half], 1)[0]) if len(half) >= 2 and np.ptp(x) > 0 else 0.0

