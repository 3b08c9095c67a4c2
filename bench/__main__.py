"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...]``."""

from __future__ import annotations

import argparse
import logging
import platform
import time

from bench import backtest, collector, detector, evaluation, fuel, hawkes, latency, memory, replay, simulator, venues
from bench.common import emit, note

SUITES = {"collector": collector.run, "detector": detector.run, "latency": latency.run, "memory": memory.run,
          "venues": venues.run, "replay": replay.run, "hawkes": hawkes.run,
          "simulator": simulator.run, "backtest": backtest.run, "fuel": fuel.run,
          "evaluation": evaluation.run}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs (< 2 minutes)")
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES), help="run only these suites")
    args = parser.parse_args()
    # Benchmarks feed rejected frames on purpose (recorded channels flushwatch does not subscribe).
    logging.basicConfig(level=logging.ERROR)
    note(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu ?'}")
    started = time.perf_counter()
    for name in args.only or SUITES:
        SUITES[name](args.quick)
    emit("bench.wall_s", time.perf_counter() - started, "s")


if __name__ == "__main__":
    main()
