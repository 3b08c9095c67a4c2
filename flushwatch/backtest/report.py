"""The backtest's outputs: the JSON summary, the PNG chart and the text table.

``summarise`` puts everything in one JSON-ready dict: ``episodes`` (flushwatch's, each with ``start``,
``peak``, ``end`` in ISO 8601 UTC, ``side``, ``max_stage``, lead time, the known event it matched),
``false_alarms`` and ``calm_days``, ``baselines`` (the same for each simple alarm), ``missing_evidence``,
``overheat`` (daily maximum score per side), ``accuracy`` (with labels) and the detector ``settings`` used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flushwatch.backtest.accuracy import Label, stage_accuracy
from flushwatch.backtest.baselines import BaselineOptions, baseline_alarms
from flushwatch.backtest.episodes import (
    DAY_NS,
    KnownEvent,
    Scored,
    episode_windows,
    find_episodes,
    iso,
    score,
)
from flushwatch.backtest.runner import Run
from flushwatch.backtest.tape import Tape, build_tape
from flushwatch.events import Event
from flushwatch.settings import Settings
from flushwatch.signals import StageChange


@dataclass(frozen=True)
class Inputs:
    """What a backtest ran on and what it is scored against."""

    events: Sequence[Event]
    source: str
    settings: Settings
    missing: list[str]
    known: list[KnownEvent]
    labels: list[Label] | None = None
    profile: int | None = None
    baselines: BaselineOptions = field(default_factory=BaselineOptions)
    res_s: float = 60.0


def _scored(scored: Scored) -> dict[str, Any]:
    return {"alarms": scored.rows, "hits": scored.hits, "false_alarms": scored.false_alarms,
            "false_alarms_per_calm_day": scored.per_calm_day}


def daily_overheat(run: Run) -> dict[str, dict[str, dict[str, float]]]:
    """``{asset: {YYYY-MM-DD: {"long": max, "short": max}}}`` over the snapshots."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for asset, series in run.series.items():
        days = series.ts // DAY_NS
        table: dict[str, dict[str, float]] = {}
        for day in np.unique(days).tolist():
            sel = days == day
            table[iso(day * DAY_NS)[:10]] = {side: float(np.nanmax(series.values[f"overheat_{side}"][sel], initial=0.0))
                                             for side in ("long", "short")}
        out[asset] = table
    return out


def tapes(inputs: Inputs, run: Run) -> dict[str, Tape]:
    assets = sorted({e.asset for e in inputs.events})
    return {a: build_tape(inputs.events, a, inputs.res_s, run.start_ns, run.end_ns) for a in assets}


def summarise(inputs: Inputs, run: Run, tapes_by_asset: dict[str, Tape]) -> dict[str, Any]:
    """The JSON summary of one backtest."""
    episodes = [e for asset, tape in tapes_by_asset.items()
                for e in find_episodes([c for c in run.changes if c.asset == asset], run.end_ns, tape)]
    episodes.sort(key=lambda e: e.start_ns)
    ours = score(episode_windows(episodes), inputs.known, run.start_ns, run.end_ns)
    rows = [{**row, "episode_id": e.episode_id, "closed": e.closed} for row, e in zip(ours.rows, episodes, strict=True)]
    baselines: dict[str, Any] = {}
    for asset, tape in tapes_by_asset.items():
        for name, windows in baseline_alarms(tape, asset, inputs.baselines).items():
            baselines.setdefault(name, []).extend(windows)
    summary: dict[str, Any] = {
        "source": inputs.source,
        "start": iso(run.start_ns),
        "end": iso(run.end_ns),
        "events": run.events,
        "detector_seconds": round(run.seconds, 3),
        "profile_interval_s": inputs.profile,
        "known_events": [{"name": k.name, "start": iso(k.start_ns), "end": iso(k.end_ns), "side": k.side}
                         for k in inputs.known],
        "episodes": rows,
        "hits": ours.hits,
        "false_alarms": ours.false_alarms,
        "calm_days": ours.calm_days,
        "false_alarms_per_calm_day": ours.per_calm_day,
        "baselines": {
            "options": inputs.baselines.__dict__,
            **{name: _scored(score(sorted(w, key=lambda x: x[2]), inputs.known, run.start_ns, run.end_ns))
               for name, w in baselines.items()},
        },
        "missing_evidence": inputs.missing,
        "overheat": daily_overheat(run),
        "settings": inputs.settings.detector.model_dump(mode="json"),
    }
    if inputs.labels:
        summary["accuracy"] = stage_accuracy(inputs.labels, run.changes, run.end_ns)
    return summary


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")


