"""The detector's companions wired in: what the stage machine sees from the fuel map, the Hawkes fit and the
hour-of-week baselines after real events pass through ``Detector.process``."""

from __future__ import annotations

import asyncio
import itertools
import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.batch import DEPTH, LIQ, OI, TRADE
from detector.engine import Detector
from detector.fuel import LEDGER_NAMES
from detector.shard import DetectorEngine
from detector.state import evidence
from flushwatch.events import Depth, Liquidation, OpenInterest, Trade
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer
from flushwatch.settings import load_settings
from flushwatch.streams import baselines_key

T0 = 1_767_600_000.0
ID = {"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC"}


def _ns(t: float) -> int:
    return round(t * 1e9)


def _trade(t: float, price: float, side: str = "buy") -> Trade:
    return Trade(**ID, ts_event=_ns(t), ts_recv=0, price=price, size=1.0, side=side)  # type: ignore[arg-type]


def _oi(t: float, usd: float, price: float) -> OpenInterest:
    return OpenInterest(**ID, ts_event=_ns(t), ts_recv=0, oi_base=usd / price, oi_usd=usd)


def _features(detector: Detector, events: list) -> dict[str, float]:
    """The features of the evaluation the last event's time crosses into (events apply before it)."""
    detector.process(events)
    last = events[-1].ts_event / 1e9
    detector.process([_trade(math.floor(last) + 1.5, detector.state.price[0])])
    return evidence(detector.state, 0)


def test_open_interest_built_on_buying_becomes_long_fuel_below_and_a_drop_sweeps_it() -> None:
    detector = Detector(load_settings())
    events = []
    for k in range(120):  # two minutes of aggressive buying while OI grows by 10 %
        t = T0 + k
        events += [_trade(t, 100_000.0), _oi(t + 0.5, 1e9 * (1 + 0.1 * k / 119), 100_000.0)]
    f = _features(detector, events)
    # 2x..50x longs opened at 100k liquidate 1.5 %..50 % below: some within 2 %, more within 10 %, most of it long
    assert 0 < f["fuel_below_2pct_usd"] <= f["fuel_below_5pct_usd"] <= f["fuel_below_10pct_usd"] < 1e8
    assert f["fuel_below_10pct_usd"] > f["fuel_above_10pct_usd"]
    assert math.isnan(f["branching_long"])  # no liquidations: nothing to fit
    before = f["fuel_below_5pct_usd"]
    # price trades 6 % down: the fuel within 5 % is swept, and counted as clusters' worth of open interest
    after = _features(detector, [_trade(T0 + 122 + k / 10, 100_000.0 * (1 - 0.006 * k), "sell") for k in range(11)])
    swept = detector.extras.fuel.ledger[0, 0, LEDGER_NAMES.index("swept")]
    assert swept >= before * 0.99 and after["sweeps_long"] >= 1.0
    assert after["sweeps_long"] == pytest.approx(swept / (0.002 * 1.1e9))


def test_a_self_exciting_burst_of_liquidations_gets_a_branching_ratio() -> None:
    detector = Detector(load_settings())
    rng = np.random.default_rng(5)
    t, events = T0, []
    for _ in range(400):  # clustered arrivals: bursts of quick follow-ups after a few seconds' gap
        t += rng.exponential(4.0)
        for _ in range(rng.poisson(3.0)):
            t += rng.exponential(0.3)
            events.append(Liquidation(**ID, ts_event=_ns(t), ts_recv=0, price=100_000.0, size=0.1, side="long"))
    events.append(_trade(t + 6, 100_000.0))
    f = _features(detector, events)
    assert 0.3 < f["branching_long"] < 1.0 and math.isnan(f["branching_short"])
    assert f["branching_moment_long"] > 0.0


def _weeks_of_depth(detector: Detector, weeks: int) -> None:
    events = [Depth(**ID, ts_event=_ns(T0 + h * 3600), ts_recv=0, mid=100_000.0, spread_bps=1.0 + h % 24,
                    bid_usd=(1e6, 2e6 * (1 + h % 168), 4e6), ask_usd=(1e6, 2e6, 4e6), reach_bps=150.0)
              for h in range(weeks * 168 + 1)]
    detector.process(events)


