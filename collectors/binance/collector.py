"""Binance USDⓈ-M: the connections of the watchlist plus the open-interest poller, feeding one queue."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from collectors.base import FeedConnection, FeedPolicy, FrameSink, FrameTap
from collectors.binance.oi_poller import OpenInterestPoller
from collectors.binance.parse import BinanceParser
from collectors.binance.spec import connection_plans, subscribe_messages
from collectors.queue import EventQueue
from collectors.venue import NumberedRequests
from flushwatch.backoff import jittered_exponential
from flushwatch.settings import BinanceSettings

VENUE = "binance"


class BinanceCollector:
    def __init__(self, settings: BinanceSettings, queue: EventQueue, *, tap: FrameTap | None = None,
                 funding_interval_h: Mapping[str, float] | None = None) -> None:
        """``funding_interval_h``: the contracts whose funding is not every 8 h (from ``fundingInfo``)."""
        self.parser = BinanceParser(settings.symbols, max_frame_bytes=settings.max_frame_bytes,
                                    funding_interval_h=funding_interval_h)
        self.sink = FrameSink(VENUE, self.parser.parse, queue, watched=settings.symbols)
        policy = FeedPolicy(
            stale_after_s=settings.stale_after_s,
            max_connection_age_s=settings.max_connection_age_s,
            max_frame_bytes=settings.max_frame_bytes,
            backoff=jittered_exponential(settings.backoff_initial_s, settings.backoff_max_s),
        )
        self.connections = [
            FeedConnection(VENUE, plan.name, plan.url, plan.streams, NumberedRequests(subscribe_messages), self.sink,
                           policy, tap=tap)
            for plan in connection_plans(settings)
        ]
        self.poller = OpenInterestPoller(settings, self.parser, self.sink.accept, tap=tap)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for connection in self.connections:
                group.create_task(connection.run(stop))
            group.create_task(self.poller.run(stop))
