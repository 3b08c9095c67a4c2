"""``flushwatch backtest`` on synthetic inputs: bar readers, bars -> events, the vectorised helpers against
plain-Python references, episodes and scoring, accuracy, and the command end to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.seasonal import S_LIQ_LONG
from detector.shard import DetectorEngine
from flushwatch.backtest import cli
from flushwatch.backtest.accuracy import stage_accuracy, stage_at
from flushwatch.backtest.bars import KLINE_COLUMNS, BarsError, read_bars
from flushwatch.backtest.baselines import alarm_runs, trailing_mean
from flushwatch.backtest.episodes import KnownEvent, calm_days, find_episodes, score
from flushwatch.backtest.feed import EVIDENCE, SLICES, bar_events, missing_evidence, path_prices
from flushwatch.backtest.profiles import BAR_PROFILES, backtest_settings, parse_overrides, profile_for
from flushwatch.backtest.runner import CHUNK, run_detector
from flushwatch.backtest.tape import bucket_last, bucket_sum
from flushwatch.events import FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer
from flushwatch.settings import load_settings
from flushwatch.signals import StageChange

EXAMPLES = settings(max_examples=60, deadline=None)
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
HOUR_MS = 3_600_000


# --- references ------------------------------------------------------------------------------------------


def ref_trailing_mean(x: list[float], window: int) -> list[float]:
    return [sum(x[i - window:i]) / window if i >= window else math.nan for i in range(len(x))]


def ref_alarm_runs(alarms: list[bool], gap: int) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for i, on in enumerate(alarms):
        if on:
            if runs and i - runs[-1][1] <= gap:
                runs[-1][1] = i
            else:
                runs.append([i, i])
    return [(a, b) for a, b in runs]


def ref_stage_at(times: list[float], change_times: list[float], stages: list[int]) -> list[int]:
    out = []
    for t in times:
        current = 0
        for ct, s in zip(change_times, stages, strict=True):
            if ct <= t:
                current = s
        out.append(current)
    return out


# --- helpers against references -------------------------------------------------------------------------


@EXAMPLES
@given(st.lists(st.floats(0, 1e6, allow_nan=False), max_size=40), st.integers(1, 10))
def test_trailing_mean_matches_reference(x: list[float], window: int) -> None:
    got = trailing_mean(np.array(x, np.float64), window)
    for a, b in zip(got.tolist(), ref_trailing_mean(x, window), strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-6)


@EXAMPLES
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5))
def test_alarm_runs_match_reference(alarms: list[bool], gap: int) -> None:
    assert alarm_runs(np.array(alarms, np.bool_), gap) == ref_alarm_runs(alarms, gap)


@EXAMPLES
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 7)), max_size=20),
       st.lists(st.integers(-5, 110), max_size=30))
def test_stage_at_matches_reference(changes: list[tuple[int, int]], times: list[int]) -> None:
    changes.sort(key=lambda c: c[0])
    ct = [float(t) for t, _ in changes]
    stages = [s for _, s in changes]
    got = stage_at(np.array(times, np.float64), np.array(ct), np.array(stages, np.int64))
    assert got.tolist() == ref_stage_at([float(t) for t in times], ct, stages)


@EXAMPLES
@given(st.lists(st.tuples(st.integers(0, 9), st.floats(-1e6, 1e6, allow_nan=False)), max_size=40))
def test_bucket_sum_and_last_match_reference(rows: list[tuple[int, float]]) -> None:
    rows.sort(key=lambda r: r[0])  # events arrive in time order
    index = np.array([r[0] for r in rows], np.int64)
    values = np.array([r[1] for r in rows], np.float64)
    sums = bucket_sum(index, values, 10)
    last = bucket_last(index, values, 10)
    for b in range(10):
        assert sums[b] == pytest.approx(sum(v for i, v in rows if i == b), abs=1e-6)
        before = [v for i, v in rows if i <= b]
        assert (math.isnan(last[b]) and not before) or last[b] == before[-1]


@EXAMPLES
@given(st.lists(st.tuples(st.floats(1, 1e5), st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 1)), min_size=1,
                max_size=10))
def test_the_price_path_opens_closes_and_touches_both_extremes(rows: list[tuple[float, ...]]) -> None:
    base = np.array([r[0] for r in rows])
    a, b, c = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    open_, close = base * (1 + a / 10), base * (1 + b / 10)
    high = np.maximum(open_, close) * (1 + c / 10)
    low = np.minimum(open_, close) * (1 - c / 10)
    path = path_prices(open_, high, low, close)
    assert path.shape == (len(rows), SLICES)
    np.testing.assert_allclose(path[:, 0], open_)
    np.testing.assert_allclose(path[:, -1], close)
    np.testing.assert_allclose(path.max(axis=1), high)
    np.testing.assert_allclose(path.min(axis=1), low)
    # a down bar makes its high before its low (and an up bar the reverse): it ends near the extreme it closed at
    down = close < open_
    assert (np.argmax(path, axis=1)[down] <= np.argmin(path, axis=1)[down]).all()
    assert (np.argmin(path, axis=1)[~down] <= np.argmax(path, axis=1)[~down]).all()


# --- bars ------------------------------------------------------------------------------------------------


def write_generic(path: Path, rows: Sequence[Mapping[str, object]], columns: list[str]) -> Path:
    lines = [",".join(columns)] + [",".join("" if r.get(c) is None else str(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generic_bars_read_iso_and_epoch_times_and_keep_only_present_columns(tmp_path: Path) -> None:
    path = write_generic(tmp_path / "b.csv", [
        {"ts": "2026-01-01T01:00:00Z", "close": 101, "liq_long_usd": 5},
        {"ts": T0_MS, "close": 100, "liq_long_usd": ""},
        {"ts": "2026-01-01T02:00:00+00:00", "close": 102, "liq_long_usd": 7},
    ], ["ts", "close", "liq_long_usd"])
    bars = read_bars(path)
    assert bars.source == "generic"
    assert bars.ts_ms.tolist() == [T0_MS, T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS]  # sorted
    assert bars.interval_s == 3600
    assert bars.columns["close"].tolist() == [100, 101, 102]
    assert math.isnan(bars.columns["liq_long_usd"][0]) and bars.columns["liq_long_usd"][2] == 7
    assert set(bars.columns) == {"close", "liq_long_usd"}


def test_binance_klines_are_read_with_or_without_header_and_in_microseconds(tmp_path: Path) -> None:
    row = "{t},100.0,101.0,99.0,100.5,10.0,{e},1000.0,5,4.0,400.0,0"
    body = [row.format(t=T0_MS + k * 60_000, e=T0_MS + k * 60_000 + 59_999) for k in range(3)]
    header = ",".join(KLINE_COLUMNS)
    with_header = tmp_path / "h.csv"
    with_header.write_text("\n".join([header, *body]) + "\n")
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(r.replace(str(T0_MS), str(T0_MS * 1000), 1) if k == 0 else r
                              for k, r in enumerate(body)) + "\n")
    for path in (with_header, bare):
        bars = read_bars(path)
        assert bars.source == "binance_kline"
        assert bars.ts_ms[0] == T0_MS and bars.interval_s == 60
        assert bars.columns["taker_buy_volume"].tolist() == [4.0] * 3


def test_bars_without_ts_or_with_duplicate_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BarsError, match="'ts'"):
        read_bars(write_generic(tmp_path / "a.csv", [{"time": 1, "close": 1}], ["time", "close"]))
    with pytest.raises(BarsError, match="same time"):
        read_bars(write_generic(tmp_path / "b.csv", [{"ts": T0_MS, "close": 1}] * 2, ["ts", "close"]))


def test_bar_events_conserve_volume_liquidations_and_carry_oi_and_funding(tmp_path: Path) -> None:
    rows = [{"ts": T0_MS + k * 60_000, "open": 100 + k, "high": 103 + k, "low": 98 + k, "close": 101 + k,
             "volume": 12.0, "taker_buy_volume": 3.0, "liq_long_usd": 1200.0 * k, "liq_short_usd": 600.0,
             "oi_usd": 1e6 * (1 + k), "funding_8h": 1e-4 * k} for k in range(3)]
    bars = read_bars(write_generic(tmp_path / "b.csv", rows, list(rows[0])))
    events = bar_events(bars, asset="ETH")
    ts = [e.ts_event for e in events]
    assert ts == sorted(ts) and ts[0] == T0_MS * 1_000_000 and ts[-1] < (T0_MS + 180_000) * 1_000_000
    assert {e.asset for e in events} == {"ETH"}
    trades = [e for e in events if isinstance(e, Trade)]
    assert sum(e.size for e in trades if e.side == "buy") == pytest.approx(9.0)
    assert sum(e.size for e in trades if e.side == "sell") == pytest.approx(27.0)
    liqs = [e for e in events if isinstance(e, Liquidation)]
    assert sum(e.notional_usd for e in liqs if e.side == "long") == pytest.approx(3600.0)
    assert sum(e.notional_usd for e in liqs if e.side == "short") == pytest.approx(1800.0)
    ois = [e for e in events if isinstance(e, OpenInterest)]
    assert ois[-1].oi_usd == pytest.approx(3e6) and ois[0].oi_usd == pytest.approx(1e6)
    assert [e.oi_usd for e in ois] == sorted(e.oi_usd for e in ois)
    marks = [e for e in events if isinstance(e, FundingMark)]
    assert marks[-1].funding_8h == pytest.approx(2e-4) and marks[-1].funding_interval_h == 8
    assert missing_evidence(events) == [text for key, text in EVIDENCE if key in ("premium", "depth")]
    assert bar_events(bars, asset="ETH") == events  # deterministic


def test_missing_columns_are_named_as_missing_evidence(tmp_path: Path) -> None:
    bars = read_bars(write_generic(tmp_path / "b.csv", [{"ts": T0_MS + k * 60_000, "close": 100.0}
                                                        for k in range(5)], ["ts", "close"]))
    missing = " | ".join(missing_evidence(bar_events(bars)))
    for words in ("no liquidations", "no open interest", "no funding", "no taker", "no order book"):
        assert words in missing


# --- settings --------------------------------------------------------------------------------------------


def test_the_bar_profile_is_chosen_by_interval_and_settings_override_it() -> None:
    assert [profile_for(s) for s in (60, 300, 3600, 14_400)] == [60, 60, 3600, 3600]
    hourly = backtest_settings(3600, parse_overrides(["detector.liq_trigger_ratio=7", "trigger_hold_s=30"]))
    assert hourly.detector.liq_fast_tau_s == BAR_PROFILES[3600]["liq_fast_tau_s"]
    assert hourly.detector.liq_trigger_ratio == 7 and hourly.detector.trigger_hold_s == 30
    assert backtest_settings(None, {}).detector == backtest_settings(60, {}).detector
    with pytest.raises(ValueError, match="no_such"):
        parse_overrides(["no_such=1"])


# --- episodes and scoring --------------------------------------------------------------------------------

S = 1_000_000_000


def change(t_s: int, side: str, before: int, after: int, ep: str = "e") -> StageChange:
    return StageChange(asset="BTC", side=side, ts=t_s * S, ts_recv=0, stage_from=before, stage=after,  # type: ignore[arg-type]
                       stage_name="", overheat_score=0.0, episode_id=ep, evidence={}, thresholds={}, conditions=[])


def test_episodes_start_peak_end_and_ignore_overheat_only_changes() -> None:
    changes = [
        change(10, "long", 0, 0, "old"),  # an overheat flip at calm names the previous episode: not one
        change(100, "long", 0, 1, "a"), change(150, "long", 1, 3, "a"), change(200, "long", 3, 4, "a"),
        change(260, "long", 4, 7, "a"), change(300, "long", 7, 3, "a"), change(400, "long", 3, 0, "a"),
        change(500, "short", 0, 3, "b"), change(550, "short", 3, 4, "b"),
    ]
    eps = find_episodes(changes, end_ns=1000 * S)
    assert [(e.side, e.start_ns // S, e.peak_ns // S, e.end_ns // S, e.max_stage, e.closed) for e in eps] == [
        ("long", 100, 260, 400, 7, True), ("short", 500, 550, 1000, 4, False)]


def test_scoring_counts_hits_false_alarms_and_calm_days() -> None:
    day = 86_400
    known = [KnownEvent("flush", 2 * day * S, 3 * day * S, "long"), KnownEvent("other", int(2.5 * day) * S,
                                                                               4 * day * S, None)]
    windows = [
        ("BTC", "long", 2 * day * S + 3600 * S, 2 * day * S + 7200 * S, 2 * day * S + 9000 * S, 4),  # hit, late 1 h
        ("BTC", "short", 5 * day * S, 5 * day * S + 60 * S, 5 * day * S + 600 * S, 3),  # false alarm
        ("BTC", "long", 6 * day * S, 6 * day * S, 6 * day * S + 60 * S, 1),  # a shock only: not an alarm
    ]
    scored = score(windows, known, 0, 10 * day * S)
    assert scored.hits == ["flush"]
    assert scored.false_alarms == 1
    assert scored.calm_days == pytest.approx(8.0)  # the union of the two windows is 2 days
    assert scored.rows[0]["lead_s"] == -3600 and scored.rows[0]["lead_reference"] == "onset"
    assert scored.rows[1]["lead_s"] == 60 and scored.rows[1]["lead_reference"] == "peak"
    assert [r["false_alarm"] for r in scored.rows] == [False, True, False]
    assert calm_days(0, day * S, []) == 1.0


def test_stage_accuracy_and_lead_times_against_labels() -> None:
    labels = [(100_000, "BTC", "long", 1), (160_000, "BTC", "long", 3), (220_000, "BTC", "long", 0)]
    exact = [change(100, "long", 0, 1), change(160, "long", 1, 3), change(220, "long", 3, 0)]
    report = stage_accuracy(labels, exact, 300 * S)["BTC-long"]
    assert report["accuracy"] == {"0": 1.0, "1": 1.0, "3": 1.0}
    assert report["lead_s"]["1"] == 0 and report["lead_s"]["3"] == 0 and report["lead_s"]["4"] is None
    late = [change(110, "long", 0, 1), change(160, "long", 1, 3), change(220, "long", 3, 0)]
    report = stage_accuracy(labels, late, 300 * S)["BTC-long"]
    assert report["lead_s"]["1"] == -10
    assert report["accuracy"]["1"] == pytest.approx(50 / 60)
    assert report["confusion"][1][0] == 10 and sum(map(sum, report["confusion"])) == report["seconds"] == 200


# --- end to end -------------------------------------------------------------------------------------------


def flush_bars(hours: int = 96, flush_at: int = 60) -> list[dict[str, float]]:
    """Calm hourly bars with a long flush at ``flush_at``: price down, long liquidations 100x, OI down a
    quarter, funding turning negative."""
    rng = np.random.default_rng(3)
    rows, price, oi = [], 100_000.0, 8e9
    for h in range(hours):
        flush = flush_at <= h < flush_at + 4
        after = h >= flush_at
        move = -0.03 if flush else rng.normal(0, 0.002)
        close = price * (1 + move)
        oi *= 0.93 if flush else 1 + rng.normal(0, 0.001)
        rows.append({"ts": T0_MS + h * HOUR_MS, "open": price, "high": max(price, close) * 1.001,
                     "low": min(price, close) * 0.999, "close": close,
                     "liq_long_usd": 1e8 if flush else 1e6 * (1 + rng.random()),
                     "liq_short_usd": 1e6 * (1 + rng.random()), "oi_usd": oi,
                     "funding_8h": -5e-5 if after else 1e-4})
        price = close
    return rows


def backtest(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_the_command_finds_a_synthetic_flush_and_writes_json_and_png(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = flush_bars()
    bars = write_generic(tmp_path / "bars.csv", rows, list(rows[0]))
    events = tmp_path / "known.json"
    events.write_text(json.dumps([{"name": "flush", "start": T0_MS + 60 * HOUR_MS, "end": T0_MS + 66 * HOUR_MS,
                                   "side": "long"}]))
    out, png = tmp_path / "out.json", tmp_path / "chart.png"
    assert backtest(["--bars", str(bars), "--events", str(events), "--json", str(out), "--png", str(png),
                     "--liq-usd-per-min", "1e6"]) == 0
    summary = json.loads(out.read_text())
    keys = {"episodes", "false_alarms", "calm_days", "baselines", "missing_evidence", "overheat", "settings"}
    assert keys <= set(summary)
    found = [e for e in summary["episodes"] if e["known_event"] == "flush"]
    assert found and found[0]["side"] == "long" and max(e["max_stage"] for e in found) >= 3
    assert found[0]["start"].endswith("Z") and found[0]["start"] <= found[0]["peak"] <= found[0]["end"]
    assert summary["settings"]["liq_fast_tau_s"] == BAR_PROFILES[3600]["liq_fast_tau_s"]
    assert summary["calm_days"] == pytest.approx((96 - 1 + (SLICES - 1) / SLICES - 6) / 24, rel=1e-3)
    assert summary["false_alarms"] == sum(e["false_alarm"] for e in summary["episodes"])
    assert "flush" in summary["baselines"]["liq_6x_baseline"]["hits"]
    assert summary["baselines"]["fixed_usd_per_min"]["hits"] == ["flush"]  # $100M/h is $1.7M/min, over $1M
    assert summary["baselines"]["options"]["fixed_usd_per_min"] == 1e6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "flushwatch (3+)" in capsys.readouterr().out


def test_without_liquidations_no_episode_reaches_stage_3(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if not str(k).startswith("liq_")} for r in flush_bars()]
    bars = write_generic(tmp_path / "bars.csv", rows, list(rows[0]))
    out = tmp_path / "out.json"
    assert backtest(["--bars", str(bars), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert all(e["max_stage"] < 3 for e in summary["episodes"])
    assert any(text.startswith("no liquidations") for text in summary["missing_evidence"])


def test_chunked_runs_give_the_signals_of_one_pass(tmp_path: Path) -> None:
    rows = flush_bars(hours=180)
    bars = read_bars(write_generic(tmp_path / "bars.csv", rows, list(rows[0])))
    events = bar_events(bars)
    assert len(events) > CHUNK  # more than one chunk
    settings_ = backtest_settings(bars.interval_s, {})
    from detector.engine import Detector

    def key(c: StageChange) -> tuple[object, ...]:  # evidence holds NaN, which never equals itself
        return c.asset, c.side, c.ts, c.stage_from, c.stage, c.episode_id, c.conditions

    whole = [key(s) for s in Detector(settings_).process(events) if isinstance(s, StageChange)]
    assert [key(c) for c in run_detector(events, settings_).changes] == whole
    assert any(c.stage >= 3 for c in run_detector(events, settings_).changes)


def test_bad_input_exits_2(tmp_path: Path) -> None:
    assert backtest(["--bars", str(tmp_path / "absent.csv")]) == 2
    bars = write_generic(tmp_path / "b.csv", [{"ts": T0_MS, "close": 1}], ["ts", "close"])
    assert backtest(["--bars", str(bars), "--settings", "nonsense"]) == 2


def test_a_backtest_over_recent_history_seeds_the_live_detectors_baselines(tmp_path: Path,
                                                                           redis_server: RunningServer) -> None:
    rows = flush_bars(hours=24 * 7 * 2 + 2, flush_at=10_000)  # two calm weeks: every hour of the week twice
    bars = write_generic(tmp_path / "bars.csv", rows, list(rows[0]))
    assert backtest(["--bars", str(bars), "--seed-baselines", redis_server.url]) == 0

    async def load() -> DetectorEngine:
        redis = connect_redis(redis_server.url)
        try:
            engine = DetectorEngine(redis, load_settings(), shard=0, consumer="live")
            await engine.load_baselines()
            return engine
        finally:
            await redis.aclose()

    season = asyncio.run(load()).detector.extras.season
    assert season.count[0, S_LIQ_LONG].min() >= 2  # a live start knows the usual level of every hour
    assert 1e6 / 60 < np.expm1(season.median[0, S_LIQ_LONG]).mean() < 2e6 / 60  # USD per minute, as live
    assert backtest(["--bars", str(bars), "--seed-baselines", "redis://127.0.0.1:1/0"]) == 2  # nobody there
