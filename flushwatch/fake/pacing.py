"""Playing timestamped frames at a multiple of real time, in batches, the way the fake venues serve them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def paced(items: Iterable[tuple[int, T]], *, wall0: float, t0_ms: int, speed: float,
                clock: Callable[[], float], batch_interval_s: float) -> AsyncIterator[list[T]]:
    """``(event ms, item)`` pairs in time order, each due at ``wall0 + (ms - t0_ms) / 1000 / speed`` on
    ``clock``; everything already due is handed over as one batch, and the wait for the next is at least
    ``batch_interval_s`` so a dense stretch is not sent frame by frame."""
    pending: list[T] = []
    began = clock()
    for e_ms, item in items:
        due = wall0 + (e_ms - t0_ms) / 1000.0 / speed
        now = clock()
        if due > now:
            if pending:
                yield pending
                pending = []
            await asyncio.sleep(max(due - now, batch_interval_s))
            began = clock()
        elif now - began > batch_interval_s:
            # Behind schedule (a slow machine, a dense stretch): everything is due, and building items is CPU work
            # that never suspends, nor may the consumer. Hand over what is due and let the event loop run, or the
            # connections sharing it (the venue's own, a test's client) stall for as long as the catch-up lasts.
            if pending:
                yield pending
                pending = []
            await asyncio.sleep(0)
            began = clock()
        pending.append(item)
    if pending:
        yield pending
