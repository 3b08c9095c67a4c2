"""``flushwatch backtest`` on the real data in ../shared/data (skipped when it is absent): the CoinGlass hourly
BTC series converted to the generic bar CSV here, Binance 1-minute klines as they are, a recorded session, and
simulator runs with ground truth when the simulator is installed. The assertions are the issue's."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data

from flushwatch.backtest import cli
from flushwatch.backtest.bars import read_bars
from flushwatch.backtest.feed import bar_events
from flushwatch.backtest.profiles import backtest_settings
from flushwatch.backtest.runner import Run, run_detector

FLUSH = ("2026-01-29", "2026-02-06")


def backtest(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def coinglass_to_generic(out: Path) -> Path:
    """The user's conversion: CoinGlass's regime file to the generic bar CSV. Funding there is in percent per
    (8-hour) interval; the open-interest-weighted rate is the market's, so that one is used, as a fraction."""
    src = shared_data("coinglass_btc_1h", "coinglass_BTC_regime_1h_2025-12-04_2026-03-31.csv")
    with src.open(newline="") as f, out.open("w", newline="") as g:
        writer = csv.writer(g)
        writer.writerow(["ts", "open", "high", "low", "close", "liq_long_usd", "liq_short_usd", "oi_usd", "funding_8h"])
        for r in csv.DictReader(f):
            writer.writerow([r["timestamp"], r["price_open"], r["price_high"], r["price_low"], r["price_close"],
                             r["liquidation_long_usd"], r["liquidation_short_usd"], r["oi_close"],
                             float(r["oi_weight_close"]) / 100])
    return out


@pytest.fixture(scope="module")
def coinglass(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Run]:
    folder = tmp_path_factory.mktemp("coinglass")
    bars_csv = coinglass_to_generic(folder / "btc_1h.csv")
    known = folder / "known.json"
    known.write_text(json.dumps([{"name": "2026-01-29 long flush", "start": f"{FLUSH[0]}T00:00:00Z",
                                  "end": f"{FLUSH[1]}T23:59:59Z", "side": "long"}]))
    out = folder / "summary.json"
    assert backtest(["--bars", str(bars_csv), "--events", str(known), "--json", str(out),
                     "--png", str(folder / "chart.png")]) == 0
    bars = read_bars(bars_csv)
    run = run_detector(bar_events(bars), backtest_settings(bars.interval_s, {}))
    return json.loads(out.read_text()), run


def long_episodes_over(summary: dict[str, Any], day: str, min_stage: int) -> list[dict[str, Any]]:
    return [e for e in summary["episodes"] if e["side"] == "long" and e["max_stage"] >= min_stage
            and e["start"][:10] <= day <= e["end"][:10]]


def test_coinglass_the_long_flush_is_found_around_01_31_and_02_05(coinglass: tuple[dict[str, Any], Run]) -> None:
    summary, _ = coinglass
    assert long_episodes_over(summary, "2026-01-31", 3)
    assert long_episodes_over(summary, "2026-02-05", 3)
    assert "2026-01-29 long flush" in summary["hits"]


def test_coinglass_the_flush_ends_in_stage_7_with_oi_down_and_funding_negative(
        coinglass: tuple[dict[str, Any], Run]) -> None:
    _, run = coinglass
    flushed = [c for c in run.changes if c.side == "long" and c.stage == 7
               and ns("2026-02-05T00:00:00") <= c.ts <= ns("2026-02-07T00:00:00")]
    assert flushed
    assert any(c.evidence["oi_chg_episode_long"] < 0 and c.evidence["funding_8h"] < 0 for c in flushed)


def test_coinglass_the_overheat_score_is_reported_for_the_days_before(coinglass: tuple[dict[str, Any], Run]) -> None:
    summary, _ = coinglass
    daily = summary["overheat"]["BTC"]
    for day in range(22, 29):
        scores = daily[f"2026-01-{day}"]
        assert 0.0 <= scores["long"] <= 100.0 and 0.0 <= scores["short"] <= 100.0


