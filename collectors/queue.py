"""The bounded hand-off between receive loops and the Redis writer.

Receive loops must never wait, so ``offer`` is synchronous and drops (counted) when the bound is hit; the
single writer awaits ``take``. A deque with a wake-up event is several times cheaper per item than
``asyncio.Queue`` and lets the writer take a whole batch at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from flushwatch.events import Event
from flushwatch.telemetry import WRITER_DROPPED


class EventQueue:
    def __init__(self, max_events: int) -> None:
        self._items: deque[Event] = deque()
        self._max = max_events
        self._ready = asyncio.Event()
        WRITER_DROPPED.labels("queue_full")  # exported at 0 from the start, not at the first drop

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, events: Sequence[Event]) -> int:
        """Enqueue what fits; returns how many were dropped because the queue was full."""
        room = self._max - len(self._items)
        dropped = max(0, len(events) - room)
        if dropped:
            WRITER_DROPPED.labels("queue_full").inc(dropped)
            events = events[:room]
        if events:
            self._items.extend(events)
            self._ready.set()
        return dropped

    def wake(self) -> None:
        """Make a waiting ``take`` return, empty-handed if nothing is queued (used at shutdown)."""
        self._ready.set()

    async def take(self, max_events: int, linger: float) -> list[Event]:
        """Wait for events (or ``wake``), then up to ``linger`` seconds for the batch to fill."""
        if not self._items:
            self._ready.clear()
            await self._ready.wait()
            if not self._items:
                return []
        if len(self._items) < max_events and linger > 0:
            await asyncio.sleep(linger)
        return self.take_nowait(max_events)

    def take_nowait(self, max_events: int) -> list[Event]:
        items = self._items
        n = min(max_events, len(items))
        return [items.popleft() for _ in range(n)]
