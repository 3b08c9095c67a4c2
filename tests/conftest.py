"""Shared fixtures: real servers on free ports, and the recorded data in ../shared/data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from collectors.instruments import Instrument
from collectors.venues import parser_for
from detector.engine import Detector
from flushwatch.events import Event
from flushwatch.fake.binance import wrap
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import RunningServer, ServerUnavailable, start_mosquitto, start_redis
from flushwatch.settings import load_settings
from flushwatch.signals import Signal
from flushwatch.simulator import SimConfig, Simulation

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data; skips the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"recorded data not available: {path}")
    return path


def tardis_messages(venue_file: str) -> list[dict[str, Any]]:
    """The raw messages of one tardis fixture file (each line wraps one message)."""
    path = shared_data("tardis_fixtures", venue_file)
    return [json.loads(line)["message"] for line in path.read_text().splitlines() if line.strip()]


def _server(start: Any, **kwargs: Any) -> Iterator[RunningServer]:
    try:
        server = start(**kwargs)
    except ServerUnavailable as exc:
        pytest.fail(f"cannot start a real server for the test: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RunningServer]:
    """A private redis-server on a free port, one per test."""
    yield from _server(start_redis)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    """The local stand-in for Binance USD-M (websocket streams and open-interest REST) on a free port."""
    async with FakeBinance() as server:
        yield server


@pytest.fixture
def mosquitto() -> Iterator[RunningServer]:
    """A private mosquitto broker on a free port, one per test."""
    yield from _server(start_mosquitto)


@contextlib.asynccontextmanager
async def subscriber(port: int, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """A real MQTT client subscribed to ``topics`` at QoS 1."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"sub-{uuid.uuid4().hex[:8]}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def receive(client: aiomqtt.Client, count: int, wait_s: float = 10.0) -> list[aiomqtt.Message]:
    """The next ``count`` messages, or a timeout."""
    messages: list[aiomqtt.Message] = []
    async with asyncio.timeout(wait_s):
        async for message in client.messages:
            messages.append(message)
            if len(messages) == count:
                break
    return messages


@pytest.fixture(scope="session")
def cascade() -> list[Event]:
    """20 simulated minutes on Binance and Bybit with a long flush (stages 1 to 7) in the middle, as events."""
    parsers = {v: parser_for(v, [Instrument(v, "BTCUSDT", "BTC", "linear", 1.0, 8.0)], 1 << 22)
               for v in ("binance", "bybit")}
    events: list[Event] = []
    for ts, venue, topic, payload in Simulation(SimConfig(minutes=20)).frames():
        events += parsers[venue].parse(wrap(topic, payload) if venue == "binance" else payload, ts * 1_000_000).events
    return events


@pytest.fixture(scope="session")
def uninterrupted(cascade: list[Event]) -> list[Signal]:
    """What one detector that never stopped makes of ``cascade``, fed as objects."""
    return Detector(load_settings()).process(cascade)
