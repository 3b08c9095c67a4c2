"""Recordings read back: ``flushwatch record`` files and cryptofeed recordings, as one sequence of records.

A ``flushwatch record`` header names the venues' instruments; a cryptofeed header names the exchange and its
channels, and its ``http`` records carry the venue's REST answers (instrument metadata, which the venue
module's ``parse_instruments`` reads when it can). Receive times become integer ns either way (cryptofeed
stores epoch seconds as floats: rounded to the microsecond it was taken with). The parts of one recording
session are read in ``part`` order; separate recordings merge by receive time. Nothing here raises on bad
input: a corrupt or cut-short line, an unreadable zstd stream, a missing end record, a connection to another
endpoint (Bybit spot next to linear) are counted in ``skipped`` by reason and described in ``problems``.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import importlib
import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import msgspec
import zstandard

from collectors.instruments import Instrument
from collectors.venues import BINANCE, GENERIC, spec_of
from flushwatch.fake.venue_server import record_lines
from flushwatch.telemetry import RateLimitedLog

log = logging.getLogger(__name__)

FORMAT: Final = "flushwatch-record/1"
"""The ``format`` of a ``flushwatch record`` header (``flushwatch.recorder`` writes it)."""
VENUE_OF_EXCHANGE: Final = {"BINANCE_FUTURES": "binance", "BYBIT": "bybit", "OKX": "okx", "DERIBIT": "deribit"}


class ReplayError(RuntimeError):
    """The replay cannot go on: nothing readable, a role stopped, or Redis keys a live flushwatch reads."""


class Record(NamedTuple):
    ts: int  # receive time, ns since the epoch
    venue: str
    conn: str  # the connection; for an ``http`` record the request's path and query
    data: bytes
    kind: str  # ``recv`` (a websocket frame) or ``http`` (a REST body)


class _Line(msgspec.Struct):
    """Any line of either format (header, record or end)."""

    t: str = ""
    ts: int | float = 0
    venue: str = ""
    conn: str = ""
    url: str = ""
    addr: str = ""
    data: str = ""
    b64: bool = False
    format: str | int | None = None
    exchange: str = ""
    config: dict[str, Any] = {}
    created: int = 0
    recorded: float = 0.0
    session: str = ""
    part: int = 0
    venues: dict[str, Any] = {}
    dropped: int = 0


_line = msgspec.json.Decoder(_Line)


@dataclass
class _File:
    path: Path
    header: _Line
    venue: str = ""  # a cryptofeed recording's venue; "" for flushwatch files, which name it per record


def count_lines(paths: Sequence[Path]) -> int:
    """Lines in the files (the progress bar's total); a damaged file counts up to the damage."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError, zstandard.ZstdError):
            for _ in record_lines(path):
                total += 1
    return total


class Recordings:
    """Files of either format as one sequence of ``Record`` in replay order, and the instruments they name.
    ``skipped`` counts what was left out by reason; ``problems`` says in words what was wrong with a file."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.skipped: Counter[str] = Counter()
        self.problems: list[str] = []
        self.lines = 0
        self._warn = RateLimitedLog(log)
        self._instruments: dict[str, dict[str, Instrument]] = defaultdict(dict)
        self._fallback: dict[str, list[Instrument]] = {}
        groups: dict[str, list[_File]] = defaultdict(list)
        for path in paths:
            if (opened := self._open(Path(path))) is not None:
                groups[opened.header.session or str(path)].append(opened)
        if not groups:
            raise ReplayError("no readable recording: " + "; ".join(self.problems))
        for files in groups.values():
            files.sort(key=lambda f: f.header.part)
        self._groups = sorted(groups.values(), key=lambda g: g[0].header.created or g[0].header.recorded * 1e9)

    def problem(self, reason: str, text: str) -> None:
        self.skipped[reason] += 1
        if len(self.problems) < 1000:  # a file of garbage says the same thing a million times
            self.problems.append(text)
        self._warn.warning(reason, "%s", text)

    def _open(self, path: Path) -> _File | None:
        try:
            header = _line.decode(next(iter(record_lines(path)), b""))
            named = {venue: msgspec.convert(described["instruments"], list[Instrument])
                     for venue, described in header.venues.items()}
        except (OSError, zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
            self.problem("unreadable_file", f"{path}: not a recording ({exc})")
            return None
        if header.t == "header" and header.format == FORMAT:
            for venue, instruments in named.items():
                self._instruments[venue].update((inst.symbol, inst) for inst in instruments)
            return _File(path, header)
        venue = VENUE_OF_EXCHANGE.get(header.exchange, "")
        if header.t != "header" or not venue:
            self.problem("unreadable_file", f"{path}: neither {FORMAT} nor a cryptofeed recording of "
                                            f"{', '.join(VENUE_OF_EXCHANGE)}")
            return None
        if venue == BINANCE:  # cryptofeed's BTC-USDT-PERP is Binance's BTCUSDT, and a symbol is all it needs
            perps = sorted({s for v in header.config.values() if isinstance(v, list) for s in v if s.endswith("-PERP")})
            self._fallback[venue] = [Instrument(BINANCE, s.removesuffix("-PERP").replace("-", ""), s.split("-")[0],
                                                "linear", 1.0, 8.0) for s in perps]
        return _File(path, header, venue)

    def instruments(self, venue: str) -> list[Instrument]:
        """What the headers or the recorded REST answers list for ``venue`` (cryptofeed's Binance: its
        channels' symbols when no REST answer could be read)."""
        return list(self._instruments[venue].values()) or self._fallback.get(venue, [])

    def __iter__(self) -> Iterator[Record]:
        chains = [itertools.chain.from_iterable(self._read(f) for f in group) for group in self._groups]
        return chains[0] if len(chains) == 1 else heapq.merge(*chains, key=lambda r: r.ts)

    def _read(self, file: _File) -> Iterator[Record]:
        path, venue = file.path, file.venue
        ended = venue != ""  # only flushwatch files have an end record
        other_endpoint: set[str] = set()
        try:
            for number, raw in enumerate(record_lines(path), 1):
                self.lines += 1
                try:
                    line = _line.decode(raw)
                    data = base64.b64decode(line.data, validate=True) if line.b64 else line.data.encode()
                except ValueError:  # msgspec's DecodeError and a bad base64 alike
                    if raw.endswith(b"\n"):
                        self.problem("corrupt_line", f"{path}: line {number} is not a record; skipped")
                    else:
                        self.problem("truncated_line", f"{path}: ends in the middle of a record (cut short)")
                    continue
                if line.t == "recv" and line.conn not in other_endpoint:
                    ts = round(line.ts * 1e6) * 1000 if venue else int(line.ts)  # cryptofeed: seconds
                    yield Record(ts, line.venue or venue, line.conn, data, "recv")
                elif line.t == "http" and not venue:
                    yield Record(int(line.ts), line.venue, line.url, data, "http")
                elif line.t == "http":
                    self._learn(venue, data)
                elif line.t == "connect":
                    if venue in GENERIC and urlsplit(line.addr).path != urlsplit(spec_of(venue).ws_url).path:
                        other_endpoint.add(line.conn)  # Bybit's spot connection next to its linear one
                elif line.t == "end":
                    ended = True
                    if line.dropped:
                        self.problem("recorder_dropped", f"{path}: the recorder dropped {line.dropped} frames "
                                                         "while writing it (its writer fell behind)")
                elif line.t != "header":
                    self.skipped["other_endpoint" if line.t == "recv" else line.t or "not_a_record"] += 1
        except (OSError, zstandard.ZstdError) as exc:
            self.problem("unreadable_rest", f"{path}: unreadable from here on ({exc}); the rest is skipped")
            return
        if not ended:
            self.problem("unterminated_file", f"{path}: no end record (the recorder did not close it)")

    def _learn(self, venue: str, body: bytes) -> None:
        """Instruments from a recorded REST answer, when the venue module can read it."""
        try:
            found: list[Instrument] = importlib.import_module(f"collectors.{venue}.instruments").parse_instruments(body)
        except Exception:  # another endpoint's body (a depth snapshot, spot listings), or no such module
            self.skipped["http_not_instruments"] += 1
            return
        known = self._instruments[venue]
        for inst in found:  # a perpetual wins over a dated listing of the same symbol
            if inst.symbol not in known or (inst.perpetual and not known[inst.symbol].perpetual):
                known[inst.symbol] = inst
