"""Faults of the exchange side, each against the fake venue with a real Redis behind the writer: every frame the
venue sent reaches Redis as events exactly once or is counted as rejected with a reason.

Disconnect storms with close codes 1006/1011/1013, refused handshakes with ``Retry-After``, a connection that
handshakes and never pushes (on every venue), a stall mid-cascade, duplicate and out-of-order frames (on every
venue), sequence gaps in book deltas (the venues with deltas), and a venue clock ahead or behind the local one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from faults import assert_conserved, in_redis, reference, rejected, unstamped, writing
from harness import RunningCollector, fast_settings
from test_collector import settings_for
from test_end_to_end import agg_trade, stored_trade_ids

from collectors.binance.collector import BinanceCollector
from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.venues import GENERIC, spec_of
from flushwatch.events import Depth, Trade
from flushwatch.fake.bitmex import BitmexProtocol
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.deribit import DeribitProtocol
from flushwatch.fake.hyperliquid import HyperliquidProtocol
from flushwatch.fake.okx import FakeOkx
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.fake.venue_server import FakeProtocol, FakeVenue
from flushwatch.servers import RunningServer
from flushwatch.telemetry import FEED_COVERAGE
from flushwatch.waiting import until

T0 = 1_760_000_000_000
PROTOCOLS: dict[str, Callable[[Sequence[Instrument]], FakeProtocol]] = {
    "bybit": BybitProtocol, "okx": FakeOkx, "deribit": DeribitProtocol, "hyperliquid": HyperliquidProtocol,
    "bitmex": BitmexProtocol}
assert set(PROTOCOLS) == set(GENERIC)


def samples(venue: str, kind: str, n: int) -> tuple[list[Instrument], list[str]]:
    """``n`` valid frames of ``kind`` in the venue's own format, from its fake protocol module."""
    instruments, frames = importlib.import_module(f"flushwatch.fake.{venue}").sample_frames(kind, n)
    return instruments, frames


def subscribed(fake: FakeVenue, venue: str, instruments: Sequence[Instrument]) -> bool:
    """Every topic of the venue's collector is subscribed on an open connection."""
    return set(spec_of(venue).topics(instruments)) <= fake.subscribed()


def sent_frames(venue: FakeVenue) -> list[str]:
    """Everything the venue sent, connection after connection (one is closed before the next opens)."""
    return [frame for conn in venue.connections for frame in conn.sent]


def market(fake: FakeBinance, exclude: set[int] = frozenset()) -> bool:  # type: ignore[assignment]
    return any(c.route == "market" and "btcusdt@aggTrade" in c.streams and c.id not in exclude
               for c in fake.open_connections)


def trades_of(frames: Sequence[str | bytes], symbols: Sequence[str]) -> list[Trade]:
    """The trades a fresh Binance parser makes of ``frames``, without receive times."""
    instruments = [Instrument("binance", s, s.removesuffix("USDT"), "linear", 1.0, 8.0) for s in symbols]
    return [e for e in reference("binance", instruments, frames)[0] if isinstance(e, Trade)]


def aggtrade_ids(fake: FakeBinance) -> list[int]:
    """Trade ids of every aggTrade frame the venue finished sending, resends included, in sending order."""
    return [json.loads(s.data)["data"]["a"] for c in fake.connections for s in c.sent
            if s.stream == "btcusdt@aggTrade" and s.kind in ("push", "resend")]


@pytest.fixture
def binance_run(fake: FakeBinance, redis_server: RunningServer) -> Callable[..., Any]:
    """Starts a Binance collector against ``fake`` and a writer into ``redis_server``; returns the collector."""

    class Run:
        def __init__(self, **overrides: Any) -> None:
            self.queue = EventQueue(100_000)
            self.collector = BinanceCollector(settings_for(fake, **overrides), self.queue)
            self.stop = asyncio.Event()

        async def __aenter__(self) -> BinanceCollector:
            self.writer_cm = writing(self.queue, redis_server.url)
            self.writer = await self.writer_cm.__aenter__()
            self.task = asyncio.create_task(self.collector.run(self.stop))
            return self.collector

        async def __aexit__(self, *exc: object) -> None:
            self.stop.set()
            await asyncio.wait_for(self.task, 10)
            await self.writer_cm.__aexit__(None, None, None)

    return Run


# --- connections ------------------------------------------------------------------------------------------


