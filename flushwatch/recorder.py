"""``flushwatch record``: every frame the collectors receive and send, exactly as it crossed the wire, in
rotating zstd-compressed JSON-lines files that ``flushwatch replay`` reads back without any network.

Format ``flushwatch-record/1``, one JSON object per line::

    {"t":"header","format":"flushwatch-record/1","created":<ns>,"session":"..","part":0,
     "venues":{"binance":{"instruments":[<Instrument>...],"connections":{"market-0":{"url":..,"topics":[..]}}}},
     "flushwatch":"0.1.0"}
    {"t":"recv","ts":<receive time, ns>,"venue":"binance","conn":"market-0","data":"<the frame>"}
    {"t":"send","ts":..,"venue":"binance","conn":"market-0","data":"<a subscribe or heartbeat message>"}
    {"t":"http","ts":..,"venue":"binance","conn":"rest","url":"/fapi/v1/openInterest?symbol=BTCUSDT","data":".."}
    {"t":"end","ts":<ns>,"frames":<records in the file>,"dropped":<frames lost while it was open>,"reason":..}

``data`` is the frame's text; a frame that is not UTF-8 is kept as base64 with ``"b64":true``. The header
names the instruments (so a replay needs no REST) and repeats in every file: one part replays on its own.
A file ends with ``end`` when the recorder closed it (rotation, a new subscription, stop); a file without
one was cut short. Records of one session share ``session``; ``part`` numbers its files.

The tap runs on the collectors' receive loops, so it only appends to a bounded list; a background task
encodes, compresses and writes in a worker thread. When the writer falls behind, frames are dropped, counted
in ``flushwatch_recorder_dropped_frames_total{venue}`` and logged at a limited rate: the feed never waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import zstandard
from prometheus_client import Counter as PromCounter

from collectors.base import FeedConnection
from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.venue import VenueCollector
from flushwatch import __version__
from flushwatch.events import Event
from flushwatch.recordings import FORMAT
from flushwatch.settings import Settings
from flushwatch.telemetry import RateLimitedLog
from flushwatch.universe import Collector, Markets, build_collectors

log = logging.getLogger(__name__)

RECORDER_DROPPED: Final = PromCounter(
    "flushwatch_recorder_dropped_frames_total",
    "Frames the recorder dropped because its file writer fell behind.",
    ["venue"],
)


class Line(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A ``recv``, ``send`` or ``http`` record."""

    t: str
    ts: int
    venue: str
    conn: str
    url: str | None = None
    data: str
    b64: bool = False


_encode = msgspec.json.Encoder().encode
_Pending = tuple[str, int, str, str, bytes | str, str | None]  # kind, ts, venue, conn, data, url


def encode_line(kind: str, ts: int, venue: str, conn: str, frame: bytes | str, url: str | None = None) -> bytes:
    if isinstance(frame, bytes):
        try:
            return _encode(Line(t=kind, ts=ts, venue=venue, conn=conn, url=url, data=frame.decode()))
        except UnicodeDecodeError:
            return _encode(Line(t=kind, ts=ts, venue=venue, conn=conn, url=url,
                                data=base64.b64encode(frame).decode(), b64=True))
    return _encode(Line(t=kind, ts=ts, venue=venue, conn=conn, url=url, data=frame))


class _File:
    """One open part: the zstd stream over the file, and what its end record will say."""

    def __init__(self, path: Path, header: dict[str, Any], level: int) -> None:
        self.path = path
        self.venues = header["venues"]
        self.opened = time.monotonic()
        self.records = 0
        self.dropped = 0
        self.size = 0
        self._raw: IO[bytes] = path.open("xb")
        self._zstd = zstandard.ZstdCompressor(level=level).stream_writer(self._raw, closefd=False)
        self._zstd.write(_encode(header) + b"\n")

    def write(self, batch: list[_Pending]) -> None:
        """Append and flush a block (a crash loses at most the batch being written)."""
        self._zstd.write(b"".join(encode_line(*item) + b"\n" for item in batch))
        self._zstd.flush(zstandard.FLUSH_BLOCK)
        self.records += len(batch)
        self.size = self._raw.tell()

    def close(self, reason: str) -> None:
        end = {"t": "end", "ts": time.time_ns(), "frames": self.records, "dropped": self.dropped, "reason": reason}
        self._zstd.write(_encode(end) + b"\n")
        self._zstd.close()  # ends the zstd frame
        self._raw.close()


