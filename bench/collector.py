"""Frames through decode -> normalise -> Redis, on one core (the Redis server runs in its own process)."""

from __future__ import annotations

import asyncio
import time

from bench.common import Stopwatch, emit, median_of, note, recorded_frames, scenario_frames
from collectors.base import FrameSink
from collectors.binance.parse import BinanceParser
from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from flushwatch.redis_client import connect_redis
from flushwatch.servers import private_redis
from flushwatch.settings import WriterSettings

YIELD_EVERY = 256
"""Frames handed to the sink between two yields to the writer, as a receive loop does between reads."""


async def _through_redis(url: str, symbols: list[str], frames: list[bytes]) -> tuple[float, int]:
    """Seconds to parse, enqueue and write all ``frames``; and how many events they made."""
    redis = connect_redis(url)
    await redis.flushall()
    queue = EventQueue(10_000_000)
    parser = BinanceParser(symbols)
    sink = FrameSink("binance", parser.parse, queue)
    writer = StreamWriter(redis, queue, WriterSettings(), shards=1)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    with Stopwatch() as watch:
        for i, frame in enumerate(frames):
            sink(frame, time.time_ns())
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        stop.set()
        queue.wake()
        await task
    await redis.aclose()
    assert writer.written == sink.events, (writer.written, sink.events)
    return watch.seconds, sink.events


def _decode_only(symbols: list[str], frames: list[bytes]) -> float:
    parser = BinanceParser(symbols)
    now = time.time_ns()
    with Stopwatch() as watch:
        for frame in frames:
            parser.parse(frame, now)
    return len(frames) / watch.seconds


def run(quick: bool) -> None:
    runs = 3 if quick else 7
    symbols, frames = scenario_frames(470, 760)
    with private_redis() as server:
        seconds, events = asyncio.run(_through_redis(server.url, symbols, frames))  # warm caches
        rates = []
        for _ in range(runs):
            seconds, events = asyncio.run(_through_redis(server.url, symbols, frames))
            rates.append(len(frames) / seconds)
        rates.sort()
        emit("collector.binance.frames_per_s", rates[len(rates) // 2], "frames/s", frames=len(frames),
             events=events, input="scripted flush, shock and cascade (Binance format)", runs=runs)
        emit("collector.binance.decode_only.frames_per_s", median_of(runs, lambda: _decode_only(symbols, frames)),
             "frames/s", frames=len(frames))
        recorded = recorded_frames()
        if recorded is None:
            note("../shared/data not found: no figure on recorded frames")
            return
        rec_symbols, rec_frames = recorded
        # A fresh parser per pass, so repeated frames are not dropped as duplicates.
        passes = max(1, 30_000 // len(rec_frames))
        total_s = 0.0
        for _ in range(passes):
            seconds, _ = asyncio.run(_through_redis(server.url, rec_symbols, rec_frames))
            total_s += seconds
        emit("collector.binance.recorded.frames_per_s", passes * len(rec_frames) / total_s, "frames/s",
             frames=len(rec_frames), passes=passes,
             input="recorded real frames (most are channels flushwatch does not subscribe: counted rejects)")
