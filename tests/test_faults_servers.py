"""Faults of the servers and the process: Redis restarted mid-stream (within and beyond the writer's buffer),
Redis out of memory, Prometheus scraping during a burst, SIGTERM during a burst. Each with the fake Binance
feeding a real collector and a real Redis: every trade the venue sent is stored once, in order, or counted."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from faults import writing
from harness import daemon_settings
from prometheus_client.parser import text_string_to_metric_families
from test_collector import Running, settings_for
from test_end_to_end import agg_trade, stored_trade_ids

from flushwatch.daemon import Daemon
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import RunningServer, start_redis
from flushwatch.streams import DETECTOR_GROUP, events_key
from flushwatch.telemetry import FEED_EVENTS, WRITER_DROPPED, WRITER_ERRORS, WRITER_WRITTEN
from flushwatch.waiting import until

T0 = 1_760_000_000_000
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules" / "flushwatch.rules.yml"


def trades(first: int, last: int) -> list[tuple[str, str]]:
    return [agg_trade("BTCUSDT", i, T0 + i) for i in range(first, last + 1)]


def ids(url: str) -> list[int]:
    return [ms - T0 for ms in stored_trade_ids(url)]


def value(metric: Any) -> float:
    return float(metric._value.get())


def subscribed(fake: FakeBinance) -> bool:
    return any("btcusdt@aggTrade" in c.streams for c in fake.open_connections)


async def test_redis_restarted_mid_stream_loses_nothing(fake: FakeBinance) -> None:
    """Redis goes away after 200 trades and comes back empty on the same port; the 300 trades of the outage
    wait in the writer's buffer and are written in order once it is back."""
    server = start_redis()
    try:
        async with Running(settings_for(fake)) as run, writing(run.queue, server.url) as writer:
            await until(lambda: subscribed(fake), within=10)
            await fake.publish(trades(1, 200))
            await until(lambda: writer.written == 200)
            before_restart = ids(server.url)
            server.stop()
            errors = value(WRITER_ERRORS.labels("writer"))
            await fake.publish(trades(201, 500))
            await until(lambda: value(WRITER_ERRORS.labels("writer")) > errors and not len(run.queue), within=10)
            assert writer.written == 200
            server = start_redis(port=server.port)
            await until(lambda: writer.written == 500, within=10)
        assert before_restart + ids(server.url) == list(range(1, 501))
    finally:
        server.stop()


async def test_beyond_the_buffer_bound_the_oldest_are_dropped_counted_and_alerted_on(fake: FakeBinance) -> None:
    """An outage longer than the buffer holds: the oldest batches go, counted in
    ``flushwatch_writer_dropped_events_total{reason="redis_unavailable"}``, which an alert rule watches; the
    newest are written when Redis is back, and stored + dropped is everything the venue sent."""
    server = start_redis()
    dropped = value(WRITER_DROPPED.labels("redis_unavailable"))
    try:
        async with Running(settings_for(fake)) as run, writing(run.queue, server.url, buffer_max_events=100,
                                                     batch_max_events=50) as writer:
            await until(lambda: subscribed(fake), within=10)
            await fake.publish(trades(1, 100))
            await until(lambda: writer.written == 100)
            before_restart = ids(server.url)
            server.stop()
            for first in range(101, 501, 50):  # paced so the writer stages them while Redis is down
                await fake.publish(trades(first, first + 49))
                await until(lambda: not len(run.queue), within=5)
            await until(lambda: value(WRITER_DROPPED.labels("redis_unavailable")) - dropped >= 300, within=10)
            server = start_redis(port=server.port)
            await until(lambda: writer.written + value(WRITER_DROPPED.labels("redis_unavailable")) - dropped == 500,
                        within=10)
        after = ids(server.url)
        lost = value(WRITER_DROPPED.labels("redis_unavailable")) - dropped
        assert before_restart == list(range(1, 101))
        assert after == list(range(501 - len(after), 501))  # the newest kept, in order
        assert len(before_restart) + len(after) + lost == 500 and 300 <= lost <= 350
    finally:
        server.stop()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert any("flushwatch_writer_dropped_events_total" in r["expr"] for r in rules)


async def test_redis_out_of_memory_is_buffered_and_delivered_once_memory_is_raised(fake: FakeBinance) -> None:
    """``maxmemory`` a little above what Redis uses, ``noeviction``: XADDs start failing with OOM part-way
    through a pipeline. The writer keeps what Redis refused, counts the errors, never crashes, and after
    ``CONFIG SET maxmemory 0`` every trade is stored exactly once, in order."""
    server = start_redis(extra=["--maxmemory-policy", "noeviction"])
    admin = redis.Redis.from_url(server.url)
    try:
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 150_000)
        errors = value(WRITER_ERRORS.labels("writer"))
        async with Running(settings_for(fake)) as run, writing(run.queue, server.url, batch_max_events=100) as writer:
            await until(lambda: subscribed(fake), within=10)
            for first in range(1, 6001, 500):
                await fake.publish(trades(first, first + 499))
            await until(lambda: value(WRITER_ERRORS.labels("writer")) > errors + 2, within=10)
            refused_at = writer.written
            assert 0 < refused_at < 6000  # some stored before memory ran out
            assert ids(server.url) == list(range(1, refused_at + 1))
            admin.config_set("maxmemory", 0)
            await until(lambda: writer.written == 6000, within=10)  # a crashed writer never gets here
        assert ids(server.url) == list(range(1, 6001))
    finally:
        admin.close()
        server.stop()


