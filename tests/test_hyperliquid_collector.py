"""Hyperliquid end to end: the generic collector running ``SPEC`` against the fake venue speaking Hyperliquid's
protocol. No Redis: events land on the queue the writer would drain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect

from collectors.base import FeedConnection, Heartbeat
from collectors.hyperliquid import SPEC
from collectors.hyperliquid.instruments import INFO_PATH, fetch_instruments
from collectors.hyperliquid.parse import HyperliquidParser
from collectors.hyperliquid.spec import ping, subscribe_messages, topics
from collectors.instruments import Instrument
from collectors.venue import VenueSpec
from flushwatch.events import Depth, FundingMark, OpenInterest, Trade
from flushwatch.fake.hyperliquid import PONG, HyperliquidProtocol, book_frame, ctx_frame, trade_frame
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until
from tests.harness import RunningCollector, fast_settings

INSTRUMENTS = [Instrument("hyperliquid", c, c, "linear", 1.0, 1.0) for c in ("BTC", "ETH")]
TOPICS = set(topics(INSTRUMENTS))
T0 = 1_760_000_000_000  # ms
FAST = dataclasses.replace(SPEC, subscribe_interval_s=0.01)
"""The real pacing (0.2 s) would spend a second on six subscriptions."""


def book(coin: str, time_ms: int, mid: float = 100.0) -> str:
    return book_frame(coin, time_ms, [(mid - 0.5, 2.0), (mid - 1.0, 3.0)], [(mid + 0.5, 1.0), (mid + 1.0, 4.0)])


def ctx(coin: str, mark: str = "100.0", oi: str = "5000.0") -> str:
    return ctx_frame(coin, funding="0.0000125", open_interest=oi, mark=mark, oracle="99.9")


def rejected(reason: str) -> float:
    return float(FEED_REJECTED.labels("hyperliquid", reason)._value.get())


class Running(RunningCollector):
    """A collector for ``INSTRUMENTS`` running against ``venue`` until the block ends."""

    def __init__(self, venue: FakeVenue, spec: VenueSpec = FAST, stale_after_s: float = 10.0) -> None:
        super().__init__(spec, INSTRUMENTS, fast_settings(venue.ws_url, stale_after_s=stale_after_s))

    @property
    def connection(self) -> FeedConnection:
        [connection] = self.collector.connections  # six topics: one connection
        return connection

    def has(self, kind: type, count: int = 1) -> bool:
        return len(self.of(kind)) >= count


def subscribed_on(venue: FakeVenue, connections: int = 1) -> bool:
    """``connections`` connections so far, the latest open one subscribed to every topic."""
    opened = venue.open_connections
    return venue.counts.connections >= connections and bool(opened) and opened[-1].topics == TOPICS


@pytest.fixture
async def venue() -> AsyncIterator[FakeVenue]:
    async with FakeVenue(HyperliquidProtocol(INSTRUMENTS)) as server:
        # The venue always has past trades; a subscriber's first trades frame replays them.
        await server.publish([trade_frame("BTC", 1, T0 - 60_000, 99.0, 0.5),
                              trade_frame("ETH", 2, T0 - 60_000, 9.0, 1.0)])
        yield server


async def test_subscribes_each_coin_and_type_and_reads_the_acks(venue: FakeVenue) -> None:
    async with Running(venue):
        await until(lambda: subscribed_on(venue), within=5)
        [conn] = venue.open_connections
        sent = [json.loads(m) for _, m in conn.received]
        assert {(m["method"], m["subscription"]["type"], m["subscription"]["coin"]) for m in sent} == {
            ("subscribe", t.partition(":")[0], t.partition(":")[2]) for t in TOPICS}
        acks = [a for frame in conn.sent for a in HyperliquidParser(INSTRUMENTS).parse(frame, 1).acks]
        assert set(acks) == TOPICS and len(acks) == 6
        assert not any('"channel":"error"' in frame for frame in conn.sent)


async def test_every_channel_reaches_the_queue_normalised(venue: FakeVenue) -> None:
    replayed = rejected("stale")
    async with Running(venue) as run:
        await until(lambda: subscribed_on(venue), within=5)
        await venue.publish([book("BTC", T0), ctx("BTC"), trade_frame("BTC", 3, T0 + 1, 100.5, 0.25, "A"),
                             book("ETH", T0 + 500, mid=10.0)])
        await until(lambda: run.has(Depth, 2) and run.has(Trade) and run.has(FundingMark) and run.has(OpenInterest))
        [trade] = [e for e in run.events if isinstance(e, Trade)]  # the replayed trades predate the watch
        assert (trade.symbol, trade.price, trade.size, trade.side, trade.ts_event) == (
            "BTC", 100.5, 0.25, "sell", (T0 + 1) * 1_000_000)
        assert rejected("stale") - replayed == 2  # the two replays, one per coin
        [oi] = [e for e in run.events if isinstance(e, OpenInterest)]
        assert (oi.oi_base, oi.oi_usd, oi.ts_event) == (5000.0, 500_000.0, T0 * 1_000_000)
        [mark] = [e for e in run.events if isinstance(e, FundingMark)]
        assert (mark.funding_interval_h, mark.funding_8h) == (1.0, pytest.approx(0.0001))
        assert sorted(e.mid for e in run.events if isinstance(e, Depth)) == [10.0, 100.0]


async def test_pings_keep_alive_a_connection_the_venue_would_cut_as_idle() -> None:
    protocol = HyperliquidProtocol(INSTRUMENTS, client_idle_timeout_s=0.6)
    spec = dataclasses.replace(FAST, heartbeat=Heartbeat(0.15, ping))
    async with FakeVenue(protocol, tick_s=0.05) as venue, Running(venue, spec) as run:
        await until(lambda: subscribed_on(venue), within=5)
        [conn] = venue.open_connections
        await until(lambda: sum(m == '{"method":"ping"}' for _, m in conn.received) >= 8, within=5)
        assert sum(frame == PONG for frame in conn.sent) >= 8
        assert venue.counts.closed_idle == 0 and venue.counts.connections == 1
        assert run.connection.reconnects == {}


async def test_without_pings_the_venue_cuts_the_idle_connection_and_it_is_replaced() -> None:
    protocol = HyperliquidProtocol(INSTRUMENTS, client_idle_timeout_s=0.4)
    async with FakeVenue(protocol, tick_s=0.05) as venue, \
            Running(venue, dataclasses.replace(FAST, heartbeat=None)) as run:
        await until(lambda: venue.counts.closed_idle >= 1 and subscribed_on(venue, 2), within=5)
        assert run.connection.reconnects.get("closed_1000", 0) >= 1


async def test_reconnect_resubscribes_and_gets_a_fresh_snapshot(venue: FakeVenue) -> None:
    async with Running(venue) as run:
        await until(lambda: subscribed_on(venue), within=5)
        first_book, first_ctx = book("BTC", T0), ctx("BTC")
        await venue.publish([first_book, first_ctx, trade_frame("BTC", 3, T0 + 1, 100.5, 0.25)])
        await until(lambda: run.has(Depth) and run.has(Trade) and run.has(OpenInterest))
        duplicates = rejected("duplicate")

        assert await venue.drop_connections() == 1
        await until(lambda: subscribed_on(venue, 2), within=5)
        fresh = venue.open_connections[-1]
        assert first_book in fresh.sent and first_ctx in fresh.sent  # the state as of now, before any push
        assert any('"tid":3' in frame for frame in fresh.sent if frame.startswith('{"channel":"trades"'))
        # The snapshot repeats what was seen: the book and the last trade are duplicates, the context unchanged.
        await until(lambda: rejected("duplicate") - duplicates >= 2, within=5)
        await venue.publish([book("BTC", T0 + 500, mid=101.0), ctx("BTC", oi="5100.0"),
                             trade_frame("BTC", 4, T0 + 600, 101.5, 1.0)])
        await until(lambda: run.has(Depth, 2) and run.has(Trade, 2) and run.has(OpenInterest, 2))
        assert [t.price for t in run.events if isinstance(t, Trade)] == [100.5, 101.5]
        assert [d.mid for d in run.events if isinstance(d, Depth)] == [100.0, 101.0]
        assert run.connection.reconnects.get("closed_1006", 0) == 1


async def test_a_stalled_feed_is_replaced(venue: FakeVenue) -> None:
    async def pushing() -> None:
        for i in range(10_000):
            await venue.publish([book("BTC", T0 + 500 * i)])
            await asyncio.sleep(0.05)

    async with Running(venue, stale_after_s=0.5) as run:
        await until(lambda: subscribed_on(venue), within=5)
        pusher = asyncio.create_task(pushing())
        try:
            await until(lambda: run.has(Depth, 3), within=5)
            venue.stall(1.5)
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 1, within=5)
            await until(lambda: subscribed_on(venue, 2), within=5)
            before = len([e for e in run.drain() if isinstance(e, Depth)])
            await until(lambda: run.has(Depth, before + 2), within=5)  # the replacement carries the feed
        finally:
            pusher.cancel()


async def test_instruments_come_from_the_info_endpoint() -> None:
    listed = [Instrument("hyperliquid", "BTC", "BTC", "linear", 1.0, 1.0, oi_usd=2.9e9, volume_usd_24h=2.6e9),
              Instrument("hyperliquid", "ETH", "ETH", "linear", 1.0, 1.0, active=False, oi_usd=5e8,
                         volume_usd_24h=1e8)]
    async with FakeVenue(HyperliquidProtocol(listed)) as venue, httpx.AsyncClient() as client:
        await venue.publish([ctx("BTC", mark="100000.0")])  # the info answer values BTC at its last mark
        found = await fetch_instruments(client, venue.rest_url + "/")
        [request] = venue.rest_requests
        assert (request.method, request.path) == ("POST", INFO_PATH)
        assert json.loads(request.body) == {"type": "metaAndAssetCtxs"}
        url = venue.rest_url + INFO_PATH
        assert (await client.get(url)).status_code == 405
        assert (await client.post(url, json={"type": "noSuchThing"})).status_code == 422
        assert (await client.post(url, content=b"not json")).status_code == 400
    assert [(i.symbol, i.active, i.funding_interval_h) for i in found] == [("BTC", True, 1.0), ("ETH", False, 1.0)]
    btc, eth = found
    assert btc.oi_usd == pytest.approx(2.9e9) and btc.volume_usd_24h == pytest.approx(2.6e9)
    assert eth.oi_usd == pytest.approx(5e8) and eth.volume_usd_24h == pytest.approx(1e8)


async def test_the_fake_refuses_bad_requests_in_the_venues_words(venue: FakeVenue) -> None:
    """What the collector's parser makes of each refusal: a counted ``venue_error`` with the venue's sentence."""
    parser = HyperliquidParser(INSTRUMENTS)
    requests = [
        '{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}',
        '{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}',
        '{"method":"subscribe","subscription":{"type":"trades","coin":"NOPE"}}',
        '{"method":"subscribe","subscription":{"type":"liquidations","coin":"BTC"}}',
        "not json",
        '{"method":"ping"}',
    ]
    async with connect(venue.ws_url) as ws:
        answers = []
        for i, request in enumerate(requests):
            await ws.send(request)
            answers.append(await asyncio.wait_for(ws.recv(), 5))
            if i == 0:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["channel"] == "trades"  # the replay
    assert parser.parse(answers[0], 1).acks == ["trades:BTC"]
    assert [parser.parse(a, 1).rejects[0].detail for a in answers[1:5]] == [
        'Already subscribed: {"type":"trades","coin":"BTC"}',
        'Invalid subscription {"type":"trades","coin":"NOPE"}',
        'Error parsing JSON into valid websocket request: {"method":"subscribe","subscription":'
        '{"type":"liquidations","coin":"BTC"}}',
        "Error parsing JSON into valid websocket request: not json",
    ]
    assert all(parser.parse(a, 1).rejects[0].reason == "venue_error" for a in answers[1:5])
    assert answers[5] == PONG


async def test_the_fake_caps_subscriptions_and_messages_per_minute() -> None:
    protocol = HyperliquidProtocol(INSTRUMENTS, max_subscriptions=2, messages_per_minute=4)
    session = protocol.session()
    answers = [session.handle(m).replies[0] for m in subscribe_messages(topics(INSTRUMENTS)[:4], 1)]
    assert [json.loads(a)["channel"] for a in answers[:2]] == ["subscriptionResponse"] * 2
    assert json.loads(answers[2])["data"] == "Cannot subscribe to more than 2 channels."
    assert json.loads(answers[3])["channel"] == "error"
    assert json.loads(session.handle('{"method":"ping"}').replies[0])["data"] == \
        "Cannot send more than 4 messages per minute."
