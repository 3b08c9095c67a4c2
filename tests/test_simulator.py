"""The agent-based simulator: determinism, an emergent cascade, conservation of open interest, ground-truth
labels, frames every real parser accepts, the Binance liquidation cap, recordings, the fake-venue sources."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.binance.parse import BinanceParser
from collectors.instruments import Instrument
from collectors.venues import parser_for
from flushwatch.events import Liquidation
from flushwatch.fake.binance import wrap
from flushwatch.recordings import Recordings
from flushwatch.simulator import SimConfig, SimulatedBinance, SimulatedBybit, Simulation, cli
from flushwatch.simulator.frames import Frame
from flushwatch.simulator.labels import stages
from flushwatch.simulator.model import BYBIT, CLOSED, FORCED, LIQUIDATED, OPEN, walk
from flushwatch.simulator.output import write

SHORT = SimConfig(minutes=20)


@pytest.fixture(scope="module")
def flush() -> Simulation:
    return Simulation(SimConfig())


@pytest.fixture(scope="module")
def squeeze() -> Simulation:
    return Simulation(SimConfig(side="short"))


@pytest.fixture(scope="module")
def flush_frames(flush: Simulation) -> list[Frame]:
    return list(flush.frames())


def digest(frames: Iterable[Frame]) -> str:
    h = hashlib.sha256()
    for ts, venue, topic, payload in frames:
        h.update(f"{ts}|{venue}|{topic}|{payload}\n".encode())
    return h.hexdigest()


# --- the market ---------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = digest(Simulation(SHORT).frames())
    assert digest(Simulation(SHORT).frames()) == first
    assert digest(Simulation(SimConfig(minutes=20, seed=1)).frames()) != first


def test_the_cascade_needs_the_shock(flush: Simulation) -> None:
    calm = Simulation(SimConfig(shock_usd=0.0))
    assert flush.liquidated_usd["long"] > 50e6
    assert calm.liquidated_usd["long"] < 0.05 * flush.liquidated_usd["long"]
    assert calm.stages.max() == 0
    # the shock alone is a fraction of what the risk engine then sells
    assert flush.liquidated_usd["long"] > 1.5 * SimConfig().shock_usd
    assert flush.min_price < 0.92 * flush.max_price


def test_more_leverage_a_bigger_cascade(flush: Simulation) -> None:
    cautious = Simulation(SimConfig(buildup_leverage=10.0))
    assert cautious.liquidated_usd["long"] < 0.7 * flush.liquidated_usd["long"]
    assert cautious.min_price > flush.min_price


def test_open_interest_is_conserved(flush: Simulation) -> None:
    run = flush.run
    oi = run.oi.sum(axis=1)
    change = run.opened - run.closed - run.liquidated
    np.testing.assert_allclose(np.diff(oi), change[1:], rtol=0, atol=1e-6 * oi.max())
    pos = run.positions
    assert run.liquidated.sum() == pytest.approx(pos.size[pos.state == LIQUIDATED].sum())
    assert run.closed.sum() == pytest.approx(pos.size[(pos.state == CLOSED) & (pos.open_s >= 0)].sum()
                                             + pos.size[(pos.state == CLOSED) & (pos.open_s < 0)].sum())
    assert oi[-1] == pytest.approx(pos.size[pos.state == OPEN].sum())
    # every liquidated position's price was crossed before the risk engine closed it
    gone = np.flatnonzero(pos.state == LIQUIDATED)
    crossed = pos.side[gone] * (run.mid[pos.exit_s[gone] - 1] - pos.liq[gone]) <= 0
    assert crossed.all()


def test_labels_are_monotone_and_reach_flushed(flush: Simulation, squeeze: Simulation) -> None:
    for sim in (flush, squeeze):
        stage = [label.stage for label in sim.labels]
        assert stage == sorted(stage) and stage[0] == 0 and stage[-1] == 7
        assert {1, 3, 4} <= set(stage)
        assert all(label.side == sim.config.side and label.asset == "BTC" for label in sim.labels)
        shock_ms = sim.config.t0_ms + sim.run.shock_s * 1000
        assert next(label.t_ms for label in sim.labels if label.stage == 1) == shock_ms
        assert np.all(np.diff(stages(sim.run)) >= 0)


def test_the_mirror_squeezes_shorts(squeeze: Simulation) -> None:
    assert squeeze.liquidated_usd["short"] > 50e6
    assert squeeze.liquidated_usd["long"] < 0.01 * squeeze.liquidated_usd["short"]
    assert squeeze.max_price > 1.08 * squeeze.min_price
    assert squeeze.run.funding[squeeze.run.shock_s - 1] < 0  # crowded shorts pay


# --- the book walk against a level-by-level reference ------------------------------------------------


def walk_reference(depth: list[float], boundary: int, usd: float) -> tuple[int, list[float]]:
    """Take from each level in turn, best first; the new best level is the first with depth left."""
    book, want = list(depth), abs(usd)
    if usd == 0:
        return boundary, book
    order = list(range(boundary, -1, -1)) if usd < 0 else list(range(boundary + 1, len(book)))
    for level in order:
        take = min(book[level], want)
        book[level] -= take
        want -= take
    best = next((level for level in order if book[level] > 0), order[-1])
    return (best if usd < 0 else best - 1), book


# Whole numbers keep the sums exact, so the reference's order of additions cannot matter.
@settings(max_examples=200, deadline=None)
@given(depth=st.lists(st.integers(0, 10**6).map(float), min_size=4, max_size=40), data=st.data())
def test_walk_matches_reference(depth: list[float], data: st.DataObject) -> None:
    boundary = data.draw(st.integers(1, len(depth) - 3))
    usd = float(data.draw(st.integers(-2 * 10**7, 2 * 10**7)))
    book = np.array(depth)
    got = walk(book, boundary, usd)
    want_boundary, want_book = walk_reference(depth, boundary, usd)
    assert got == want_boundary
    assert book.tolist() == want_book
    reachable = sum(depth[boundary::-1]) if usd < 0 else sum(depth[boundary + 1:])
    assert sum(depth) - book.sum() == min(abs(usd), reachable)


# --- frames -------------------------------------------------------------------------------------------


def test_every_frame_parses_without_rejects(flush: Simulation, flush_frames: list[Frame]) -> None:
    parsers = {v: parser_for(v, [Instrument(v, "BTCUSDT", "BTC", "linear", 1.0, 8.0)], 1 << 22)
               for v in ("binance", "bybit")}
    binance = parsers["binance"]
    assert isinstance(binance, BinanceParser)
    kinds: Counter[tuple[str, str]] = Counter()
    liquidated: Counter[str] = Counter()
    for ts, venue, topic, payload in flush_frames:
        result = parsers[venue].parse(wrap(topic, payload) if venue == "binance" else payload, ts * 1_000_000)
        assert result.rejects == [], (topic, payload[:200])
        for event in result.events:
            kinds[venue, type(event).__name__] += 1
            if isinstance(event, Liquidation):
                liquidated[venue] += 1
                assert event.side == "long"
    for ts, _, _, body in flush.rest():
        result = binance.open_interest(body, ts * 1_000_000)
        assert result.rejects == [] and len(result.events) == 1
        kinds["binance", type(result.events[0]).__name__] += 1
    for venue in ("binance", "bybit"):
        assert {"Trade", "Depth", "FundingMark", "OpenInterest", "Liquidation"} <= {k for v, k in kinds if v == venue}
    run = flush.run
    assert liquidated["bybit"] == np.sum((run.kind == FORCED) & (run.venue == BYBIT))  # Bybit pushes them all
    assert [f[0] for f in flush_frames] == sorted(f[0] for f in flush_frames)


def test_binance_reports_one_liquidation_per_window(flush: Simulation, flush_frames: list[Frame]) -> None:
    run, t0 = flush.run, flush.config.t0_ms
    for stream in ("btcusdt@forceOrder", "!forceOrder@arr"):
        pushed = [json.loads(p) for _, v, s, p in flush_frames if s == stream]
        windows = [(m["E"] - t0) // 1000 - 1 for m in pushed]
        assert len(windows) == len(set(windows)) > 0
        for window, message in zip(windows, pushed, strict=True):
            forced = np.flatnonzero((run.order_s == window) & (run.kind == FORCED) & (run.venue == 0))
            assert message["o"]["T"] == t0 + window * 1000 + run.offset_ms[forced].max()
    forced_windows = {int(s) for s in run.order_s[(run.kind == FORCED) & (run.venue == 0)]}
    assert len(windows) == len(forced_windows) < np.sum((run.kind == FORCED) & (run.venue == 0))


def test_the_recording_reads_back(tmp_path: Path) -> None:
    sim = Simulation(SHORT)
    recording, labels = write(sim, tmp_path)
    records = list(Recordings([recording]))
    frames = [r for r in records if r.kind == "recv"]
    expected = [(wrap(t, p) if v == "binance" else p).encode() for _, v, t, p in sim.frames()]
    assert [r.data for r in frames] == expected
    assert [r.ts // 1_000_000 - 5 for r in frames] == [f[0] for f in sim.frames()]
    http = [r for r in records if r.kind == "http"]
    assert [(r.conn, r.data.decode()) for r in http] == [(url, body) for _, _, url, body in sim.rest()]
    document = json.loads(labels.read_text())
    assert [d["stage"] for d in document["labels"]] == [label.stage for label in sim.labels]
    assert document["recording"] == recording.name
    again = write(sim, tmp_path / "again")[0]
    assert again.read_bytes() == recording.read_bytes()


# --- serving and the command ---------------------------------------------------------------------------


async def test_sources_play_the_run_at_speed() -> None:
    sim = Simulation(SimConfig(minutes=2))
    binance, bybit = SimulatedBinance(sim, speed=1e5), SimulatedBybit(sim, speed=1e5)
    pushed = [frame async for batch in binance.batches() for frame in batch]
    assert [s for s, _ in pushed] == [f[2] for f in sim.frames(binance.t0_ms) if f[1] == "binance"]
    text, _ = binance.open_interest("BTCUSDT") or ("", 0)
    assert float(text) == pytest.approx(sim.run.oi[-1, 0], abs=1e-3)
    assert binance.open_interest("ETHUSDT") is None
    frames = await asyncio.wait_for(_collect(bybit), 10)
    assert len(frames) == sum(1 for f in sim.frames() if f[1] == "bybit")


async def _collect(source: SimulatedBybit) -> list[str]:
    return [frame async for batch in source.batches() for frame in batch]


def test_cli_writes_and_summarises(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = io.StringIO()
    args = parser.parse_args(["--seed", "2", "--minutes", "30", "--out", str(tmp_path), "--venues", "bybit"])
    assert cli.run(args, out) == 0
    text = out.getvalue()
    assert "true stages:" in text and "liquidated: longs $" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flushwatch-sim-2-0.jsonl.zst", "labels.json"]
    assert Recordings([tmp_path / "flushwatch-sim-2-0.jsonl.zst"]).instruments("binance") == []
    bad = parser.parse_args(["--out", str(tmp_path), "--venues", "okx"])
    assert cli.run(bad, io.StringIO()) == 2


@pytest.mark.slow
async def test_the_demo_plays_the_simulated_market_through_the_whole_pipeline() -> None:
    """The agent-based flush, served by the fake Binance in real time, read by the live daemon: the long side
    goes up through the cascade stages and is flushed, and the summary names the true stage beside each change."""
    import io

    from rich.console import Console

    from flushwatch.demo import run_demo

    out = io.StringIO()
    changes = await run_demo(script="simulated", speed=300.0, console=Console(file=out, width=200))
    long = [c for c in changes if c.side == "long" and c.stage != c.stage_from]
    assert max(c.stage for c in long) >= 4 and any(c.stage == 7 for c in long), [(c.stage_from, c.stage) for c in long]
    assert "ground truth" in out.getvalue() and "long flushed" in out.getvalue()