def text_table(summary: dict[str, Any]) -> str:
    """Episodes, false alarms and the baselines side by side, for the terminal."""
    lines = [f"{summary['source']}: {summary['start']} .. {summary['end']}, {summary['events']:,} events"]
    lines += [f"  missing: {text}" for text in summary["missing_evidence"]]
    lines.append(f"{'side':5} {'start':20} {'peak':20} {'end':20} {'max':>3} {'lead_s':>9}  known")
    for row in summary["episodes"]:
        known = row["known_event"] or ("FALSE" if row["false_alarm"] else "")
        lines.append(f"{row['side']:5} {row['start'][:19]:20} {row['peak'][:19]:20} {row['end'][:19]:20} "
                     f"{row['max_stage']:>3} {row['lead_s']:>9.0f}  {known}")
    lines.append(f"{'alarm':18} {'windows':>7} {'hits':>5} {'false':>6} {'per calm day':>12}   "
                 f"(calm days {summary['calm_days']:.1f})")
    per_day = summary["false_alarms_per_calm_day"]
    lines.append(f"{'flushwatch (3+)':18} {len(summary['episodes']):>7} {len(summary['hits']):>5} "
                 f"{summary['false_alarms']:>6} {per_day if per_day is not None else float('nan'):>12.2f}")
    for name in ("fixed_usd_per_min", "liq_6x_baseline"):
        b = summary["baselines"][name]
        per_day = b["false_alarms_per_calm_day"]
        lines.append(f"{name:18} {len(b['alarms']):>7} {len(b['hits']):>5} {b['false_alarms']:>6} "
                     f"{per_day if per_day is not None else float('nan'):>12.2f}")
    return "\n".join(lines)


_SIDE_COLOURS = {"long": "tab:red", "short": "tab:green"}


def _stage_steps(changes: Sequence[StageChange], side: str, start_ns: int, end_ns: int) -> tuple[list[int], list[int]]:
    times, stages = [start_ns], [0]
    for c in changes:
        if c.side == side:
            times.append(c.ts)
            stages.append(c.stage)
    times.append(end_ns)
    stages.append(stages[-1])
    return times, stages


def write_chart(run: Run, tape: Tape, asset: str, path: Path) -> None:
    """Price with stage shading per side, liquidations by side, open interest and funding, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = (tape.times_ns() - run.start_ns) / 3.6e12
    fig, axes = plt.subplots(4, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.2, 1.2]})
    price, liq, oi, funding = axes
    price.plot(x, tape.price, color="black", linewidth=0.8)
    price.set_ylabel(f"{asset} price")
    changes = [c for c in run.changes if c.asset == asset]
    for side, colour in _SIDE_COLOURS.items():
        times, stages = _stage_steps(changes, side, run.start_ns, run.end_ns)
        for (t0, s), t1 in zip(zip(times, stages, strict=True), times[1:], strict=False):
            if s > 0:
                price.axvspan((t0 - run.start_ns) / 3.6e12, (t1 - run.start_ns) / 3.6e12, color=colour,
                              alpha=0.05 + 0.05 * s, linewidth=0)
    width = tape.res_s / 3600
    liq.bar(x, tape.liq_long / 1e6, width=width, color=_SIDE_COLOURS["long"], label="longs liquidated")
    liq.bar(x, -tape.liq_short / 1e6, width=width, color=_SIDE_COLOURS["short"], label="shorts liquidated")
    liq.set_ylabel("liq. $M / bucket")
    liq.legend(loc="upper left", fontsize=7)
    oi.plot(x, tape.oi_usd / 1e9, color="tab:blue", linewidth=0.8)
    oi.set_ylabel("OI $B")
    funding.plot(x, tape.funding_8h * 100, color="tab:purple", linewidth=0.8)
    funding.axhline(0.0, color="grey", linewidth=0.5)
    funding.set_ylabel("funding %/8h")
    funding.set_xlabel(f"hours from {iso(run.start_ns)} (shading: stage, red long side, green short side)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
