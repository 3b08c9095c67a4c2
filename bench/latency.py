"""Frame receipt -> MQTT delivery and -> /metrics visibility, at 1x, 5x and 10x the peak frame rate of a
simulated cascade, the whole pipeline in production layout (``bench.pipeline``).

The peak: the simulator's BTC flush (seed 0, two hours, Binance and Bybit) counted per simulated second of
push time; the busiest second, in the cascade, holds 222 frames. Each run pushes the simulation's frames
from its start at a steady multiple of that (``flushwatch.fake.load.SteadyCascade``), to a ``flushwatch
run`` of its own. Latencies are against ``ts_recv``, the receipt of the newest frame behind a snapshot or of
the frame that triggered a stage change (``received_ns`` in the MQTT payloads):

* ``frame_to_metrics``: every snapshot, the moment the alert role has handed it to the exporter that
  ``/metrics`` reads (``bench.probe``, inside the daemon);
* ``frame_to_mqtt``: live snapshots as a separate C subscriber (``mosquitto_sub``) receives them from the
  broker; ``change_to_mqtt``: stage changes, a handful per run.

Snapshots come once per 5 s of event time (and with every change), so the sample count grows with the
rate; it is printed with each figure. The detector group's stream lag and pending entries are reported at
the start and the end of each run: a backlog that grew would show as a difference.
"""

from __future__ import annotations

import asyncio

import numpy as np

from bench.common import emit, note
from bench.pipeline import Pipeline, percentiles
from flushwatch.fake.load import SteadyCascade, peak_rate
from flushwatch.simulator import SimConfig, Simulation

MULTIPLES = (1, 5, 10)
TARGET_P99_MS = 25.0


async def _measure(simulation: Simulation, rate: float, seconds: float) -> None:
    load = SteadyCascade(simulation, rate, seconds)
    async with Pipeline(simulation) as pipe:
        await pipe.start_daemon(load)
        played = await pipe.play(load)
        await pipe.stop()
        visible = pipe.visible_ms()
        states, changes = pipe.mqtt()
    multiple = round(rate / peak_rate(simulation)[0])
    first, last = played.samples[0], played.samples[-1]
    common = {"frames_per_s": round(played.frames_per_s), "target_frames_per_s": round(rate),
              "simulated_s": round(load.simulated_s)}
    emit(f"latency.{multiple}x.frames_per_s", played.frames_per_s, "frames/s", frames=played.frames,
         seconds=round(played.seconds, 1), drain_s=round(played.drain_s, 2))
    emit(f"latency.{multiple}x.stream_lag_entries", last.stream_lag, "entries", at_start=first.stream_lag,
         max=max(s.stream_lag for s in played.samples), pending_at_start=first.pending, pending_at_end=last.pending,
         max_detector_lag_ms=round(1000 * max(s.detector_lag_s for s in played.samples), 1), **common)
    for name, values in (("frame_to_metrics", visible), ("frame_to_mqtt", states), ("change_to_mqtt", changes)):
        if not len(values):
            note(f"latency: {multiple}x: no {name} samples (the load ends before the cascade)")
            continue
        figures = percentiles(values)
        for key in ("p50", "p99", "p99_9"):
            emit(f"latency.{multiple}x.{name}.{key}_ms", figures[key], "ms", samples=len(values), **common)
        if name != "change_to_mqtt":
            emit(f"latency.{multiple}x.{name}.within_{TARGET_P99_MS:g}ms", float(np.mean(values <= TARGET_P99_MS)),
                 "share", samples=len(values), **common)


def run(quick: bool) -> None:
    simulation = Simulation(SimConfig(seed=0))
    peak, second = peak_rate(simulation)
    emit("latency.cascade_peak.frames_per_s", peak, "frames/s", second=second, shock_s=simulation.run.shock_s,
         how="busiest simulated second by push time, Binance + Bybit, simulator seed 0")
    for multiple in MULTIPLES:
        note(f"latency: {multiple}x peak = {multiple * peak} frames/s")
        asyncio.run(_measure(simulation, multiple * peak, 15.0 if quick else 60.0))
