r"""Replay recorded Binance frames through the fake venue, at a chosen speed or as fast as possible.

Two input shapes, one record per line, optionally zstd-compressed (``.zst``):

* cryptofeed recordings: a header, then records; only ``"t":"recv"`` records are frames, ``"ts"`` is the
  receive time (epoch seconds) and ``"data"`` the raw frame text::

      {"t":"recv","conn":"BINANCE_FUTURES.ws.1","ts":1626992741.06217,"data":"{\"stream\":\"sushiusdt@bookTicker\",
       \"data\":{\"e\":\"bookTicker\",\"u\":600859600576,\"s\":\"SUSHIUSDT\",\"b\":\"7.6110\",\"B\":\"2\",
       \"a\":\"7.6120\",\"A\":\"297\",\"T\":1626992741012,\"E\":1626992741017}}"}

* plain combined frames, ``{"stream":..,"data":..}`` per line; their timing is the payload's ``E`` (ms).

Each frame is pushed on the stream named in its ``"stream"`` field with its ``data`` bytes untouched, so
a combined-mode client receives the recorded text exactly. Records that are not frames are counted in
``skipped`` by reason, never silently dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import msgspec

from flushwatch.fake.binance import Frame
from flushwatch.fake.venue_server import record_lines

_FAST_BATCH: Final = 500
"""Frames per batch when replaying as fast as possible; the loop is yielded to between batches."""


class _Record(msgspec.Struct):
    """A line of either shape: cryptofeed records have ``t``, combined frames ``stream`` and ``data``."""

    t: str | None = None
    ts: float | None = None
    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    """The frame: a JSON string in a cryptofeed record, an object in a combined frame; empty if absent."""


class _Combined(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Stamped(msgspec.Struct):
    E: int | None = None


_record = msgspec.json.Decoder(_Record)
_combined = msgspec.json.Decoder(_Combined)
_stamped = msgspec.json.Decoder(_Stamped)
_text = msgspec.json.Decoder(str)


class Recording:
    """Recorded frames as a frame source. ``speed=None`` replays as fast as the clients take them."""

    def __init__(self, path: Path | str, *, speed: float | None = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for as fast as possible")
        self.path = Path(path)
        self.speed = speed
        self._clock = clock
        self.skipped: Counter[str] = Counter()
        self.frames: list[tuple[float, str, str]] = []
        """``(receive time s, stream, payload)`` in recorded order."""
        self._load()

    def _load(self) -> None:
        last_ts = 0.0
        for line in record_lines(self.path):
            if not line.strip():
                continue
            stream, payload, ts = "", b"", last_ts
            try:
                record = _record.decode(line)
                if record.t is None:  # a plain combined frame, timed by its payload's E
                    stream, payload = record.stream or "", bytes(record.data)
                    stamp = _stamped.decode(payload) if payload.startswith(b"{") else _Stamped()
                    ts = stamp.E / 1000.0 if stamp.E is not None else last_ts
                elif record.t == "recv" and record.data:
                    frame = _combined.decode(_text.decode(record.data))
                    stream, payload = frame.stream, bytes(frame.data)
                    ts = record.ts if record.ts is not None else last_ts
                else:
                    self.skipped[f"record_{record.t}"] += 1
                    continue
            except msgspec.DecodeError:
                pass
            if not stream or not payload:
                self.skipped["not_a_stream_frame"] += 1  # acks such as {"result":null,"id":1}, bad lines
                continue
            last_ts = ts
            self.frames.append((ts, stream, payload.decode()))

    def open_interest(self, symbol: str) -> tuple[str, int] | None:
        return None  # recordings carry no REST open interest

    async def batches(self) -> AsyncIterator[list[Frame]]:
        if not self.frames:
            return
        if self.speed is None:
            for i in range(0, len(self.frames), _FAST_BATCH):
                yield [(stream, payload) for _, stream, payload in self.frames[i:i + _FAST_BATCH]]
                await asyncio.sleep(0)
            return
        wall0, ts0 = self._clock(), self.frames[0][0]
        pending: list[Frame] = []
        for ts, stream, payload in self.frames:
            due = wall0 + (ts - ts0) / self.speed
            now = self._clock()
            if due > now:
                if pending:
                    yield pending
                    pending = []
                await asyncio.sleep(due - now)
            pending.append((stream, payload))
        if pending:
            yield pending
