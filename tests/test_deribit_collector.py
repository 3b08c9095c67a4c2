"""The Deribit spec run by the generic collector against the fake venue: subscribe and acks, events, heartbeats,
reconnects with a fresh book snapshot, gap resync, silence. No Redis: events land on the writer's queue."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collectors.base import Heartbeat
from collectors.deribit import SPEC
from collectors.deribit.spec import keepalive_message, topics
from collectors.instruments import Instrument
from collectors.venue import VenueSpec
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake import deribit as fake
from flushwatch.fake.venue_server import Connection, FakeReply, FakeVenue
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until
from tests.harness import RunningCollector, fast_settings

BTC = Instrument("deribit", "BTC-PERPETUAL", "BTC", "inverse", 1.0, 8.0, oi_usd=9e8, volume_usd_24h=2e9)
SOL = Instrument("deribit", "SOL_USDC-PERPETUAL", "SOL", "linear", 1.0, 8.0, oi_usd=3e6, volume_usd_24h=1e7)
INSTRUMENTS = [BTC, SOL]
FAST = dataclasses.replace(SPEC, subscribe_interval_s=0.01)
T0 = 1_760_000_000_000  # ms
SNAPSHOT = fake.book_frame("BTC-PERPETUAL", 100, T0, [("new", 59_999.5, 50_000), ("new", 59_999.0, 10_000)],
                           [("new", 60_000.5, 30_000)])


def change(change_id: int, prev: int, price: float = 59_999.0, amount: float = 20_000) -> str:
    return fake.book_frame("BTC-PERPETUAL", change_id, T0 + change_id, [("change", price, amount)], [],
                           prev_change_id=prev)


def rejected(reason: str) -> float:
    value: float = FEED_REJECTED.labels("deribit", reason)._value.get()
    return value


@contextlib.asynccontextmanager
async def deribit(**options: Any) -> AsyncIterator[FakeVenue]:
    async with FakeVenue(fake.DeribitProtocol(INSTRUMENTS, **options), tick_s=0.05) as venue:
        yield venue


class Running(RunningCollector):
    """A collector running against the fake until the block ends."""

    def __init__(self, venue: FakeVenue, spec: VenueSpec = FAST, stale_after_s: float = 30.0) -> None:
        super().__init__(spec, INSTRUMENTS, fast_settings(venue.ws_url, stale_after_s=stale_after_s))

    def count(self, kind: type) -> int:
        return len(self.of(kind))


def subscribed(venue: FakeVenue) -> bool:
    return venue.subscribed() >= set(topics(INSTRUMENTS))


def methods(conn: Connection) -> list[str]:
    return [json.loads(text).get("method", "") for _, text in conn.received]


async def test_subscribes_after_set_heartbeat_and_normalises_every_channel() -> None:
    errors = rejected("venue_error")
    async with deribit() as venue, Running(venue) as run:
        await until(lambda: subscribed(venue), within=5)
        [conn] = venue.open_connections
        assert methods(conn)[:2] == ["public/set_heartbeat", "public/subscribe"]
        answers = [json.loads(f) for f in conn.sent[:2]]
        assert answers[0]["result"] == "ok"
        assert sorted(answers[1]["result"]) == sorted(topics(INSTRUMENTS))
        await venue.publish([
            fake.ticker_frame("BTC-PERPETUAL", T0, mark=60_000.0, index=59_990.0, open_interest=6e8, funding_8h=1e-4),
            fake.trades_frame("BTC-PERPETUAL", [fake.trade("BTC-PERPETUAL", 1, 60_000.0, 12_000, "sell", T0, "MT")]),
            fake.trades_frame("SOL_USDC-PERPETUAL", [fake.trade("SOL_USDC-PERPETUAL", 1, 150.0, 4.0, "buy", T0)]),
            SNAPSHOT,
        ])
        await until(lambda: len(run.drain()) == 7)
        mark, oi, trade, long_liq, short_liq, sol, depth = run.events
        assert isinstance(mark, FundingMark) and (mark.funding_8h, mark.mark_price) == (1e-4, 60_000.0)
        assert isinstance(oi, OpenInterest) and (oi.oi_usd, oi.oi_base) == (6e8, 10_000.0)
        assert isinstance(trade, Trade) and (trade.size, trade.side) == (pytest.approx(0.2), "sell")
        assert isinstance(long_liq, Liquidation) and isinstance(short_liq, Liquidation)
        assert (long_liq.side, short_liq.side) == ("long", "short")
        assert isinstance(sol, Trade) and (sol.size, sol.notional_usd) == (4.0, 600.0)
        assert isinstance(depth, Depth) and depth.mid == 60_000.0
        assert all(e.ts_event == T0 * 1_000_000 for e in run.events)
        assert rejected("venue_error") == errors


async def test_test_requests_are_answered_and_keepalives_reach_the_fake() -> None:
    spec = dataclasses.replace(FAST, heartbeat=Heartbeat(0.1, keepalive_message))
    async with deribit(heartbeat_interval_s=0.2) as venue, Running(venue, spec):
        await until(lambda: subscribed(venue), within=5)
        [conn] = venue.open_connections
        session = conn.session
        assert isinstance(session, fake.DeribitSession)
        await until(lambda: session.tests_answered >= 3 and methods(conn).count("public/test") >= 8, within=5)
        assert cast(fake.DeribitProtocol, venue.protocol).heartbeat_failures == 0
        assert venue.open_connections == [conn]


def test_an_unanswered_test_request_closes_the_connection() -> None:
    session = fake.DeribitProtocol(INSTRUMENTS, heartbeat_interval_s=1.0).session()
    assert json.loads(session.handle(fake.json_request(1, "public/set_heartbeat", {"interval": 10})).replies[0])[
        "result"] == "ok"
    start = session.next_probe
    assert session.tick(start - 0.5) == FakeReply()
    assert session.tick(start) == FakeReply([fake.TEST_REQUEST])
    assert session.tick(start + 0.5).close is None  # still within the interval
    assert session.tick(start + 1.0) == FakeReply(close=fake.HEARTBEAT_CLOSE)  # a full interval, no public/test
    assert session.protocol.heartbeat_failures == 1


async def test_a_client_silent_after_test_request_is_closed_with_4000() -> None:
    async with deribit(heartbeat_interval_s=0.3) as venue, connect(venue.ws_url) as ws:
        await ws.send(fake.json_request(1, "public/set_heartbeat", {"interval": 10}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["result"] == "ok"
        assert await asyncio.wait_for(ws.recv(), 5) == fake.TEST_REQUEST  # and no answer goes back
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == fake.HEARTBEAT_CLOSE
    [conn] = venue.connections
    assert conn.close_code == 4000 and venue.counts.closed_idle == 0
    assert cast(fake.DeribitProtocol, venue.protocol).heartbeat_failures == 1


async def test_reconnect_resubscribes_and_gets_a_fresh_snapshot() -> None:
    lost = rejected("out_of_sync")
    async with deribit() as venue, Running(venue) as run:
        await until(lambda: subscribed(venue), within=5)
        trade = fake.trades_frame("BTC-PERPETUAL", [fake.trade("BTC-PERPETUAL", 7, 60_000.0, 100, "buy", T0)])
        await venue.publish([SNAPSHOT, change(101, 100), change(102, 101, amount=0), trade])
        await until(lambda: run.count(Depth) == 3 and run.count(Trade) == 1)
        assert await venue.drop_connections() == 1
        await until(lambda: venue.counts.connections == 2 and subscribed(venue), within=5)
        assert run.connection.reconnects.get("closed_1006") == 1
        [conn] = venue.open_connections
        book = [m["params"]["data"] for m in map(json.loads, conn.sent)
                if m.get("params", {}).get("channel", "").startswith("book.")]
        assert [(b["type"], b["change_id"], b["bids"]) for b in book] == [
            ("snapshot", 102, [["new", 59_999.5, 50_000]])]  # rebuilt from what was published, the deleted level gone
        await venue.publish([trade, change(103, 102, price=59_998.0, amount=5_000)])
        await until(lambda: run.count(Depth) == 5)  # the snapshot, then the change on top of it
        depth = run.events[-1]
        assert isinstance(depth, Depth) and depth.bid_usd[0] == pytest.approx(55_000.0)
        assert run.count(Trade) == 1  # the repeated trade_seq was dropped
        assert rejected("out_of_sync") == lost


async def test_a_gap_resubscribes_the_book_and_resyncs() -> None:
    lost = rejected("out_of_sync")
    async with deribit() as venue, Running(venue) as run:
        await until(lambda: subscribed(venue), within=5)
        await venue.publish([SNAPSHOT, change(105, 103)])  # 101..104 never came
        await until(lambda: run.count(Depth) == 2)  # the snapshot, and the fresh one the resubscribe brought
        [conn] = venue.open_connections
        assert methods(conn)[-2:] == ["public/unsubscribe", "public/subscribe"]
        assert rejected("out_of_sync") == lost + 1
        await venue.publish([change(106, 105)])
        await until(lambda: run.count(Depth) == 3)


async def test_silence_is_replaced_by_a_new_connection() -> None:
    async with deribit() as venue, Running(venue, stale_after_s=0.4) as run:
        await until(lambda: subscribed(venue), within=5)

        async def tickers() -> None:
            for i in range(1, 10_000):
                await venue.publish([fake.ticker_frame("BTC-PERPETUAL", T0 + i, mark=60_000.0, index=60_000.0,
                                                       open_interest=1e8, funding_8h=0.0)])
                await asyncio.sleep(0.02)

        pump = asyncio.create_task(tickers())
        try:
            await until(lambda: run.count(OpenInterest) >= 3)
            venue.stall(1.5)
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 1, within=5)
            before = run.count(OpenInterest)
            await until(lambda: subscribed(venue) and run.count(OpenInterest) > before, within=5)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        assert venue.counts.connections >= 2


async def test_instruments_come_from_the_rest_endpoints() -> None:
    async with deribit(marks={"SOL_USDC-PERPETUAL": 150.0}) as venue, httpx.AsyncClient() as client:
        found = {i.symbol: i for i in await SPEC.fetch_instruments(client, venue.rest_url)}
        assert venue.counts.rest_requests == 3  # instruments, then the BTC and USDC summaries
        refused = await client.get(venue.rest_url + fake.SUMMARY_PATH, params={"currency": "any"})
        posted = await client.post(venue.rest_url + fake.INSTRUMENTS_PATH, params={"currency": "any"})
    assert refused.status_code == 400 and posted.status_code == 405
    assert [(r.method, r.path, r.query.get("currency")) for r in venue.rest_requests[:3]] == [
        ("GET", fake.INSTRUMENTS_PATH, "any"), ("GET", fake.SUMMARY_PATH, "BTC"), ("GET", fake.SUMMARY_PATH, "USDC")]
    assert found == {"BTC-PERPETUAL": BTC, "SOL_USDC-PERPETUAL": SOL}  # USD open interest and volume for ranking


async def test_the_fake_answers_like_deribit() -> None:
    async with deribit(client_idle_timeout_s=0.5) as venue, connect(venue.ws_url) as ws:
        async def ask(message: str) -> dict[str, Any]:
            await ws.send(message)
            reply: dict[str, Any] = json.loads(await ws.recv())
            return reply

        assert (await ask("not json"))["error"] == {"code": 11050, "message": "bad_request", "data": "invalid json"}
        assert (await ask(fake.json_request(3, "public/nope", {})))["error"]["code"] == -32601
        assert (await ask(fake.json_request(4, "public/set_heartbeat", {"interval": 5})))["error"]["code"] == -32602
        raw = await ask(fake.json_request(5, "public/subscribe", {"channels": ["book.BTC-PERPETUAL.raw"]}))
        assert raw["error"]["code"] == 13778
        assert (await ask(fake.json_request(6, "public/subscribe", {"channels": ["book.NOPE.100ms"]})))["result"] == []
        await venue.publish([SNAPSHOT])
        name = "book.BTC-PERPETUAL.100ms"
        assert (await ask(fake.json_request(7, "public/subscribe", {"channels": [name]})))["result"] == [name]
        assert json.loads(await ws.recv())["params"]["data"]["change_id"] == 100  # the snapshot
        assert (await ask(fake.json_request(8, "public/subscribe", {"channels": [name]})))["id"] == 8  # no snapshot
        assert (await ask(fake.json_request(9, "public/unsubscribe", {"channels": [name]})))["result"] == [name]
        await ask(fake.json_request(10, "public/subscribe", {"channels": [name]}))
        assert json.loads(await ws.recv())["params"]["data"]["type"] == "snapshot"
        with pytest.raises(ConnectionClosed):  # silent past the idle cut-off
            await asyncio.wait_for(ws.recv(), 3)
        assert venue.counts.closed_idle == 1
