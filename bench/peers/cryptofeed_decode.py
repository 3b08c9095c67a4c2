"""Decode -> normalise, flushwatch against cryptofeed, side by side on the same recorded frames.

Input: the cryptofeed recordings in ``../shared/data/cryptofeed_recordings`` (Binance USD-M, Bybit v5 linear,
OKX v5, Deribit), read by ``flushwatch.recordings.Recordings`` as ``flushwatch replay`` reads them: frames of the
endpoint flushwatch reads (Bybit's spot connection is left out) with their recorded receive times. Frames are
grouped by channel. A channel is compared when flushwatch reads it; of its frames, those naming an instrument
flushwatch does not watch (OKX spot, say) are left out of BOTH sides. Channels flushwatch does not read
(Binance diff depth, bookTicker, klines...) are named in a note, not timed: rejecting a frame is no decode.

Per frame, flushwatch: ``parser.parse(bytes, ts_ns)`` of the venue's production parser (``parser_for``), msgspec
typed decode into ``flushwatch.events`` structs, book state kept where the venue sends deltas. cryptofeed: its
feed class's ``message_handler(str, conn, ts)`` coroutine, as its connection handler calls it -- ``json.loads``
with Decimal floats, its own typed objects (Trade, OrderBook, Ticker, Funding, OpenInterest...), book state --
with callbacks that only count. Each side gets the type its websocket library hands it (bytes / str).

Both sides start every pass from fresh state (a new parser; a new feed started through its own ``subscribe``)
built outside the timed loop, so sequence checks see each session once per pass. Each run times both sides
one after the other on the same frames, alternating which goes first; the figure is the median of the runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, emit, note
from collectors.instruments import Instrument
from collectors.venues import parser_for
from flushwatch.fake.venue_server import record_lines
from flushwatch.recordings import Recordings

RECORDINGS = SHARED_DATA / "cryptofeed_recordings"
FILES = {"binance": "BINANCE_FUTURES", "bybit": "BYBIT", "okx": "OKX", "deribit": "DERIBIT"}
FEED_CLASSES = {"binance": "BinanceFutures", "bybit": "Bybit", "okx": "OKX", "deribit": "Deribit"}
"""cryptofeed's feed class per venue (``cryptofeed.exchanges``)."""
NOT_WATCHED = frozenset({"unknown_symbol"})
"""Rejects that mean 'not an instrument flushwatch watches': such frames are dropped from both sides."""
NOT_READ = frozenset({"unknown_type"})
"""Rejects that mean 'a channel flushwatch does not read'."""


def channel_of(venue: str, frame: dict[str, Any]) -> str:
    """The channel a frame belongs to, or '' for control frames (acks, subscription answers)."""
    if venue == "binance":
        stream: str = frame.get("stream", "")
        return stream.partition("@")[2].removesuffix("@1s") if stream else ""
    if venue == "bybit":
        return str(frame.get("topic", "")).partition(".")[0]
    if venue == "okx":
        return "" if "event" in frame else str(frame.get("arg", {}).get("channel", ""))
    if venue == "deribit":
        return str(frame.get("params", {}).get("channel", "")).partition(".")[0]
    raise KeyError(venue)


def _option_instruments(frames: Sequence[dict[str, Any]]) -> list[Instrument]:
    """Deribit's recording is options only; flushwatch watches perpetuals, but its book and ticker rules are
    the same per instrument, so the recorded options are declared as (dated, linear) instruments."""
    names = {f["params"]["data"]["instrument_name"] for f in frames if "params" in f}
    return [Instrument("deribit", n, n.split("-")[0], "linear", 1.0, 0.0, perpetual=False) for n in sorted(names)]


@dataclass
class Session:
    """The recorded frames of one venue, split by channel, and what each side needs to start."""

    venue: str
    instruments: list[Instrument]
    config: dict[str, list[str]]
    """The cryptofeed subscription the recording was made with (its header)."""
    bodies: dict[str, str]
    """Recorded REST answers by URL: cryptofeed's symbol lists come from them, not from the network."""
    address: dict[str, str]
    channels: dict[str, list[tuple[bytes, int, str]]] = field(default_factory=dict)
    """channel -> ``(frame, receive time ns, connection id)`` in recorded order."""
    not_read: Counter[str] = field(default_factory=Counter)
    not_watched: Counter[str] = field(default_factory=Counter)


