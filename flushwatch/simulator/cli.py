"""``flushwatch simulate``: run the agent-based market, write a recording and its labels, print a summary.

    flushwatch simulate --seed 3 --minutes 120 --side long --out runs/sim3 [--venues binance,bybit]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from flushwatch.signals import stage_name
from flushwatch.simulator.model import VENUES, SimConfig
from flushwatch.simulator.output import write
from flushwatch.simulator.simulation import Simulation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the market (default 0)")
    parser.add_argument("--minutes", type=float, default=120.0, help="simulated minutes (default 120)")
    parser.add_argument("--side", choices=("long", "short"), default="long",
                        help="the crowded side: long (a flush) or short (a squeeze)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the recording and labels.json")
    parser.add_argument("--venues", default=",".join(VENUES), help="comma-separated venues (default: all)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    venues = tuple(v.strip() for v in args.venues.split(",") if v.strip())
    if args.minutes <= 0:
        print("flushwatch simulate: --minutes must be positive", file=out)
        return 2
    try:
        simulation = Simulation(SimConfig(seed=args.seed, minutes=args.minutes, side=args.side), venues)
    except ValueError as exc:
        print(f"flushwatch simulate: {exc}", file=out)
        return 2
    recording, labels = write(simulation, args.out)
    print(report(simulation), file=out)
    print(f"recording: {recording}\nlabels:    {labels}", file=out)
    return 0


def report(simulation: Simulation) -> str:
    """One screen: the true stage timeline, liquidations, the open-interest purge, the price range."""
    config, run = simulation.config, simulation.run
    lines = [f"{config.symbol} {config.side}-crowded, seed {config.seed}, {config.minutes:g} min, "
             f"venues {', '.join(simulation.venues)}"]
    shock = f"at {run.shock_s} s" if run.shock_s >= 0 else "none"
    lines.append(f"shock: {shock}")
    lines.append("true stages:")
    for label in simulation.labels:
        second = (label.t_ms - config.t0_ms) // 1000
        lines.append(f"  {second:6d} s  {label.stage}  {stage_name(label.stage, False)}")
    liquidated = simulation.liquidated_usd
    lines.append(f"liquidated: longs ${liquidated['long'] / 1e6:,.1f}M, shorts ${liquidated['short'] / 1e6:,.1f}M")
    before, after = simulation.oi_before, simulation.oi_after
    lines.append(f"open interest: {before:,.1f} -> {after:,.1f} ({(after / before - 1) * 100:+.1f}%)")
    lines.append(f"price: {config.price:,.1f} start, {simulation.max_price:,.1f} max, "
                 f"{simulation.min_price:,.1f} min, {float(run.mid[-1]):,.1f} end")
    return "\n".join(lines)
