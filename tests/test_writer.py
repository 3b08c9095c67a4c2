"""The Redis writer against a real redis-server: batching, order, trimming, outages, shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from flushwatch.events import Trade
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, start_redis
from flushwatch.settings import WriterSettings
from flushwatch.streams import decode_events, events_key, shard_of
from flushwatch.telemetry import WRITER_DROPPED, WRITER_ERRORS
from flushwatch.waiting import until


def trade(i: int, asset: str = "BTC") -> Trade:
    return Trade(venue="binance", symbol=f"{asset}USDT", asset=asset, ts_event=i, ts_recv=i, price=100.0 + i,
                 size=1.0, side="buy")


def stored(url: str, key: str) -> list[Trade]:
    client = redis.Redis.from_url(url)
    out: list[Trade] = []
    for _, fields in client.xrange(key):
        out.extend(decode_events(fields))  # type: ignore[arg-type]
    return out


async def write_through(writer: StreamWriter, queue: EventQueue, events: list[Trade]) -> None:
    """Run ``writer`` until it has written ``events``, then stop it the way the daemon does."""
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    queue.offer(events)
    await until(lambda: writer.written == len(events))
    stop.set()
    queue.wake()
    await task


@pytest.fixture
async def clients():
    """Redis clients made by a test, closed after it."""
    made = []

    def make(url: str, **kwargs: float):
        made.append(connect_redis(url, **kwargs))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


async def test_events_arrive_in_order_in_batches(redis_server: RunningServer, clients) -> None:
    queue = EventQueue(100_000)
    writer = StreamWriter(clients(redis_server.url), queue, WriterSettings(batch_max_events=100), shards=1)
    await write_through(writer, queue, [trade(i) for i in range(1_000)])
    events = stored(redis_server.url, events_key(0))
    assert [e.ts_event for e in events] == list(range(1_000))
    assert redis.Redis.from_url(redis_server.url).xlen(events_key(0)) >= 10  # batches of at most 100


async def test_assets_are_routed_to_their_shard(redis_server: RunningServer, clients) -> None:
    queue = EventQueue(1_000)
    writer = StreamWriter(clients(redis_server.url), queue, WriterSettings(), shards=4)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    assets = ["BTC", "ETH", "SOL", "XRP", "DOGE", "BNB"]
    queue.offer([trade(i, asset) for i, asset in enumerate(assets)])
    stop.set()
    await task
    for asset in assets:
        in_shard = stored(redis_server.url, events_key(shard_of(asset, 4)))
        assert asset in {e.asset for e in in_shard}
    assert sum(len(stored(redis_server.url, events_key(s))) for s in range(4)) == len(assets)


async def test_streams_are_trimmed(redis_server: RunningServer, clients) -> None:
    queue = EventQueue(100_000)
    settings = WriterSettings(batch_max_events=1, events_maxlen=100, flush_interval_ms=0.001)
    writer = StreamWriter(clients(redis_server.url), queue, settings, shards=1)
    await write_through(writer, queue, [trade(i) for i in range(2_000)])
    length = redis.Redis.from_url(redis_server.url).xlen(events_key(0))
    assert 100 <= length < 400  # MAXLEN ~ trims whole macro-nodes, so a little above the bound


async def test_entries_older_than_the_retention_are_trimmed(redis_server: RunningServer, clients) -> None:
    """The time bound: entries written 20 minutes ago go, the new ones stay."""
    key = events_key(0)
    sync = redis.Redis.from_url(redis_server.url)
    sync.delete(key)
    old_ms = int(time.time() * 1000) - 20 * 60_000
    for i in range(300):  # several macro-nodes, so MINID ~ can drop whole ones
        sync.xadd(key, {"v": "1", "n": "0", "b": b""}, id=f"{old_ms + i}-0")
    queue = EventQueue(1_000)
    writer = StreamWriter(clients(redis_server.url), queue, WriterSettings(retention_s=900), shards=1)
    await write_through(writer, queue, [trade(i) for i in range(10)])
    newest = [e for _, fields in sync.xrevrange(key, count=1) for e in decode_events(fields)]  # type: ignore[arg-type]
    assert [e.price for e in newest] == [trade(i).price for i in range(10)]
    assert sync.xlen(key) <= 1 + 100  # what is left of the old ones is at most one macro-node (100 entries)


async def test_outage_buffers_then_delivers_in_order(clients) -> None:
    server = start_redis()
    port = server.port
    queue = EventQueue(100_000)
    settings = WriterSettings(retry_max_s=0.2)
    writer = StreamWriter(clients(server.url, socket_timeout=1.0), queue, settings, shards=1)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        queue.offer([trade(i) for i in range(100)])
        await until(lambda: writer.written == 100)
        server.stop()
        failures = WRITER_ERRORS.labels("writer")._value.get()
        queue.offer([trade(i) for i in range(100, 300)])
        await until(lambda: WRITER_ERRORS.labels("writer")._value.get() > failures)  # a write failed
        assert writer.written == 100
        assert len(queue) == 0  # the queue kept draining into the writer's buffer
        server = start_redis(port=port)  # an empty Redis: what it holds now came from the buffer
        await until(lambda: writer.written == 300)
        events = stored(server.url, events_key(0))
        assert [e.ts_event for e in events] == list(range(100, 300))
    finally:
        stop.set()
        queue.wake()
        await task
        server.stop()


async def test_buffer_bound_drops_oldest_and_counts(clients) -> None:
    server = start_redis()
    server.stop()  # nothing listens: every write fails
    queue = EventQueue(100_000)
    settings = WriterSettings(buffer_max_events=150, batch_max_events=50, retry_max_s=0.1)
    writer = StreamWriter(clients(server.url, socket_timeout=0.5), queue, settings, shards=1)
    before = WRITER_DROPPED.labels("redis_unavailable")._value.get()
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop, drain_timeout=0.2))
    queue.offer([trade(i) for i in range(400)])
    await until(lambda: len(queue) == 0)
    stop.set()
    queue.wake()
    await task
    dropped = WRITER_DROPPED.labels("redis_unavailable")._value.get() - before
    assert dropped == 250  # 400 accepted, 150 kept
    assert writer.written == 0


@pytest.mark.parametrize("offered", [10, 5_000])
async def test_queue_bound_is_counted(offered: int) -> None:
    queue = EventQueue(1_000)
    before = WRITER_DROPPED.labels("queue_full")._value.get()
    dropped = queue.offer([trade(i) for i in range(offered)])
    assert dropped == max(0, offered - 1_000)
    assert len(queue) == min(offered, 1_000)
    assert WRITER_DROPPED.labels("queue_full")._value.get() - before == dropped
