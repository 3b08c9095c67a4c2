"""The roles -- collect, detect, alert -- wired in one process: all of them (``flushwatch run``) or some
(``flushwatch collect / detect / alert``, one process per role and shard, sharing a Redis).

Start: private servers if ``run`` has none configured -> Redis client -> numba kernels compiled (before any
feed connects, so the first frames are not queued behind compilation) -> metrics -> MQTT -> alerts ->
detector shards -> writer -> collectors.

Stop (SIGTERM/SIGINT), within ``shutdown_grace_s``: collectors stop -> the writer drains the queue into Redis
-> each detector shard processes what is in its stream, checkpoints and acknowledges it -> the alert role
publishes what the detectors emitted and acknowledges it -> MQTT ``offline`` -> servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import REGISTRY

from alerts.exporter import AssetStateCollector, MetricsServer
from alerts.mqtt import MqttPublisher
from alerts.service import AlertService
from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from detector.engine import Detector
from detector.shard import DetectorEngine
from flushwatch.events import Event, Trade, funding_mark
from flushwatch.heap import freeze_startup_objects
from flushwatch.redis_client import REDIS_ERRORS, connect_redis
from flushwatch.servers import RunningServer, ServerUnavailable, start_mosquitto, start_redis
from flushwatch.settings import MqttTarget, Settings, SettingsError
from flushwatch.signals import Signal
from flushwatch.streams import encode_batch, entry_payload
from flushwatch.universe import Markets

log = logging.getLogger(__name__)

READY_CHECK_S: Final = 2.0  # how often Redis is pinged for /readyz
BEAT_S: Final = 0.5  # the event loop's heartbeat, which /healthz reads


def warm_up_kernels(settings: Settings) -> float:
    """Compile (or load from the numba cache) every kernel on a throwaway detector, fed a stream entry as a
    shard reads one (the entry decoder is a kernel too); returns seconds taken."""
    started = time.perf_counter()
    detector = Detector(settings, capacity=1)
    t0 = 1_700_000_000_000_000_000
    events: list[Event] = [
        Trade(venue="warmup", symbol="WARMUP", asset="WARMUP", ts_event=t0, ts_recv=0, price=1.0, size=1.0,
              side="buy"),
        funding_mark(venue="warmup", symbol="WARMUP", asset="WARMUP", ts_event=t0 + 2_000_000_000, ts_recv=0,
                     mark_price=1.0, index_price=1.0, funding_rate=0.0, funding_interval_h=8.0, next_funding_ts=0),
    ]
    detector.process_columns(detector.entry_columns(entry_payload(encode_batch(events))))
    return time.perf_counter() - started


@dataclass(frozen=True)
class Roles:
    """What one process runs. ``venues`` None: every enabled venue; ``shards``: the detector shards it owns."""

    collect: bool = True
    venues: tuple[str, ...] | None = None
    shards: tuple[int, ...] | None = None
    """None: every shard (``run``)."""
    alert: bool = True

    @property
    def everything(self) -> bool:
        return self.collect and self.venues is None and self.shards is None and self.alert

    def names(self) -> str:
        parts = [f"collect {','.join(self.venues) if self.venues else 'all'}"] if self.collect else []
        if self.shards is None or self.shards:
            parts.append("detect " + ("all shards" if self.shards is None else ",".join(map(str, self.shards))))
        return ", ".join([*parts, *(["alert"] if self.alert else [])])


class Daemon:
    """The wiring of the roles; ``run`` returns after a clean shutdown."""

    def __init__(self, settings: Settings, roles: Roles | None = None, *,
                 on_signals: Callable[[list[Signal]], None] | None = None) -> None:
        self.settings = settings
        self.roles = roles or Roles()
        self.shards = tuple(range(settings.shards)) if self.roles.shards is None else self.roles.shards
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self._redis_ok = False
        self._kernels_ready = not self.shards
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
        self.detectors: list[DetectorEngine] = []

    def _private_servers(self) -> None:
        """``run`` alone may start its own servers: processes of separate roles must share a Redis and a broker."""
        settings = self.settings
        if settings.redis_url:
            self.redis_url = settings.redis_url
        elif self.roles.everything:
            server = start_redis()
            self._servers.append(server)
            self.redis_url = server.url
            log.info("no FLUSHWATCH_REDIS_URL: started a private redis-server on port %d", server.port)
        else:
            raise SettingsError("setting redis_url (FLUSHWATCH_REDIS_URL): required when the roles run in "
                                "separate processes; they meet in that Redis")
        self.mqtt = settings.mqtt
        if self.mqtt is None and self.roles.alert:
            if not self.roles.everything:
                log.warning("MQTT is off: no FLUSHWATCH_MQTT_URL")
                return
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
        settings, roles = self.settings, self.roles
        log.info("starting: %s", roles.names())
        redis = connect_redis(self.redis_url)
        try:
            await redis.ping()
        except REDIS_ERRORS as exc:
            log.warning("Redis at %s is not reachable yet (%s); events will be buffered", self.redis_url, exc)
        if self.shards:
            seconds = await asyncio.to_thread(warm_up_kernels, settings)
            self._kernels_ready = True
            log.info("detector kernels ready in %.2f s", seconds)
        freeze_startup_objects()

        exporter = AssetStateCollector() if roles.alert else None
        if exporter is not None:
            REGISTRY.register(exporter)
        metrics = None
        if settings.metrics_port:
            metrics = MetricsServer(settings.metrics_host, settings.metrics_port, health=self._health,
                                    ready=self._readiness)
            metrics.start()
            self.metrics_port = metrics.port
            log.info("metrics on http://%s:%d/metrics", settings.metrics_host, metrics.port)
        publisher = None
        if self.mqtt is not None and roles.alert:
            publisher = MqttPublisher(self.mqtt, prefix=settings.mqtt_prefix, client_id=settings.mqtt_client_id,
                                      queue_max=settings.mqtt_queue_max)
            publisher.start()
        queue = EventQueue(settings.writer.queue_max_events)
        tasks: dict[str, asyncio.Task[Any]] = {}
        stops: dict[str, asyncio.Event] = {}

        def start(name: str, job: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
            stops[name] = asyncio.Event()
            tasks[name] = asyncio.create_task(job(stops[name]), name=name)

        if exporter is not None:
            alerts = AlertService(redis, list(range(settings.shards)), publisher, exporter, consumer="alerts-0")
            start("alerts", alerts.run)
            # Its groups start at the streams' end: the detectors start once they exist, or after 10 s (Redis
            # down), or at once if told to stop meanwhile.
            waits = [asyncio.create_task(alerts.ready.wait()), asyncio.create_task(self.stop.wait())]
            await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
        self.detectors = [DetectorEngine(redis, settings, shard=shard, on_signals=self._on_signals, capacity=64)
                          for shard in self.shards]
        for engine in self.detectors:
            start(f"detector-{engine.shard}", engine.run)
        if roles.collect:
            self.writer = StreamWriter(redis, queue, settings.writer, settings.shards)
            self.markets = Markets(settings, queue, only=roles.venues)
            start("writer", self.writer.run)
            start("collectors", self.markets.run)
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
            deadline = time.monotonic() + settings.shutdown_grace_s
            order = ["collectors", "writer", *(n for n in tasks if n.startswith("detector-")), "alerts"]
            for name in (n for n in order if n in tasks):
                stops[name].set()
                if name == "writer":
                    queue.wake()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(tasks[name]), timeout=max(0.1, deadline - time.monotonic()))
                if not tasks[name].done():
                    log.error("%s did not stop within the grace period (shutdown_grace_s)", name)
                    tasks[name].cancel()
            watcher.cancel()
            heart.cancel()
            if publisher is not None:
                await publisher.close()
            if metrics is not None:
                metrics.close()
            if exporter is not None:
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
        if self.roles.collect:
            stale = self.markets.stale_feeds(time.time_ns()) if self.markets is not None else ["collectors not started"]
        else:
            stale = []
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
