"""The recorded Bybit v5 linear session (2026-08-09, cryptofeed) replayed through the fake Bybit into the
collector: the merged tickers match a plain dict merge after every message, and open interest is one side."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import shared_data

from collectors.bybit import SPEC
from collectors.bybit.parse import BybitParser
from collectors.bybit.spec import topics
from collectors.instruments import Instrument
from collectors.parsing import ParseResult
from collectors.queue import EventQueue
from collectors.venue import ConnectionSettings, VenueCollector
from flushwatch.events import Event, OpenInterest, Trade
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.venue_server import FakeVenue, VenueRecording, record_lines, recorded_frames
from flushwatch.waiting import until

INSTRUMENTS = [Instrument("bybit", f"{a}USDT", a, "linear", 1.0, 8.0) for a in ("BTC", "ETH", "SOL", "DOGE")]


class Watched:
    """The real parser, and the merged ticker it holds after each ticker message it parsed."""

    def __init__(self, instruments: Sequence[Instrument], max_frame_bytes: int) -> None:
        self.parser = BybitParser(instruments, max_frame_bytes)
        self.tickers: list[tuple[dict[str, Any], dict[str, Any]]] = []
        """``(message, parser.ticker(symbol) right after it)``, in arrival order."""

    def parse(self, frame: bytes | str, ts_recv: int) -> ParseResult:
        result = self.parser.parse(frame, ts_recv)
        message = json.loads(frame)
        if message.get("topic", "").startswith("tickers."):
            symbol = message["topic"].partition(".")[2]
            self.tickers.append((message, dict(self.parser.ticker(symbol))))
        return result


def linear_frames() -> list[tuple[float, str]]:
    path = shared_data("cryptofeed_recordings", "BYBIT.jsonl.zst")
    records = [json.loads(raw) for raw in record_lines(path) if raw.strip()]
    linear = {r["conn"] for r in records if r["t"] == "connect" and r["addr"].endswith("/v5/public/linear")}
    assert len(linear) == 1  # the recording's other connection is /v5/public/spot, same topic names
    return recorded_frames(path, keep=lambda conn: conn in linear)


async def test_recorded_session_replayed_through_the_fake() -> None:
    frames = linear_frames()
    messages = [json.loads(text) for _, text in frames]
    ticker_messages = [m for m in messages if m.get("topic", "").startswith("tickers.")]
    trades = sum(len(m["data"]) for m in messages if m.get("topic", "").startswith("publicTrade."))
    watched: list[Watched] = []

    def make_parser(instruments: Sequence[Instrument], max_frame_bytes: int) -> Watched:
        watched.append(Watched(instruments, max_frame_bytes))
        return watched[-1]

    spec = dataclasses.replace(SPEC, parser=make_parser)
    queue = EventQueue(100_000)
    events: list[Event] = []

    def trades_seen() -> int:
        events.extend(queue.take_nowait(len(queue)))
        return sum(isinstance(e, Trade) for e in events)
    async with FakeVenue(BybitProtocol(INSTRUMENTS)) as fake:
        collector = VenueCollector(spec, INSTRUMENTS, ConnectionSettings(
            ws_url=fake.ws_url, stale_after_s=30.0, max_connection_age_s=3600.0, max_frame_bytes=1 << 22,
            backoff_initial_s=0.05, backoff_max_s=0.2), queue)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        try:
            await until(lambda: set(topics(INSTRUMENTS)) <= fake.subscribed())
            await fake.attach(VenueRecording(frames))
            [watch] = watched
            await until(lambda: len(watch.tickers) == len(ticker_messages))
            await until(lambda: trades_seen() == trades)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert fake.counts.unrouted["no_subscriber"] > 0  # orderbook.200 and kline were recorded, not subscribed

    # The merged ticker after every message equals a plain dict merge of the raw messages.
    reference: dict[str, dict[str, Any]] = {}
    expected_oi: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for message, merged in watch.tickers:
        data = message["data"]
        symbol = data["symbol"]
        before = dict(reference.get(symbol, {}))
        if message["type"] == "snapshot":
            reference[symbol] = dict(data)
        else:
            reference[symbol].update(data)
        assert merged == reference[symbol], message
        state = reference[symbol]
        if message["type"] == "snapshot" or before.get("singleOpenInterest") != state["singleOpenInterest"]:
            expected_oi[symbol].append((state["singleOpenInterest"], state["singleOpenInterestValue"],
                                        state["openInterest"]))
    assert [m for m, _ in watch.tickers] == ticker_messages  # each once, in order, none held back
    assert {m["type"] for m in ticker_messages} == {"snapshot", "delta"}

    # Open interest is the single-side figure, half of Bybit's two-sided openInterest.
    events.extend(queue.take_nowait(len(queue)))
    emitted: dict[str, list[OpenInterest]] = defaultdict(list)
    for event in events:
        if isinstance(event, OpenInterest):
            emitted[event.symbol].append(event)
    assert set(emitted) == {i.symbol for i in INSTRUMENTS}
    for symbol, expected in expected_oi.items():
        assert len(expected) >= 4
        assert [(e.oi_base, e.oi_usd) for e in emitted[symbol]] == [(float(s), float(v)) for s, v, _ in expected]
        for event, (_, _, both) in zip(emitted[symbol], expected, strict=True):
            assert event.oi_base == pytest.approx(float(both) / 2, rel=1e-6)
