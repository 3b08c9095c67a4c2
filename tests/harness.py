"""A venue collector running against a fake venue for the length of an ``async with`` block."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from collectors.base import FeedConnection, FrameTap
from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.venue import ConnectionSettings, VenueCollector, VenueSpec
from flushwatch.events import Event
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import free_port
from flushwatch.settings import BinanceSettings, Settings, load_settings
from flushwatch.signals import STAGE_NAMES


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


def assert_flush_story(events: list[dict[str, Any]], scenario: Scenario) -> None:
    """The scripted flush as MQTT events tell it: BTC's longs rise through the stages (which ones depends on how
    the book and the liquidations arrive) to flushed with open interest purged, then calm, in one episode and each
    change inside the scripted phase that justifies it; SOL is overheated but never crashes."""
    btc = [e for e in events if e["asset"] == "BTC" and e["side"] == "long"]
    moves = [(e["stage_from"], e["stage"]) for e in btc if e["stage"] != e["stage_from"]]
    visited = [0] + [to for _, to in moves]
    assert visited[:2] == [0, 1] and visited[-2:] == [7, 0], moves
    assert visited[:-1] == sorted(set(visited[:-1])) and max(visited[:-2]) >= 4, moves
    cascade = next(e for e in btc if 4 <= e["stage"] < 7)
    assert cascade["stage_name"] == STAGE_NAMES[cascade["stage"]]
    assert cascade["evidence"]["liq_ratio_long"] >= cascade["thresholds"]["liq_trigger_ratio"]
    flushed = next(e for e in btc if e["stage"] == 7)
    assert flushed["evidence"]["oi_chg_episode_long"] < 0  # open interest purged
    assert len({e["episode_id"] for e in btc if e["stage"] != 0}) == 1
    active = {"shock", "cascade"}
    expected = {1: {"shock"}, 2: active, 3: active, 4: active, 5: active, 6: active, 7: {"recovery"},
                0: {"recovery", "build_up"}}
    for event in btc:
        t = scenario.offset_s(event["ts_ns"])
        assert scenario.phase_at("BTC", max(t, 0.0)).name in expected[event["stage"]], (event["stage"], t)
    sol = [e for e in events if e["asset"] == "SOL"]
    assert sol and all(e["stage"] == 0 for e in sol) and any(e["stage_name"] == "overheated" for e in sol)


def daemon_settings(fake: FakeBinance, symbols: list[str], redis_url: str, mqtt_port: int | None = None,
                    prefix: str = "flushwatch/v1", **binance: Any) -> Settings:
    """Settings of a whole daemon against the fake Binance, on a free metrics port; with ``mqtt_port`` it
    publishes there under ``prefix`` with a client id of its own, else it starts a private broker."""
    mqtt: dict[str, Any] = {}
    if mqtt_port is not None:
        mqtt = {"mqtt_url": f"mqtt://127.0.0.1:{mqtt_port}", "mqtt_prefix": prefix,
                "mqtt_client_id": f"fw-{uuid.uuid4().hex[:8]}"}
    return load_settings(
        redis_url=redis_url,
        metrics_port=free_port(),
        binance=BinanceSettings(symbols=symbols, market_url=fake.market_url, public_url=fake.public_url,
                                rest_url=fake.rest_url, **binance),
        **mqtt,
    )


def flush_daemon(fake: FakeBinance, redis_url: str, mqtt_port: int, prefix: str,
                 speed: float) -> tuple[Scenario, Settings]:
    """The scripted flush (seed 3) registered on the fake Binance at ``speed``, and the settings of a daemon
    paced to it: open interest polled every 10 scenario seconds, a feed stale after 10 s."""
    scenario = Scenario("flush", seed=3, speed=speed)
    fake.register(scenario)
    return scenario, daemon_settings(fake, scenario.symbols, redis_url, mqtt_port, prefix,
                                     oi_poll_interval_s=10.0 / speed, stale_after_s=10.0)


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """Status and body of ``method path`` on a local server (an HTTP error is an answer too); raises
    ``OSError`` when nothing listens. The never-ending ``/api/events`` gives its first chunk."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read1(65536) if path == "/api/events" else response.read()
            return response.status, body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
