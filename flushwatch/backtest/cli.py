"""``flushwatch backtest``: the detector over bars (``--bars``) or recordings (``--recording``, e.g. a simulator run
with ``--labels``), scored against known events (``--events``) and two simple baselines, reported as a text
table, a JSON summary (``--json``) and a PNG chart (``--png``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import sys
from pathlib import Path

from redis.exceptions import RedisError

from detector.shard import DetectorEngine
from flushwatch.backtest.accuracy import known_from_labels, read_labels
from flushwatch.backtest.bars import BarsError, read_bars
from flushwatch.backtest.baselines import BaselineOptions
from flushwatch.backtest.episodes import read_known_events
from flushwatch.backtest.feed import bar_events, bar_gaps, missing_evidence, recording_events
from flushwatch.backtest.profiles import backtest_settings, parse_overrides, profile_for
from flushwatch.backtest.reflexivity import branching_by_window, minute_windows, read_timeline
from flushwatch.backtest.report import Inputs, summarise, tapes, text_table, write_chart, write_json
from flushwatch.backtest.runner import Run, run_detector
from flushwatch.redis_client import connect_redis
from flushwatch.settings import Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bars", type=Path, help="Bar CSV: generic (ts, close, ...) or a Binance kline file.")
    source.add_argument("--recording", type=Path, nargs="+", help="flushwatch or cryptofeed recording files.")
    source.add_argument("--timeline", type=Path, help="Binned liquidation counts (JSON: event_start, timeline of "
                        "{second, liquidations}): report the branching ratio per window.")
    parser.add_argument("--windows", nargs="+", default=[], metavar="HH:MM-HH:MM",
                        help="UTC windows for --timeline (default: every 2 minutes).")
    parser.add_argument("--labels", type=Path, help="Ground-truth labels JSON of a simulator run.")
    parser.add_argument("--events", type=Path, help="Known events (JSON or CSV: start, end, side?, name?).")
    parser.add_argument("--asset", default="BTC", help="Asset of the bars (default BTC).")
    parser.add_argument("--settings", action="append", default=[], metavar="KEY=VALUE",
                        help="Detector setting over the bar profile (repeatable).")
    parser.add_argument("--config", type=Path, help="TOML settings file.")
    parser.add_argument("--liq-usd-per-min", type=float, default=BaselineOptions.fixed_usd_per_min,
                        help="The fixed-threshold baseline, USD per minute (default 10M).")
    parser.add_argument("--json", type=Path, help="Write the JSON summary here.")
    parser.add_argument("--png", type=Path, help="Write the chart here.")
    parser.add_argument("--seed-baselines", metavar="REDIS_URL",
                        help="Store the hour-of-week baselines the run learnt where a flushwatch detector using this "
                        "Redis loads them at start (warm-up from recent history; run it before the daemon).")


def inputs_from(args: argparse.Namespace) -> Inputs:
    """Read the sources named by ``args`` into events, settings and what to score against."""
    overrides = parse_overrides(args.settings)
    labels = read_labels(args.labels) if args.labels else None
    if args.bars is not None:
        bars = read_bars(args.bars)
        settings = backtest_settings(bars.interval_s, overrides, args.config)
        events = bar_events(bars, asset=args.asset.upper())
        missing = bar_gaps(bars) + missing_evidence(events)
        source, profile, res_s = f"bars {args.bars.name} ({bars.source}, {bars.interval_s:g} s)", profile_for(
            bars.interval_s), max(60.0, bars.interval_s)
    else:
        settings = backtest_settings(None, overrides, args.config)
        events, problems = recording_events(args.recording, settings)
        missing = [*problems, *missing_evidence(events)]
        source, profile, res_s = f"recording {', '.join(p.name for p in args.recording)}", None, 60.0
    known = read_known_events(args.events) if args.events else []
    if labels:
        known += known_from_labels(labels, events[-1].ts_event // 1_000_000 if events else 0)
    return Inputs(events, source, settings, list(dict.fromkeys(missing)), known, labels, profile,
                  BaselineOptions(fixed_usd_per_min=args.liq_usd_per_min), res_s)


def run_timeline(args: argparse.Namespace) -> int:
    start, x = read_timeline(args.timeline)
    if not x.size:
        print("backtest: the timeline holds no liquidations", file=sys.stderr)
        return 2
    if args.windows:
        pairs = [tuple(w.split("-", 1)) for w in args.windows]
    else:
        first = start.replace(second=0, microsecond=0)
        steps = range(0, int((x.max() + start.second) // 120) + 1)
        pairs = [((first + dt.timedelta(minutes=2 * k)).strftime("%H:%M"),
                  (first + dt.timedelta(minutes=2 * k + 2)).strftime("%H:%M")) for k in steps]
    rows = branching_by_window(x, minute_windows(start, x, pairs))
    print(f"liquidation timeline from {start.isoformat()}: {x.size:,} arrivals")
    print(f"{'window':<12} {'arrivals':>9} {'per s':>8} {'branching':>10} {'moment':>8} {'decay s':>8}")
    for r in rows:
        print(f"{r['window']:<12} {r['arrivals']:>9,} {r['per_s']:>8.1f} {r['branching']:>10.3f} "
              f"{r['branching_moment']:>8.3f} {r['decay_s']:>8.2f}")
    if args.json is not None:
        finite = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                  for r in rows]
        args.json.write_text(json.dumps({"source": str(args.timeline), "start": start.isoformat(),
                                         "reflexivity": finite}, indent=2, allow_nan=False))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.timeline is not None:
        try:
            return run_timeline(args)
        except (OSError, ValueError, KeyError) as exc:
            print(f"backtest: {exc}", file=sys.stderr)
            return 2
    try:
        inputs = inputs_from(args)
    except (OSError, BarsError, SettingsError, ValueError, KeyError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    if not inputs.events:
        print("backtest: no events in the input", file=sys.stderr)
        return 2
    result = run_detector(inputs.events, inputs.settings)
    by_asset = tapes(inputs, result)
    summary = summarise(inputs, result, by_asset)
    print(text_table(summary))
    if args.json is not None:
        write_json(summary, args.json)
    if args.png is not None:
        asset = args.asset.upper() if args.asset.upper() in by_asset else next(iter(by_asset))
        write_chart(result, by_asset[asset], asset, args.png)
    if args.seed_baselines:
        try:
            shards = asyncio.run(seed_baselines(result, inputs.settings, args.seed_baselines))
        except (OSError, RedisError) as exc:
            print(f"backtest: baselines not stored in {args.seed_baselines}: {exc}", file=sys.stderr)
            return 2
        print(f"hour-of-week baselines of {len(result.detector.assets)} assets stored for shards {shards}")
    return 0


async def seed_baselines(result: Run, settings: Settings, url: str) -> list[int]:
    """Write the run's baselines under each shard's key, as ``DetectorEngine.save_baselines`` would."""
    redis = connect_redis(url)
    try:
        for shard in range(settings.shards):
            engine = DetectorEngine(redis, settings, shard=shard, consumer="backtest")
            engine.detector = result.detector
            await engine.save_baselines(raise_errors=True)
        return list(range(settings.shards))
    finally:
        await redis.aclose()