def load_session(venue: str, path: Path) -> Session:
    recordings = Recordings([path])
    records = [r for r in recordings if r.kind == "recv"]
    lines = [json.loads(raw) for raw in record_lines(path) if raw.strip()]
    decoded = [json.loads(r.data) for r in records]
    instruments = recordings.instruments(venue)
    if venue == "deribit":
        instruments = instruments + _option_instruments(decoded)
    session = Session(venue, instruments, lines[0].get("config", {}),
                      {line["url"]: line["data"] for line in reversed(lines) if line["t"] == "http"},
                      {line["conn"]: line["addr"] for line in lines if line["t"] == "connect"})
    parser = parser_for(venue, instruments, 1 << 24)
    for record, frame in zip(records, decoded, strict=True):
        channel = channel_of(venue, frame)
        if not channel:
            continue
        reasons = {reject.reason for reject in parser.parse(record.data, record.ts).rejects}
        if reasons & NOT_READ:
            session.not_read[channel] += 1
        elif reasons & NOT_WATCHED:
            session.not_watched[channel] += 1
        else:
            session.channels.setdefault(channel, []).append((record.data, record.ts, record.conn))
    return session


class _Conn:
    """What a cryptofeed handler touches of its connection: the address (Bybit tells linear from spot by it),
    the subscription (Bybit's tickers split into ticker / funding / open interest by it) and ``write`` (the
    subscribe requests, which go nowhere here)."""

    def __init__(self, address: str, subscription: dict[str, Any]) -> None:
        self.address = address
        self.uuid = "bench"
        self.subscription = subscription

    async def write(self, _message: str) -> None:
        return None


class Cryptofeed:
    """cryptofeed's feed class for one venue, started without network: symbol lists from recorded REST."""

    def __init__(self, session: Session) -> None:
        import cryptofeed.defines as d
        import cryptofeed.exchanges as exchanges
        from cryptofeed.symbols import Symbols

        self.cls = getattr(exchanges, FEED_CLASSES[session.venue])
        routes = self.cls.rest_endpoints[0].routes.instruments
        routes = routes if isinstance(routes, list) else [routes]
        data = [json.loads(next(body for url, body in session.bodies.items() if route in url)) for route in routes]
        Symbols.set(self.cls.id, *self.cls._parse_symbol_data(data if len(data) > 1 else data[0]))
        self.kinds = (d.TRADES, d.L2_BOOK, d.TICKER, d.FUNDING, d.OPEN_INTEREST, d.INDEX, d.LIQUIDATIONS, d.CANDLES)
        # Deribit's raw book/trade/ticker channels count as authenticated there: subscribing needs API keys,
        # so its feed starts without a subscription (its handlers do not read it).
        self.config = {} if session.venue == "deribit" else session.config
        self.address = session.address
        self.objects = 0

    async def _count(self, _obj: object, _receipt: float) -> None:
        self.objects += 1

    async def fresh(self) -> tuple[Any, dict[str, _Conn]]:
        """A feed as at connection start (its ``subscribe`` resets book and ticker state), with callbacks."""
        feed = self.cls(callbacks=dict.fromkeys(self.kinds, self._count),
                        **({"subscription": self.config} if self.config else {}))
        conns = {conn: _Conn(addr, dict(feed.subscription)) for conn, addr in self.address.items()}
        for conn in conns.values():
            await feed.subscribe(conn)
        return feed, conns


def _flushwatch_pass_s(session: Session, frames: list[tuple[bytes, int, str]], passes: int) -> tuple[float, int]:
    parsers = [parser_for(session.venue, session.instruments, 1 << 24) for _ in range(passes)]
    events = 0
    gc.collect()  # the fresh state built above is collected now, not inside the clock (both sides alike)
    began = time.perf_counter()
    for parser in parsers:
        parse = parser.parse
        for frame, ts, _ in frames:
            events += len(parse(frame, ts).events)
    return time.perf_counter() - began, events


