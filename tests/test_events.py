"""The event contract's helpers."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from flushwatch.events import DEPTH_BANDS_BPS, depth_from_levels, funding_mark

prices = st.floats(min_value=0.5, max_value=2.0, allow_nan=False)
sizes = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


def naive_bands(levels: list[tuple[float, float]], mid: float, side: int) -> list[float]:
    """Each band summed on its own, straight from the definition."""
    out = []
    for bps in DEPTH_BANDS_BPS:
        edge = mid * (1 + side * bps / 1e4)
        out.append(sum(p * q for p, q in levels if (p <= edge if side > 0 else p >= edge)))
    return out


@given(st.lists(st.tuples(prices, sizes), min_size=1, max_size=40),
       st.lists(st.tuples(prices, sizes), min_size=1, max_size=40))
def test_depth_bands_match_their_definition(raw_bids: list[tuple[float, float]],
                                            raw_asks: list[tuple[float, float]]) -> None:
    bids = sorted(((0.9 * p, q) for p, q in raw_bids), reverse=True)
    asks = sorted((0.9 + p, q) for p, q in raw_asks)  # overlapping ranges: crossed books happen too
    book = depth_from_levels(bids, asks)
    if bids[0][0] >= asks[0][0]:
        assert book is None
        return
    assert book is not None
    mid, spread_bps, bid_usd, ask_usd, reach_bps = book
    assert mid == (bids[0][0] + asks[0][0]) / 2
    assert spread_bps > 0
    for got, want in zip(bid_usd, naive_bands(bids, mid, -1), strict=True):
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9)
    for got, want in zip(ask_usd, naive_bands(asks, mid, 1), strict=True):
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9)
    assert bid_usd[0] <= bid_usd[1] <= bid_usd[2] and ask_usd[0] <= ask_usd[1] <= ask_usd[2]
    assert reach_bps == min(mid - bids[-1][0], asks[-1][0] - mid) / mid * 1e4


def test_one_sided_books_have_no_depth() -> None:
    assert depth_from_levels([], [(1.0, 1.0)]) is None
    assert depth_from_levels([(1.0, 1.0)], []) is None


def test_a_book_whose_notional_overflows_has_no_depth() -> None:
    # found by fuzzing Binance frames: finite price and size, infinite product
    huge = 1.4e154  # squared: 1.96e308, past the largest float
    assert depth_from_levels([(huge, huge)], [(huge * 1.0001, 1.0)]) is None
    assert depth_from_levels([(100.0, 1.0)], [(100.1, 1e308), (100.2, 1e308)]) is None


def test_funding_is_restated_per_8h_and_per_year() -> None:
    hourly = funding_mark(venue="v", symbol="S", asset="A", ts_event=1, ts_recv=2, mark_price=1.0,
                          index_price=1.0, funding_rate=0.0001, funding_interval_h=1.0, next_funding_ts=0)
    assert math.isclose(hourly.funding_8h, 0.0008)
    assert math.isclose(hourly.funding_annual, 0.0001 * 24 * 365)
    eight = funding_mark(venue="v", symbol="S", asset="A", ts_event=1, ts_recv=2, mark_price=1.0,
                         index_price=1.0, funding_rate=0.0001, funding_interval_h=8.0, next_funding_ts=0)
    assert math.isclose(eight.funding_8h, 0.0001) and math.isclose(eight.funding_annual, 0.1095)
