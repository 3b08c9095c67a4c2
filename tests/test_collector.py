"""The Binance collector against the fake venue: reconnect policies, silence, bad frames. No Redis needed:
events land on the queue the writer would drain."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from collectors.binance.collector import BinanceCollector
from collectors.queue import EventQueue
from flushwatch.events import Trade
from flushwatch.fake.server import FakeBinance
from flushwatch.settings import BinanceSettings
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until


def settings_for(fake: FakeBinance, **overrides: Any) -> BinanceSettings:
    values: dict[str, Any] = {"symbols": ["BTCUSDT"], "market_url": fake.market_url, "public_url": fake.public_url,
                              "rest_url": fake.rest_url, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
                              "oi_poll_interval_s": 60.0}
    return BinanceSettings(**(values | overrides))


def agg_trade(trade_id: int) -> tuple[str, str]:
    data = {"e": "aggTrade", "E": 1_760_000_000_000 + trade_id, "a": trade_id, "s": "BTCUSDT", "p": "100.5",
            "q": "2", "f": trade_id, "l": trade_id, "T": 1_760_000_000_000 + trade_id, "m": True}
    return "btcusdt@aggTrade", msgspec.json.encode(data).decode()


class Running:
    """A collector running against the fake until the block ends."""

    def __init__(self, settings: BinanceSettings) -> None:
        self.queue = EventQueue(100_000)
        self.collector = BinanceCollector(settings, self.queue)
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.collector.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)

    @property
    def market(self) -> Any:
        return self.collector.connections[0]

    def trades(self) -> list[Trade]:
        return [e for e in self.queue.take_nowait(len(self.queue)) if isinstance(e, Trade)]


def subscribed(fake: FakeBinance) -> bool:
    return any("btcusdt@aggTrade" in c.streams for c in fake.open_connections)


@pytest.mark.parametrize("status", [429, 403])
async def test_refused_handshakes_are_retried_not_fatal(fake: FakeBinance, status: int) -> None:
    fake.reject_handshakes(status, count=3)
    async with Running(settings_for(fake)) as run:
        await until(lambda: subscribed(fake), within=10)
        await fake.publish([agg_trade(1)])
        await until(lambda: len(run.queue) == 1)
        assert run.market.reconnects.get(f"http_{status}", 0) >= 1
        [trade] = run.trades()
        assert (trade.price, trade.size, trade.side) == (100.5, 2.0, "sell")


async def test_a_silent_connection_is_replaced(fake: FakeBinance) -> None:
    """A retired URL completes the handshake and acknowledges subscriptions, then never pushes."""
    fake.retire()
    async with Running(settings_for(fake, stale_after_s=0.5)) as run:
        await until(lambda: run.market.reconnects.get("stale", 0) >= 2, within=10)
        assert run.market.connections >= 2  # each silent connection was replaced by a new one


async def test_connections_are_renewed_before_their_maximum_age(fake: FakeBinance) -> None:
    async with Running(settings_for(fake, max_connection_age_s=0.5)) as run:
        await until(lambda: run.market.reconnects.get("max_age", 0) >= 2, within=10)
        await until(lambda: subscribed(fake), within=5)
        await fake.publish([agg_trade(7)])
        await until(lambda: len(run.queue) >= 1)
        assert [t.ts_event for t in run.trades()] == [(1_760_000_000_000 + 7) * 1_000_000]


async def test_garbage_and_oversized_frames_are_counted_and_the_feed_carries_on(fake: FakeBinance) -> None:
    malformed = FEED_REJECTED.labels("binance", "malformed")._value.get()
    oversized = FEED_REJECTED.labels("binance", "oversized")._value.get()
    async with Running(settings_for(fake, max_frame_bytes=2048)) as run:
        await until(lambda: subscribed(fake), within=10)
        fake.send_garbage(5)
        big = {"e": "aggTrade", "E": 1, "a": 2, "s": "BTCUSDT", "p": "1", "q": "1", "f": 2, "l": 2, "T": 1,
               "m": True, "pad": "x" * 4096}
        await fake.publish([("btcusdt@aggTrade", msgspec.json.encode(big).decode()), agg_trade(3)])
        await until(lambda: len(run.queue) == 1)
        assert FEED_REJECTED.labels("binance", "malformed")._value.get() - malformed >= 5
        assert FEED_REJECTED.labels("binance", "oversized")._value.get() - oversized == 1
        assert sum(run.market.reconnects.values()) == 0  # bad frames never cost the connection
        assert [t.price for t in run.trades()] == [100.5]
