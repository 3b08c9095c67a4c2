"""The Bybit spec run by the generic collector against the fake Bybit: subscribe, events, heartbeat, resync,
reconnect and staleness. No Redis: events land on the queue the writer would drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec
import pytest

from collectors.base import Heartbeat
from collectors.bybit import SPEC
from collectors.bybit.spec import HEARTBEAT, topics
from collectors.instruments import Instrument
from collectors.venue import VenueSpec
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.venue_server import Connection, FakeVenue
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until
from tests.harness import RunningCollector, fast_settings

BTC = Instrument("bybit", "BTCUSDT", "BTC", "linear", 1.0, 8.0, oi_usd=1.9e9, volume_usd_24h=1.1e9)
ETH = Instrument("bybit", "ETHUSDT", "ETH", "linear", 1.0, 8.0, oi_usd=8.0e8, volume_usd_24h=5.1e8)
T0 = 1_786_310_817_583


def encode(message: dict[str, Any]) -> str:
    return msgspec.json.encode(message).decode()


def ticker(kind: str, cs: int, ts: int, **data: str) -> str:
    return encode({"topic": "tickers.BTCUSDT", "type": kind, "data": {"symbol": "BTCUSDT", **data}, "cs": cs,
                   "ts": ts})


TICKER_SNAPSHOT = ticker(
    "snapshot", 753843900397, T0, markPrice="65117.44", indexPrice="65137.76", openInterest="59891.732",
    openInterestValue="3899996265.01", fundingIntervalHour="8", singleOpenInterest="29945.866",
    singleOpenInterestValue="1949998132.50", nextFundingTime="1786320000000", fundingRate="0.0001",
    bid1Price="65114.20", bid1Size="5.954", ask1Price="65114.30", ask1Size="10.470")


def trade(n: int, side: str = "Buy") -> str:
    return encode({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": T0 + n + 1, "data": [
        {"T": T0 + n, "s": "BTCUSDT", "S": side, "v": "0.004", "p": "65114.20", "L": "PlusTick",
         "i": f"a9188a0a-82bc-50de-be60-{n:012d}", "BT": False, "RPI": False, "seq": 753843954913 + n}]})


def book(kind: str, u: int, ts: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    return encode({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": ts,
                   "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": 1000 + u}, "cts": ts - 1})


BIDS = [["65114.20", "6.054"], ["65114.10", "0.002"], ["65100.00", "1.5"]]
ASKS = [["65114.30", "10.488"], ["65128.10", "0.315"], ["65140.00", "2"]]


class Running(RunningCollector):
    """A collector running against the fake until the block ends."""

    def __init__(self, fake: FakeVenue, spec: VenueSpec = SPEC, instruments: Sequence[Instrument] = (BTC,),
                 **overrides: Any) -> None:
        super().__init__(spec, instruments, fast_settings(fake.ws_url, **overrides))


@contextlib.asynccontextmanager
async def venue(protocol: BybitProtocol | None = None) -> AsyncIterator[FakeVenue]:
    async with FakeVenue(protocol or BybitProtocol([BTC, ETH])) as fake:
        yield fake


def all_subscribed(fake: FakeVenue, instruments: Sequence[Instrument] = (BTC,)) -> bool:
    return bool(fake.open_connections) and set(topics(instruments)) <= fake.subscribed()


def sent_json(conn: Connection) -> list[dict[str, Any]]:
    return [json.loads(f) for f in conn.sent]


def received_json(conn: Connection) -> list[dict[str, Any]]:
    return [json.loads(text) for _, text in conn.received]


def rejected(reason: str) -> float:
    return float(FEED_REJECTED.labels("bybit", reason)._value.get())


async def test_subscribes_and_is_acknowledged() -> None:
    async with venue() as fake, Running(fake, instruments=(BTC, ETH)):
        await until(lambda: all_subscribed(fake, (BTC, ETH)))
        [conn] = fake.open_connections
        [request] = [m for m in received_json(conn) if m["op"] == "subscribe"]
        assert request == {"req_id": "1", "op": "subscribe", "args": topics([BTC, ETH])}
        await until(lambda: any(m.get("op") == "subscribe" for m in sent_json(conn)))
        assert [m for m in sent_json(conn) if m.get("op") == "subscribe"] == [
            {"success": True, "ret_msg": "", "conn_id": "fake-0001", "req_id": "1", "op": "subscribe"}]


async def test_a_refused_subscription_is_a_counted_venue_error() -> None:
    spec = dataclasses.replace(SPEC, topics=lambda instruments: [*topics(instruments), "kline.1.BTCUSDT"])
    before = rejected("venue_error")
    async with venue() as fake, Running(fake, spec=spec):
        await until(lambda: rejected("venue_error") - before == 1)
        [conn] = fake.open_connections
        [answer] = [m for m in sent_json(conn) if m.get("op") == "subscribe"]
        assert answer["success"] is False and answer["ret_msg"] == "error:handler not found,topic:kline.1.BTCUSDT"
        assert fake.subscribed() == set()  # the whole request was refused


async def test_every_channel_arrives_as_events() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake))
        liquidation = encode({"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": T0 + 9, "data": [
            {"T": T0 + 8, "s": "BTCUSDT", "S": "Buy", "v": "1.25", "p": "64000.5"}]})
        await fake.publish([TICKER_SNAPSHOT, trade(1, "Sell"), liquidation, book("snapshot", 10, T0, BIDS, ASKS)])
        await until(lambda: len(run.drain()) == 5)
        [mark], [oi] = run.of(FundingMark), run.of(OpenInterest)
        assert (mark.mark_price, mark.funding_8h, mark.next_funding_ts) == (65117.44, 0.0001, 1786320000000 * 10**6)
        assert (oi.oi_base, oi.oi_usd) == (29945.866, 1949998132.50)  # one side
        assert [(t.price, t.size, t.side) for t in run.of(Trade)] == [(65114.20, 0.004, "sell")]
        assert [(x.side, x.size) for x in run.of(Liquidation)] == [("long", 1.25)]
        [depth] = run.of(Depth)
        assert depth.mid == pytest.approx((65114.20 + 65114.30) / 2)


async def test_heartbeat_keeps_an_idle_connection_open() -> None:
    protocol = BybitProtocol([BTC], idle_timeout_s=0.6)
    spec = dataclasses.replace(SPEC, heartbeat=Heartbeat(0.15, HEARTBEAT.message))
    async with venue(protocol) as fake, Running(fake, spec=spec) as run:
        await until(lambda: all_subscribed(fake))
        [conn] = fake.open_connections
        await until(lambda: sum(m["op"] == "ping" for m in received_json(conn)) >= 8, within=5)  # > 1 s of pings
        pongs = [m for m in sent_json(conn) if m.get("op") == "ping"]
        assert pongs and all(p["ret_msg"] == "pong" and p["req_id"].startswith("ping-") for p in pongs)
        assert fake.counts.closed_idle == 0 and fake.counts.connections == 1
        assert run.connection.reconnects == {}


async def test_without_heartbeat_the_venue_cuts_the_connection() -> None:
    protocol = BybitProtocol([BTC], idle_timeout_s=0.6)
    async with venue(protocol) as fake, Running(fake, spec=dataclasses.replace(SPEC, heartbeat=None)) as run:
        await until(lambda: fake.counts.closed_idle >= 1, within=5)
        await until(lambda: run.connection.reconnects.get("closed_1000", 0) >= 1)
        await until(lambda: all_subscribed(fake))  # and it comes back


async def test_reconnect_resubscribes_and_gets_a_fresh_snapshot() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake))
        await fake.publish([TICKER_SNAPSHOT, ticker("delta", 753843900500, T0 + 100, fundingRate="0.00012"),
                            book("snapshot", 10, T0, BIDS, ASKS),
                            book("delta", 11, T0 + 20, [["65114.20", "0"]], [["65114.25", "1"]])])
        await until(lambda: len(run.of(FundingMark)) == 2 and len(run.of(Depth)) == 1)
        assert await fake.drop_connections() == 1  # abrupt: the client sees 1006
        await until(lambda: len(fake.connections) == 2 and all_subscribed(fake))
        await until(lambda: len(fake.connections[1].sent) >= 3)
        fresh = {m["topic"]: m for m in sent_json(fake.connections[1]) if "topic" in m}
        assert fresh["tickers.BTCUSDT"]["type"] == "snapshot"
        assert fresh["tickers.BTCUSDT"]["data"]["fundingRate"] == "0.00012"  # folded from the delta
        snap = fresh["orderbook.50.BTCUSDT"]
        assert (snap["type"], snap["data"]["u"]) == ("snapshot", 11)
        assert snap["data"]["b"][0] == ["65114.10", "0.002"] and snap["data"]["a"][0] == ["65114.25", "1"]
        await fake.publish([book("delta", 12, T0 + 500, [], [["65114.25", "2"]])])
        await until(lambda: len(run.of(Depth)) == 3)  # the resent snapshot, then the delta on top of it
        assert run.of(Depth)[-1].ask_usd[0] >= 65114.25 * 2
        assert run.connection.reconnects == {"closed_1006": 1}


async def test_a_missed_book_update_is_resynced_on_the_same_connection() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake))
        await fake.publish([book("snapshot", 10, T0, BIDS, ASKS)])
        await until(lambda: len(run.of(Depth)) == 1)
        before = rejected("out_of_sync")
        await fake.publish([book("delta", 12, T0 + 200, [["65114.10", "3"]], [])])  # u=11 never came
        [conn] = fake.open_connections
        await until(lambda: any(m["op"] == "subscribe" and m["req_id"].startswith("resync")
                                for m in received_json(conn)))
        await until(lambda: len(run.of(Depth)) == 2)  # from the snapshot the resubscription brought
        ops = [(m["op"], m.get("args")) for m in received_json(conn)][-2:]
        assert ops == [("unsubscribe", ["orderbook.50.BTCUSDT"]), ("subscribe", ["orderbook.50.BTCUSDT"])]
        assert rejected("out_of_sync") - before == 1
        assert fake.counts.connections == 1


async def test_a_stalled_feed_is_replaced() -> None:
    async with venue() as fake, Running(fake, stale_after_s=0.5) as run:
        await until(lambda: all_subscribed(fake))
        stop = asyncio.Event()

        async def publisher() -> None:
            n = 0
            while not stop.is_set() and n < 400:
                n += 1
                await fake.publish([trade(n)])
                await asyncio.sleep(0.02)

        task = asyncio.create_task(publisher())
        try:
            await until(lambda: len(run.of(Trade)) >= 5)
            fake.stall(1.5)
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 1, within=5)
            count = len(run.of(Trade))
            await until(lambda: len(run.of(Trade)) > count + 5, within=5)  # flowing again on the new connection
        finally:
            stop.set()
            await task
        assert fake.counts.connections >= 2


async def test_instruments_are_fetched_page_by_page() -> None:
    listed = [BTC, ETH, msgspec.structs.replace(BTC, symbol="BTCPERP", oi_usd=2e8, volume_usd_24h=3e8),
              Instrument("bybit", "BTCUSDT-14AUG26", "BTC", "linear", 1.0, 0.0, perpetual=False, oi_usd=1e6,
                         volume_usd_24h=2e6),
              Instrument("bybit", "0GUSDT", "0G", "linear", 1.0, 4.0, active=False)]
    async with venue(BybitProtocol(listed, page_limit=2)) as fake, httpx.AsyncClient() as client:
        assert await SPEC.fetch_instruments(client, fake.rest_url) == listed
        assert fake.counts.rest_requests == 4  # three pages of instruments-info, then tickers
        response = await client.get(fake.rest_url + "/v5/market/instruments-info", params={"category": "spot"})
        assert response.json()["retCode"] == 10001
        assert (await client.post(fake.rest_url + "/v5/market/tickers")).status_code == 405
        assert (await client.get(fake.rest_url + "/v5/nope")).status_code == 404
    assert [(r.method, r.path, r.query.get("cursor")) for r in fake.rest_requests[:3]] == [
        ("GET", "/v5/market/instruments-info", None), ("GET", "/v5/market/instruments-info", "2"),
        ("GET", "/v5/market/instruments-info", "4")]


@pytest.mark.parametrize("request_bytes", [
    b"nonsense\r\n\r\n",  # no method, target and version
    b"GET /v5/market/tickers HTTP/1.1\r\nno colon here\r\n\r\n",
    b"POST /v5/market/tickers HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    b"POST /v5/market/tickers HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",  # the body ends early
    b"POST /v5/market/tickers HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
async def test_the_fakes_rest_listener_answers_a_malformed_request_400(request_bytes: bytes) -> None:
    async with venue() as fake:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.rest_port)
        writer.write(request_bytes)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in answer
        assert fake.rest_requests == [] and fake.counts.rest_requests == 0
