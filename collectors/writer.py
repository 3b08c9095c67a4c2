"""The single Redis writer: drains the event queue into the shard streams in pipelined batches.

Nothing accepted is lost silently: while Redis is unreachable the writer keeps draining the queue into a
bounded buffer and retries with backoff; what exceeds the bound is dropped oldest-first and counted in
``flushwatch_writer_dropped_events_total{reason="redis_unavailable"}``. Entries keep their order per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from collectors.queue import EventQueue
from flushwatch.backoff import Backoff, jittered_exponential
from flushwatch.events import Event
from flushwatch.redis_client import REDIS_ERRORS
from flushwatch.settings import WriterSettings
from flushwatch.streams import encode_batch, events_key, shard_of
from flushwatch.telemetry import (
    WRITER_BUFFERED,
    WRITER_DROPPED,
    WRITER_ERRORS,
    WRITER_QUEUE,
    WRITER_WRITTEN,
    RateLimitedLog,
)

log = logging.getLogger(__name__)

ENTRIES_PER_PIPELINE = 256
"""Replies are buffered by the server until a pipeline ends; a few hundred entries keep that small."""


class StreamWriter:
    def __init__(
        self,
        redis: Any,
        queue: EventQueue,
        settings: WriterSettings,
        shards: int,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self._redis = redis
        self._queue = queue
        self._settings = settings
        self._shards = shards
        self._backoff = backoff or jittered_exponential(0.05, settings.retry_max_s)
        self._pending: deque[tuple[str, dict[Any, Any], int]] = deque()
        self._pending_events = 0
        self._failures = 0
        self._retry_at = 0.0
        self._keys: dict[str, str] = {}
        self._warn = RateLimitedLog(log)
        self.written = 0
        # Exported at 0 from the start, not at the first drop or error.
        for reason in ("redis_unavailable", "shutdown"):
            WRITER_DROPPED.labels(reason)
        WRITER_ERRORS.labels("writer")

    def _key(self, asset: str) -> str:
        key = self._keys.get(asset)
        if key is None:
            key = self._keys[asset] = events_key(shard_of(asset, self._shards))
        return key

    def _stage(self, batch: list[Event]) -> None:
        if self._shards == 1:
            groups = {events_key(0): batch}
        else:
            groups = {}
            for event in batch:
                groups.setdefault(self._key(event.asset), []).append(event)
        for key, events in groups.items():
            self._pending.append((key, encode_batch(events), len(events)))
            self._pending_events += len(events)
        while self._pending_events > self._settings.buffer_max_events:
            _, _, n = self._pending.popleft()
            self._pending_events -= n
            WRITER_DROPPED.labels("redis_unavailable").inc(n)

    async def _flush(self) -> bool:
        """Write every pending entry; False when Redis failed (entries stay pending)."""
        maxlen = self._settings.events_maxlen
        while self._pending:
            chunk = list(self._pending)[:ENTRIES_PER_PIPELINE]
            pipe = self._redis.pipeline(transaction=False)
            for key, fields, _ in chunk:
                pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
            try:
                await pipe.execute()
            except REDIS_ERRORS as exc:
                self._failures += 1
                self._retry_at = time.monotonic() + self._backoff(self._failures)
                WRITER_ERRORS.labels("writer").inc()
                self._warn.warning("redis-write", "Redis write failed (%s); %d events buffered", exc,
                                   self._pending_events)
                return False
            for _ in chunk:
                _, _, n = self._pending.popleft()
                self._pending_events -= n
                self.written += n
                WRITER_WRITTEN.inc(n)
        self._failures = 0
        return True

    def _gauges(self) -> None:
        WRITER_QUEUE.set(len(self._queue))
        WRITER_BUFFERED.set(self._pending_events)

    async def run(self, stop: asyncio.Event, drain_timeout: float = 10.0) -> None:
        """Write until ``stop`` is set and the queue is empty, then flush what is left within ``drain_timeout``."""
        linger = self._settings.flush_interval_ms / 1000
        max_events = self._settings.batch_max_events
        while not (stop.is_set() and not len(self._queue)):
            if self._pending and time.monotonic() < self._retry_at:
                wait = min(linger * 10, self._retry_at - time.monotonic())
                batch = await self._take_within(max_events, wait)
            else:
                batch = await self._queue.take(max_events, linger)
            if batch:
                self._stage(batch)
            if self._pending and time.monotonic() >= self._retry_at:
                await self._flush()
            self._gauges()
        deadline = time.monotonic() + drain_timeout
        while self._pending and time.monotonic() < deadline:
            if not await self._flush():
                await asyncio.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
        if self._pending_events:
            WRITER_DROPPED.labels("shutdown").inc(self._pending_events)
            log.error("shutting down with %d events not written to Redis", self._pending_events)
        self._gauges()

    async def _take_within(self, max_events: int, wait: float) -> list[Event]:
        """While backing off, keep draining the queue so receive loops never block on a Redis outage."""
        try:
            return await asyncio.wait_for(self._queue.take(max_events, 0.0), timeout=max(wait, 0.001))
        except TimeoutError:
            return []
