"""``FakeVenue``: one local server that speaks any venue's protocol, given that venue's ``FakeProtocol``.

The server moves frames; the protocol module (``flushwatch/fake/<venue>.py``) knows the venue's rules:
what a subscribe looks like and what it answers, which topic a pushed frame belongs to, what snapshot a
new subscriber gets first (built from the frames seen so far, so a client that reconnects mid-stream gets
a fresh snapshot and then deltas, as on the real venue), which heartbeats it expects, and what its REST
endpoints return.

REST has its own small HTTP/1.1 listener (``rest_url``), not the websocket port: websockets' handshake parser
refuses any request with a body, and Hyperliquid's ``POST /info`` needs one.

Frames come from ``publish`` or an attached source (``VenueRecording``: cryptofeed recordings or tardis
fixture lines). Frames whose topic nobody subscribed to are counted, not queued. Misbehaviour on request:
``drop_connections`` (a close code or an abrupt 1006), ``stall`` and ``retire``; a client that stays silent
past the protocol's ``client_idle_timeout_s`` is cut off, as the venues do.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import io
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol
from urllib.parse import parse_qsl, urlsplit

import msgspec
import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger(__name__)


@dataclass
class FakeReply:
    """What a venue does with one client message."""

    replies: list[str] = field(default_factory=list)
    """Sent back first, in order (acks, pongs, errors)."""
    subscribed: list[str] = field(default_factory=list)
    """Topics now subscribed: each gets the protocol's snapshot, then live frames."""
    unsubscribed: list[str] = field(default_factory=list)
    close: tuple[int, str] | None = None
    """Close the connection after the replies (a venue punishing a bad request)."""


class FakeSession(Protocol):
    """One connection's protocol state."""

    def handle(self, message: str | bytes) -> FakeReply: ...

    def tick(self, now: float) -> FakeReply:
        """What the venue does unprompted at ``now`` (monotonic s): ``replies`` are sent (Deribit's
        ``test_request``), ``close`` closes the connection (Deribit's unanswered heartbeat); the rest is ignored."""
        ...