class Recorder:
    """A ``FrameTap`` that writes what it sees to ``out_dir``; ``run`` is its writer, until ``stop``.

    ``describe`` gives the subscription (``{venue: {"instruments": [...], "connections": {...}}}``) for each
    header; it is read again every ``check_s`` and a change (a new watchlist) starts a new file."""

    def __init__(self, out_dir: Path, describe: Callable[[], dict[str, Any]], *, rotate_bytes: int = 256 << 20,
                 rotate_s: float = 3600.0, max_pending_bytes: int = 64 << 20, flush_interval_s: float = 1.0,
                 check_s: float = 10.0, level: int = 3) -> None:
        self.out_dir = Path(out_dir)
        self._describe = describe
        self._rotate_bytes = rotate_bytes
        self._rotate_s = rotate_s
        self._max_pending = max_pending_bytes
        self._flush_interval_s = flush_interval_s
        self._check_s = check_s
        self._level = level
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._file: _File | None = None
        self._checked = 0.0
        self._session = uuid.uuid4().hex[:12]
        self._warn = RateLimitedLog(log)
        self.files: list[Path] = []
        self.counts: Counter[str] = Counter()
        """Records accepted, by kind (``recv``, ``send``, ``http``)."""
        self.dropped = 0
        self._dropped_noted = 0

    def __call__(self, direction: str, venue: str, conn: str, ts: int, frame: bytes | str) -> None:
        """The ``FrameTap``: called on the receive loop, so it only appends (or drops, never waits)."""
        if direction == "http":
            self.http(venue, conn, ts, frame if isinstance(frame, bytes) else frame.encode())
        else:
            self._add((direction, ts, venue, conn, frame, None))

    def http(self, venue: str, url: str, ts: int, body: bytes) -> None:
        """A REST answer the collectors parsed (``url`` is its path and query), with its receive time."""
        self._add(("http", ts, venue, "rest", body, url))

    def _add(self, item: _Pending) -> None:
        size = len(item[4])
        if self._pending_bytes + size > self._max_pending:
            self.dropped += 1
            RECORDER_DROPPED.labels(item[2]).inc()
            self._warn.warning("dropped", "recorder: writer behind (%d MB buffered); dropping frames",
                               self._pending_bytes >> 20)
            return
        self._pending.append(item)
        self._pending_bytes += size
        self.counts[item[0]] += 1
        if self._pending_bytes > self._max_pending // 4:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write every ``flush_interval_s`` (sooner when a lot is buffered) until ``stop``; then write what is
        left and close the file with its end record."""
        watcher = asyncio.create_task(stop.wait())
        watcher.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
                self._wake.clear()
                await self._write_pending()
        finally:
            watcher.cancel()
            await self._write_pending()
            if self._file is not None:
                await asyncio.to_thread(self._file.close, "stop")
                self._file = None

    async def _write_pending(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        venues = None
        if self._file is None or time.monotonic() - self._checked >= self._check_s:
            venues, self._checked = self._describe(), time.monotonic()  # on the loop: it reads collector state
        if self._file is not None and venues is not None and venues != self._file.venues:
            await self._rotate("resubscribed")
        if not batch:
            return
        # A full file is closed when the next records arrive, not at once: a session that stops right after
        # would otherwise end on a part that says "rotate" with no part after it.
        if self._file is not None and (self._file.size >= self._rotate_bytes
                                       or time.monotonic() - self._file.opened >= self._rotate_s):
            await self._rotate("rotate")
        if self._file is None:
            self._file = await asyncio.to_thread(self._open, venues if venues is not None else self._describe())
        self._file.dropped += self.dropped - self._dropped_noted  # the file whose records they were to be
        self._dropped_noted = self.dropped
        await asyncio.to_thread(self._file.write, batch)

    async def _rotate(self, reason: str) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close, reason)
            self._file = None

    def _open(self, venues: dict[str, Any]) -> _File:
        now = time.time_ns()
        part = len(self.files)
        stamp = datetime.fromtimestamp(now / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        n = part
        while (path := self.out_dir / f"flushwatch-{stamp}-{n}.jsonl.zst").exists():
            n += 1  # another recorder wrote into this folder in the same second
        header = {"t": "header", "format": FORMAT, "created": now, "session": self._session, "part": part,
                  "venues": venues, "flushwatch": __version__}
        opened = _File(path, header, self._level)
        self.files.append(path)
        log.info("recording to %s", path)
        return opened


# --- what to record ---------------------------------------------------------------------------------------


def _connections(connections: Sequence[FeedConnection]) -> dict[str, Any]:
    return {c.name: {"url": c.url, "topics": list(c.streams)} for c in connections}


def _instruments(instruments: Sequence[Instrument]) -> list[Any]:
    return [msgspec.to_builtins(i) for i in instruments]


def subscription(collectors: Sequence[Collector]) -> dict[str, Any]:
    """The header's ``venues``: what each collector watches and over which connections."""
    venues: dict[str, Any] = {}
    for collector in collectors:
        if isinstance(collector, Markets):
            for venue, chosen in sorted(collector.picks.items()):
                running = collector.collector(venue)
                conns = running.connections if running is not None else []
                venues[venue] = {"instruments": _instruments(chosen), "connections": _connections(conns)}
        elif isinstance(collector, VenueCollector):
            venues[collector.spec.name] = {"instruments": _instruments(collector.instruments),
                                           "connections": _connections(collector.connections)}
    return venues


