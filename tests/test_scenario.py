"""The scripted flush: determinism, the venue's liquidation cap, ground truth, and the scripted paths."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from typing import Any

import msgspec
import pytest
from conftest import shared_data, tardis_messages

from flushwatch.fake import Scenario

T0 = 1_700_000_000.0
T0_MS = 1_700_000_000_000


class Run:
    """Every frame of one scripted run by stream, parsed when a stream is first asked for."""

    def __init__(self, script: str, seed: int = 11) -> None:
        self.scenario = Scenario(script, seed=seed, t0=T0)
        self._payloads: dict[str, list[str]] = defaultdict(list)
        for _, stream, payload in self.scenario.frames():
            self._payloads[stream].append(payload)
        self._parsed: dict[str, list[dict[str, Any]]] = {}

    def stream(self, name: str) -> list[dict[str, Any]]:
        if name not in self._parsed:
            self._parsed[name] = [msgspec.json.decode(p) for p in self._payloads[name]]
        return self._parsed[name]

    def marks(self, symbol: str) -> list[dict[str, Any]]:
        """One per scenario second, in order (``test_ids_and_timestamps_are_consistent``)."""
        return self.stream(f"{symbol.lower()}@markPrice@1s")

    def price(self, symbol: str, second: int) -> float:
        return float(self.marks(symbol)[second]["p"])

    def funding(self, symbol: str, second: int) -> float:
        return float(self.marks(symbol)[second]["r"])

    def liquidations(self, symbol: str, start: int, end: int) -> list[dict[str, Any]]:
        """Reported liquidations of windows ``start`` .. ``end - 1`` (a window's order is pushed at its end)."""
        return [m["o"] for m in self.stream(f"{symbol.lower()}@forceOrder")
                if start < (m["E"] - T0_MS) / 1000 <= end]

    def trades(self, symbol: str, start: int, end: int) -> list[dict[str, Any]]:
        return [t for t in self.stream(f"{symbol.lower()}@aggTrade") if start <= (t["T"] - T0_MS) / 1000 < end]

    def books(self, symbol: str, start: int, end: int) -> list[dict[str, Any]]:
        return [b for b in self.stream(f"{symbol.lower()}@depth20@100ms")
                if start <= (b["T"] - T0_MS) / 1000 < end]


@pytest.fixture(scope="module")
def flush() -> Run:
    return Run("flush")


@pytest.fixture(scope="module")
def squeeze() -> Run:
    return Run("squeeze")


def notional(levels: list[list[str]]) -> float:
    return sum(float(p) * float(q) for p, q in levels)


def test_the_same_seed_gives_the_same_frames() -> None:
    a, b, other = Scenario(seed=5, t0=T0), Scenario(seed=5, t0=T0), Scenario(seed=6, t0=T0)
    for window in ((0, 20), (535, 560)):
        frames = list(a.frames(*window))
        assert len(frames) > 1000
        assert frames == list(b.frames(*window))
        assert frames != list(other.frames(*window))
    # any second renders alone exactly as in a sequential run
    assert list(a.frames(550, 552)) == a.frames_for_second(550) + b.frames_for_second(551)


def test_liquidations_respect_the_one_per_second_cap(flush: Run) -> None:
    total = 0
    for symbol in flush.scenario.symbols:
        for stream in (f"{symbol.lower()}@forceOrder", "!forceOrder@arr"):
            pushes = [m for m in flush.stream(stream) if m["o"]["s"] == symbol]
            times = [m["E"] for m in pushes]
            assert times == sorted(times)
            assert all(b - a >= 1000 for a, b in itertools.pairwise(times)), (symbol, stream)
            assert all(m["E"] - 1000 < m["o"]["T"] <= m["E"] for m in pushes)
            total += len(pushes)
    assert total == 2 * len(flush.stream("!forceOrder@arr"))


def test_phases_are_the_ground_truth(flush: Run) -> None:
    scenario = flush.scenario
    assert scenario.duration_s == 1600
    expect = {("BTC", 100): ("build_up", 0, "overheated"), ("BTC", 500): ("shock", 1, "shock"),
              ("BTCUSDT", 600): ("cascade", 4, "cascade"), ("BTC", 1000): ("recovery", 7, "flushed"),
              ("ETH", 500): ("build_up", 0, "overheated"), ("ETH", 520): ("shock", 1, "shock"),
              ("ETH", 600): ("cascade", 4, "cascade"), ("ETH", 640): ("recovery", 7, "flushed"),
              ("SOL", 600): ("overheated", 0, "overheated"), ("BTC", 5000): ("recovery", 7, "flushed")}
    for (asset, t), (name, stage, label) in expect.items():
        phase = scenario.phase_at(asset, t)
        assert (phase.name, phase.stage, phase.stage_name, phase.side) == (name, stage, label, "long")
    btc = [p for p in scenario.phases if p.asset == "BTC"]
    assert [(p.start_s, p.end_s) for p in btc] == [(0, 480), (480, 540), (540, 720), (720, 1600)]
    assert scenario.offset_s(T0_MS * 1_000_000 + 600 * 10**9) == pytest.approx(600.0)


def test_btc_flush_follows_the_script(flush: Run) -> None:
    price = {t: flush.price("BTCUSDT", t) for t in (0, 480, 540, 720, 1599)}
    assert price[0] == 100_000.0
    assert price[480] / price[0] == pytest.approx(1.005, abs=0.004)
    assert price[540] / price[480] == pytest.approx(0.98, abs=0.006)
    assert price[720] / price[540] == pytest.approx(0.94, abs=0.01)
    assert (price[1599] - price[720]) / (price[480] - price[720]) == pytest.approx(0.5, abs=0.12)

    returns = [flush.price("BTCUSDT", t + 1) / flush.price("BTCUSDT", t) - 1 for t in range(400)]
    assert statistics.pstdev(returns) == pytest.approx(0.0002, rel=0.25)

    oi = {t: flush.scenario.oi_at("BTCUSDT", t) for t in (0, 480, 700, 1600)}
    assert oi[0] == pytest.approx(80_000, rel=0.002) and oi[480] == pytest.approx(88_000, rel=0.002)
    assert oi[700] / oi[480] == pytest.approx(0.85, abs=0.01)
    assert oi[1600] / oi[480] == pytest.approx(0.85, abs=0.01)

    assert flush.funding("BTCUSDT", 0) == pytest.approx(0.0003)
    assert flush.funding("BTCUSDT", 479) == pytest.approx(0.0008, abs=0.00001)
    assert flush.funding("BTCUSDT", 1500) == pytest.approx(-0.0001, abs=0.000001)
    mark = flush.marks("BTCUSDT")[300]
    assert (float(mark["p"]) / float(mark["i"]) - 1) * 1e4 == pytest.approx(8.0, abs=0.01)

    build_up = flush.liquidations("BTCUSDT", 0, 480)
    assert 10 <= len(build_up) <= 45
    assert all(2_000 <= float(o["ap"]) * float(o["q"]) <= 5_100 for o in build_up)
    assert {o["S"] for o in build_up} == {"BUY", "SELL"}
    cascade = flush.liquidations("BTCUSDT", 540, 720)
    assert len(cascade) == 180  # one every second: the cap
    assert {o["S"] for o in cascade} == {"SELL"}
    assert all(195_000 <= float(o["ap"]) * float(o["q"]) <= 1_005_000 for o in cascade)
    assert len(flush.liquidations("BTCUSDT", 800, 1600)) < 60


def test_taker_flow_by_phase(flush: Run) -> None:
    def rate_and_imbalance(start: int, end: int) -> tuple[float, float]:
        trades = flush.trades("BTCUSDT", start, end)
        sells = sum(t["m"] for t in trades)
        return len(trades) / (end - start), (len(trades) - 2 * sells) / len(trades)

    calm_rate, calm_imbalance = rate_and_imbalance(0, 480)
    shock_rate, shock_imbalance = rate_and_imbalance(480, 540)
    cascade_rate, cascade_imbalance = rate_and_imbalance(540, 720)
    assert calm_rate == pytest.approx(20, rel=0.05) and 0.0 < calm_imbalance < 0.15
    assert shock_rate / calm_rate == pytest.approx(3, rel=0.1) and shock_imbalance == pytest.approx(-0.6, abs=0.06)
    assert cascade_rate / calm_rate == pytest.approx(5, rel=0.1) and cascade_imbalance < -0.5


def test_book_thins_and_spread_widens_in_the_cascade(flush: Run) -> None:
    def depth_and_spread(start: int, end: int) -> tuple[float, float]:
        books = flush.books("BTCUSDT", start, end)
        assert len(books) == 10 * (end - start)
        depth = statistics.mean(notional(b["b"]) + notional(b["a"]) for b in books)
        spread = statistics.mean(float(b["a"][0][0]) - float(b["b"][0][0]) for b in books)
        return depth, spread

    calm_depth, calm_spread = depth_and_spread(100, 400)
    crash_depth, crash_spread = depth_and_spread(640, 720)
    late_depth, late_spread = depth_and_spread(1200, 1500)
    assert calm_spread == pytest.approx(0.1)
    assert crash_spread == pytest.approx(0.5) and late_spread == pytest.approx(0.1)
    assert crash_depth / calm_depth == pytest.approx(0.2, abs=0.06)
    assert late_depth / calm_depth == pytest.approx(1.0, abs=0.2)


def test_eth_is_a_milder_copy_30_seconds_later(flush: Run) -> None:
    cascade = flush.liquidations("ETHUSDT", 570, 630)
    assert len(cascade) == 60 and {o["S"] for o in cascade} == {"SELL"}
    assert all(49_000 <= float(o["ap"]) * float(o["q"]) <= 201_000 for o in cascade)
    assert len(flush.liquidations("ETHUSDT", 540, 570)) < 5  # BTC's cascade has begun, ETH's has not
    assert flush.price("ETHUSDT", 570) / flush.price("ETHUSDT", 510) == pytest.approx(0.985, abs=0.006)
    oi = flush.scenario.oi_at
    assert oi("ETHUSDT", 630) / oi("ETHUSDT", 510) == pytest.approx(0.92, abs=0.01)


def test_sol_is_overheated_without_a_crash(flush: Run) -> None:
    marks = flush.marks("SOLUSDT")
    assert {m["r"] for m in marks} == {"0.00090000"}
    assert all((float(m["p"]) / float(m["i"]) - 1) * 1e4 == pytest.approx(12.0, abs=0.01) for m in marks)
    assert all(abs(float(m["p"]) / 150 - 1) < 0.01 for m in marks)
    oi = flush.scenario.oi_at
    assert oi("SOLUSDT", 1600) / oi("SOLUSDT", 0) == pytest.approx(1.12, abs=0.005)
    assert all(float(o["ap"]) * float(o["q"]) < 4_200 for o in flush.liquidations("SOLUSDT", 0, 1600))


def test_squeeze_is_the_mirror(squeeze: Run) -> None:
    cascade = squeeze.liquidations("BTCUSDT", 540, 720)
    assert len(cascade) == 180 and {o["S"] for o in cascade} == {"BUY"}
    assert squeeze.price("BTCUSDT", 720) / squeeze.price("BTCUSDT", 480) == pytest.approx(1 / 0.98 / 0.94, rel=0.01)
    assert all(squeeze.funding("BTCUSDT", t) < 0 for t in range(0, 700, 50))
    assert all(squeeze.funding("BTCUSDT", t) >= 0 for t in range(1000, 1600, 50))
    phase = squeeze.scenario.phase_at("BTC", 600)
    assert (phase.name, phase.stage, phase.side) == ("cascade", 4, "short")


def _shape(value: Any) -> Any:
    """Key names and value types, recursively: what a parser relies on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_payloads_have_binance_field_names_and_types(flush: Run) -> None:
    real: dict[str, dict[str, Any]] = {}
    for message in tardis_messages("binance-futures.ndjson"):
        data = message["data"]
        if isinstance(data, dict) and "e" in data:  # the union of the fixtures' fields per event type
            for key, value in data.items():
                real.setdefault(data["e"], {}).setdefault(key, value)
    recorded = [json.loads(r["data"]) for r in map(json.loads, shared_data(
        "cryptofeed_recordings", "BINANCE_FUTURES_sample.ndjson").read_text().splitlines()) if r.get("t") == "recv"]
    real["aggTrade"] = next(r["data"] for r in recorded if r["data"]["e"] == "aggTrade")  # has the "a" id
    # the diff-depth fixture lists one level; the partial book repeats the same [price, qty] shape 20 times
    for stream, event in (("btcusdt@aggTrade", "aggTrade"), ("ethusdt@markPrice@1s", "markPriceUpdate"),
                          ("btcusdt@forceOrder", "forceOrder"), ("!forceOrder@arr", "forceOrder"),
                          ("solusdt@depth20@100ms", "depthUpdate")):
        ours = flush.stream(stream)
        assert ours, stream
        assert {json.dumps(_shape(m), sort_keys=True) for m in ours} == {json.dumps(_shape(real[event]),
                                                                                    sort_keys=True)}, stream
    assert set(real["aggTrade"]) >= set(next(m["data"] for m in tardis_messages("binance-futures.ndjson")
                                             if m["stream"] == "btcusdt@aggTrade"))


def test_ids_and_timestamps_are_consistent(flush: Run) -> None:
    for symbol in flush.scenario.symbols:
        trades = flush.stream(f"{symbol.lower()}@aggTrade")
        assert [t["a"] for t in trades] == list(range(1, len(trades) + 1))
        assert all(t["f"] <= t["l"] for t in trades)
        assert all(a["l"] < b["f"] for a, b in itertools.pairwise(trades))
        assert all(a["E"] <= b["E"] for a, b in itertools.pairwise(trades))
        assert all(t["T"] <= t["E"] for t in trades)
        books = flush.stream(f"{symbol.lower()}@depth20@100ms")
        assert all(b["pu"] == a["u"] and b["U"] == a["u"] + 1 for a, b in itertools.pairwise(books))
        assert all(len(b["b"]) == len(b["a"]) == 20 for b in books)
        assert all(float(b["b"][0][0]) < float(b["a"][0][0]) for b in books)
        assert all([float(p) for p, _ in b["b"]] == sorted((float(p) for p, _ in b["b"]), reverse=True)
                   for b in books[::97])
        marks = flush.stream(f"{symbol.lower()}@markPrice@1s")
        assert [m["E"] for m in marks] == [T0_MS + 1000 * k for k in range(1600)]
        assert all(m["T"] % (8 * 3600 * 1000) == 0 and 0 < m["T"] - m["E"] <= 8 * 3600 * 1000 for m in marks)
