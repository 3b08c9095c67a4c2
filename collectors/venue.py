"""What a venue module provides, and the one collector that runs any of them.

A venue module (``collectors/<venue>/``) exports ``SPEC``, a ``VenueSpec``: pure data and pure functions
-- where to connect, which topics carry an instrument's data, how to ask for them, what keeps the
connection alive, how to read its frames and its instrument metadata. ``VenueCollector`` turns a spec and
the instruments picked for it into connections feeding the shared event queue; nothing venue-specific
lives outside the venue's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from collectors.base import FeedConnection, FeedPolicy, FrameSink, FrameTap, Heartbeat
from collectors.instruments import Coverage, Instrument
from collectors.parsing import ParseResult
from collectors.queue import EventQueue
from flushwatch.backoff import jittered_exponential


class VenueParser(Protocol):
    def parse(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        """One websocket frame; never raises on input."""
        ...


@dataclass(frozen=True)
class VenueSpec:
    name: str
    """Lower-case venue id, the ``venue`` of every event."""
    coverage: Coverage
    """What its public liquidation feed shows; exported per venue so a sampled feed is read as a lower bound."""
    ws_url: str
    rest_url: str
    topics: Callable[[Sequence[Instrument]], list[str]]
    """Every subscription topic for these instruments (venue-wide topics such as OKX's
    ``liquidation-orders`` once, not per instrument)."""
    subscribe_messages: Callable[[Sequence[str], int], list[str]]
    """``(topics of one connection, first request id)`` -> the messages to send after connecting, in order."""
    parser: Callable[[Sequence[Instrument], int], VenueParser]
    """``(instruments, max_frame_bytes)`` -> a parser; one per collector, shared by its connections."""
    fetch_instruments: Callable[[httpx.AsyncClient, str], Awaitable[list[Instrument]]]
    """``(client, rest_url)`` -> the venue's perpetuals (and whatever else it lists), parsed purely."""
    max_topics_per_connection: int
    subscribe_interval_s: float = 0.1
    """Pause between subscribe messages, under the venue's request rate limit."""
    heartbeat: Heartbeat | None = None
    connect_interval_s: float = 0.0
    """Pause between opening two connections (OKX: 3 connection requests per second per IP)."""
    max_connection_age_s: float | None = None
    """A venue-imposed maximum age; the collector renews connections before it."""


class NumberedRequests:
    """Request ids keep increasing across reconnects, so an ack can never be mistaken for an older one."""

    def __init__(self, build: Callable[[Sequence[str], int], list[str]]) -> None:
        self._build = build
        self._next_id = 1

    def __call__(self, topics: Sequence[str]) -> list[str]:
        messages = self._build(topics, self._next_id)
        self._next_id += max(1, len(messages))
        return messages


@dataclass(frozen=True)
class ConnectionSettings:
    """The per-venue knobs the collector needs (``flushwatch.settings.VenueSettings`` provides them)."""

    ws_url: str
    stale_after_s: float
    max_connection_age_s: float
    max_frame_bytes: int
    backoff_initial_s: float
    backoff_max_s: float


class VenueCollector:
    """The connections of one venue for ``instruments``, sharing one parser and one sink."""

    def __init__(self, spec: VenueSpec, instruments: Sequence[Instrument], settings: ConnectionSettings,
                 queue: EventQueue, *, tap: FrameTap | None = None) -> None:
        self.spec = spec
        self.instruments = list(instruments)
        self.parser = spec.parser(self.instruments, settings.max_frame_bytes)
        self.sink = FrameSink(spec.name, self.parser.parse, queue, watched=[i.symbol for i in self.instruments])
        age = settings.max_connection_age_s
        if spec.max_connection_age_s is not None:
            age = min(age, spec.max_connection_age_s)
        policy = FeedPolicy(
            stale_after_s=settings.stale_after_s,
            max_connection_age_s=age,
            max_frame_bytes=settings.max_frame_bytes,
            backoff=jittered_exponential(settings.backoff_initial_s, settings.backoff_max_s),
            subscribe_interval_s=spec.subscribe_interval_s,
        )
        topics = spec.topics(self.instruments)
        size = spec.max_topics_per_connection
        self.connections = [
            FeedConnection(spec.name, f"ws-{i // size}", settings.ws_url, tuple(topics[i:i + size]),
                           NumberedRequests(spec.subscribe_messages), self.sink, policy,
                           heartbeat=spec.heartbeat, tap=tap)
            for i in range(0, len(topics), size)
        ]

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for i, connection in enumerate(self.connections):
                group.create_task(self._staggered(connection, i * self.spec.connect_interval_s, stop))

    @staticmethod
    async def _staggered(connection: FeedConnection, delay_s: float, stop: asyncio.Event) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay_s)
        await connection.run(stop)
