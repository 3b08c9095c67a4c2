"""A venue collector running against a fake venue for the length of an ``async with`` block."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from collectors.base import FeedConnection, FrameTap
from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.venue import ConnectionSettings, VenueCollector, VenueSpec
from flushwatch.events import Event


def fast_settings(ws_url: str, **overrides: Any) -> ConnectionSettings:
    """Connection settings for tests: quick reconnects, an hour's connection age, a 30 s staleness limit."""
    values: dict[str, Any] = {"ws_url": ws_url, "stale_after_s": 30.0, "max_connection_age_s": 3600.0,
                              "max_frame_bytes": 1 << 20, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}
    return ConnectionSettings(**(values | overrides))


class RunningCollector:
    """``VenueCollector(spec, instruments, settings)`` running until the block ends; ``events`` keeps every
    event it queued, as far as ``drain`` has taken them."""

    def __init__(self, spec: VenueSpec, instruments: Sequence[Instrument], settings: ConnectionSettings, *,
                 tap: FrameTap | None = None) -> None:
        self.queue = EventQueue(100_000)
        self.collector = VenueCollector(spec, instruments, settings, self.queue, tap=tap)
        self.stop = asyncio.Event()
        self.events: list[Event] = []

    async def __aenter__(self) -> RunningCollector:
        self.task = asyncio.create_task(self.collector.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)

    @property
    def connection(self) -> FeedConnection:
        return self.collector.connections[0]

    def drain(self) -> list[Event]:
        self.events += self.queue.take_nowait(len(self.queue))
        return self.events

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.drain() if isinstance(e, kind)]
