"""``flushwatch run``: every role in one process, started and stopped in the order that loses nothing.

Start: private servers if none are configured -> Redis client -> numba kernels compiled (before any feed
connects, so the first frames are not queued behind compilation) -> metrics -> MQTT -> alerts -> detector
-> writer -> collectors.

Stop (SIGTERM/SIGINT): collectors stop -> the writer drains the queue into Redis -> the detector processes
and acknowledges what is in the streams -> the alert role publishes what the detector emitted -> MQTT
``offline`` -> servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import REGISTRY

from alerts.exporter import AssetStateCollector, MetricsServer
from alerts.mqtt import MqttPublisher
from alerts.service import AlertService
from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from detector.engine import Detector, DetectorEngine
from flushwatch.events import Trade, funding_mark
from flushwatch.redis_client import REDIS_ERRORS, connect_redis
from flushwatch.servers import RunningServer, ServerUnavailable, start_mosquitto, start_redis
from flushwatch.settings import MqttTarget, Settings
from flushwatch.signals import Signal
from flushwatch.universe import Markets

log = logging.getLogger(__name__)

READY_CHECK_S: Final = 2.0  # how often Redis is pinged for /readyz
BEAT_S: Final = 0.5  # the event loop's heartbeat, which /healthz reads


def warm_up_kernels(settings: Settings) -> float:
    """Compile (or load from the numba cache) every kernel on a throwaway detector; returns seconds taken."""
    started = time.perf_counter()
    detector = Detector(settings, capacity=1)
    t0 = 1_700_000_000_000_000_000
    detector.process([
        Trade(venue="warmup", symbol="WARMUP", asset="WARMUP", ts_event=t0, ts_recv=0, price=1.0, size=1.0,
              side="buy"),
        funding_mark(venue="warmup", symbol="WARMUP", asset="WARMUP", ts_event=t0 + 2_000_000_000, ts_recv=0,
                     mark_price=1.0, index_price=1.0, funding_rate=0.0, funding_interval_h=8.0, next_funding_ts=0),
    ])
    return time.perf_counter() - started


class Daemon:
    """The wiring of ``flushwatch run``; ``run`` returns after a clean shutdown."""

    def __init__(self, settings: Settings, *, on_signals: Callable[[list[Signal]], None] | None = None) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self._redis_ok = False
        self._kernels_ready = False
        self._beat = time.monotonic()
        self.loop_stall_s = 10.0
        """``/healthz`` fails once the event loop has not run for this long (blocked: receive loops would miss
        their keepalives)."""
        self._on_signals = on_signals
        self._servers: list[RunningServer] = []
        self.redis_url = ""
        self.mqtt: MqttTarget | None = None
        self.metrics_port = 0
        self.markets: Markets | None = None
        self.writer: StreamWriter | None = None

    def _private_servers(self) -> None:
        settings = self.settings
        if settings.redis_url:
            self.redis_url = settings.redis_url
        else:
            server = start_redis()
            self._servers.append(server)
            self.redis_url = server.url
            log.info("no FLUSHWATCH_REDIS_URL: started a private redis-server on port %d", server.port)
        self.mqtt = settings.mqtt
        if self.mqtt is None:
            try:
                broker = start_mosquitto()
            except ServerUnavailable as exc:
                log.warning("MQTT is off: no FLUSHWATCH_MQTT_URL and no broker could be started (%s)", exc)
            else:
                self._servers.append(broker)
                self.mqtt = MqttTarget(host="127.0.0.1", port=broker.port)
                log.info("no FLUSHWATCH_MQTT_URL: started a private mosquitto on port %d", broker.port)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        try:
            await asyncio.to_thread(self._private_servers)
            await self._run()
        finally:
            for server in reversed(self._servers):
                server.stop()

    async def _run(self) -> None:
        settings = self.settings
        redis = connect_redis(self.redis_url)
        try:
            await redis.ping()
        except REDIS_ERRORS as exc:
            log.warning("Redis at %s is not reachable yet (%s); events will be buffered", self.redis_url, exc)
        seconds = await asyncio.to_thread(warm_up_kernels, settings)
        self._kernels_ready = True
        log.info("detector kernels ready in %.2f s", seconds)

        exporter = AssetStateCollector()
        REGISTRY.register(exporter)
        metrics = None
        if settings.metrics_port:
            metrics = MetricsServer(settings.metrics_host, settings.metrics_port, health=self._health,
                                    ready=self._readiness)
            metrics.start()
            self.metrics_port = metrics.port
            log.info("metrics on http://%s:%d/metrics", settings.metrics_host, metrics.port)
        publisher = None
        if self.mqtt is not None:
            publisher = MqttPublisher(self.mqtt, prefix=settings.mqtt_prefix, client_id=settings.mqtt_client_id,
                                      queue_max=settings.mqtt_queue_max)
            publisher.start()
        shards = range(settings.shards)
        alerts = AlertService(redis, list(shards), publisher, exporter, consumer="alerts-0")
        detector = DetectorEngine(redis, settings, shards=shards, consumer="detector-0", on_signals=self._on_signals,
                                  capacity=64)
        queue = EventQueue(settings.writer.queue_max_events)
        self.writer = StreamWriter(redis, queue, settings.writer, settings.shards)
        self.markets = Markets(settings, queue)

        stops = {name: asyncio.Event() for name in ("collectors", "writer", "detector", "alerts")}
        tasks: dict[str, asyncio.Task[Any]] = {}
        tasks["alerts"] = asyncio.create_task(alerts.run(stops["alerts"]), name="alerts")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(alerts.ready.wait(), timeout=10)
        tasks["detector"] = asyncio.create_task(detector.run(stops["detector"]), name="detector")
        tasks["writer"] = asyncio.create_task(self.writer.run(stops["writer"]), name="writer")
        tasks["collectors"] = asyncio.create_task(self.markets.run(stops["collectors"]), name="collectors")
        watcher = asyncio.create_task(self._watch_redis(redis), name="redis-watch")
        heart = asyncio.create_task(self._heartbeat(), name="heartbeat")
        self.ready.set()
        try:
            stopped = asyncio.create_task(self.stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    log.error("%s failed; shutting down", task.get_name(), exc_info=task.exception())
            stopped.cancel()
        finally:
            log.info("shutting down")
            for name in ("collectors", "writer", "detector", "alerts"):
                stops[name].set()
                if name == "writer":
                    queue.wake()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(tasks[name]), timeout=15)
                if not tasks[name].done():
                    log.error("%s did not stop in time", name)
                    tasks[name].cancel()
            watcher.cancel()
            heart.cancel()
            if publisher is not None:
                await publisher.close()
            if metrics is not None:
                metrics.close()
            REGISTRY.unregister(exporter)
            await redis.aclose()

    async def _watch_redis(self, redis: Any) -> None:
        """Whether Redis answers, for ``/readyz`` (the metrics thread cannot ask it: the client is async)."""
        while True:
            try:
                await asyncio.wait_for(redis.ping(), timeout=READY_CHECK_S)
                self._redis_ok = True
            except (TimeoutError, *REDIS_ERRORS):
                self._redis_ok = False
            await asyncio.sleep(READY_CHECK_S)

    def _readiness(self) -> tuple[bool, str]:
        """Ready when Redis answers, the kernels are compiled and every enabled feed has data within its
        staleness window; otherwise the reasons."""
        reasons = []
        if not self._redis_ok:
            reasons.append("redis not reachable")
        if not self._kernels_ready:
            reasons.append("detector kernels compiling")
        stale = self.markets.stale_feeds(time.time_ns()) if self.markets is not None else ["collectors not started"]
        reasons += [f"{venue}: no data within its staleness window" for venue in stale]
        return (not reasons), ("ready" if not reasons else "; ".join(reasons))

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def _health(self) -> tuple[bool, str]:
        """Alive: not stopping, and the event loop ran recently (called from the metrics thread)."""
        if self.stop.is_set():
            return False, "stopping"
        stalled = time.monotonic() - self._beat
        if stalled > self.loop_stall_s:
            return False, f"event loop unresponsive for {stalled:.1f} s"
        return True, "ok"