def test_hour_of_week_baselines_survive_a_restart_through_redis(redis_server: RunningServer) -> None:
    async def main() -> None:
        redis = connect_redis(redis_server.url)
        try:
            first = DetectorEngine(redis, load_settings(), shard=0, consumer="a")
            _weeks_of_depth(first.detector, 3)
            before = first.detector.extras.season
            assert before.count[0].max() == 3
            await first.save_baselines()
            second = DetectorEngine(redis, load_settings(), shard=0, consumer="b")
            await second.load_baselines()
            after = second.detector.extras.season
            assert second.detector.assets == ["BTC"]
            np.testing.assert_array_equal(after.count[0], before.count[0])
            np.testing.assert_array_equal(after.median[0], before.median[0])
            # the restored history is what the next evaluation reads
            now = T0 + 3 * 7 * 86400 + 5 * 3600
            assert _features(second.detector, [_trade(now, 100_000.0)])["depth_season"] == pytest.approx(
                2e6 * (1 + 5) + 2e6, rel=1e-6)
            await redis.set(baselines_key(0), b"not an npz")
            third = DetectorEngine(redis, load_settings(), shard=0, consumer="c")
            await third.load_baselines()  # a damaged blob costs the history, not the start
            assert third.detector.assets == []
        finally:
            await redis.aclose()

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from([TRADE, LIQ, OI, DEPTH]), st.integers(0, 1), st.floats(0, 600),
                            st.floats(0.9, 1.1), st.sampled_from([-1.0, 1.0])), min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=5),
)
def test_companions_do_not_depend_on_how_rows_are_batched(rows, cuts) -> None:
    rows = sorted(rows, key=lambda r: r[2])
    n = len(rows)
    kind = np.array([r[0] for r in rows], np.int8)
    slot = np.array([r[1] for r in rows], np.int32)
    t = T0 + np.array([r[2] for r in rows])
    price = 100_000.0 * np.array([r[3] for r in rows])
    v0 = np.where(kind == OI, 1e9 * np.array([r[3] for r in rows]), price)
    v1 = np.where(kind == DEPTH, 2e7, 50_000.0)
    v2 = np.where(kind == DEPTH, 1.0, np.array([r[4] for r in rows]))
    cols = (kind, slot, t, v0, v1, v2, np.zeros(n))

    def run(bounds: list[int]) -> Detector:
        detector = Detector(load_settings(), capacity=2)
        for lo, hi in itertools.pairwise(bounds):
            detector.ingest(*(c[lo:hi] for c in cols))
        detector.step(T0 + 601)
        return detector

    whole = run([0, n])
    split = run(sorted({0, n, *(c for c in cuts if c < n)}))
    for a, b in zip(whole.extras, split.extras, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(whole.state.features, split.state.features)


@settings(max_examples=40, deadline=None)
@given(
    lags=st.lists(st.floats(0, 0.9), min_size=30, max_size=120),
    cuts=st.lists(st.integers(1, 119), max_size=6),
)
def test_signals_do_not_depend_on_how_reads_cut_the_stream(lags, cuts) -> None:
    """Two venues whose events arrive late by different amounts (a sampled feed's window-end push): whatever
    the reads, every evaluation segment is applied whole, in event-time order."""
    events = []
    for k, lag in enumerate(lags):
        t = T0 + k * 0.37
        events.append(_trade(t, 100_000.0 - k, "sell"))
        venue = "bybit" if k % 2 else "binance"
        events.append(Liquidation(venue=venue, symbol="BTCUSDT", asset="BTC", ts_event=_ns(t - lag), ts_recv=_ns(t),
                                  price=100_000.0 - k, size=0.1 + k / 100, side="long"))
    enc = msgspec.json.Encoder()

    def run(bounds: list[int]) -> list[bytes]:
        detector = Detector(load_settings())
        return [enc.encode(s) for lo, hi in itertools.pairwise(bounds) for s in detector.process(events[lo:hi])]

    whole = run([0, len(events)])
    assert whole == run(sorted({0, len(events), *(c for c in cuts if c < len(events))}))
    assert whole  # evaluations happened
