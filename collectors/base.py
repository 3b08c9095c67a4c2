"""The venue-agnostic websocket connection: connect, subscribe, receive, watch, reconnect.

The receive loop does three things per frame: stamp it with the local clock, hand it to the venue's pure
parser, and put the resulting events on the writer's queue. Everything slower happens elsewhere; a blocked
loop is what produces "1011 keepalive ping timeout" disconnects.

Policies are injected: ``backoff`` (delay per attempt) and ``process_exception`` (retry or give up), in the
spirit of python-websockets' own ``process_exception`` -- except that HTTP 429, 418 and 403 during the
handshake are retried (after any ``Retry-After``), because exchanges use them for rate limits and WAF blips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from collectors.queue import EventQueue
from collectors.rejects import REASONS, Reject
from flushwatch.backoff import Backoff
from flushwatch.events import Event
from flushwatch.telemetry import (
    FEED_CONNECTED,
    FEED_COVERAGE,
    FEED_EVENTS,
    FEED_LAST_MESSAGE,
    FEED_MESSAGES,
    FEED_RECONNECTS,
    FEED_REJECTED,
    RateLimitedLog,
)

log = logging.getLogger(__name__)


class ParsedFrame(Protocol):
    events: list[Event]
    rejects: list[Reject]
    replies: list[str]


@dataclass(frozen=True)
class Heartbeat:
    """An application-level keepalive the client must send: most venues ignore websocket pings and cut a
    connection that stays quiet (Bybit, OKX, Hyperliquid, BitMEX)."""

    interval_s: float
    message: Callable[[], str]


FrameTap = Callable[[str, str, str, int, bytes | str], None]
"""``(direction, venue, connection, local time ns, frame)``: sees every frame exactly as received (``recv``) or
sent (``send``), and REST bodies the collectors parse (``http``, with the request's path and query as the
connection). ``flushwatch record`` writes them to disk. Called on the receive loop: keep it cheap."""

ProcessException = Callable[[BaseException], BaseException | None]
"""Returns None to retry, or the exception to give up with."""

FIXED_RECONNECT_REASONS: Final = ("connect_failed", "stale", "max_age", "closed")
"""Reconnect causes without a status or close code in their name (``http_429``, ``closed_1006`` have one)."""


def retry_unless_misconfigured(exc: BaseException) -> BaseException | None:
    """Retry network errors and every HTTP status; give up only on a URL that can never work."""
    if isinstance(exc, InvalidURI | ValueError):
        return exc
    return None


def retry_after_s(exc: BaseException) -> float:
    """The venue's ``Retry-After`` on a refused handshake, else 0."""
    if isinstance(exc, InvalidStatus):
        value = exc.response.headers.get("Retry-After", "")
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
    return 0.0


@dataclass(frozen=True)
class FeedPolicy:
    stale_after_s: float
    max_connection_age_s: float
    max_frame_bytes: int
    backoff: Backoff
    process_exception: ProcessException = retry_unless_misconfigured
    subscribe_interval_s: float = 0.25
    """Pause between subscribe messages: Binance closes connections sending over 10 messages a second."""


class FrameSink:
    """Parses frames of one venue and enqueues the events; counts rejects with a rate-limited log line."""

    def __init__(
        self,
        venue: str,
        parse: Callable[[bytes, int], ParsedFrame],
        queue: EventQueue,
        *,
        routine: frozenset[str] = frozenset({"unknown_symbol"}),
        watched: Iterable[str] = (),
        coverage_window_s: float = 60.0,
    ) -> None:
        self.venue = venue
        # Counted but not logged: an all-market stream such as !forceOrder@arr names unwatched symbols all day.
        self._routine = routine
        self._parse = parse
        self._queue = queue
        self._warn = RateLimitedLog(log)
        for reason in REASONS:  # exported at 0 from the start, not at the first reject
            FEED_REJECTED.labels(venue, reason)
        self.watched = frozenset(watched)
        """Symbols expected to produce events: ``flushwatch_feed_coverage_ratio`` is the share that did lately."""
        self._window_ns = int(coverage_window_s * 1e9)
        self.last_event_ns: dict[str, int] = {}
        self.frames = 0
        self.events = 0
        self.last_frame_ns = 0
        self._reported_frames = 0
        self._reported_events = 0

    def __call__(self, frame: bytes, ts_recv: int) -> list[str]:
        """Parse and enqueue one frame; returns the replies the protocol requires on the same connection."""
        self.frames += 1
        self.last_frame_ns = ts_recv
        result = self._parse(frame, ts_recv)
        self.accept(result)
        return result.replies

    def accept(self, result: ParsedFrame) -> None:
        events = result.events
        if events:
            self.events += len(events)
            # A frame carries one instrument (all-market streams aside): its first event names it.
            self.last_event_ns[events[0].symbol] = events[0].ts_recv
            self._queue.offer(events)
        for reject in result.rejects:
            FEED_REJECTED.labels(self.venue, reject.reason).inc()
            if reject.reason not in self._routine:
                self._warn.warning(f"{self.venue}:{reject.reason}", "%s: dropped input (%s): %s",
                                   self.venue, reject.reason, reject.detail[:200], venue=self.venue)

    def report(self) -> None:
        """Publish counters; called from the watchdog, off the per-frame path."""
        FEED_MESSAGES.labels(self.venue).inc(self.frames - self._reported_frames)
        FEED_EVENTS.labels(self.venue).inc(self.events - self._reported_events)
        self._reported_frames, self._reported_events = self.frames, self.events
        if self.last_frame_ns:
            FEED_LAST_MESSAGE.labels(self.venue).set(self.last_frame_ns / 1e9)
        if self.watched:
            FEED_COVERAGE.labels(self.venue).set(self.coverage(time.time_ns()))

    def coverage(self, now_ns: int) -> float:
        """Share of ``watched`` symbols with an event in the last ``coverage_window_s`` before ``now_ns``."""
        since = now_ns - self._window_ns
        recent = sum(1 for s in self.watched if self.last_event_ns.get(s, 0) >= since)
        return recent / len(self.watched)


