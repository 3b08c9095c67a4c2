"""Several venues, one market: the daemon finds each venue's BTC perpetual from its (fake) REST metadata,
collects Bybit and Deribit through the generic collector, and publishes one BTC view with per-venue detail
over MQTT and /metrics. Real Redis, real Mosquitto; only the venues are stand-ins."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from collectors.instruments import Instrument
from flushwatch.daemon import Daemon
from flushwatch.fake import deribit
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.servers import RunningServer, free_port
from flushwatch.settings import load_settings
from flushwatch.waiting import until
from tests.test_end_to_end import Subscriber, scrape

BYBIT_BTC = Instrument("bybit", "BTCUSDT", "BTC", "linear", 1.0, 8.0, oi_usd=1.9e9, volume_usd_24h=1e9)
BYBIT_ETH = Instrument("bybit", "ETHUSDT", "ETH", "linear", 1.0, 8.0, oi_usd=8e8, volume_usd_24h=5e8)
COVERAGE_KEYS = ('flushwatch_feed_coverage_ratio{venue="bybit"}', 'flushwatch_feed_coverage_ratio{venue="deribit"}')
DERIBIT_BTC = Instrument("deribit", "BTC-PERPETUAL", "BTC", "inverse", 1.0, 8.0, oi_usd=1e9, volume_usd_24h=3e8)


def bybit(topic: str, kind: str, ts: int, data: Any) -> str:
    return json.dumps({"topic": topic, "type": kind, "ts": ts, "data": data})


def bybit_frames(t0: int) -> list[str]:
    """A ticker snapshot (one side 1,000 BTC at 100), a long liquidated (S=Buy) and a trade per second."""
    ticker = {"symbol": "BTCUSDT", "markPrice": "100", "indexPrice": "99.9", "fundingRate": "0.0003",
              "fundingIntervalHour": "8", "nextFundingTime": str(t0 + 3_600_000), "openInterest": "2000",
              "singleOpenInterest": "1000", "singleOpenInterestValue": "100000", "lastPrice": "100"}
    frames = [json.dumps({"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": t0, "cs": 1, "data": ticker}),
              bybit("allLiquidation.BTCUSDT", "snapshot", t0 + 500,
                    [{"T": t0 + 400, "s": "BTCUSDT", "S": "Buy", "v": "3", "p": "100"}])]
    for k in range(9):
        frames.append(bybit("publicTrade.BTCUSDT", "snapshot", t0 + k * 1000, [
            {"T": t0 + k * 1000, "s": "BTCUSDT", "S": "Sell", "v": "0.5", "p": "100", "L": "MinusTick",
             "i": f"00000000-0000-0000-0000-{k:012d}", "BT": False}]))
    return frames


def deribit_frames(t0: int) -> list[str]:
    """A ticker with 5,000 USD of one-side open interest (inverse: 50 BTC at 100) and a trade whose taker
    was liquidated selling: a long."""
    frames = [deribit.ticker_frame("BTC-PERPETUAL", t0, mark=100.0, index=100.0, open_interest=5000.0,
                                   funding_8h=0.0001)]
    for k in range(9):
        frames.append(deribit.trades_frame("BTC-PERPETUAL", [
            deribit.trade("BTC-PERPETUAL", k + 1, 100.0, 200.0, "sell", t0 + k * 1000 + 10,
                          liquidation="T" if k == 2 else "")]))
    return frames


@pytest.mark.slow
async def test_two_venues_make_one_btc_market_with_per_venue_detail(
    redis_server: RunningServer, mosquitto: RunningServer
) -> None:
    prefix = f"mkt-{uuid.uuid4().hex[:6]}/v1"
    async with FakeVenue(BybitProtocol([BYBIT_BTC, BYBIT_ETH])) as by, \
            FakeVenue(deribit.DeribitProtocol([DERIBIT_BTC])) as de:
        settings = load_settings(
            redis_url=redis_server.url, mqtt_url=f"mqtt://127.0.0.1:{mosquitto.port}", mqtt_prefix=prefix,
            mqtt_client_id=f"fw-{uuid.uuid4().hex[:8]}", metrics_port=free_port(),
            universe={"watch": "BTC"}, binance={"enabled": False},
            bybit={"enabled": True, "ws_url": by.ws_url, "rest_url": by.rest_url},
            deribit={"enabled": True, "ws_url": de.ws_url, "rest_url": de.rest_url},
            detector={"state_interval_s": 2.0},
        )
        daemon = Daemon(settings)
        async with Subscriber(mosquitto.port, prefix) as sub:
            runner = asyncio.create_task(daemon.run())
            try:
                await until(lambda: "tickers.BTCUSDT" in by.subscribed() and
                            "trades.BTC-PERPETUAL.100ms" in de.subscribed(), within=60)
                assert "tickers.ETHUSDT" not in by.subscribed()  # the universe is BTC only
                t0 = time.time_ns() // 1_000_000 - 10_000
                await by.publish(bybit_frames(t0))
                await de.publish(deribit_frames(t0))
                # The detector evaluates on the event-time grid when a later event crosses it: one more trade,
                # past the frames of both venues, so a snapshot is taken after all of them.
                assert daemon.markets is not None
                deribit_feed = daemon.markets.collector("deribit")
                assert deribit_feed is not None
                await until(lambda: deribit_feed.sink.events >= 12, within=10)  # all of Deribit's, queued first
                await by.publish([bybit("publicTrade.BTCUSDT", "snapshot", t0 + 12_000, [
                    {"T": t0 + 12_000, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "100", "L": "PlusTick",
                     "i": "00000000-0000-0000-0000-999999999999", "BT": False}])])

                def both_venues() -> dict[str, Any] | None:
                    for state in reversed(sub.on("BTC/state")):
                        if {"bybit", "deribit"} <= state["venues"].keys():
                            return state
                    return None

                await until(lambda: both_venues() is not None, within=30)
                # the feed's coverage is published by its watchdog, about once a second
                await until(lambda: all(scrape(daemon.metrics_port).get(k) == 1.0 for k in COVERAGE_KEYS), within=10)
                metrics = scrape(daemon.metrics_port)
            finally:
                daemon.stop.set()
                await asyncio.wait_for(runner, 30)

    venues = both_venues()["venues"]  # type: ignore[index]
    assert venues["bybit"]["coverage"] == "complete" and venues["deribit"]["coverage"] == "complete"
    assert venues["bybit"]["oi_usd"] == pytest.approx(100_000)  # singleOpenInterestValue, not both sides
    assert venues["deribit"]["oi_usd"] == pytest.approx(5_000)
    assert venues["bybit"]["liq_long_usd"] == pytest.approx(300)  # S=Buy: a long liquidated
    assert venues["deribit"]["liq_long_usd"] == pytest.approx(200)  # taker sold, taker liquidated: a long
    assert venues["bybit"]["funding_8h"] == pytest.approx(0.0003)
    assert metrics['flushwatch_venue_open_interest_usd{asset="BTC",venue="bybit"}'] == pytest.approx(100_000)
    assert metrics['flushwatch_venue_liquidation_coverage{asset="BTC",coverage="complete",venue="deribit"}'] == 2
    assert metrics['flushwatch_venue_liquidations_usd_total{asset="BTC",side="long",venue="bybit"}'] == 300
