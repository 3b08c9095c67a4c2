"""How well the detector reads flushes: simulator runs with ground truth over many seeds and both sides, and
the real data in ../shared/data when it is there (``flushwatch backtest`` on each), against the two simple
baselines a user might run instead. Figures, not pass/fail: the tests hold the issue's thresholds."""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import emit, note
from flushwatch.backtest import cli as backtest_cli
from flushwatch.backtest.report import summarise, tapes
from flushwatch.backtest.runner import run_detector
from flushwatch.simulator import cli as simulate_cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _backtest(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    backtest_cli.add_arguments(parser)
    inputs = backtest_cli.inputs_from(parser.parse_args(argv))
    run = run_detector(inputs.events, inputs.settings)
    return summarise(inputs, run, tapes(inputs, run))


def simulated(seeds: int) -> None:
    """Per true stage: the share of labelled seconds the detector called the same; per stage, the median lead
    (positive: the detector reached it first); and how many flushes were found at stage 3+."""
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    confusion = np.zeros((8, 8), np.int64)
    leads: dict[str, list[float]] = {}
    found = false = runs = 0
    baseline_hits: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            for side in ("long", "short"):
                out = Path(tmp) / f"{side}-{seed}"
                simulate_cli.run(parser.parse_args(["--seed", str(seed), "--side", side, "--out", str(out)]),
                                 out=io.StringIO())  # its printed summary is not a figure
                summary = _backtest(["--recording", *map(str, sorted(out.glob("*.jsonl.zst"))),
                                     "--labels", str(out / "labels.json"), "--liq-usd-per-min", "5e6"])
                runs += 1
                found += len(summary["hits"])
                false += summary["false_alarms"]
                for name, scored in summary["baselines"].items():
                    if name != "options":
                        baseline_hits[name] = baseline_hits.get(name, 0) + len(scored["hits"])
                for per_side in summary["accuracy"].values():
                    confusion += np.array(per_side["confusion"])
                    for stage, lead in per_side["lead_s"].items():
                        if lead is not None:
                            leads.setdefault(stage, []).append(lead)
    emit("evaluation.sim.flushes_found", found / runs, "ratio", runs=runs, seeds=seeds, sides=2)
    emit("evaluation.sim.false_episodes_per_run", false / runs, "episodes")
    for name, hits in sorted(baseline_hits.items()):
        emit(f"evaluation.sim.baseline.{name}.found", hits / runs, "ratio")
    for stage in range(8):
        seconds = int(confusion[stage].sum())
        if seconds:
            emit(f"evaluation.sim.accuracy.stage_{stage}", confusion[stage, stage] / seconds, "ratio", seconds=seconds)
    for stage, values in sorted(leads.items()):
        emit(f"evaluation.sim.lead_s.stage_{stage}", statistics.median(values), "s", runs=len(values),
             p10=float(np.percentile(values, 10)), p90=float(np.percentile(values, 90)))


def real() -> None:
    klines = SHARED / "binance_klines_1m" / "BTCUSDT-perp-1m_2025-10-09T0000Z_2025-10-11T1200Z.csv"
    timeline = SHARED / "hyperliquid_2025-10-10" / "cascade_timing_results.json"
    if not klines.exists():
        note(f"{SHARED} not found: the real-data figures are skipped")
        return
    summary = _backtest(["--bars", str(klines)])
    long = [e for e in summary["episodes"] if e["side"] == "long"]
    onset = next((e for e in long if "2025-10-10T20:48" <= e["start"][:16] <= "2025-10-10T21:20"), None)
    if onset is not None:
        emit("evaluation.klines_2025_10_10.shock_after_onset_s",
             (np.datetime64(onset["start"][:19]) - np.datetime64("2025-10-10T20:50:00")) / np.timedelta64(1, "s"),
             "s", max_stage=onset["max_stage"])
    emit("evaluation.klines_2025_10_10.episodes", len(summary["episodes"]), "episodes",
         note="2.5 days without liquidation data: taker flow stands in")
    if timeline.exists():
        parser = argparse.ArgumentParser()
        backtest_cli.add_arguments(parser)
        start, x = backtest_cli.read_timeline(timeline)
        rows = backtest_cli.branching_by_window(x, backtest_cli.minute_windows(
            start, x, [("21:15", "21:17"), ("21:23", "21:27")]))
        for row in rows:
            emit(f"evaluation.hyperliquid_2025_10_10.branching.{row['window']}", row["branching"], "ratio",
                 moment=round(row["branching_moment"], 3), arrivals=row["arrivals"])


def run(quick: bool) -> None:
    simulated(3 if quick else 10)
    real()


if __name__ == "__main__":
    run(quick=True)