async def test_a_disconnect_storm_loses_and_duplicates_nothing(
        fake: FakeBinance, redis_server: RunningServer, binance_run: Callable[..., Any]) -> None:
    """Nine drops in a row, cycling through an abrupt 1006, 1011 (server error) and 1013 (try again later); on
    each new connection the venue repeats the last 20 trades the previous one delivered and one trade from long
    ago. Every trade is stored once, in order; every repeat is counted; each reconnect waits at least the fixed
    half of the first backoff step and, when the dropped connection had delivered data, not the grown steps of
    a failing series."""
    codes = [None, 1011, 1013] * 3
    before = rejected("binance")
    async with binance_run(backoff_initial_s=0.05, backoff_max_s=5.0) as collector:
        seen: set[int] = set()
        waits: list[float] = []
        market_waits: list[float] = []
        for k, code in enumerate([*codes, "end"]):
            await until(lambda seen=seen: market(fake, seen), within=10)
            first = 1 if k == 0 else 100 * k - 19
            frames = [agg_trade("BTCUSDT", i, T0 + i) for i in range(first, 100 * (k + 1) + 1)]
            if k:
                frames.insert(20, agg_trade("BTCUSDT", 7, T0 + 7))  # an old trade, out of order
            await fake.publish(frames)
            await until(lambda n=100 * (k + 1): len(stored_trade_ids(redis_server.url)) == n, poll=0.05)
            if code == "end":
                break
            seen |= {c.id for c in fake.connections}
            handshakes = len(fake.handshake_times)
            dropped_at = time.monotonic()
            assert await fake.drop_connections(code) == 2  # the market and the public connection
            await until(lambda seen=seen: market(fake, seen), within=10)
            market_waits.append(time.monotonic() - dropped_at)
            await until(lambda n=handshakes + 2: len(fake.handshake_times) >= n, within=10)
            waits += [t - dropped_at for t in fake.handshake_times[handshakes:handshakes + 2]]
        reconnects = collector.connections[0].reconnects
    stored = [ms - T0 for ms in stored_trade_ids(redis_server.url)]
    assert stored == list(range(1, 1001))  # once each, in order
    assert len(aggtrade_ids(fake)) == 1000 + 9 * 21 and set(aggtrade_ids(fake)) == set(range(1, 1001))
    counted = rejected("binance")
    counted.subtract(before)
    # Per reconnect: the last trade delivered again is a duplicate; the 19 before it and trade 7 are stale.
    assert +counted == Counter({"duplicate": 9, "stale": 9 * 20})
    assert reconnects == {"closed_1006": 3, "closed_1011": 3, "closed_1013": 3}
    assert min(waits) >= 0.025  # the fixed half of the first step: never an instant reconnect
    # The market connection delivered data before each drop, so it starts over at the first step; a grown
    # series would wait 2.5 s or more by the ninth drop (as the public connection, which carried nothing, does).
    assert max(market_waits) < 1.0


async def test_refused_handshakes_back_off_exponentially(
        fake: FakeBinance, redis_server: RunningServer, binance_run: Callable[..., Any]) -> None:
    """A venue refusing every handshake (no ``Retry-After``) sees each connection's attempts spread further
    apart, at least half of each doubled step; then the feed flows and loses nothing."""
    fake.reject_handshakes(429, count=10)
    async with binance_run(backoff_initial_s=0.05, backoff_max_s=0.8) as collector:
        await until(lambda: market(fake), within=20)
        await fake.publish([agg_trade("BTCUSDT", i, T0 + i) for i in range(1, 51)])
        await until(lambda: len(stored_trade_ids(redis_server.url)) == 50, poll=0.05)
        reconnects = [c.reconnects.get("http_429", 0) for c in collector.connections]
    assert sum(reconnects) == 10 and min(reconnects) >= 1
    times = fake.handshake_times[:11]
    # Two connections interleave: of any three successive attempts, two are the same connection's, so the
    # span of three is at least that connection's wait, at least half of a step of 0.05 * 2^(attempt - 1).
    assert min(times[i + 2] - times[i] for i in range(len(times) - 2)) >= 0.025
    assert times[-1] - times[0] >= 2 * (0.025 + 0.05 + 0.1 + 0.2)  # each connection's first four waits at least
    assert sorted(ms - T0 for ms in stored_trade_ids(redis_server.url)) == list(range(1, 51))


