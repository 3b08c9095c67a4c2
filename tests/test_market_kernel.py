"""The market fold kernel (``detector.market.fold_market``) against its plain-Python twin
(``detector.market_reference.MarketView``) on random multi-venue event streams: the same rows for the kernels,
the same per-venue detail."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.batch import by_time, stream_columns, to_columns
from detector.market import DEPTH_STALE_S, GRACE_S, OI_STALE_S, allocate_market, fold_market, grow_market, venue_views
from detector.market_reference import MarketView
from flushwatch.events import Depth, Event, Liquidation, OpenInterest, Trade, funding_mark

S = 1_000_000_000
T0 = 1_760_000_000 * S
VENUES = ("binance", "bybit", "okx", "hyperliquid")
ASSETS = ("BTC", "ETH")
ARGS = (int(GRACE_S * S), int(OI_STALE_S * S), int(DEPTH_STALE_S * S))


def coverage(venue: str) -> str:
    return "complete" if venue == "bybit" else "sampled"


amount = st.floats(1e6, 1e10)
price = st.floats(10.0, 1e5)
gap = st.sampled_from([0, 1, S // 4, S // 2, 3 * S, 10 * S, 11 * S, 70 * S, 700 * S])
"""Steps of event time that cross the grace period and both staleness limits."""


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    out: list[Event] = []
    t = T0
    for _ in range(draw(st.integers(1, 60))):
        t += draw(gap)
        venue, asset = draw(st.sampled_from(VENUES)), draw(st.sampled_from(ASSETS))
        common = (venue, f"{asset}-{venue}", asset, t, t + 7)
        kind = draw(st.sampled_from(["trade", "liq", "oi", "funding", "depth"]))
        if kind == "trade":
            side = draw(st.sampled_from(["buy", "sell"]))
            out.append(Trade(*common, draw(price), draw(st.floats(0.001, 10.0)), side))
        elif kind == "liq":
            out.append(Liquidation(*common, draw(price), draw(st.floats(0.001, 10.0)),
                                   draw(st.sampled_from(["long", "short"]))))
        elif kind == "oi":
            out.append(OpenInterest(*common, draw(amount) / 100.0, draw(amount)))
        elif kind == "funding":
            index = draw(st.one_of(st.just(0.0), price))  # some venues publish no index
            out.append(funding_mark(venue=venue, symbol=common[1], asset=asset, ts_event=t, ts_recv=t + 7,
                                    mark_price=draw(price), index_price=index,
                                    funding_rate=draw(st.floats(-0.003, 0.003)),
                                    funding_interval_h=draw(st.sampled_from([1.0, 4.0, 8.0])), next_funding_ts=0))
        else:
            bands = (draw(amount) / 4, draw(amount) / 2, draw(amount))
            out.append(Depth(*common, draw(price), draw(st.floats(0.1, 20.0)), bands,
                             (bands[0] * 0.9, bands[1] * 0.9, bands[2] * 0.9), 150.0))
    return out


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a == b) | np.isclose(a, b, rtol=1e-9, atol=0.0) | (np.isnan(a) & np.isnan(b))))


@settings(max_examples=300, deadline=None)
@given(events(), st.integers(1, 5))
def test_the_kernel_folds_as_the_reference_does(stream: list[Event], cuts: int) -> None:
    slots = [ASSETS.index(e.asset) for e in stream]
    venues = [VENUES.index(e.venue) for e in stream]
    reference = MarketView(coverage)
    # Both fold segment by segment, as the detector does: state carries over between calls.
    market = allocate_market(len(ASSETS), 2)  # narrower than the venues used: widened as the detector does
    market = grow_market(market, len(ASSETS), len(VENUES))
    bounds = sorted({0, len(stream), *np.linspace(0, len(stream), cuts + 1).astype(int).tolist()})
    for a, b in itertools.pairwise(bounds):
        expected = to_columns(reference.fold(stream[a:b]), slots[a:b])
        columns = stream_columns(stream[a:b], slots[a:b], venues[a:b])
        kind, slot, venue, ts, v0, v1, v2, _, _ = columns
        fold_market(market, kind, slot, venue, ts, v0, v1, v2, *ARGS)
        got = by_time(columns)
        names = ["kind", "slot", "t", "v0", "v1", "v2", "v3", "recv"]
        for name, mine, theirs in zip(names, got, expected, strict=True):
            assert mine.dtype == theirs.dtype and close(mine, theirs), (name, mine, theirs)
    for asset in ASSETS:
        mine_views = venue_views(market, np.array([ASSETS.index(asset)]), VENUES, coverage)[0]
        theirs_views = reference.venues(asset)
        assert mine_views.keys() == theirs_views.keys()
        for name, view in theirs_views.items():
            for field in view.__struct_fields__:
                value, other = getattr(view, field), getattr(mine_views[name], field)
                assert value == other or (isinstance(value, float) and isinstance(other, float)
                                          and math.isclose(value, other, rel_tol=1e-9)), (asset, name, field)