def test_coinglass_stage_3_episodes_on_other_days_are_listed_as_false_alarms(
        coinglass: tuple[dict[str, Any], Run]) -> None:
    summary, _ = coinglass
    outside = [e for e in summary["episodes"] if e["max_stage"] >= 3
               and (e["end"][:10] < FLUSH[0] or e["start"][:10] > FLUSH[1])]
    assert all(e["false_alarm"] for e in outside)
    assert summary["false_alarms"] == sum(e["false_alarm"] for e in summary["episodes"]) >= len(outside)
    span_days = (ns(summary["end"][:19]) - ns(summary["start"][:19])) / 86_400e9
    assert summary["calm_days"] == pytest.approx(span_days - 9, abs=1e-3)  # the flush window is 9 days
    assert summary["false_alarms_per_calm_day"] == pytest.approx(summary["false_alarms"] / summary["calm_days"])


@pytest.fixture(scope="module")
def klines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = shared_data("binance_klines_1m", "BTCUSDT-perp-1m_2025-10-09T0000Z_2025-10-11T1200Z.csv")
    out = tmp_path_factory.mktemp("klines") / "summary.json"
    assert backtest(["--bars", str(path), "--json", str(out)]) == 0
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def test_klines_the_shock_is_flagged_within_2_minutes_of_the_20_50_onset(klines: dict[str, Any]) -> None:
    onset = "2025-10-10T20:50:00"
    assert any(e["side"] == "long" and onset <= e["start"][:19] <= "2025-10-10T20:52:00" for e in klines["episodes"])


def test_klines_the_cascade_is_flagged_before_the_21_20_low(klines: dict[str, Any]) -> None:
    cascades = [e for e in klines["episodes"] if e["side"] == "long" and e["max_stage"] >= 4
                and "2025-10-10T20:50:00" <= e["start"][:19] < "2025-10-10T21:20:00"]
    assert cascades, f"missing evidence: {klines['missing_evidence']}"


def test_a_recorded_session_runs_through_the_same_path(tmp_path: Path) -> None:
    path = shared_data("cryptofeed_recordings", "BINANCE_FUTURES.jsonl.zst")
    out = tmp_path / "summary.json"
    assert backtest(["--recording", str(path), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["events"] > 0
    assert any(text.startswith("no liquidations") for text in summary["missing_evidence"])


SEEDS = range(5)


@pytest.mark.skipif(importlib.util.find_spec("flushwatch.simulator.cli") is None, reason="no flushwatch.simulator yet")
@pytest.mark.parametrize("seed", SEEDS)
def test_simulator_runs_stage_accuracy_and_lead_time(seed: int, tmp_path: Path) -> None:
    from flushwatch.simulator import cli as simulate  # type: ignore[attr-defined, unused-ignore]

    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    assert simulate.run(parser.parse_args(["--seed", str(seed), "--minutes", "120", "--out", str(tmp_path)])) == 0
    recordings = sorted(tmp_path.glob("*.jsonl.zst"))
    labels = sorted(tmp_path.glob("*labels*.json"))
    assert recordings and labels
    out = tmp_path / "summary.json"
    assert backtest(["--recording", *map(str, recordings), "--labels", str(labels[0]), "--json", str(out)]) == 0
    accuracy = json.loads(out.read_text())["accuracy"]
    for side in accuracy.values():
        assert set(side["accuracy"]) <= {str(k) for k in range(8)}
        assert side["lead_s"]["3"] is not None  # the labelled liquidation stage is detected at all


def test_hyperliquid_branching_ratio_of_the_cascade_minutes_against_calmer_stretches(tmp_path: Path) -> None:
    path = shared_data("hyperliquid_2025-10-10", "cascade_timing_results.json")
    out = tmp_path / "reflexivity.json"
    assert backtest(["--timeline", str(path), "--windows", "21:15-21:17", "21:23-21:25", "21:25-21:27",
                     "--json", str(out)]) == 0
    rows = {r["window"]: r for r in json.loads(out.read_text())["reflexivity"]}
    cascade, calmer = rows["21:15-21:17"], [rows["21:23-21:25"], rows["21:25-21:27"]]
    assert cascade["arrivals"] > 10_000 and cascade["branching"] > 0.95  # near criticality
    assert all(c["branching"] < cascade["branching"] - 0.2 for c in calmer)
    assert all(c["branching_moment"] < cascade["branching_moment"] for c in calmer)