@pytest.mark.parametrize("status", [429, 418])
async def test_retry_after_is_honoured(
        fake: FakeBinance, redis_server: RunningServer, binance_run: Callable[..., Any], status: int) -> None:
    """429 (limited) and 418 (banned) with ``Retry-After: 1``: no connection tries again before a second has
    passed, though its own backoff would allow it after 50 ms."""
    fake.reject_handshakes(status, count=4, retry_after_s=1)
    async with binance_run(backoff_initial_s=0.05, backoff_max_s=0.1) as collector:
        await until(lambda: market(fake), within=20)
        await fake.publish([agg_trade("BTCUSDT", i, T0 + i) for i in range(1, 51)])
        await until(lambda: len(stored_trade_ids(redis_server.url)) == 50, poll=0.05)
        assert sum(c.reconnects.get(f"http_{status}", 0) for c in collector.connections) == 4
    times = fake.handshake_times[:5]
    assert [times[i + 2] - times[i] >= 1.0 for i in range(3)] == [True] * 3  # see the backoff test for why 3
    assert sorted(ms - T0 for ms in stored_trade_ids(redis_server.url)) == list(range(1, 51))


@pytest.mark.parametrize("venue", GENERIC)
async def test_a_connection_that_never_pushes_is_replaced_on_every_venue(
        redis_server: RunningServer, venue: str) -> None:
    """The venue handshakes, acknowledges and answers heartbeats, and sends no data: the watchdog replaces the
    connection again and again. Once data flows, every frame sent is conserved."""
    instruments, frames = samples(venue, "trade", 40)
    spec = dataclasses.replace(spec_of(venue), subscribe_interval_s=0.01)  # subscribed well within 0.4 s
    before = rejected(venue)
    async with FakeVenue(PROTOCOLS[venue](instruments)) as fake:
        fake.retire()
        settings = fast_settings(fake.ws_url, stale_after_s=0.4)
        async with RunningCollector(spec, instruments, settings) as run, writing(run.queue, redis_server.url):
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 2, within=10)
            await fake.publish(frames[:10])
            assert fake.counts.unrouted["retired"] == 10
            opened = fake.counts.connections
            fake.retire(False)
            await until(lambda: fake.counts.connections > opened and subscribed(fake, venue, instruments), within=5)
            await fake.publish(frames[10:])
            await until(settled(fake, venue, instruments, redis_server.url), within=5, poll=0.05)
        stored = assert_conserved(venue, instruments, sent_frames(fake), redis_server.url, before)
    assert run.connection.reconnects["stale"] >= 2
    # A resubscription may first replay recent trades, withheld while retired: BitMEX's image carries them
    # (stored), Hyperliquid's replay predates the watch (dropped). The live ones follow, each once.
    expected, _ = reference(venue, instruments, frames[10:])
    assert unstamped(stored)[-len(expected):] == expected


async def test_a_stall_mid_cascade_is_detected_replaced_and_coverage_recovers(
        fake: FakeBinance, redis_server: RunningServer, binance_run: Callable[..., Any]) -> None:
    """The scripted flush plays; in its cascade the venue stops pushing for 2 s while the connections stay
    open. The watchdog replaces them, coverage falls and recovers, and every trade the venue did send is stored
    exactly once (what was due during the stall the venue never sent, and counted as withheld)."""
    speed = 40.0
    scenario = Scenario("flush", seed=3, speed=speed)
    fake.register(scenario)
    coverage: list[float] = []
    async with binance_run(symbols=scenario.symbols, stale_after_s=0.5) as collector:
        collector.sink._window_ns = 300_000_000  # the coverage window (60 s) shortened to the test's scale
        await until(lambda: len(fake.open_connections) == 2 and market(fake), within=10)
        pump = fake.attach(scenario)
        await until(lambda: scenario.phase_at("BTC", scenario.now_s()).name == "cascade", within=30, poll=0.05)

        async def sample() -> None:
            while True:
                coverage.append(FEED_COVERAGE.labels("binance")._value.get())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            await until(lambda: coverage and coverage[-1] == 1.0, within=5)
            fake.stall(2.0)
            await until(lambda: sum(c.reconnects.get("stale", 0) for c in collector.connections) >= 1, within=5)
            await until(lambda: 0.0 in coverage and coverage[-1] == 1.0, within=10)
        finally:
            sampler.cancel()
        pump.cancel()
        # Frames the pump queued before it was cancelled are still being sent: count them once they are out.
        assert all(await asyncio.gather(*(c.catch_up(0, 10) for c in fake.open_connections)))
        pushes = [s.data for c in fake.connections for s in c.sent if s.stream and s.stream.endswith("@aggTrade")]
        sent_trades = trades_of(pushes, scenario.symbols)

        def stored_trades() -> list[Trade]:
            return [e for e in unstamped(in_redis(redis_server.url)) if isinstance(e, Trade)]

        with contextlib.suppress(TimeoutError):
            await until(lambda: stored_trades() == sent_trades, within=10, poll=0.1)
        stored = stored_trades()
        assert stored == sent_trades, (len(stored), len(sent_trades),
                                       [t for t in sent_trades if t not in stored][:5],
                                       [t for t in stored if t not in sent_trades][:5])
    assert fake.counts.withheld["stalled"] > 0
    assert coverage[0] == 1.0 and 0.0 in coverage and coverage[-1] == 1.0
    assert len(sent_trades) > 100


