"""Drive ``detector.engine.Detector`` over a list of events: the stage changes and a per-snapshot series.

The detector is the one the daemon and ``flushwatch replay`` run; events are handed over in chunks, which
does not change the signals (evaluation times depend on the events only). The series keeps, per asset, the
snapshot time, the two overheat scores and stages, for the overheat table and the chart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.engine import Detector
from flushwatch.events import Event
from flushwatch.settings import Settings
from flushwatch.signals import AssetState, StageChange

CHUNK = 8192

SERIES_FIELDS = ("overheat_long", "overheat_short", "stage_long", "stage_short")


@dataclass
class Series:
    """One asset's snapshots: ``ts`` (ns, int64) and one float64 array per ``SERIES_FIELDS`` name."""

    ts: np.ndarray
    values: dict[str, np.ndarray]


@dataclass
class Run:
    changes: list[StageChange]
    series: dict[str, Series]
    events: int
    seconds: float
    end_ns: int
    start_ns: int
    detector: Detector
    """The detector as the run left it: its hour-of-week baselines can seed a live one."""


def _series(rows: list[tuple[int, float, float, float, float]]) -> Series:
    table = np.array(rows, dtype=np.float64).reshape(-1, 1 + len(SERIES_FIELDS))
    ts = np.array([r[0] for r in rows], np.int64)
    return Series(ts, {name: table[:, k + 1] for k, name in enumerate(SERIES_FIELDS)})


def run_detector(events: Sequence[Event], settings: Settings) -> Run:
    """Every stage change and snapshot of the detector over ``events`` (in time order)."""
    detector = Detector(settings)
    changes: list[StageChange] = []
    rows: dict[str, list[tuple[int, float, float, float, float]]] = {}
    began = time.perf_counter()
    for start in range(0, len(events), CHUNK):
        for signal in detector.process(events[start:start + CHUNK]):
            if isinstance(signal, StageChange):
                changes.append(signal)
            elif isinstance(signal, AssetState):
                rows.setdefault(signal.asset, []).append((
                    signal.ts, signal.long.overheat_score, signal.short.overheat_score,
                    float(signal.long.stage), float(signal.short.stage),
                ))
    seconds = time.perf_counter() - began
    return Run(
        changes=changes,
        series={asset: _series(r) for asset, r in rows.items()},
        events=len(events),
        seconds=seconds,
        start_ns=events[0].ts_event if events else 0,
        end_ns=events[-1].ts_event if events else 0,
        detector=detector,
    )
