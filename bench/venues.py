"""Per-venue decode -> normalise throughput on one core: frames of each venue's own format (built by its
fake protocol's ``sample_frames``) through the venue's parser, counting what comes out."""

from __future__ import annotations

import importlib
import time
from functools import partial
from typing import Final

from bench.common import Stopwatch, emit, median_of, note
from collectors.venues import GENERIC, parser_for

KINDS: Final = ("trade", "book")
TARGETS: Final = {"trade": 100_000, "book": 50_000}
"""frames/s the issue asks for on one core."""


def _rate(venue: str, kind: str, n: int) -> tuple[float, int, int]:
    """frames/s, events and rejects of one pass of ``n`` frames through a fresh parser (so repeated
    frames are not dropped as duplicates)."""
    fake = importlib.import_module(f"flushwatch.fake.{venue}")
    instruments, frames = fake.sample_frames(kind, n)
    parser = parser_for(venue, instruments, 1 << 22)
    encoded = [f.encode() for f in frames]
    now = time.time_ns()
    events = rejects = 0
    with Stopwatch() as watch:
        for frame in encoded:
            result = parser.parse(frame, now)
            events += len(result.events)
            rejects += len(result.rejects)
    return len(frames) / watch.seconds, events, rejects


def _first(venue: str, kind: str, n: int) -> float:
    return _rate(venue, kind, n)[0]


def run(quick: bool) -> None:
    n = 20_000 if quick else 100_000
    runs = 3 if quick else 5
    for venue in GENERIC:
        try:
            importlib.import_module(f"flushwatch.fake.{venue}")
        except ImportError:
            note(f"{venue}: no fake protocol module, skipped")
            continue
        for kind in KINDS:
            _, events, rejects = _rate(venue, kind, n)  # warm-up, and the counts of one pass
            rate = median_of(runs, partial(_first, venue, kind, n))
            emit(f"collector.{venue}.{kind}.decode_frames_per_s", rate, "frames/s", frames=n, events=events,
                 rejects=rejects, target=TARGETS[kind])