# --- frames -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", GENERIC)
async def test_duplicates_and_out_of_order_frames_are_dropped_and_counted(
        redis_server: RunningServer, venue: str) -> None:
    """After 40 trades the venue repeats the last ten (duplicates) and five from the start (out of order, so
    stale by the venue's own ordering: id, sequence or time), then carries on: the 60 trades are stored once
    each, in order, and the 15 repeats are counted."""
    instruments, frames = samples(venue, "trade", 60)
    before = rejected(venue)
    async with FakeVenue(PROTOCOLS[venue](instruments)) as fake, RunningCollector(
            spec_of(venue), instruments, fast_settings(fake.ws_url)) as run, writing(run.queue, redis_server.url):
        await until(lambda: subscribed(fake, venue, instruments), within=5)
        await fake.publish(frames[:40] + frames[30:40] + frames[5:10] + frames[40:])
        last = reference(venue, instruments, frames)[0][-1]
        await until(lambda: any(unstamped([e]) == [last] for e in in_redis(redis_server.url)), within=5,
                    poll=0.05)
    stored = assert_conserved(venue, instruments, sent_frames(fake), redis_server.url, before)
    expected, _ = reference(venue, instruments, frames)
    skip = 1 if venue == "hyperliquid" else 0  # the first frame after subscribing is taken for the replay
    assert unstamped(stored) == expected[skip:]
    counted = rejected(venue)
    counted.subtract(before)
    assert counted["duplicate"] + counted["stale"] == 15 + skip


BOOK_TOPIC = {"bybit": "orderbook.", "deribit": "book."}


def empty_delta_after(venue: str, frame: str) -> str:
    """A delta that changes no level, next in sequence after ``frame`` and a second later: the book is reported
    again whatever the venue's depth cadence."""
    msg = json.loads(frame)
    if venue == "bybit":
        msg["ts"] += 1000
        msg["cts"] += 1000  # the matching engine's time, which the depth cadence follows
        msg["data"].update(b=[], a=[], u=msg["data"]["u"] + 1, seq=msg["data"]["seq"] + 1)
    else:
        data = msg["params"]["data"]
        data.update(bids=[], asks=[], prev_change_id=data["change_id"], change_id=data["change_id"] + 1,
                    timestamp=data["timestamp"] + 1000)
    return json.dumps(msg)


def within_depth(frames: list[str]) -> list[str]:
    """Bybit's sample deltas with only the levels of the first snapshot: ``orderbook.50`` never holds more than
    50 levels a side, and the venue's snapshot is cut there, so levels beyond would differ by construction."""
    snapshot = json.loads(frames[0])["data"]
    prices = {p for p, _ in snapshot["b"] + snapshot["a"]}
    out = frames[:1]
    for frame in frames[1:]:
        msg = json.loads(frame)
        for side in ("b", "a"):
            msg["data"][side] = [level for level in msg["data"][side] if level[0] in prices]
        out.append(json.dumps(msg))
    return out


def settled(fake: FakeVenue, venue: str, instruments: Sequence[Instrument], url: str) -> Callable[[], bool]:
    """True once Redis holds what the frames the venue sent so far make."""
    return lambda: unstamped(in_redis(url)) == reference(venue, instruments, sent_frames(fake))[0]


