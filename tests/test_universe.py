"""The universe: which instruments each venue watches, from a named watchlist or top:N, kept current."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from collectors.instruments import Instrument, parse_universe, pick, rank_assets
from collectors.queue import EventQueue
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.server import FakeBinance
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.servers import free_port
from flushwatch.settings import SettingsError, load_settings
from flushwatch.universe import Markets, binance_by_name, choose, enabled_venues
from flushwatch.waiting import until


def inst(venue: str, symbol: str, asset: str, oi: float = 0.0, volume: float = 0.0, *, perpetual: bool = True,
         active: bool = True) -> Instrument:
    return Instrument(venue, symbol, asset, "linear", 1.0, 8.0 if perpetual else 0.0, active, perpetual, oi, volume)


CATALOG = {
    "bybit": [inst("bybit", "BTCUSDT", "BTC", 5e9, 9e9), inst("bybit", "BTCPERP", "BTC", 1e8),
              inst("bybit", "ETHUSDT", "ETH", 2e9, 4e9), inst("bybit", "DOGEUSDT", "DOGE", 6e8, 1e10),
              inst("bybit", "BTC-26DEC26", "BTC", 9e9, perpetual=False)],
    "okx": [inst("okx", "BTC-USDT-SWAP", "BTC", 3e9, 2e9), inst("okx", "SOL-USDT-SWAP", "SOL", 1e9, 1e9),
            inst("okx", "ETH-USDT-SWAP", "ETH", 1.5e9, 3e9, active=False)],
}


def test_parse_universe() -> None:
    assert parse_universe("top:20") == (20, [])
    assert parse_universe(" btc, xbt ,ETH") == (0, ["BTC", "ETH"])
    for bad in ("top:0", "top:x", " , "):
        with pytest.raises(ValueError):
            parse_universe(bad)


def test_top_n_ranks_assets_over_all_venues_perpetuals() -> None:
    everything = [i for venue in CATALOG.values() for i in venue]
    # BTC: 5e9 + 1e8 + 3e9 (the dated future does not count); ETH 2e9 (OKX's is inactive); SOL 1e9
    assert rank_assets(everything, 3, "open_interest") == ["BTC", "ETH", "SOL"]
    assert rank_assets(everything, 2, "volume") == ["BTC", "DOGE"]


def test_each_venue_watches_its_largest_active_perpetual_of_each_asset() -> None:
    chosen = pick(CATALOG["bybit"] + CATALOG["okx"], ["BTC", "ETH"])
    assert [(i.venue, i.symbol) for i in chosen] == [("bybit", "BTCUSDT"), ("bybit", "ETHUSDT"),
                                                      ("okx", "BTC-USDT-SWAP")]


def test_choose_resolves_top_n_and_explicit_symbols() -> None:
    settings = load_settings(universe={"watch": "top:2"}, okx={"enabled": True, "symbols": ["SOL-USDT-SWAP"]})
    picks = choose(settings, CATALOG)
    assert [i.symbol for i in picks["bybit"]] == ["BTCUSDT", "ETHUSDT"]
    assert [i.symbol for i in picks["okx"]] == ["SOL-USDT-SWAP"]  # explicit beats the universe


def test_binance_needs_no_metadata_for_its_symbols() -> None:
    settings = load_settings(binance={"symbols": ["ETHUSDT", "1000PEPEUSDT"]})
    picks = choose(settings, {"binance": []})
    assert [(i.symbol, i.asset) for i in picks["binance"]] == [("ETHUSDT", "ETH"), ("1000PEPEUSDT", "1000PEPE")]
    assert [i.symbol for i in binance_by_name(["BTC", "SOL"])] == ["BTCUSDT", "SOLUSDT"]


def test_venues_are_enabled_by_settings_and_a_bad_universe_names_the_setting() -> None:
    assert enabled_venues(load_settings(bybit={"enabled": True}, binance={"enabled": False})) == ["bybit"]
    with pytest.raises(SettingsError, match="FLUSHWATCH_UNIVERSE__WATCH"):
        load_settings(universe={"watch": "top:-1"})
    with pytest.raises(SettingsError, match="FLUSHWATCH_BYBIT__WS_URL"):
        load_settings(bybit={"ws_url": "https://example.com"})


async def test_binance_falls_back_to_asset_names_when_its_metadata_is_unreachable(fake: FakeBinance) -> None:
    settings = load_settings(
        universe={"watch": "BTC"},
        binance={"market_url": fake.market_url, "public_url": fake.public_url,
                 "rest_url": f"http://127.0.0.1:{free_port()}", "oi_poll_interval_s": 60.0},
    )
    markets = Markets(settings, EventQueue(1000))
    stop = asyncio.Event()
    task = asyncio.create_task(markets.run(stop))
    try:
        await until(lambda: markets.refreshed.is_set(), within=30.0)
        assert [i.symbol for i in markets.picks["binance"]] == ["BTCUSDT"]
        await until(lambda: any("btcusdt@aggTrade" in c.streams for c in fake.open_connections), within=10.0)
        # the next refresh, still without metadata, keeps the same collector running
        first = markets.collector("binance")
        async with httpx.AsyncClient() as client:
            assert await markets.refresh(client) is False
        assert markets.collector("binance") is first
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def test_binance_funding_intervals_from_metadata_reach_its_parser() -> None:
    markets = Markets(load_settings(), EventQueue(10))
    four_hourly = Instrument("binance", "SOLUSDT", "SOL", "linear", 1.0, 4.0)
    collector = markets._collector("binance", [four_hourly])
    frame = (b'{"stream":"solusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1760000000000,"s":"SOLUSDT",'
             b'"p":"150.0","i":"149.9","P":"150.1","r":"0.0001","T":1760011200000}}')
    (mark,) = collector.parser.parse(frame, 1).events
    assert mark.funding_interval_h == 4.0 and mark.funding_8h == pytest.approx(0.0002)  # type: ignore[union-attr]


async def test_top_n_is_re_ranked_on_refresh_and_the_venue_renews_its_connections() -> None:
    btc = Instrument("bybit", "BTCUSDT", "BTC", "linear", 1.0, 8.0, oi_usd=2e9)
    eth = Instrument("bybit", "ETHUSDT", "ETH", "linear", 1.0, 8.0, oi_usd=1e9)
    protocol = BybitProtocol([btc, eth])
    async with FakeVenue(protocol) as venue:
        settings = load_settings(universe={"watch": "top:1"}, binance={"enabled": False},
                                 bybit={"enabled": True, "ws_url": venue.ws_url, "rest_url": venue.rest_url})
        markets = Markets(settings, EventQueue(1000))
        stop = asyncio.Event()
        task = asyncio.create_task(markets.run(stop))
        try:
            await until(lambda: "tickers.BTCUSDT" in venue.subscribed(), within=20)
            first = markets.collector("bybit")
            # ETH overtakes BTC in open interest; the next refresh (hourly by default) picks it up
            protocol.instruments = [btc, Instrument("bybit", "ETHUSDT", "ETH", "linear", 1.0, 8.0, oi_usd=3e9)]
            async with httpx.AsyncClient() as client:
                assert await markets.refresh(client) is True
            assert [i.symbol for i in markets.picks["bybit"]] == ["ETHUSDT"]
            await until(lambda: venue.subscribed() == {f"{kind}.ETHUSDT" for kind in
                                                       ("tickers", "publicTrade", "allLiquidation")}
                        | {"orderbook.50.ETHUSDT"}, within=20)
            assert markets.collector("bybit") is not first
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)
