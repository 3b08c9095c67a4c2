"""Waiting on a condition that no event signals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool], within: float = 10.0, poll: float = 0.01) -> None:
    """Return once ``predicate()`` holds; ``TimeoutError`` after ``within`` seconds. For state held by
    another task, process or server (a fake exchange's subscriptions, a counter), where there is no event."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the condition lives outside this loop's reach
            await asyncio.sleep(poll)
