"""``/readyz``: ready only while Redis answers, the kernels are compiled and every enabled feed has data;
``/healthz`` stays alive meanwhile. A real daemon, a real Redis, the fake Binance."""

from __future__ import annotations

import asyncio
import threading
import time

from harness import daemon_settings, fetch

from flushwatch.daemon import Daemon
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import start_redis
from flushwatch.waiting import until


async def test_ready_follows_redis_and_the_feeds_while_healthz_stays_alive(fake: FakeBinance) -> None:
    redis = start_redis()
    scenario = Scenario("flush", speed=40.0)
    settings = daemon_settings(fake, scenario.symbols, redis.url, stale_after_s=3.0, oi_poll_interval_s=0.25)
    fake.register(scenario)
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.ready.is_set() and daemon.metrics_port > 0, within=60)
        port = daemon.metrics_port
        status, body = await asyncio.to_thread(fetch, port, "/readyz")
        assert status == 503 and "binance: no data" in body  # connected, but nothing has flowed yet
        assert (await asyncio.to_thread(fetch, port, "/healthz"))[0] == 200
        fake.attach(scenario)
        await until(lambda: fetch(port, "/readyz")[0] == 200, within=30)
        assert fetch(port, "/readyz")[1].strip() == "ready"
        redis.stop()  # Redis gone: not ready, still alive
        await until(lambda: "redis not reachable" in fetch(port, "/readyz")[1], within=15)
        assert fetch(port, "/healthz")[0] == 200
    finally:
        daemon.stop.set()
        await asyncio.wait_for(runner, 60)
        redis.stop()


async def test_healthz_fails_while_the_event_loop_is_blocked(fake: FakeBinance) -> None:
    redis = start_redis()
    settings = daemon_settings(fake, ["BTCUSDT"], redis.url)
    daemon = Daemon(settings)
    daemon.loop_stall_s = 1.0
    runner = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.ready.is_set() and daemon.metrics_port > 0, within=60)
        port = daemon.metrics_port
        assert (await asyncio.to_thread(fetch, port, "/healthz"))[0] == 200
        seen: list[tuple[int, str]] = []

        def probe_later() -> None:
            time.sleep(2.0)
            seen.append(fetch(port, "/healthz"))

        prober = threading.Thread(target=probe_later)
        prober.start()
        time.sleep(3.0)  # noqa: ASYNC251 -- blocking the loop on purpose: the metrics thread still answers
        prober.join()
        assert seen[0][0] == 503 and "event loop unresponsive" in seen[0][1]
        await until(lambda: fetch(port, "/healthz")[0] == 200, within=5)  # the loop runs again
    finally:
        daemon.stop.set()
        await asyncio.wait_for(runner, 60)
        redis.stop()
