"""The OKX spec run by the generic collector against the local fake venue: subscribe and acks, events,
heartbeat and the idle cut-off, reconnect with a fresh snapshot, staleness, venue errors, REST metadata.
No Redis: events land on the queue the writer would drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from collectors.base import Heartbeat
from collectors.instruments import Instrument
from collectors.okx import SPEC
from collectors.okx.parse import OkxParser
from collectors.okx.spec import ping, topics
from collectors.venue import VenueSpec
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.okx import FakeOkx, book_frame, push, trade_frame
from flushwatch.fake.venue_server import Connection, FakeVenue
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.waiting import until
from tests.harness import RunningCollector, fast_settings

NS = 1_000_000
LINEAR = Instrument("okx", "BTC-USDT-SWAP", "BTC", "linear", 0.01, 8.0, oi_usd=2e9, volume_usd_24h=8e9)
INVERSE = Instrument("okx", "BTC-USD-SWAP", "BTC", "inverse", 100.0, 8.0, oi_usd=7e8, volume_usd_24h=1e9)
INSTRUMENTS = [LINEAR, INVERSE]
TOPICS = set(topics(INSTRUMENTS))


@contextlib.asynccontextmanager
async def venue(**options: Any) -> AsyncIterator[FakeVenue]:
    async with FakeVenue(FakeOkx(INSTRUMENTS, prices={"BTC-USDT-SWAP": 60000.0}, **options), tick_s=0.05) as fake:
        yield fake


class Running(RunningCollector):
    """A collector for ``instruments`` running against the fake until the block ends; frames it receives are
    kept."""

    def __init__(self, fake: FakeVenue, spec: VenueSpec = SPEC, instruments: list[Instrument] = INSTRUMENTS,
                 stale_after_s: float = 5.0) -> None:
        self.received: list[bytes | str] = []
        super().__init__(spec, instruments, fast_settings(fake.ws_url, stale_after_s=stale_after_s), tap=self._tap)

    def _tap(self, direction: str, venue: str, name: str, ts: int, frame: bytes | str) -> None:
        if direction == "recv":
            self.received.append(frame)


def current(fake: FakeVenue) -> Connection | None:
    open_ = fake.open_connections
    return open_[-1] if open_ else None


def all_subscribed(fake: FakeVenue) -> bool:
    return fake.subscribed() == TOPICS


def rejected(reason: str) -> float:
    return float(FEED_REJECTED.labels("okx", reason)._value.get())


async def test_every_topic_subscribed_in_batches_and_each_arg_acknowledged() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake), within=5)
        await until(lambda: len(run.received) >= len(TOPICS), within=5)
        conn = current(fake)
        assert conn is not None
        requests = [msgspec.json.decode(m) for _, m in conn.received]
        assert [r["op"] for r in requests] == ["subscribe"] and len(requests[0]["args"]) == len(TOPICS)
        acks = [a for frame in run.received for a in OkxParser(INSTRUMENTS, 1 << 20).parse(frame, 1).acks]
        assert acks == [int(requests[0]["id"])] * len(TOPICS)


async def test_events_arrive_normalised() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake), within=5)
        await fake.publish([
            push("index-tickers", "BTC-USDT", [{"instId": "BTC-USDT", "idxPx": "59990", "ts": "1760000000000"}]),
            push("funding-rate", "BTC-USDT-SWAP", [{"instId": "BTC-USDT-SWAP", "fundingRate": "0.0002",
                                                    "fundingTime": "1760011200000", "nextFundingTime": "1760025600000",
                                                    "ts": "1760000000001"}]),
            push("mark-price", "BTC-USDT-SWAP", [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "markPx": "60010",
                                                  "ts": "1760000000002"}]),
            push("open-interest", "BTC-USDT-SWAP", [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "oi": "300000",
                                                     "oiCcy": "3000", "oiUsd": "180030000", "ts": "1760000000003"}]),
            trade_frame(11, sz="3", side="sell"),
            trade_frame(12, symbol="BTC-USD-SWAP", px="60000", sz="30"),
            book_frame(1),
            push("liquidation-orders", "SWAP", [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "uly": "BTC-USDT",
                                                 "details": [{"side": "sell", "posSide": "net", "bkPx": "59000",
                                                              "sz": "250", "ts": "1760000000004"}]}]),
        ])
        await until(lambda: len(run.drain()) == 6, within=5)
        [mark] = run.of(FundingMark)
        assert (mark.mark_price, mark.index_price, mark.funding_interval_h, mark.funding_8h) == (
            60010.0, 59990.0, 4.0, pytest.approx(0.0004))
        [oi] = run.of(OpenInterest)
        assert (oi.oi_base, oi.oi_usd) == (3000.0, 180030000.0)
        linear, inverse = run.of(Trade)
        assert (linear.size, linear.side) == (pytest.approx(0.03), "sell")
        assert (inverse.size, inverse.notional_usd) == (pytest.approx(0.05), pytest.approx(3000.0))
        [depth] = run.of(Depth)
        assert depth.mid == pytest.approx(60000.0)
        [liq] = run.of(Liquidation)
        assert (liq.side, liq.size, liq.ts_event) == ("long", pytest.approx(2.5), 1760000000004 * NS)


async def test_heartbeat_pings_are_answered_and_keep_an_idle_connection() -> None:
    fast = dataclasses.replace(SPEC, heartbeat=Heartbeat(0.1, ping))
    malformed = rejected("malformed")
    async with venue(idle_timeout_s=0.5) as fake, Running(fake, fast) as run:
        await until(lambda: all_subscribed(fake), within=5)
        conn = current(fake)
        assert conn is not None
        await until(lambda: sum(m == "ping" for _, m in conn.received) >= 8, within=5)  # > 0.5 s of silence
        assert conn.sent.count("pong") >= 7
        assert fake.counts.closed_idle == 0 and fake.counts.connections == 1
        assert run.connection.reconnects == {}
        assert rejected("malformed") == malformed  # "pong" is not a frame to complain about


async def test_a_client_without_heartbeat_is_cut_off_when_idle() -> None:
    silent = dataclasses.replace(SPEC, heartbeat=None)
    async with venue(idle_timeout_s=0.3) as fake, Running(fake, silent) as run:
        await until(lambda: fake.counts.closed_idle >= 1 and fake.counts.connections >= 2, within=5)
        await until(lambda: all_subscribed(fake), within=5)  # and it came back
        assert run.connection.reconnects.get("closed_1000", 0) >= 1


async def test_reconnect_after_a_drop_resubscribes_and_starts_from_a_fresh_snapshot() -> None:
    async with venue() as fake, Running(fake) as run:
        await until(lambda: all_subscribed(fake), within=5)
        await fake.publish([book_frame(1)])
        await until(lambda: len(run.of(Depth)) == 1, within=5)
        first = current(fake)
        fake.protocol.observe(book_frame(2, mid=60100.0))  # the book moves while the client is away
        assert await fake.drop_connections() == 1
        await until(lambda: (c := current(fake)) is not None and c is not first and all_subscribed(fake), within=5)
        await until(lambda: len(run.of(Depth)) == 2, within=5)
        fresh = run.of(Depth)[1]
        assert (fresh.mid, fresh.ts_event) == (pytest.approx(60100.0), (1760000000000 + 2) * NS)
        assert run.connection.reconnects.get("closed_1006") == 1
        new = current(fake)
        assert new is not None and book_frame(2, mid=60100.0) in new.sent  # pushed as the subscribe snapshot


async def test_a_stalled_feed_is_replaced() -> None:
    async with venue() as fake, Running(fake, stale_after_s=0.4) as run:
        await until(lambda: all_subscribed(fake), within=5)

        async def trades() -> None:
            for i in range(1, 10_000):
                await fake.publish([trade_frame(i)])
                await asyncio.sleep(0.02)

        publisher = asyncio.create_task(trades())
        try:
            await until(lambda: len(run.of(Trade)) >= 3, within=5)
            fake.stall(1.2)
            await until(lambda: run.connection.reconnects.get("stale", 0) >= 1, within=5)
            seen = len(run.of(Trade))
            await until(lambda: len(run.of(Trade)) > seen + 3, within=5)  # flowing again on the new connection
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        ids = [t.ts_event for t in run.of(Trade)]
        assert ids == sorted(set(ids))  # nothing twice, nothing out of order


async def test_an_unknown_instrument_is_a_venue_error_and_the_rest_flows() -> None:
    ghost = Instrument("okx", "GHOST-USDT-SWAP", "GHOST", "linear", 1.0, 8.0)
    errors = rejected("venue_error")
    async with venue() as fake, Running(fake, instruments=[*INSTRUMENTS, ghost]) as run:
        await until(lambda: all_subscribed(fake), within=5)
        await until(lambda: rejected("venue_error") - errors >= 6, within=5)  # 5 channels + its index
        conn = current(fake)
        assert conn is not None
        assert sum('"code":"60018"' in f for f in conn.sent) == 6
        await fake.publish([trade_frame(5)])
        await until(lambda: len(run.of(Trade)) == 1, within=5)


async def test_fake_answers_bad_requests_with_okx_errors() -> None:
    session = FakeOkx(INSTRUMENTS, max_requests_per_hour=2).session()
    assert session.handle("ping").replies == ["pong"]
    codes = [msgspec.json.decode(session.handle(m).replies[0])["code"] for m in (
        "not json", '{"id":"1","op":"login","args":[]}', '{"id":"1","op":"subscribe","args":"trades"}',
        '{"id":1,"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT-SWAP"}]}')]
    assert codes == ["60012", "60019", "60012", "60012"]
    ok = session.handle('{"id":"2","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT-SWAP"},'
                        '{"channel":"trades","instId":"ETH-USDT-SWAP"}]}')
    assert ok.subscribed == ["trades:BTC-USDT-SWAP"]
    assert [msgspec.json.decode(r).get("event") for r in ok.replies] == ["subscribe", "error"]
    session.handle('{"id":"3","op":"unsubscribe","args":[{"channel":"trades","instId":"BTC-USDT-SWAP"}]}')
    limited = session.handle('{"id":"4","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT-SWAP"}]}')
    assert msgspec.json.decode(limited.replies[0])["code"] == "60014" and limited.subscribed == []


async def test_instrument_metadata_over_rest() -> None:
    async with venue() as fake, httpx.AsyncClient() as client:
        found = {i.symbol: i for i in await SPEC.fetch_instruments(client, fake.rest_url)}
        assert set(found) == {"BTC-USDT-SWAP", "BTC-USD-SWAP"}
        for inst in INSTRUMENTS:
            got = found[inst.symbol]
            assert (got.asset, got.kind, got.contract_size, got.perpetual, got.active) == (
                inst.asset, inst.kind, inst.contract_size, True, True)
            assert got.oi_usd == pytest.approx(inst.oi_usd) and got.volume_usd_24h == pytest.approx(inst.volume_usd_24h)
        missing = await client.get(fake.rest_url + "/api/v5/public/instruments")
        assert missing.status_code == 400 and missing.json()["code"] == "50014"
        posted = await client.post(fake.rest_url + "/api/v5/public/instruments", params={"instType": "SWAP"})
        assert posted.status_code == 405
