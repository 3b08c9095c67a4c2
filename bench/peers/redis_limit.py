"""Ingest into Redis: the production writer (``collectors/writer.py``) against what ``redis-benchmark`` gets out
of the same private redis-server on this machine.

* ``redis.writer``: events already queued (the detector bench's synthetic market, 1,500 instruments) drained by
  ``StreamWriter`` with the production settings: batches of up to 512 events per XADD entry (msgspec), 256
  entries per pipeline, ``MAXLEN ~``. Timed from start to the last reply; events/s and entries/s.
* ``redis.limit``: ``redis-benchmark -P 64`` XADD on the same server, twice: entries carrying ONE event (what a
  writer without batching could reach in events/s), and entries of the writer's own average entry size (the
  ceiling for its entries/s).

Ratios: writer events/s ÷ one-event XADD/s, and writer entries/s ÷ XADD/s at the same entry size. Runs
alternate writer and limit on one server; figures are medians.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import statistics
import subprocess

import numpy as np

from bench.common import Stopwatch, emit, note
from bench.detector import synthetic_events
from collectors.queue import EventQueue
from collectors.writer import StreamWriter
from flushwatch.events import Event
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, private_redis
from flushwatch.settings import WriterSettings
from flushwatch.streams import encode_batch, events_key

BENCH_KEY = "fw:bench:limit"


async def _writer(url: str, events: list[Event]) -> tuple[float, int, int]:
    """Seconds, events written and entries made by the writer draining ``events``."""
    redis = connect_redis(url)
    await redis.flushall()
    queue = EventQueue(len(events) + 1)
    queue.offer(events)
    writer = StreamWriter(redis, queue, WriterSettings(), shards=1)
    stop = asyncio.Event()
    stop.set()  # drain what is queued, then return
    with Stopwatch() as watch:
        await writer.run(stop)
    entries = await redis.xlen(events_key(0))
    await redis.aclose()
    return watch.seconds, writer.written, int(entries)


def _xadd_per_s(server: RunningServer, payload_bytes: int, n: int, events_per_entry: int) -> float:
    """XADD/s from ``redis-benchmark -P 64`` (50 clients) for entries shaped as the writer's. The payload is
    filler of the writer's payload size (its msgpack bytes hold NULs, which a command line cannot carry);
    Redis stores it as an opaque string either way."""
    command = ["redis-benchmark", "-p", str(server.port), "-P", "64", "-n", str(n), "--csv",
               "XADD", BENCH_KEY, "MAXLEN", "~", "100000", "*", "v", "1", "n", str(events_per_entry), "b",
               "x" * payload_bytes]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    subprocess.run(["redis-cli", "-p", str(server.port), "DEL", BENCH_KEY], capture_output=True, check=True)
    rows = list(csv.DictReader(io.StringIO(out)))
    return float(rows[-1]["rps"])


def run(quick: bool) -> None:
    if shutil.which("redis-benchmark") is None or shutil.which("redis-cli") is None:
        note("redis-benchmark / redis-cli not on PATH (Debian package redis-tools): no Redis limit figure")
        return
    runs = 3 if quick else 5
    n = 100_000 if quick else 400_000
    events = synthetic_events(n, np.random.default_rng(3))
    one = encode_batch(events[:1])[b"b"]
    full = [encode_batch(events[i : i + 512])[b"b"] for i in range(0, n - 511, 512)]
    entry = full[len(full) // 2]
    assert isinstance(one, bytes) and isinstance(entry, bytes)
    mean_entry_bytes = statistics.fmean(len(p) for p in full if isinstance(p, bytes))
    writer_s, one_per_s, entry_per_s = [], [], []
    with private_redis() as server:
        asyncio.run(_writer(server.url, events[:20_000]))  # warm-up
        for _ in range(runs):
            seconds, written, entries = asyncio.run(_writer(server.url, events))
            assert written == n, (written, n)
            writer_s.append(seconds)
            one_per_s.append(_xadd_per_s(server, len(one), 200_000 if quick else 1_000_000, 1))
            entry_per_s.append(_xadd_per_s(server, len(entry), 5_000 if quick else 20_000, 512))
    write_s = statistics.median(writer_s)
    limit_one, limit_entry = statistics.median(one_per_s), statistics.median(entry_per_s)
    emit("redis.writer.events_per_s", n / write_s, "events/s", entries_per_s=round(entries / write_s),
         events=n, entries=entries, spread=[round(n / max(writer_s)), round(n / min(writer_s))], runs=runs,
         note="StreamWriter, production settings: up to 512 events per XADD entry, 256 entries per pipeline")
    emit("redis.limit.xadd_one_event_per_s", limit_one, "XADD/s", entry_bytes=len(one),
         spread=[round(min(one_per_s)), round(max(one_per_s))],
         command="redis-benchmark -p PORT -P 64 -n N --csv XADD key MAXLEN ~ 100000 * v 1 n 1 b <1 event>")
    emit("redis.limit.xadd_writer_entry_per_s", limit_entry, "XADD/s", entry_bytes=len(entry),
         events_per_s=round(limit_entry * 512), spread=[round(min(entry_per_s)), round(max(entry_per_s))],
         command="redis-benchmark ... XADD key MAXLEN ~ 100000 * v 1 n 512 b <512 events>")
    emit("redis.writer_vs_limit.events_ratio", n / write_s / limit_one, "x",
         note="writer events/s over one-event XADD/s: what batching buys against the server's op limit")
    emit("redis.writer_vs_limit.entries_ratio", entries / write_s / limit_entry, "x",
         mean_entry_bytes=round(mean_entry_bytes),
         note="writer entries/s over XADD/s at the writer's entry size: its share of the physical limit")
