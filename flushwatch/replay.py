"""``flushwatch replay``: recordings through the same parsers, Redis streams, detector and alert role as a live
run, as fast as they take it (never faster: a bound on events in flight) or at ×N the recorded pace.

Reading the files of either format is ``flushwatch.recordings``. The replay is deterministic: frames are
parsed with their RECORDED receive time, never the local clock; events go through one shard (the detector
evaluates one grid over all assets, so how several shards interleave would be an accident of timing); the
detector folds venues per evaluation segment and the alert role publishes every snapshot, so nothing depends
on how reads were batched; cooldowns run on event time. The same recording therefore gives the same stage
changes and payloads, byte for byte (``SignalLog``). Keys are fresh: a private redis-server unless
``--redis-url``, whose flushwatch keys are cleared first (and left alone while a live consumer reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

import msgspec

from alerts.exporter import AssetStateCollector
from alerts.mqtt import AlertSink, MqttPublisher
from alerts.service import AlertService
from collectors.binance.oi_poller import OPEN_INTEREST_PATH
from collectors.queue import EventQueue
from collectors.venues import BINANCE, parser_for
from collectors.writer import StreamWriter
from detector.shard import DetectorEngine
from flushwatch.daemon import warm_up_kernels
from flushwatch.events import Event
from flushwatch.recordings import Record, Recordings, ReplayError
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, ServerUnavailable, start_mosquitto, start_redis
from flushwatch.settings import MqttTarget, Settings
from flushwatch.signals import Signal, StageChange
from flushwatch.streams import events_key, signals_key

log = logging.getLogger(__name__)

CHUNK: Final = 256
"""Records parsed between hand-offs to the writer (and yields to the event loop)."""


class _Stamp(msgspec.Struct):
    ts_ns: int = 0


class _Published(msgspec.Struct, tag="publish"):
    topic: str
    retain: bool
    kind: str
    payload: msgspec.Raw


_encode = msgspec.json.Encoder().encode
_stamp = msgspec.json.Decoder(_Stamp)


class SignalLog:
    """The replay's output, and the alert role's sink (forwarding to MQTT when there is a broker).

    Lines: every stage change the detector made (``"type":"change"``) and every payload the alert role
    published (``"type":"publish"``, the payload inline as sent). They come from two tasks, so they are
    ordered by (event time, changes first) and written only once nothing earlier can still come: both
    sequences are in event-time order, and the detector reports all signals of an evaluation at once."""

    def __init__(self, out: IO[bytes] | None, sink: AlertSink | None) -> None:
        self._out, self._sink = out, sink
        self._changes: deque[tuple[int, bytes]] = deque()
        self._published: deque[tuple[int, bytes]] = deque()
        self._detector_ts = self._published_ts = -1
        self.stage_changes = 0
        self.published: Counter[str] = Counter()

    def on_signals(self, signals: list[Signal]) -> None:
        for signal in signals:
            if isinstance(signal, StageChange):
                self._changes.append((signal.ts, _encode(signal)))
                self.stage_changes += 1
            self._detector_ts = max(self._detector_ts, signal.ts)
        self._release()

    async def publish(self, topic_suffix: str, payload: bytes, *, retain: bool, kind: str) -> None:
        self._published_ts = _stamp.decode(payload).ts_ns
        self._published.append((self._published_ts, _encode(_Published(topic_suffix, retain, kind,
                                                                         msgspec.Raw(payload)))))
        self.published[kind] += 1
        self._release()
        if self._sink is not None:
            await self._sink.publish(topic_suffix, payload, retain=retain, kind=kind)

    def flush(self) -> None:
        """Write every line held back: the replay is over, nothing earlier can come."""
        self._release(final=True)

    def _release(self, final: bool = False) -> None:
        changes, published = self._changes, self._published
        while changes or published:
            if changes and (not published or changes[0][0] <= published[0][0]):
                if not final and self._published_ts < changes[0][0]:
                    return  # a payload of an earlier time may still come
                line = changes.popleft()[1]
            else:
                if not final and self._detector_ts < published[0][0]:
                    return  # a change of that time may still come
                line = published.popleft()[1]
            if self._out is not None:
                self._out.write(line + b"\n")


@dataclass
class ReplayOptions:
    speed: float | None = None  # ×N the recorded pace; None: as fast as Redis and the detector take it
    redis_url: str | None = None
    mqtt: MqttTarget | None = None
    private_mqtt: bool = True  # without ``mqtt``, start a private broker (False: no MQTT at all)
    mqtt_prefix: str = "flushwatch-replay/v1"
    signals_out: Path | None = None
    max_in_flight: int = 50_000  # events handed over but not in the detector's state yet (under MAXLEN)


@dataclass
class ReplayReport:
    frames: int = 0
    events: int = 0
    stage_changes: int = 0
    seconds: float = 0.0
    published: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


class Replay:
    """One replay of ``paths``; ``run`` returns its report and calls ``progress`` about ten times a second."""

    def __init__(self, paths: Sequence[Path], settings: Settings, options: ReplayOptions) -> None:
        self.recordings = Recordings(paths)
        self.settings = settings.model_copy(update={"shards": 1})
        self.options = options
        self.report = ReplayReport(skipped=self.recordings.skipped, problems=self.recordings.problems)
        self.signals = SignalLog(None, None)
        self._parsers: dict[str, Any] = {}

    def parse(self, record: Record) -> list[Event]:
        """One record's events, by its venue's parser at its recorded receive time; rejects and skips counted."""
        if record.venue not in self._parsers:
            own = self.settings.binance if record.venue == BINANCE else getattr(self.settings, record.venue, None)
            try:
                self._parsers[record.venue] = parser_for(record.venue, self.recordings.instruments(record.venue),
                                                         own.max_frame_bytes if own else 4 << 20)
            except (KeyError, ImportError, AttributeError) as exc:
                self._parsers[record.venue] = None
                self.recordings.problem("no_parser", f"{record.venue}: no parser ({exc}); its frames are skipped")
        parser = self._parsers[record.venue]
        if parser is None:
            self.report.skipped["no_parser"] += 1
            return []
        if record.kind == "recv":
            result = parser.parse(record.data, record.ts)
        elif record.venue == BINANCE and urlsplit(record.conn).path == OPEN_INTEREST_PATH:
            result = parser.open_interest(record.data, record.ts)
        else:
            self.report.skipped["http_unused"] += 1
            return []
        self.report.frames += 1
        for reject in result.rejects:
            self.report.rejects[f"{record.venue}:{reject.reason}"] += 1
        events: list[Event] = result.events
        return events

    async def run(self, stop: asyncio.Event | None = None,
                  progress: Callable[[Replay], None] | None = None) -> ReplayReport:
        servers: list[RunningServer] = []

        async def start(server: Callable[[], RunningServer]) -> RunningServer:
            servers.append(await asyncio.to_thread(server))
            return servers[-1]

        out = self.options.signals_out.open("wb") if self.options.signals_out else None
        try:
            redis_url = self.options.redis_url or (await start(start_redis)).url
            mqtt = self.options.mqtt
            if mqtt is None and self.options.private_mqtt:
                try:
                    mqtt = MqttTarget(host="127.0.0.1", port=(await start(start_mosquitto)).port)
                except ServerUnavailable as exc:
                    log.warning("MQTT is off: no broker could be started (%s)", exc)
            await self._pipeline(redis_url, mqtt, out, stop or asyncio.Event(), progress)
        finally:
            if out is not None:
                out.close()
            for server in reversed(servers):
                server.stop()
        return self.report

    async def _pipeline(self, redis_url: str, mqtt: MqttTarget | None, out: IO[bytes] | None, stop: asyncio.Event,
                        progress: Callable[[Replay], None] | None) -> None:
        """The daemon's roles in its start order, fed from the recording; stopped in its order too, each
        draining what the one before wrote."""
        settings, redis, publisher = self.settings, connect_redis(redis_url), None
        try:
            await claim_keys(redis, redis_url)
            await asyncio.to_thread(warm_up_kernels, settings)
            if mqtt is not None:
                publisher = MqttPublisher(mqtt, prefix=self.options.mqtt_prefix, queue_max=settings.mqtt_queue_max,
                                          client_id=f"flushwatch-replay-{uuid.uuid4().hex[:8]}")
                publisher.start()
            self.signals = SignalLog(out, publisher)
            alerts = AlertService(redis, [0], self.signals, AssetStateCollector(), consumer="replay-alerts",
                                  coalesce_states=False)
            # A replay is deterministic: no hour-of-week history from an earlier run goes in, none comes out.
            engine = DetectorEngine(redis, settings, shard=0, consumer="replay-detector",
                                    on_signals=self.signals.on_signals, persist=False)
            queue = EventQueue(settings.writer.queue_max_events)
            stops = {name: asyncio.Event() for name in ("writer", "detector", "alerts")}
            roles = {"alerts": asyncio.create_task(alerts.run(stops["alerts"]))}
            await asyncio.wait_for(alerts.ready.wait(), timeout=10)  # its group starts at the stream's end
            roles["detector"] = asyncio.create_task(engine.run(stops["detector"]))
            roles["writer"] = asyncio.create_task(StreamWriter(redis, queue, settings.writer, 1).run(stops["writer"]))
            started = time.perf_counter()
            try:
                await self._feed(queue, engine, roles, stop, progress)
            finally:
                for name in ("writer", "detector", "alerts"):
                    stops[name].set()
                    queue.wake()
                    await roles[name]
                self.signals.flush()
            self.report.seconds = time.perf_counter() - started
            self.report.stage_changes, self.report.published = self.signals.stage_changes, self.signals.published
        finally:
            if publisher is not None:
                await publisher.close()
            await redis.aclose()

    async def _feed(self, queue: EventQueue, engine: DetectorEngine, roles: dict[str, asyncio.Task[None]],
                    stop: asyncio.Event, progress: Callable[[Replay], None] | None) -> None:
        loop = asyncio.get_running_loop()
        writer = self.settings.writer
        bound = min(self.options.max_in_flight, writer.queue_max_events // 2, writer.events_maxlen // 2)
        speed, wall0, ts0, offered, reported = self.options.speed, loop.time(), -1, 0, 0.0
        chunk: list[Event] = []

        async def hand_off() -> None:
            nonlocal offered, chunk, reported
            offered += len(chunk) - queue.offer(chunk)
            self.report.events += len(chunk)
            chunk = []
            while offered - engine.detector.events > bound:  # never faster than Redis and the detector
                _check(roles)
                await asyncio.sleep(0.002)
            await asyncio.sleep(0)
            _check(roles)
            if progress is not None and loop.time() - reported >= 0.1:
                reported = loop.time()
                progress(self)

        for n, record in enumerate(self.recordings, 1):
            wait = 0.0
            if speed is not None:
                ts0 = record.ts if ts0 < 0 else ts0
                wait = (record.ts - ts0) / 1e9 / speed - (loop.time() - wall0)
            if wait > 0.001:  # what is parsed so far is due now, this record later
                await hand_off()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            elif n % CHUNK == 0:
                await hand_off()
            if stop.is_set():
                log.warning("replay stopped before the end of the recording")
                break
            chunk += self.parse(record)
        reported = 0.0
        await hand_off()


def _check(roles: dict[str, asyncio.Task[None]]) -> None:
    for name, task in roles.items():
        if task.done():
            raise ReplayError(f"the {name} role stopped: {task.exception() if not task.cancelled() else 'cancelled'}")


async def claim_keys(redis: Any, url: str) -> None:
    """Make the replay's stream keys fresh: delete them, unless a consumer read them in the last minute (a
    live flushwatch on this database), then refuse."""
    for key in (events_key(0), signals_key(0)):
        for group in await redis.xinfo_groups(key) if await redis.exists(key) else []:
            for consumer in await redis.xinfo_consumers(key, group["name"]):
                if int(consumer["idle"]) < 60_000:
                    raise ReplayError(f"{url}: {key} is being read by a running flushwatch; replay into another "
                                      "database (redis://host:port/15) or leave out --redis-url")
        await redis.delete(key)
