"""Stream entry payloads into detector columns: ``detector.wire.wire_columns`` against the objects path it
replaces (msgspec's typed decode, the names numbered, ``detector.batch.stream_columns``).

Payloads are the synthetic market of ``bench.detector`` in entries as collectors write them: 512 events (a
busy market) and 16 (a calm one, where the cost of a call weighs). Each run times both sides one after the
other on the same payloads, alternating which goes first; the figure is the median of the runs.
``python -m bench.wire [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.common import emit
from bench.detector import synthetic_events
from detector.batch import stream_columns
from detector.wire import wire_columns
from flushwatch.streams import decode_event_batch, encode_batch, entry_payload

ENTRIES = (512, 16)


def _objects(payload: bytes) -> None:
    events = decode_event_batch(payload)
    assets: dict[str, int] = {}
    venues: dict[str, int] = {}
    stream_columns(events, [assets.setdefault(e.asset, len(assets)) for e in events],
                   [venues.setdefault(e.venue, len(venues)) for e in events])


def _wire(payload: bytes) -> None:
    if wire_columns(payload) is None:
        raise AssertionError("a synthetic payload the fast path does not read")


def _seconds(read: Callable[[bytes], None], payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for payload in payloads:
        read(payload)
    return time.perf_counter() - started


def run(quick: bool) -> None:
    n = 200_000
    events = synthetic_events(n, np.random.default_rng(11))
    for entry in ENTRIES:
        payloads = [entry_payload(encode_batch(events[start : start + entry])) for start in range(0, n, entry)]
        _wire(payloads[0])  # compile or load the kernel outside the clock
        wire_s: list[float] = []
        objects_s: list[float] = []
        for run in range(3 if quick else 7):
            sides = [(wire_s, _wire), (objects_s, _objects)]
            for seconds, read in sides if run % 2 else sides[::-1]:
                seconds.append(_seconds(read, payloads))
        for name, seconds in (("wire", wire_s), ("objects", objects_s)):
            emit(f"wire.{name}.events_per_s", n / statistics.median(seconds), "events/s", events=n, entry=entry,
                 spread=[round(n / max(seconds)), round(n / min(seconds))])


if __name__ == "__main__":
    run("--quick" in sys.argv)
