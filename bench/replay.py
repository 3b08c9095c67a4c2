"""Replay throughput, end to end: frames per second from a recording file to detector state.

The recording is made here by the real ``Recorder``: the scripted flush's Binance frames (three symbols:
trades, mark price, the top-20 book, liquidations) received 3 ms after their event time, and each symbol's
REST open interest every 10 s, as ``flushwatch record`` writes them.

* ``replay.inprocess``: read, parse, ``Detector.process`` in one process, no Redis (the ceiling);
* ``replay.redis``: the whole ``flushwatch replay`` pipeline without MQTT -- file, parser, writer, a private
  redis-server, detector, alert role -- timed from the first record to the drained alert role;
* ``record.write``: what the recorder's writer (JSON lines, zstd, file) sustains, and bytes per frame.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

import msgspec

from bench.common import Stopwatch, combined, emit
from detector.engine import Detector
from flushwatch.daemon import warm_up_kernels
from flushwatch.events import Event
from flushwatch.fake.scenario import Scenario
from flushwatch.recorder import Recorder
from flushwatch.replay import Replay, ReplayOptions
from flushwatch.settings import Settings, load_settings

RECV_LATENCY_NS = 3_000_000
OI_EVERY_S = 10


def _description(scenario: Scenario) -> dict[str, object]:
    instruments = [{"venue": "binance", "symbol": s, "asset": s.removesuffix("USDT"), "kind": "linear",
                    "contract_size": 1.0, "funding_interval_h": 8.0} for s in scenario.symbols]
    return {"binance": {"instruments": instruments, "connections": {}}}


async def make_recording(out: Path, seconds: int) -> tuple[Recorder, int, float]:
    """The first ``seconds`` of the flush as a recording; returns the recorder, frames and write seconds."""
    scenario = Scenario("flush", seed=1, t0=1_760_000_000.0)
    recorder = Recorder(out, lambda: _description(scenario), max_pending_bytes=1 << 31)
    frames = 0
    t0_ms = scenario.t0_ms
    for k in range(min(seconds, scenario.duration_s)):
        if k % OI_EVERY_S == 0:
            for symbol in scenario.symbols:
                body = msgspec.json.encode({"openInterest": f"{scenario.oi_at(symbol, k):.3f}", "symbol": symbol,
                                            "time": t0_ms + k * 1000})
                recorder.http("binance", f"/fapi/v1/openInterest?symbol={symbol}",
                              (t0_ms + k * 1000) * 1_000_000 + RECV_LATENCY_NS, body)
        for e_ms, stream, payload in scenario.frames_for_second(k):
            conn = "public-0" if "@depth" in stream else "market-0"
            recorder("recv", "binance", conn, e_ms * 1_000_000 + RECV_LATENCY_NS, combined(stream, payload))
            frames += 1
    stop = asyncio.Event()
    stop.set()
    with Stopwatch() as watch:  # everything is buffered: this is the writer alone
        await recorder.run(stop)
    return recorder, frames, watch.seconds


def inprocess(files: list[Path], settings: Settings) -> tuple[float, int, int]:
    """frames/s, frames and events of read + parse + detector, no Redis."""
    replay = Replay(files, settings, ReplayOptions())
    detector = Detector(settings)
    chunk: list[Event] = []
    events = 0
    with Stopwatch() as watch:
        for record in replay.recordings:
            chunk += replay.parse(record)
            if len(chunk) >= 512:
                detector.process(chunk)
                events += len(chunk)
                chunk = []
        detector.process(chunk)
    return replay.report.frames / watch.seconds, replay.report.frames, events + len(chunk)


def run(quick: bool) -> None:
    settings = load_settings()
    warm_up_kernels(settings)
    runs = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="flushwatch-bench-") as folder:
        recorder, frames, write_s = asyncio.run(make_recording(Path(folder), 800 if quick else 1600))
        files = recorder.files
        size = sum(p.stat().st_size for p in files)
        emit("record.write.frames_per_s", frames / write_s, "frames/s", frames=frames,
             note="JSON lines + zstd + file, in the writer's thread")
        emit("record.bytes_per_frame", size / frames, "bytes", note="zstd level 3, a block flushed per write")
        rates = [inprocess(files, settings) for _ in range(runs)]
        emit("replay.inprocess.frames_per_s", statistics.median(r for r, _, _ in rates), "frames/s",
             frames=rates[0][1], events=rates[0][2], note="read + parse + detector state, one process, no Redis")
        reports = [asyncio.run(Replay(files, settings, ReplayOptions(private_mqtt=False)).run()) for _ in range(runs)]
        emit("replay.redis.frames_per_s", statistics.median(r.frames / r.seconds for r in reports), "frames/s",
             frames=reports[0].frames, events=reports[0].events, stage_changes=reports[0].stage_changes,
             note="file -> parser -> writer -> Redis -> detector -> alerts (no MQTT)")