# --- the whole daemon --------------------------------------------------------------------------------------


def counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample of a scrape; raises if the text does not parse."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) if family.type == "counter"
            for s in family.samples}


@pytest.mark.slow
async def test_scraping_during_a_burst_parses_and_counters_never_go_back(
        fake: FakeBinance, redis_server: RunningServer) -> None:
    """A real HTTP client scrapes /metrics back to back while a burst of 20,000 trades goes through the
    daemon: every scrape parses, no counter ever decreases, and the burst is stored within 20 s."""
    daemon = Daemon(daemon_settings(fake, ["BTCUSDT"], redis_server.url))
    runner = asyncio.create_task(daemon.run())
    scrapes: list[str] = []
    done = threading.Event()

    def scrape() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{daemon.metrics_port}", timeout=5) as client:
            while not done.is_set():
                scrapes.append(client.get("/metrics").raise_for_status().text)

    try:
        await until(lambda: daemon.ready.is_set() and subscribed(fake), within=60)
        scraper = asyncio.create_task(asyncio.to_thread(scrape))
        started = time.monotonic()
        for first in range(1, 20_001, 1000):
            await fake.publish(trades(first, first + 999))
        await until(lambda: len(stored_trade_ids(redis_server.url)) == 20_000, within=20, poll=0.1)
        burst_s = time.monotonic() - started
        print(f"burst of 20000 trades stored in {burst_s:.2f} s with {len(scrapes)} scrapes")
        done.set()
        await scraper
    finally:
        done.set()
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
    assert ids(redis_server.url) == list(range(1, 20_001))
    assert len(scrapes) >= 5, (len(scrapes), burst_s)
    previous: dict[Any, float] = {}
    for text in scrapes:
        now = counters(text)
        assert all(now.get(key, v) >= v for key, v in previous.items() if key in now)
        previous |= now
    key = ("flushwatch_writer_written_events_total", ())
    assert previous[key] >= 20_000


@pytest.mark.slow
async def test_sigterm_during_a_burst_flushes_and_acknowledges_everything_accepted(
        fake: FakeBinance, redis_server: RunningServer) -> None:
    """SIGTERM lands while the venue is still pushing a burst: every trade the collector accepted is in Redis
    exactly once (the first k of the burst, with no gap), none is reported unwritten, and the detector has read
    and acknowledged all of it."""
    daemon = Daemon(daemon_settings(fake, ["BTCUSDT"], redis_server.url))
    runner = asyncio.create_task(daemon.run())
    accepted = value(FEED_EVENTS.labels("binance"))
    written = value(WRITER_WRITTEN)
    unwritten = value(WRITER_DROPPED.labels("shutdown"))
    full = value(WRITER_DROPPED.labels("queue_full"))

    async def burst() -> None:
        for first in range(1, 200_001, 500):
            await fake.publish(trades(first, first + 499))
            await asyncio.sleep(0)

    await until(lambda: daemon.ready.is_set() and subscribed(fake), within=60)
    pusher = asyncio.create_task(burst())
    try:
        await until(lambda: len(stored_trade_ids(redis_server.url)) >= 5_000, within=20, poll=0.05)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the daemon's handler, not death
        os.kill(os.getpid(), signal.SIGTERM)
        sent_at_signal = fake.counts.frames_sent
        await asyncio.wait_for(runner, 30)
        assert sent_at_signal < 200_000  # the venue was still pushing the burst
    finally:
        pusher.cancel()
        daemon.stop.set()
        if not runner.done():
            await asyncio.wait_for(runner, 30)
    stored = ids(redis_server.url)
    assert stored == list(range(1, len(stored) + 1))  # no gap, no repeat
    assert len(stored) == value(FEED_EVENTS.labels("binance")) - accepted == value(WRITER_WRITTEN) - written
    assert value(WRITER_DROPPED.labels("shutdown")) == unwritten
    assert value(WRITER_DROPPED.labels("queue_full")) == full
    client = redis.Redis.from_url(redis_server.url)
    assert client.xpending(events_key(0), DETECTOR_GROUP)["pending"] == 0
    groups = {g["name"].decode(): g for g in client.xinfo_groups(events_key(0))}
    assert groups[DETECTOR_GROUP]["lag"] == 0