def _cryptofeed_pass_s(peer: Cryptofeed, frames: list[tuple[bytes, int, str]], passes: int) -> tuple[float, int]:
    texts = [(frame.decode(), ts / 1e9, conn) for frame, ts, conn in frames]

    async def timed() -> float:
        feeds = [await peer.fresh() for _ in range(passes)]
        peer.objects = 0
        gc.collect()
        began = time.perf_counter()
        for feed, conns in feeds:
            handler = feed.message_handler
            for text, ts, conn in texts:
                await handler(text, conns[conn], ts)
        return time.perf_counter() - began

    seconds = asyncio.run(timed())
    return seconds, peer.objects


@dataclass
class Result:
    venue: str
    channel: str
    frames: int
    passes: int
    fw_s: list[float] = field(default_factory=list)
    cf_s: list[float] = field(default_factory=list)
    fw_events: int = 0
    cf_objects: int = 0

    def rate(self, seconds: list[float]) -> float:
        return self.frames * self.passes / statistics.median(seconds)


def compare(session: Session, peer: Cryptofeed, channel: str, runs: int, min_frames: int) -> Result:
    frames = session.channels[channel]
    passes = max(1, math.ceil(min_frames / len(frames)))
    result = Result(session.venue, channel, len(frames), passes)
    _flushwatch_pass_s(session, frames, 1)  # warm-up, both sides
    _cryptofeed_pass_s(peer, frames, 1)
    for run in range(runs):

        def ours() -> None:
            seconds, result.fw_events = _flushwatch_pass_s(session, frames, passes)
            result.fw_s.append(seconds)

        def theirs() -> None:
            seconds, result.cf_objects = _cryptofeed_pass_s(peer, frames, passes)
            result.cf_s.append(seconds)

        sides: list[Callable[[], None]] = [ours, theirs] if run % 2 == 0 else [theirs, ours]
        for side in sides:
            side()
    return result


def sessions() -> list[Session] | None:
    if not RECORDINGS.exists():
        return None
    return [load_session(venue, RECORDINGS / f"{name}.jsonl.zst") for venue, name in FILES.items()]


def run(quick: bool) -> None:
    try:
        import cryptofeed  # noqa: F401
    except ImportError:
        note("cryptofeed is not installed (pip install -e '.[bench]'): no side-by-side decode figures")
        return
    loaded = sessions()
    if loaded is None:
        note(f"{RECORDINGS} not found: no side-by-side decode figures (they need the recorded frames)")
        return
    runs, min_frames = (5, 3_000) if quick else (7, 20_000)
    results: list[Result] = []
    for session in loaded:
        for channel, count in sorted(session.not_read.items()):
            note(f"cryptofeed vs flushwatch: {session.venue} {channel} ({count} frames) not compared: "
                 "a channel flushwatch does not read")
        peer = Cryptofeed(session)
        for channel in sorted(session.channels):
            result = compare(session, peer, channel, runs, min_frames)
            results.append(result)
            fw, cf = result.rate(result.fw_s), result.rate(result.cf_s)
            emit(f"vs_cryptofeed.{session.venue}.{channel}.decode_ratio", fw / cf, "x",
                 flushwatch_frames_per_s=round(fw), cryptofeed_frames_per_s=round(cf),
                 flushwatch_spread=_spread(result, result.fw_s), cryptofeed_spread=_spread(result, result.cf_s),
                 frames=result.frames, passes=result.passes, runs=runs, flushwatch_events=result.fw_events,
                 cryptofeed_objects=result.cf_objects,
                 left_out_not_watched=session.not_watched.get(channel, 0))
    if results:
        fw_total = [sum(r.fw_s[i] for r in results) for i in range(runs)]
        cf_total = [sum(r.cf_s[i] for r in results) for i in range(runs)]
        frames = sum(r.frames * r.passes for r in results)
        emit("vs_cryptofeed.decode_ratio", statistics.median(cf_total) / statistics.median(fw_total), "x",
             flushwatch_frames_per_s=round(frames / statistics.median(fw_total)),
             cryptofeed_frames_per_s=round(frames / statistics.median(cf_total)), target=2.0,
             channels=len(results), geometric_mean_of_channel_ratios=round(statistics.geometric_mean(
                 [r.rate(r.fw_s) / r.rate(r.cf_s) for r in results]), 3),
             note="all compared channels' frames, each side timed on the same frames; one core")


def _spread(result: Result, seconds: list[float]) -> list[int]:
    """Slowest and fastest run, frames/s."""
    return [round(result.frames * result.passes / max(seconds)), round(result.frames * result.passes / min(seconds))]