def recording_collectors(settings: Settings, queue: EventQueue, recorder: Recorder) -> list[Collector]:
    """The collectors ``flushwatch record`` runs: the daemon's, with ``recorder`` as their tap."""
    return build_collectors(settings, queue, tap=recorder)


class RecordSession:
    """``flushwatch record``: the collectors with a ``Recorder`` as their tap; no Redis, no detector. Their
    events are drained and discarded (or handed to ``on_events``)."""

    def __init__(self, settings: Settings, out_dir: Path, *, rotate_bytes: int = 256 << 20, rotate_s: float = 3600.0,
                 on_events: Callable[[list[Event]], None] | None = None) -> None:
        collectors: list[Collector] = []
        self.recorder = Recorder(out_dir, lambda: subscription(collectors), rotate_bytes=rotate_bytes,
                                 rotate_s=rotate_s)
        self._queue = EventQueue(settings.writer.queue_max_events)
        collectors += recording_collectors(settings, self._queue, self.recorder)
        self.collectors = collectors
        self._on_events = on_events

    async def _drain(self) -> None:
        while True:
            events = await self._queue.take(100_000, 0.0)
            if self._on_events is not None and events:
                self._on_events(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` (or a collector fails); the last file is closed with its end record."""
        stop_collectors, stop_recorder = asyncio.Event(), asyncio.Event()
        writer = asyncio.create_task(self.recorder.run(stop_recorder), name="recorder")
        running = [asyncio.create_task(c.run(stop_collectors), name="collector") for c in self.collectors]
        drainer = asyncio.create_task(self._drain(), name="drain")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([stopped, *running, writer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            stop_collectors.set()
            await asyncio.gather(*running, return_exceptions=True)
            stop_recorder.set()
            await writer
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
            if self._on_events is not None:
                self._on_events(self._queue.take_nowait(len(self._queue)))
        for task in running:
            failure = task.exception() if not task.cancelled() else None
            if failure is not None:
                raise failure
