"""The asset market view: venue events folded into one market per asset, per-venue detail kept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.engine import Detector
from detector.market import MARKET_VENUE
from detector.market_reference import ChainedSum, MarketView
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade, funding_mark
from flushwatch.settings import load_settings
from flushwatch.signals import AssetState

S = 1_000_000_000
T0 = 1_760_000_000 * S
COVERAGE = {"binance": "sampled", "bybit": "complete", "hyperliquid": "none"}


def view() -> MarketView:
    return MarketView(lambda venue: COVERAGE.get(venue, "unknown"), grace_s=60.0, oi_stale_s=600.0,
                      depth_stale_s=10.0)


def oi(venue: str, usd: float, t: int, price: float = 100.0) -> OpenInterest:
    return OpenInterest(venue, f"{venue}-BTC", "BTC", t, t, usd / price, usd)


def fund(venue: str, rate: float, interval_h: float, t: int, mark: float = 100.2, index: float = 100.0) -> FundingMark:
    return funding_mark(venue=venue, symbol=f"{venue}-BTC", asset="BTC", ts_event=t, ts_recv=t, mark_price=mark,
                        index_price=index, funding_rate=rate, funding_interval_h=interval_h, next_funding_ts=0)


def depth(venue: str, one_pct: float, spread: float, t: int) -> Depth:
    half = one_pct / 2
    return Depth(venue, f"{venue}-BTC", "BTC", t, t, 100.0, spread, (half / 2, half, half * 2),
                 (half / 2, half, half * 2), 150.0)


def test_open_interest_is_the_sum_over_venues() -> None:
    market = view()
    first = market.fold([oi("binance", 6e9, T0)])[0]
    second = market.fold([oi("bybit", 4e9, T0 + S)])[0]
    assert isinstance(second, OpenInterest) and second.venue == MARKET_VENUE and second.symbol == "BTC"
    assert first.oi_usd == 6e9 and second.oi_usd == pytest.approx(10e9)  # type: ignore[union-attr]
    moved = market.fold([oi("bybit", 3e9, T0 + 2 * S)])[0]
    assert moved.oi_usd == pytest.approx(9e9)  # type: ignore[union-attr]
    detail = market.venues("BTC")
    assert detail["binance"].oi_usd == 6e9 and detail["bybit"].oi_usd == 3e9
    assert detail["binance"].coverage == "sampled" and detail["bybit"].coverage == "complete"


def test_funding_and_premium_are_open_interest_weighted_per_8h() -> None:
    market = view()
    market.fold([oi("binance", 3e9, T0), oi("hyperliquid", 1e9, T0)])
    # Binance 0.01 % per 8 h, Hyperliquid 0.005 % per HOUR = 0.04 % per 8 h.
    market.fold([fund("binance", 0.0001, 8.0, T0 + S, mark=100.1)])
    out = market.fold([fund("hyperliquid", 0.00005, 1.0, T0 + 2 * S, mark=100.5)])[0]
    assert isinstance(out, FundingMark) and out.venue == MARKET_VENUE
    assert out.funding_8h == pytest.approx((3 * 0.0001 + 1 * 0.0004) / 4)
    assert out.premium_bps == pytest.approx((3 * 10.0 + 1 * 50.0) / 4, rel=1e-6)
    assert market.venues("BTC")["hyperliquid"].funding_8h == pytest.approx(0.0004)


def test_a_venue_without_open_interest_yet_weighs_the_mean() -> None:
    market = view()
    market.fold([oi("binance", 2e9, T0), oi("bybit", 4e9, T0)])
    market.fold([fund("binance", 0.0001, 8.0, T0), fund("bybit", 0.0002, 8.0, T0)])
    out = market.fold([fund("okx", 0.0004, 8.0, T0 + S)])[0]
    assert out.funding_8h == pytest.approx((2 * 0.0001 + 4 * 0.0002 + 3 * 0.0004) / 9)  # type: ignore[union-attr]


def test_liquidations_and_trades_pass_through_and_are_counted_per_venue() -> None:
    market = view()
    events = [
        Liquidation("bybit", "BTCUSDT", "BTC", T0, T0, 100.0, 2.0, "long"),
        Liquidation("binance", "BTCUSDT", "BTC", T0, T0, 100.0, 1.0, "short"),
        Trade("binance", "BTCUSDT", "BTC", T0, T0, 100.0, 5.0, "sell"),
    ]
    assert market.fold(events) == events
    detail = market.venues("BTC")
    assert (detail["bybit"].liq_long_usd, detail["bybit"].liq_short_usd) == (200.0, 0.0)
    assert (detail["binance"].liq_long_usd, detail["binance"].liq_short_usd) == (0.0, 100.0)


def test_depth_sums_fresh_books_and_takes_the_deepest_spread() -> None:
    market = view()
    market.fold([depth("binance", 3e6, 0.5, T0)])
    out = market.fold([depth("bybit", 1e6, 2.0, T0 + S)])[0]
    assert isinstance(out, Depth)
    assert out.bid_usd[1] + out.ask_usd[1] == pytest.approx(4e6)
    assert out.spread_bps == 0.5  # Binance holds most of the size


def test_a_venue_joining_after_the_grace_period_does_not_move_the_level() -> None:
    market = view()
    market.fold([oi("binance", 6e9, T0)])
    late = market.fold([oi("bybit", 4e9, T0 + 120 * S)])[0]
    assert late.oi_usd == pytest.approx(6e9)  # type: ignore[union-attr]
    # both move +10 %: so does the level
    market.fold([oi("binance", 6.6e9, T0 + 121 * S)])
    out = market.fold([oi("bybit", 4.4e9, T0 + 122 * S)])[0]
    assert out.oi_usd == pytest.approx(6.6e9)  # type: ignore[union-attr]
    assert market.venues("BTC")["bybit"].oi_usd == 4.4e9  # the true value stays visible per venue


def test_a_silent_venue_leaves_the_sum_without_a_drop() -> None:
    chained = ChainedSum(grace_s=10.0, stale_s=30.0)
    chained.update("a", 5.0, T0)
    chained.update("b", 5.0, T0 + S)
    assert chained.level == 10.0
    level = chained.update("a", 5.0, T0 + 100 * S)  # b silent for 99 s
    assert chained.total == 5.0 and level == pytest.approx(10.0)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(1.0, 1e6), st.integers(0, 5 * S)), min_size=1,
                max_size=60))
def test_only_composition_changes_move_level_away_from_total(steps: list[tuple[str, float, int]]) -> None:
    chained = ChainedSum(grace_s=1.0, stale_s=1e9)
    ratio = None
    seen: set[str] = set()
    t = T0
    for venue, value, dt in steps:
        t += dt
        level = chained.update(venue, value, t)
        assert level > 0 and math.isfinite(level)
        if venue not in seen or ratio is None:
            seen.add(venue)
            ratio = level / chained.total
        assert level / chained.total == pytest.approx(ratio, rel=1e-9)


def test_the_detector_reports_each_venue_with_its_coverage() -> None:
    detector = Detector(load_settings(), capacity=4)
    signals = detector.process([
        Trade("binance", "BTCUSDT", "BTC", T0, T0, 100.0, 1.0, "buy"),
        oi("binance", 6e9, T0 + S),
        oi("bybit", 4e9, T0 + S),
        Liquidation("bybit", "BTCUSDT", "BTC", T0 + S, T0 + S, 100.0, 1.0, "long"),
        Trade("binance", "BTCUSDT", "BTC", T0 + 3 * S, T0 + 3 * S, 100.0, 1.0, "buy"),
        # evaluations fall on the grid just before a crossing event: these put one past the next snapshot's time
        Trade("binance", "BTCUSDT", "BTC", T0 + 7 * S, T0 + 7 * S, 100.0, 1.0, "buy"),
        Trade("binance", "BTCUSDT", "BTC", T0 + 9 * S, T0 + 9 * S, 100.0, 1.0, "buy"),
    ])
    states = [s for s in signals if isinstance(s, AssetState)]
    assert states, "an evaluation crossed the grid"
    # the first snapshot is taken before the venues reported, the next one after: each shows its moment
    assert states[0].venues == {}
    venues = states[-1].venues
    assert venues["binance"].coverage == "sampled" and venues["bybit"].liq_long_usd == 100.0
    assert detector.state.oi_usd[detector.assets.index("BTC")] == pytest.approx(10e9)


def test_snapshots_list_each_assets_venues_by_name_with_unknown_values_as_none() -> None:
    """Venues join in the order they report; a snapshot names them sorted, each asset only its own."""
    detector = Detector(load_settings(), capacity=4)

    def eth_oi(venue: str, usd: float, t: int) -> OpenInterest:
        return OpenInterest(venue, f"{venue}-ETH", "ETH", t, t, usd / 100.0, usd)

    signals = detector.process([
        Trade("okx", "BTCUSDT", "BTC", T0, T0, 100.0, 1.0, "buy"),
        Trade("okx", "ETHUSDT", "ETH", T0, T0, 100.0, 1.0, "buy"),
        Trade("okx", "SOLUSDT", "SOL", T0, T0, 100.0, 1.0, "buy"),
        oi("okx", 1e9, T0 + S),
        fund("hyperliquid", 1e-4, 1.0, T0 + S),
        oi("bybit", 4e9, T0 + S),
        eth_oi("bybit", 2e9, T0 + S),
        eth_oi("binance", 3e9, T0 + S),
        Trade("okx", "BTCUSDT", "BTC", T0 + 7 * S, T0 + 7 * S, 100.0, 1.0, "buy"),
        Trade("okx", "BTCUSDT", "BTC", T0 + 9 * S, T0 + 9 * S, 100.0, 1.0, "buy"),
    ])
    latest = {s.asset: s for s in signals if isinstance(s, AssetState)}
    btc, eth, sol = latest["BTC"].venues, latest["ETH"].venues, latest["SOL"].venues
    assert list(btc) == ["bybit", "hyperliquid", "okx"] and list(eth) == ["binance", "bybit"] and sol == {}
    assert btc["bybit"].oi_usd == 4e9 and btc["okx"].oi_usd == 1e9 and eth["binance"].oi_usd == 3e9
    assert btc["hyperliquid"].oi_usd is None and btc["bybit"].funding_8h is None and btc["bybit"].depth_1pct_usd is None
    assert btc["hyperliquid"].funding_8h == pytest.approx(8e-4) and btc["hyperliquid"].coverage == "none"
    assert btc["okx"].ts_event == T0 + S and eth["bybit"].liq_long_usd == 0.0