@pytest.mark.parametrize("venue", sorted(BOOK_TOPIC))
async def test_a_gap_in_book_deltas_resyncs_to_the_venues_book(redis_server: RunningServer, venue: str) -> None:
    """One delta never reaches the client (the venue applies it to its own book): the next delta reveals the
    gap, the collector resubscribes, and from the fresh snapshot on, its book is the venue's book."""
    instruments, frames = samples(venue, "book", 40)
    if venue == "bybit":
        frames = within_depth(frames)
    frames.append(empty_delta_after(venue, frames[-1]))
    before = rejected(venue)
    async with FakeVenue(PROTOCOLS[venue](instruments)) as fake, RunningCollector(
            spec_of(venue), instruments, fast_settings(fake.ws_url)) as run, writing(run.queue, redis_server.url):
        await until(lambda: subscribed(fake, venue, instruments), within=5)
        [topic] = [t for t in fake.subscribed() if t.startswith(BOOK_TOPIC[venue])]
        await fake.publish(frames[:20])
        fake.retire()
        await fake.publish(frames[20:21])  # the lost delta
        fake.retire(False)
        await fake.publish(frames[21:22])
        [conn] = fake.open_connections
        await until(lambda: rejected(venue)["out_of_sync"] > before["out_of_sync"], within=5)
        await until(lambda: '"snapshot"' in conn.sent[-1], within=5)  # the resubscription's snapshot
        await fake.publish(frames[22:])
        await until(settled(fake, venue, instruments, redis_server.url), within=5, poll=0.05)
        truth = fake.protocol.snapshot(topic)
    stored = assert_conserved(venue, instruments, sent_frames(fake), redis_server.url, before)
    counted = rejected(venue)
    counted.subtract(before)
    assert +counted == Counter({"out_of_sync": 1})
    [venue_book] = [e for e in reference(venue, instruments, truth)[0] if isinstance(e, Depth)]
    ours = [e for e in stored if isinstance(e, Depth)][-1]
    assert (ours.mid, ours.spread_bps, ours.reach_bps) == (venue_book.mid, venue_book.spread_bps, venue_book.reach_bps)
    # A book kept by deltas sums its bands in another order than one built at once: equal to the last bits.
    assert ours.bid_usd == pytest.approx(venue_book.bid_usd, rel=1e-12)
    assert ours.ask_usd == pytest.approx(venue_book.ask_usd, rel=1e-12)


@pytest.mark.parametrize("skew_s", [-5.0, 5.0])
async def test_a_skewed_venue_clock_is_kept_as_event_time(
        fake: FakeBinance, redis_server: RunningServer, binance_run: Callable[..., Any], skew_s: float) -> None:
    """The venue's clock runs ahead or behind by seconds: ``ts_event`` is the venue's time as sent, ``ts_recv``
    the local clock at receipt, and nothing is rejected for it. (No metric exports the skew.)"""
    before = rejected("binance")
    async with binance_run():
        await until(lambda: market(fake), within=10)
        local0 = time.time_ns()
        venue_ms = [int(time.time() * 1000 + skew_s * 1000) + i for i in range(50)]
        await fake.publish([agg_trade("BTCUSDT", i + 1, t) for i, t in enumerate(venue_ms)])
        await until(lambda: len(stored_trade_ids(redis_server.url)) == 50, poll=0.05)
        local1 = time.time_ns()
    trades = [e for e in in_redis(redis_server.url) if isinstance(e, Trade)]
    assert [t.ts_event for t in trades] == [ms * 1_000_000 for ms in venue_ms]
    assert all(local0 <= t.ts_recv <= local1 for t in trades)
    assert [t.ts_recv for t in trades] == sorted(t.ts_recv for t in trades)
    counted = rejected("binance")
    counted.subtract(before)
    assert +counted == Counter()


@pytest.mark.parametrize("venue", GENERIC)
async def test_a_venue_clock_far_from_the_local_one_rejects_nothing(redis_server: RunningServer, venue: str) -> None:
    """Each venue's sample trades carry that venue's fixed clock, far from the local one: all are stored with
    the venue's time as ``ts_event`` and the local receive time as ``ts_recv``."""
    instruments, frames = samples(venue, "trade", 20)
    before = rejected(venue)
    async with FakeVenue(PROTOCOLS[venue](instruments)) as fake, RunningCollector(
            spec_of(venue), instruments, fast_settings(fake.ws_url)) as run, writing(run.queue, redis_server.url):
        await until(lambda: subscribed(fake, venue, instruments), within=5)
        local0 = time.time_ns()
        await fake.publish(frames)
        await until(lambda: len(in_redis(redis_server.url)) >= 19, within=5, poll=0.05)
        local1 = time.time_ns()
    stored = assert_conserved(venue, instruments, sent_frames(fake), redis_server.url, before)
    assert stored and all(local0 <= e.ts_recv <= local1 for e in stored)
    counted = rejected(venue)
    counted.subtract(before)
    assert +counted == (Counter({"stale": 1}) if venue == "hyperliquid" else Counter())  # the replay, as above
