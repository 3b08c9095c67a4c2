"""What every benchmark shares: output, input frames, repetition."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from flushwatch.daemon import warm_up_kernels
from flushwatch.fake.scenario import Scenario
from flushwatch.heap import freeze_startup_objects
from flushwatch.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    """One result line on stdout."""
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def started_like_the_service(settings: Settings) -> None:
    """What a detector process does before its first event (``flushwatch.daemon``): every kernel loaded, then
    the start-up objects frozen out of the garbage collector's walks. Whatever the bench built for its input
    is frozen with them, as a service does not hold its input. Without it the first timed pass loads the
    kernels' compiled code from the cache inside the clock."""
    warm_up_kernels(settings)
    freeze_startup_objects()


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def combined(stream: str, payload: str) -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + payload.encode() + b"}"


def scenario_frames(start_s: int, end_s: int, script: str = "flush") -> tuple[list[str], list[bytes]]:
    """Binance-format frames of a scripted flush (shock and cascade by default): symbols and frames."""
    scenario = Scenario(script, seed=1, t0=1_760_000_000.0)
    return scenario.symbols, [combined(stream, payload) for _, stream, payload in scenario.frames(start_s, end_s)]


def recorded_frames() -> tuple[list[str], list[bytes]] | None:
    """Real Binance USD-M frames from ../shared/data, when it is there: the recorded session's frames
    verbatim plus the single messages of the tardis fixture."""
    session = SHARED_DATA / "cryptofeed_recordings" / "BINANCE_FUTURES.jsonl.zst"
    fixture = SHARED_DATA / "tardis_fixtures" / "binance-futures.ndjson"
    if not session.exists() or not fixture.exists():
        return None
    frames: list[bytes] = []
    with session.open("rb") as raw:
        text = zstandard.ZstdDecompressor().stream_reader(raw).read().decode()
    for line in text.splitlines():
        record = json.loads(line)
        if record.get("t") == "recv":
            frames.append(record["data"].encode())
    for line in fixture.read_text().splitlines():
        if line.strip():
            frames.append(msgspec.json.encode(json.loads(line)["message"]))
    symbols = sorted({s for f in frames if (s := _symbol(f))})
    return symbols, frames


def _symbol(frame: bytes) -> str | None:
    try:
        stream = json.loads(frame).get("stream", "")
    except ValueError:
        return None
    name = stream.partition("@")[0].upper()
    return name if name and not name.startswith("!") else None


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