class FakeProtocol(Protocol):
    name: str
    ws_path: str
    """The websocket endpoint, e.g. ``/v5/public/linear``; other paths are REST."""
    client_idle_timeout_s: float | None
    """Close a connection whose client sent nothing for this long (``None``: never)."""

    def session(self) -> FakeSession: ...

    def observe(self, frame: str) -> str | None:
        """The topic a pushed frame belongs to (``None``: not a push, e.g. a recorded ack); the protocol may
        also fold the frame into the state its snapshots are built from."""
        ...

    def snapshot(self, topic: str) -> list[str]:
        """Frames a new subscriber of ``topic`` gets before live ones (``[]`` when nothing is known yet)."""
        ...

    def rest(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        """A REST answer ``(status, JSON body)``, or ``None`` for an unknown path (404)."""
        ...


METHOD_NOT_ALLOWED: Final = (405, b'{"error":"method not allowed"}')
"""What a protocol answers a known path asked with the wrong method."""
_BAD_REQUEST: Final = (400, b'{"error":"bad request"}')
_MAX_HEADERS: Final = 100
_MAX_BODY: Final = 1 << 20
_READ_TIMEOUT_S: Final = 10.0
"""A client that stops mid-request is answered 400 rather than holding the handler forever."""


@dataclass(frozen=True)
class RestRequest:
    """A REST request the venue received, kept so a test can check what a client sent."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes


class _Malformed(Exception):
    pass


async def _read_request(reader: asyncio.StreamReader) -> RestRequest:
    """One HTTP/1.1 request: the request line, headers, and a ``Content-Length`` body (no chunked bodies:
    no client the collectors use sends one)."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Malformed("request line")
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n"):
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip() or len(headers) >= _MAX_HEADERS:
            raise _Malformed("header")  # also an empty line: the connection closed mid-headers
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _Malformed("transfer-encoding")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > _MAX_BODY:
        raise _Malformed("content-length")
    body = await reader.readexactly(int(length))
    target = urlsplit(parts[1])
    return RestRequest(parts[0], target.path, dict(parse_qsl(target.query)), body)


class FrameSource(Protocol):
    def batches(self) -> AsyncIterator[list[str]]:
        """Frames in delivery order, grouped in batches that are due together; paced by the source."""
        ...


class Connection:
    """The server's record of one websocket connection; kept after it closes."""

    def __init__(self, cid: int, ws: ServerConnection, session: FakeSession) -> None:
        self.id = cid
        self.ws = ws
        self.session = session
        self.topics: set[str] = set()
        self.received: list[tuple[float, str]] = []
        """``(monotonic time, message)`` of every client message."""
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.last_heard = time.monotonic()

    async def send(self, frame: str) -> None:
        await self.ws.send(frame)
        self.sent.append(frame)


@dataclass
class Counts:
    connections: int = 0
    client_messages: int = 0
    rest_requests: int = 0
    """Well-formed REST requests (``FakeVenue.rest_requests`` holds them)."""
    frames_published: int = 0
    frames_sent: int = 0
    unrouted: Counter[str] = field(default_factory=Counter)
    """Published frames not sent to anyone, by reason: ``not_a_push``, ``retired`` or ``no_subscriber``."""
    closed_idle: int = 0


class FakeVenue:
    def __init__(self, protocol: FakeProtocol, *, host: str = "127.0.0.1", port: int = 0,
                 tick_s: float = 0.25) -> None:
        self.protocol = protocol
        self.counts = Counts()
        self.connections: list[Connection] = []
        self.rest_requests: list[RestRequest] = []
        self._host, self._port = host, port
        self._tick_s = tick_s
        self._server: Server | None = None
        self._rest: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled_until = 0.0
        self._ids = 0
        self.retired = False

    async def start(self) -> None:
        self._server = await serve(self._handle, self._host, self._port, process_request=self._process_request,
                                   ping_interval=None, compression=None, max_size=None)
        self._rest = await asyncio.start_server(self._serve_rest, self._host, 0)

    async def stop(self) -> None:
        if self._rest is not None:
            self._rest.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._rest is not None:
            await self._rest.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeVenue:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://{self._host}:{self.port}{self.protocol.ws_path}"

    @property
    def rest_port(self) -> int:
        assert self._rest is not None, "not started"
        return int(self._rest.sockets[0].getsockname()[1])

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self.rest_port}"

    @property
    def open_connections(self) -> list[Connection]:
        return [c for c in self.connections if not c.closed.is_set()]

    def subscribed(self) -> set[str]:
        """Topics some open connection is subscribed to."""
        return set().union(*(c.topics for c in self.open_connections))

    def attach(self, source: FrameSource) -> asyncio.Task[None]:
        """Publish ``source`` in the background; the task ends when the source does."""
        task = asyncio.create_task(self._pump(source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, source: FrameSource) -> None:
        async for batch in source.batches():
            await self.publish(batch)

    async def publish(self, frames: Sequence[str]) -> None:
        """Route each frame to the connections subscribed to its topic (after any ``stall``)."""
        for frame in frames:
            pause = self._stalled_until - time.monotonic()
            if pause > 0:  # stall() is only ever extended from the test, so one sleep covers it
                await asyncio.sleep(pause)
            self.counts.frames_published += 1
            topic = self.protocol.observe(frame)
            if topic is None:
                self.counts.unrouted["not_a_push"] += 1
                continue
            if self.retired:
                self.counts.unrouted["retired"] += 1
                continue
            targets = [c for c in self.open_connections if topic in c.topics]
            if not targets:
                self.counts.unrouted["no_subscriber"] += 1
            for conn in targets:
                with contextlib.suppress(ConnectionClosed):
                    await conn.send(frame)
                    self.counts.frames_sent += 1

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (connections stay open): what a client's staleness watchdog is for."""
        self._stalled_until = time.monotonic() + seconds

    def retire(self, retired: bool = True) -> None:
        """While retired, handshakes, subscriptions and heartbeats are answered but no data is sent, snapshots
        included: the silent failure of a retired URL. Published frames still update the snapshots."""
        self.retired = retired

    async def drop_connections(self, code: int | None = None) -> int:
        """Close every open connection with ``code``, or abruptly (the client sees 1006) when ``None``."""
        conns = self.open_connections
        for conn in conns:
            if code is None:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(code, "fake venue drop")
        return len(conns)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Only the protocol's websocket path upgrades: a client configured with a wrong path fails, as on the
        venue."""
        if urlsplit(request.path).path == self.protocol.ws_path:
            return None
        body = b'{"error":"not found"}'
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return Response(404, "Not Found", headers, body)

    async def _serve_rest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (``Connection: close``), answered by the protocol."""
        task = asyncio.current_task()
        if task is not None:  # so stop() cancels a request still being read
            self._tasks.add(task)
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT_S)
            except (_Malformed, ValueError, asyncio.IncompleteReadError, TimeoutError):
                status, body = _BAD_REQUEST  # ValueError: a line over the reader's limit
            else:
                self.rest_requests.append(request)
                self.counts.rest_requests += 1
                answer = self.protocol.rest(request.method, request.path, request.query, request.body)
                status, body = answer if answer is not None else (404, b'{"error":"not found"}')
            head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self._ids += 1
        conn = Connection(self._ids, ws, self.protocol.session())
        self.connections.append(conn)
        self.counts.connections += 1
        ticker = asyncio.create_task(self._tick(conn))
        try:
            async for message in ws:
                conn.last_heard = time.monotonic()
                text = message if isinstance(message, str) else message.decode(errors="replace")
                conn.received.append((conn.last_heard, text))
                self.counts.client_messages += 1
                reply = conn.session.handle(message)
                for frame in reply.replies:
                    await conn.send(frame)
                for topic in reply.subscribed:
                    # Subscribed before the first await: a frame published while the snapshot is being sent
                    # must reach the new subscriber, or its book would start with a gap.
                    snapshot = [] if self.retired else self.protocol.snapshot(topic)
                    conn.topics.add(topic)
                    for frame in snapshot:
                        await conn.send(frame)
                conn.topics.difference_update(reply.unsubscribed)
                if reply.close is not None:
                    await ws.close(*reply.close)
                    break
        except ConnectionClosed:
            pass
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            conn.close_code = ws.close_code if ws.close_code is not None else 1006
            conn.closed.set()

    async def _tick(self, conn: Connection) -> None:
        """Server-initiated messages and closes, and the venue's cut-off for a silent client."""
        idle = self.protocol.client_idle_timeout_s
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self._tick_s)
                now = time.monotonic()
                if idle is not None and now - conn.last_heard > idle:
                    self.counts.closed_idle += 1
                    await conn.ws.close(1000, "idle: no message from the client")
                    return
                reply = conn.session.tick(now)
                for frame in reply.replies:
                    await conn.send(frame)
                if reply.close is not None:
                    await conn.ws.close(*reply.close)
                    return