@dataclass
class FeedConnection:
    """One websocket connection carrying ``streams``, kept alive until ``stop``."""

    venue: str
    name: str
    url: str
    streams: Sequence[str]
    subscribe_messages: Callable[[Sequence[str]], list[str]]
    sink: FrameSink
    policy: FeedPolicy
    heartbeat: Heartbeat | None = None
    tap: FrameTap | None = None
    connections: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    _last_frame: float = 0.0
    _delivered: bool = False

    def __post_init__(self) -> None:
        # The causes this connection decides itself, exported at 0 from the start; the others carry a status
        # or close code (http_429, closed_1006) and appear at their first occurrence.
        for reason in FIXED_RECONNECT_REASONS:
            FEED_RECONNECTS.labels(self.venue, reason)

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            reason, delay = await self._session(stop)
            if stop.is_set():
                return
            if self._delivered:
                # A connection that delivered data was healthy: its loss starts a new series of retries
                # rather than continuing the failures of hours ago at the backoff cap.
                attempt = 0
            attempt = 0 if reason in ("max_age", "stale") else attempt + 1
            self.reconnects[reason] = self.reconnects.get(reason, 0) + 1
            FEED_RECONNECTS.labels(self.venue, reason).inc()
            wait = max(delay, self.policy.backoff(attempt)) if attempt else delay
            log.info("%s/%s: reconnecting in %.2f s (%s)", self.venue, self.name, wait, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _session(self, stop: asyncio.Event) -> tuple[str, float]:
        """One connection's life; returns why it ended and the minimum wait before the next."""
        self._delivered = False
        try:
            ws = await connect(
                self.url,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=5,
                max_size=4 * self.policy.max_frame_bytes,
                compression=None,
            )
        except Exception as exc:
            fatal = self.policy.process_exception(exc)
            if fatal is not None:
                raise fatal from exc
            log.warning("%s/%s: connect failed: %s", self.venue, self.name, exc)
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            return (f"http_{status}" if status else "connect_failed"), retry_after_s(exc)
        self.connections += 1
        FEED_CONNECTED.labels(self.venue).inc()
        self._last_frame = time.monotonic()
        opened = self._last_frame
        ended: list[str] = []
        helpers = [asyncio.create_task(self._watch(ws, stop, opened, ended))]
        if self.heartbeat is not None:
            helpers.append(asyncio.create_task(self._beat(ws, self.heartbeat)))
        try:
            await self._subscribe(ws)
            while True:
                frame = await ws.recv(decode=False)
                ts_recv = time.time_ns()
                if self.tap is not None:
                    self.tap("recv", self.venue, self.name, ts_recv, frame)
                events = self.sink.events
                for reply in self.sink(frame, ts_recv):
                    await self._send(ws, reply)
                # Only data counts as life: a venue whose heartbeats outlive its data (Deribit's test_request
                # every 10 s) must still be caught by the staleness watchdog.
                if self.sink.events != events:
                    self._last_frame = time.monotonic()
                    self._delivered = True
        except ConnectionClosed as exc:
            if not ended:
                ended.append(f"closed_{exc.rcvd.code}" if exc.rcvd else "closed_1006")
        finally:
            for helper in helpers:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await helper
            FEED_CONNECTED.labels(self.venue).dec()
            await ws.close()
            self.sink.report()
        return ended[0] if ended else "closed", 0.0

    async def _subscribe(self, ws: ClientConnection) -> None:
        for i, message in enumerate(self.subscribe_messages(self.streams)):
            if i:
                await asyncio.sleep(self.policy.subscribe_interval_s)
            await self._send(ws, message)

    async def _send(self, ws: ClientConnection, message: str) -> None:
        if self.tap is not None:
            self.tap("send", self.venue, self.name, time.time_ns(), message)
        await ws.send(message)

    async def _beat(self, ws: ClientConnection, heartbeat: Heartbeat) -> None:
        """Send the venue's keepalive every ``interval_s``; a failed send ends in the receive loop's close."""
        while True:
            await asyncio.sleep(heartbeat.interval_s)
            await self._send(ws, heartbeat.message())

    async def _watch(self, ws: ClientConnection, stop: asyncio.Event, opened: float, ended: list[str]) -> None:
        """Close the connection on stop, on silence, or when it nears the venue's maximum age."""
        tick = min(1.0, self.policy.stale_after_s / 4)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)
            self.sink.report()
            now = time.monotonic()
            if stop.is_set():
                ended.append("stop")
            elif now - self._last_frame > self.policy.stale_after_s:
                log.warning("%s/%s: no data for %.0f s; replacing the connection",
                            self.venue, self.name, now - self._last_frame)
                ended.append("stale")
            elif now - opened > self.policy.max_connection_age_s:
                ended.append("max_age")
            else:
                continue
            await ws.close(1000, ended[0])
            return
