"""Run the benchmarks: ``python -m bench [--quick] [--peers] [--only NAME ...]``."""

from __future__ import annotations

import argparse
import logging
import platform
import time

from bench import (
    backtest,
    collector,
    detector,
    evaluation,
    fuel,
    hawkes,
    latency,
    memory,
    replay,
    simulator,
    venues,
    wire,
)
from bench.common import emit, note
from bench.peers import SUITES as PEERS
from bench.startup import run as run_startup

SUITES = {"collector": collector.run, "detector": detector.run, "latency": latency.run, "memory": memory.run,
          "venues": venues.run, "replay": replay.run, "hawkes": hawkes.run,
          "simulator": simulator.run, "backtest": backtest.run, "fuel": fuel.run,
          "evaluation": evaluation.run, "wire": wire.run, "startup": run_startup}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs (< 2 minutes)")
    parser.add_argument("--peers", action="store_true",
                        help="also the side-by-side runs against cryptofeed, wickra-radar and redis-benchmark")
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES | PEERS), help="run only these suites")
    args = parser.parse_args()
    # Benchmarks feed rejected frames on purpose (recorded channels flushwatch does not subscribe).
    logging.basicConfig(level=logging.ERROR)
    note(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu ?'}")
    started = time.perf_counter()
    note(f"load average before: {_loadavg()}")
    for name in args.only or [*SUITES, *(PEERS if args.peers else ())]:
        (SUITES | PEERS)[name](args.quick)
        note(f"{name} done; load average: {_loadavg()}")
    emit("bench.wall_s", time.perf_counter() - started, "s")


def _loadavg() -> str:
    """Other processes' load skews every figure: each run says what it was."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
