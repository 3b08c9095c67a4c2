"""The BitMEX spec run by the generic collector against the fake venue: subscribe and acks, every table's
events, keepalive, reconnects that bring fresh images, silence, refused topics, the REST instrument list.
No Redis: events land on the queue the writer would drain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from collectors.base import Heartbeat
from collectors.bitmex import SPEC
from collectors.bitmex.spec import ping, topics
from collectors.instruments import Instrument
from collectors.venue import VenueSpec
from flushwatch.events import Depth, Event, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.bitmex import WELCOME, BitmexProtocol, iso_ms
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until
from tests.harness import RunningCollector, fast_settings

XBTUSD = Instrument("bitmex", "XBTUSD", "BTC", "inverse", 1.0, 8.0)
T0 = 1_786_310_817_000


def text(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def trade(k: int, side: str = "Buy") -> str:
    return text({"table": "trade", "action": "insert", "data": [{
        "timestamp": iso_ms(T0 + k), "symbol": "XBTUSD", "side": side, "size": 100 * k, "price": 65000.5,
        "tickDirection": "PlusTick", "trdMatchID": str(uuid.UUID(int=k)), "grossValue": 1, "homeNotional": 0.1,
        "foreignNotional": 100 * k}]})


def instrument_image(mark: float = 65010.0) -> str:
    return text({"table": "instrument", "action": "partial", "keys": ["symbol"], "filter": {"symbol": "XBTUSD"},
                 "data": [{"symbol": "XBTUSD", "rootSymbol": "XBT", "typ": "FFWCSX", "state": "Open",
                           "fundingRate": 0.0001, "fundingInterval": "2000-01-01T08:00:00.000Z",
                           "fundingTimestamp": iso_ms(T0 + 3_600_000), "markPrice": mark,
                           "indicativeSettlePrice": 65000.0, "openInterest": 300_000_000,
                           "timestamp": iso_ms(T0)}]})


def instrument_update(k: int, mark: float) -> str:
    return text({"table": "instrument", "action": "update",
                 "data": [{"symbol": "XBTUSD", "markPrice": mark, "fairPrice": mark, "timestamp": iso_ms(T0 + k)}]})


def level(i: int, side: str, size: int, price: float) -> dict[str, Any]:
    return {"symbol": "XBTUSD", "id": i, "side": side, "size": size, "price": price, "timestamp": iso_ms(T0)}


def book_image() -> str:
    return text({"table": "orderBookL2_25", "action": "partial", "keys": ["symbol", "id", "side"],
                 "filter": {"symbol": "XBTUSD"},
                 "data": [level(1, "Buy", 5000, 65000.0), level(2, "Sell", 7000, 65000.5)]})


def book_update(i: int, size: int, k: int) -> str:
    return text({"table": "orderBookL2_25", "action": "update",
                 "data": [{"symbol": "XBTUSD", "id": i, "side": "Buy" if i == 1 else "Sell", "size": size,
                           "timestamp": iso_ms(T0 + k)}]})


def liquidation(order: str, side: str) -> str:
    return text({"table": "liquidation", "action": "insert",
                 "data": [{"orderID": order, "symbol": "XBTUSD", "side": side, "price": 64000.0, "leavesQty": 32000}]})


def rejected(reason: str) -> float:
    value: float = FEED_REJECTED.labels("bitmex", reason)._value.get()
    return value


class Running(RunningCollector):
    """A BitMEX collector against ``venue`` until the block ends; ``events`` keeps all it queued."""

    def __init__(self, venue: FakeVenue, spec: VenueSpec = SPEC, instruments: tuple[Instrument, ...] = (XBTUSD,),
                 stale_after_s: float = 30.0) -> None:
        super().__init__(spec, instruments, fast_settings(venue.ws_url, stale_after_s=stale_after_s))

    def has(self, kind: type[Event], n: int = 1) -> Callable[[], bool]:
        return lambda: len(self.of(kind)) >= n


def subscribed_all(venue: FakeVenue) -> bool:
    return venue.subscribed() >= set(topics([XBTUSD]))


@pytest.fixture
async def venue() -> Any:
    async with FakeVenue(BitmexProtocol([XBTUSD])) as server:
        # Seed the images a subscriber gets: frames published before anyone subscribed still build the state.
        await server.publish([instrument_image(), book_image()])
        yield server


async def test_subscribe_acks_and_every_table(venue: FakeVenue) -> None:
    before = {r: rejected(r) for r in ("venue_error", "malformed", "out_of_sync", "duplicate")}
    async with Running(venue) as run:
        await until(lambda: subscribed_all(venue))
        [conn] = venue.open_connections
        assert json.loads(conn.received[0][1]) == {"op": "subscribe", "args": topics([XBTUSD])}
        assert conn.sent[0] == WELCOME
        assert [json.loads(s)["subscribe"] for s in conn.sent if s.startswith('{"success"')] == topics([XBTUSD])
        await until(run.has(FundingMark))  # from the images alone
        [mark], [oi], [depth] = run.of(FundingMark), run.of(OpenInterest), run.of(Depth)
        assert (mark.mark_price, mark.index_price, mark.funding_8h) == (65010.0, 65000.0, pytest.approx(0.0001))
        assert (oi.oi_usd, oi.oi_base) == (3e8, pytest.approx(3e8 / 65010.0))
        assert (depth.mid, depth.bid_usd[0], depth.ask_usd[0]) == (65000.25, 5000.0, 7000.0)

        await venue.publish([trade(1, "Sell"), liquidation("a1", "Sell"), book_update(1, 9000, 2),
                             instrument_update(3, 65020.0)])
        await until(run.has(FundingMark, 2))
        [t] = run.of(Trade)
        assert (t.side, t.price, t.notional_usd) == ("sell", 65000.5, pytest.approx(100.0))
        [liq] = run.of(Liquidation)
        assert (liq.side, liq.notional_usd, liq.ts_event) == ("long", pytest.approx(32000.0), t.ts_event)
        assert run.of(Depth)[-1].bid_usd[0] == 9000.0
        assert run.of(FundingMark)[-1].mark_price == 65020.0
    assert {r: rejected(r) for r in before} == before


async def test_without_a_heartbeat_an_idle_cutoff_closes_the_connection() -> None:
    async with FakeVenue(BitmexProtocol([XBTUSD], idle_timeout_s=0.4)) as venue, Running(venue):
        await until(lambda: venue.counts.closed_idle >= 1, within=5)


async def test_heartbeats_reach_the_venue_and_keep_the_connection() -> None:
    spec = dataclasses.replace(SPEC, heartbeat=Heartbeat(0.1, ping))
    async with FakeVenue(BitmexProtocol([XBTUSD], idle_timeout_s=0.4)) as venue, Running(venue, spec) as run:
        await until(lambda: subscribed_all(venue))
        [conn] = venue.open_connections
        await until(lambda: sum(m == "ping" for _, m in conn.received) >= 10, within=5)  # over a second
        assert conn.sent.count("pong") >= 9
        assert (venue.counts.connections, venue.counts.closed_idle, run.connection.reconnects) == (1, 0, {})


async def test_a_dropped_connection_resubscribes_and_gets_fresh_images(venue: FakeVenue) -> None:
    async with Running(venue) as run:
        await until(lambda: subscribed_all(venue))
        await venue.publish([trade(1), book_update(1, 9000, 2)])
        await until(run.has(Trade))
        assert await venue.drop_connections() == 1  # abrupt: the client sees 1006
        await until(lambda: venue.counts.connections == 2 and subscribed_all(venue))
        second = venue.open_connections[0]
        [image] = [json.loads(s) for s in second.sent if s.startswith('{"table":"orderBookL2_25"')]
        assert [(r["id"], r["size"]) for r in image["data"]] == [(1, 9000), (2, 7000)]  # rebuilt from the deltas
        [trades] = [json.loads(s) for s in second.sent if s.startswith('{"table":"trade"')]
        assert trades["action"] == "partial" and len(trades["data"]) == 1  # the last trade, again
        await venue.publish([trade(2)])
        await until(run.has(Trade, 2))
        assert [t.size * t.price for t in run.of(Trade)] == [pytest.approx(100.0), pytest.approx(200.0)]
        assert run.of(Depth)[-1].bid_usd[0] == 9000.0
        assert run.connection.reconnects == {"closed_1006": 1}


async def test_a_stalled_feed_is_replaced(venue: FakeVenue) -> None:
    async def feed() -> None:
        for k in range(1, 1000):
            await venue.publish([trade(k)])
            await asyncio.sleep(0.03)

    async with Running(venue, stale_after_s=0.5) as run:
        await until(lambda: subscribed_all(venue))
        publisher = asyncio.create_task(feed())
        try:
            await until(run.has(Trade, 3))
            venue.stall(1.5)
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 1, within=5)
            seen = len(run.of(Trade))
            await until(run.has(Trade, seen + 3), within=5)  # flowing again, on a new connection
            assert venue.counts.connections >= 2
            times = [t.ts_event for t in run.of(Trade)]
            assert times == sorted(set(times))  # no trade twice across the replacement
        finally:
            publisher.cancel()


async def test_a_broken_book_is_resynced_by_resubscribing(venue: FakeVenue) -> None:
    async with Running(venue) as run:
        await until(lambda: subscribed_all(venue))
        await until(run.has(Depth))
        [conn] = venue.open_connections
        await venue.publish([book_update(77, 1, 2)])  # a level the book never had
        await until(lambda: [json.loads(m)["op"] for _, m in conn.received[1:]] == ["unsubscribe", "subscribe"])
        await until(lambda: sum(s.startswith('{"table":"orderBookL2_25","action":"partial"') for s in conn.sent) == 2)
        await venue.publish([book_update(2, 8000, 3)])
        await until(lambda: run.of(Depth)[-1].ask_usd[0] == 8000.0)
        assert run.connection.reconnects == {}  # resynced on the same connection


async def test_a_refused_command_is_counted_as_a_venue_error(venue: FakeVenue) -> None:
    errors = rejected("venue_error")
    unknown = Instrument("bitmex", "DOGEUSDT", "DOGE", "linear", 1.0, 8.0)
    async with Running(venue, instruments=(XBTUSD, unknown)):
        await until(lambda: rejected("venue_error") == errors + 1)
        [conn] = venue.open_connections
        assert json.loads(conn.sent[-1])["error"] == "Unknown symbol: DOGEUSDT"
        assert venue.subscribed() == set()  # one bad topic refuses the whole command


async def test_instruments_from_the_rest_endpoint(venue: FakeVenue) -> None:
    async with httpx.AsyncClient() as client:
        found = await SPEC.fetch_instruments(client, venue.rest_url)
        refused = await client.post(venue.rest_url + "/api/v1/instrument/active")
    assert refused.status_code == 405
    assert [(i.symbol, i.asset, i.kind, i.contract_size, i.funding_interval_h) for i in found] == [
        ("XBTUSD", "BTC", "inverse", 1.0, 8.0)]


def test_the_fake_answers_commands_like_bitmex() -> None:
    session = BitmexProtocol([XBTUSD]).session()
    first = session.handle("ping")
    assert first.replies == [WELCOME, "pong"]  # the welcome always goes out first
    ok = session.handle('{"op":"subscribe","args":"trade:XBTUSD"}')  # a single arg needs no array
    assert (json.loads(ok.replies[0])["subscribe"], ok.subscribed) == ("trade:XBTUSD", ["trade:XBTUSD"])
    for command, error in [('{"op":"subscribe","args":["trade:XBTUSD"]}', "You are already subscribed"),
                           ('{"op":"subscribe","args":["instrument:XBTUSD","quote:XBTUSD"]}', "Unknown table: quote"),
                           ('{"op":"subscribe","args":["trade:ETHUSD"]}', "Unknown symbol: ETHUSD"),
                           ('{"op":"authKey","args":[]}', "Unknown op"), ("{", "Unable to parse")]:
        reply = session.handle(command)
        answer = json.loads(reply.replies[0])
        assert (answer["status"], answer["error"].startswith(error), reply.subscribed) == (400, True, [])
    gone = session.handle('{"op":"unsubscribe","args":["trade:XBTUSD"]}')
    assert (json.loads(gone.replies[0])["unsubscribe"], gone.unsubscribed) == ("trade:XBTUSD", ["trade:XBTUSD"])
    assert session.tick(0.0).replies == []
