"""The single Redis writer: drains the event queue into the shard streams in pipelined batches.

Nothing accepted is lost silently: while Redis is unreachable the writer keeps draining the queue into a
bounded buffer and retries with backoff; what exceeds the bound is dropped oldest-first and counted in
``flushwatch_writer_dropped_events_total{reason="redis_unavailable"}``. A command Redis refuses (out of memory
under ``noeviction``) is retried the same way. Entries keep their order per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from collectors.queue import EventQueue
from flushwatch.backoff import Backoff, jittered_exponential
from flushwatch.events import Event
from flushwatch.redis_client import REDIS_ERRORS
from flushwatch.settings import WriterSettings
from flushwatch.streams import encode_batch, events_key, shard_of, trim_older
from flushwatch.telemetry import (
    WRITER_BUFFERED,
    WRITER_DROPPED,
    WRITER_ERRORS,
    WRITER_QUEUE,
    WRITER_WRITTEN,
    RateLimitedLog,
)

log = logging.getLogger(__name__)

TRIM_EVERY_S = 5.0
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
        self._trim_at = 0.0
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
                # Not raising on a refused command: the entries before it are stored and must not be sent
                # again, or a retry would duplicate them (Redis runs every command of the pipeline).
                replies = await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS as exc:
                return self._failed(exc)
            kept = [entry for entry, reply in zip(chunk, replies, strict=True) if isinstance(reply, RedisError)]
            for _ in chunk:
                self._pending.popleft()
            self._pending.extendleft(reversed(kept))
            stored = sum(n for *_, n in chunk) - sum(n for *_, n in kept)
            self._pending_events -= stored
            self.written += stored
            WRITER_WRITTEN.inc(stored)
            if kept:  # refused (OOM under noeviction, a read-only replica): retried like an outage
                return self._failed(next(r for r in replies if isinstance(r, RedisError)))
        self._failures = 0
        if time.monotonic() >= self._trim_at:
            self._trim_at = time.monotonic() + TRIM_EVERY_S
            try:
                await trim_older(self._redis, [events_key(s) for s in range(self._shards)], self._settings.retention_s)
            except REDIS_ERRORS as exc:  # the entries are written; trimming waits for the next round
                WRITER_ERRORS.labels("writer").inc()
                self._warn.warning("redis-trim", "Redis trim failed (%s)", exc)
        return True

    def _failed(self, exc: BaseException) -> bool:
        self._failures += 1
        self._retry_at = time.monotonic() + self._backoff(self._failures)
        WRITER_ERRORS.labels("writer").inc()
        self._warn.warning("redis-write", "Redis write failed (%s); %d events buffered", exc, self._pending_events)
        return False

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