_FAST_BATCH: Final = 200


class _Line(msgspec.Struct):
    """A cryptofeed record (``t``, ``ts``, ``data`` = frame text) or a tardis fixture line (``message``)."""

    t: str | None = None
    conn: str | None = None
    ts: float | None = None
    data: str | None = None
    message: msgspec.Raw = msgspec.Raw()


_line = msgspec.json.Decoder(_Line)


def record_lines(path: Path) -> Iterator[bytes]:
    """The lines of a recording, zstd-decompressed when the name ends in ``.zst``."""
    with path.open("rb") as raw:
        if path.suffix == ".zst":
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                yield from io.BufferedReader(reader)
        else:
            yield from raw


def recorded_frames(path: Path | str, keep: Callable[[str], bool] = lambda conn: True,
                    ) -> list[tuple[float, str]]:
    """``(receive time s, frame text)`` of the websocket frames a recording received, in order.

    cryptofeed records: only ``"t":"recv"`` records whose connection id passes ``keep`` (a recording may
    hold several endpoints, e.g. Bybit linear and spot). tardis fixture lines: every ``message``, untimed
    (time 0)."""
    frames: list[tuple[float, str]] = []
    for raw in record_lines(Path(path)):
        if not raw.strip():
            continue
        try:
            line = _line.decode(raw)
        except msgspec.DecodeError:
            continue
        if line.t == "recv" and line.data is not None and keep(line.conn or ""):
            frames.append((line.ts or 0.0, line.data))
        elif line.t is None and bytes(line.message):
            frames.append((0.0, bytes(line.message).decode()))
    return frames


class VenueRecording:
    """Recorded frames as a source: at ``speed`` x the recorded pace, or as fast as possible (``None``)."""

    def __init__(self, frames: Sequence[tuple[float, str]], *, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for as fast as possible")
        self.frames = list(frames)
        self.speed = speed

    async def batches(self) -> AsyncIterator[list[str]]:
        if self.speed is None:
            for i in range(0, len(self.frames), _FAST_BATCH):
                yield [frame for _, frame in self.frames[i:i + _FAST_BATCH]]
                await asyncio.sleep(0)
            return
        wall0 = time.monotonic()
        ts0 = self.frames[0][0] if self.frames else 0.0
        for ts, frame in self.frames:
            delay = wall0 + (ts - ts0) / self.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield [frame]
