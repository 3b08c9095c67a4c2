"""What the fault tests share: a writer into a real Redis, the events read back, and the conservation check
that every frame a fake venue sent either reached Redis as events exactly once or was counted as rejected."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import msgspec
from test_writer import stored

from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.rejects import REASONS
from collectors.venues import parser_for
from collectors.writer import StreamWriter
from flushwatch.events import Event
from flushwatch.redis_client import connect_redis
from flushwatch.settings import WriterSettings
from flushwatch.streams import events_key
from flushwatch.telemetry import FEED_REJECTED


@contextlib.asynccontextmanager
async def writing(queue: EventQueue, url: str, **settings: Any) -> AsyncIterator[StreamWriter]:
    """A ``StreamWriter`` draining ``queue`` into the Redis at ``url`` until the block ends, then flushing."""
    client = connect_redis(url, socket_timeout=1.0)
    writer = StreamWriter(client, queue, WriterSettings(**({"retry_max_s": 0.2} | settings)), shards=1)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop, drain_timeout=5.0))
    try:
        yield writer
    finally:
        stop.set()
        queue.wake()
        await asyncio.wait_for(task, 30)
        await client.aclose()


def in_redis(url: str) -> list[Event]:
    """Every event in shard 0's stream, in stream order."""
    return stored(url, events_key(0))  # type: ignore[return-value]


def unstamped(events: Iterable[Event]) -> list[Event]:
    """Events without their local receive time, the one field a replay of the same frames cannot reproduce."""
    return [msgspec.structs.replace(e, ts_recv=0) for e in events]


def rejected(venue: str) -> Counter[str]:
    """``flushwatch_feed_rejected_messages_total`` of ``venue`` by reason, as now."""
    return Counter({r: int(FEED_REJECTED.labels(venue, r)._value.get()) for r in REASONS})


def reference(venue: str, instruments: Sequence[Instrument], frames: Iterable[str | bytes],
              ) -> tuple[list[Event], Counter[str]]:
    """What a fresh parser makes of exactly ``frames`` (everything the venue sent, in order): the events Redis
    must hold, and the rejects the collector must have counted."""
    parser = parser_for(venue, instruments, 1 << 20)
    events: list[Event] = []
    reasons: Counter[str] = Counter()
    for frame in frames:
        result = parser.parse(frame.encode() if isinstance(frame, str) else frame, 0)
        events += result.events
        reasons.update(r.reason for r in result.rejects)
    return unstamped(events), reasons


def assert_conserved(venue: str, instruments: Sequence[Instrument], sent: Iterable[str | bytes], url: str,
                     rejects_before: Counter[str]) -> list[Event]:
    """Every frame the venue sent is in Redis as events exactly once, in order, or counted as rejected with
    the reason the parser gives it; nothing else is in Redis. Returns the stored events."""
    expected, reasons = reference(venue, instruments, sent)
    got = in_redis(url)
    assert unstamped(got) == expected
    counted = rejected(venue)
    counted.subtract(rejects_before)
    assert +counted == +reasons
    return got
