"""The agent-based simulator: simulated seconds per wall second, and frames rendered per second."""

from __future__ import annotations

from bench.common import Stopwatch, emit
from flushwatch.simulator import SimConfig, Simulation


def run(quick: bool) -> None:
    config = SimConfig(minutes=30.0 if quick else 120.0)
    with Stopwatch() as simulating:
        simulation = Simulation(config)
    emit("simulator.seconds_per_s", config.duration_s / simulating.seconds, "sim-s/s", minutes=config.minutes)
    with Stopwatch() as rendering:
        frames = sum(1 for _ in simulation.frames())
    emit("simulator.frames_per_s", frames / rendering.seconds, "frames/s", frames=frames,
         venues=",".join(simulation.venues))


if __name__ == "__main__":
    run(quick=False)
