"""``FakeBinance``: a local stand-in for ``fstream.binance.com`` and the open-interest REST endpoint.

One port serves both: websocket handshakes go to the stream endpoints, plain ``GET /fapi/...`` requests
are answered from ``process_request`` before any upgrade. The protocol rules live in
``flushwatch.fake.binance``; this module moves frames and keeps the books tests assert on.

Frames come from attached sources (``Scenario``, ``Recording``) or from ``publish``. Every connection has
its own outbound queue drained by one sender task, so replies and pushes leave in the order they were
queued, a slow client cannot hold up the others, and ``Connection.sent`` records only frames whose send
completed. A client that stays more than ``high_water`` frames behind for ``slow_client_timeout_s`` is
cut off, as a venue would; below that the source simply waits, so a replay loses nothing.

Misbehaviour on request: ``drop_connections``, ``stall``, ``send_garbage``, ``fail_rest``,
``reject_handshakes``, ``retire``, ``resend_last``. Server keepalive pings are websockets' own.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from flushwatch.fake.binance import (
    LEGACY,
    MAX_INCOMING_PER_S,
    MAX_STREAMS,
    RATE_LIMIT_CLOSE,
    WEIGHT_HEADER,
    Frame,
    FrameSource,
    Session,
    garbage_frames,
    parse_ws_path,
    rate_limited_reply,
    rest_reply,
    route_of,
    wrap,
)

log = logging.getLogger(__name__)

PUSH: Final = "push"
REPLY: Final = "reply"
GARBAGE: Final = "garbage"
RESEND: Final = "resend"


class Sent(NamedTuple):
    """One frame whose send completed."""

    kind: str
    """``push`` (a stream frame), ``reply`` (to a control message), ``garbage`` or ``resend``."""
    stream: str | None
    data: str | bytes
    at: float
    """``time.monotonic()`` when the send completed."""


@dataclass
class Counts:
    handshakes: int = 0
    """Websocket handshake attempts, rejected ones included."""
    handshakes_rejected: int = 0
    connections: int = 0
    """Accepted websocket connections."""
    control_messages: int = 0
    subscribe_messages: int = 0
    rest_requests: int = 0
    rest_failed: int = 0
    """REST requests answered 429/418 on request (``fail_rest``)."""
    frames_sent: int = 0
    """Stream pushes whose send completed (replies, garbage and resends not included)."""
    withheld: Counter[str] = field(default_factory=Counter)
    """Pushes a subscription matched but the venue did not send, by reason: ``route`` (subscribed on the
    wrong endpoint), ``legacy`` (pre-split URL), ``retired``, ``stalled``."""
    closed_rate_limit: int = 0
    closed_slow: int = 0
    dropped: int = 0


class Connection:
    """The server's record of one websocket connection, and its outbound queue; kept after it closes."""

    def __init__(self, cid: int, ws: ServerConnection, path: str, route: str, session: Session,
                 keep_sent: int) -> None:
        self.id = cid
        self.ws = ws
        self.path = path
        self.route = route
        self.session = session
        self.sent: deque[Sent] = deque(maxlen=keep_sent)
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._backlog: deque[tuple[str, str | None, str | bytes]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._incoming: deque[float] = deque()

    @property
    def streams(self) -> list[str]:
        return list(self.session.streams)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def pushes(self, stream: str | None = None) -> list[str | bytes]:
        """The stream frames sent, optionally of one stream only."""
        return [s.data for s in self.sent if s.kind == PUSH and (stream is None or s.stream == stream)]

    def enqueue(self, kind: str, stream: str | None, data: str | bytes) -> None:
        self._backlog.append((kind, stream, data))
        self._wake.set()

    async def catch_up(self, low_water: int, timeout_s: float) -> bool:
        """Wait until at most ``low_water`` frames are queued (or the connection closed); False on timeout."""
        if len(self._backlog) <= low_water:
            return True
        self._drained.clear()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def over_rate(self, limit_per_s: int) -> bool:
        """Count one incoming message; True once more than ``limit_per_s`` arrived within a second.

        Binance also counts pings and pongs; websockets answers those itself, so only control messages
        are counted here."""
        now = time.monotonic()
        incoming = self._incoming
        incoming.append(now)
        while incoming[0] <= now - 1.0:
            incoming.popleft()
        return len(incoming) > limit_per_s

    async def send_forever(self, low_water: int, counts: Counts) -> None:
        """Drain the queue in order; a frame is recorded in ``sent`` only after its send completed."""
        backlog, ws = self._backlog, self.ws
        try:
            while True:
                if not backlog:
                    self._drained.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                kind, stream, data = backlog[0]
                await ws.send(data)
                backlog.popleft()
                self.sent.append(Sent(kind, stream, data, time.monotonic()))
                if kind == PUSH:
                    counts.frames_sent += 1
                if len(backlog) <= low_water:
                    self._drained.set()
        except ConnectionClosed:
            return

    def finish(self) -> None:
        self.close_code = self.ws.close_code
        self._drained.set()
        self.closed.set()


class FakeBinance:
    """The fake venue. ``async with FakeBinance() as fake:``, then connect to ``fake.market_url + "/stream"``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ping_interval: float | None = 180.0,
        ping_timeout: float | None = 600.0,
        close_timeout: float = 2.0,
        max_streams: int = MAX_STREAMS,
        max_incoming_per_s: int = MAX_INCOMING_PER_S,
        keep_sent: int = 100_000,
        high_water: int = 10_000,
        slow_client_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self._port = port
        self._ping = (ping_interval, ping_timeout)
        self._close_timeout = close_timeout
        self.max_streams = max_streams
        self.max_incoming_per_s = max_incoming_per_s
        self.keep_sent = keep_sent
        self.high_water = high_water
        self.slow_client_timeout_s = slow_client_timeout_s
        self.counts = Counts()
        self.connections: list[Connection] = []
        """Every connection accepted so far, open or closed, in order."""
        self.retired = False
        self._server: Server | None = None
        self._ids = itertools.count(1)
        self._subscribers: dict[str, set[Connection]] = {}
        self._sources: list[FrameSource] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._stall_until = 0.0
        self._rest_times: deque[float] = deque()
        self._rest_failure: tuple[int, int, int] = (0, 0, 0)  # status, remaining, retry-after
        self._handshake_rejection: tuple[int, int, int | None] = (0, 0, None)  # status, remaining, retry-after
        self.handshake_times: list[float] = []
        """``time.monotonic()`` of every websocket handshake attempt, rejected ones included."""

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        ping_interval, ping_timeout = self._ping
        self._server = await serve(
            self._handle, self.host, self._port, process_request=self._process_request,
            ping_interval=ping_interval, ping_timeout=ping_timeout, close_timeout=self._close_timeout,
            compression=None,  # Binance does not negotiate permessage-deflate
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def market_url(self) -> str:
        return f"ws://{self.host}:{self._port}/market"

    @property
    def public_url(self) -> str:
        return f"ws://{self.host}:{self._port}/public"

    @property
    def legacy_url(self) -> str:
        """The pre-2026 root: ``/stream`` and ``/ws`` under it handshake and never push."""
        return f"ws://{self.host}:{self._port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def open_connections(self) -> list[Connection]:
        return [c for c in self.connections if not c.closed.is_set()]

    # --- sources --------------------------------------------------------------------------------

    def register(self, source: FrameSource) -> None:
        """Answer open interest from ``source`` without pushing its frames yet (a scenario's clock starts
        when its frames start flowing, so a client can connect and poll first)."""
        if source not in self._sources:
            self._sources.append(source)

    def attach(self, source: FrameSource) -> asyncio.Task[None]:
        """Serve ``source``: push its frames and answer open interest from it. The returned task ends
        when the source is exhausted (a replay has been delivered to the send queues)."""
        self.register(source)
        task = asyncio.create_task(self._pump(source))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return task

    async def _pump(self, source: FrameSource) -> None:
        try:
            async for batch in source.batches():
                await self.publish(batch)
        except Exception:
            log.exception("frame source %r failed; it pushes nothing more", source)
            raise

    def _open_interest(self, symbol: str) -> tuple[str, int] | None:
        for source in self._sources:
            found = source.open_interest(symbol)
            if found is not None:
                return found
        return None

    async def publish(self, frames: Sequence[Frame]) -> None:
        """Push ``frames`` to every connection subscribed to their stream on the right route; waits while
        a client is far behind (and cuts it off if it stays behind)."""
        blocked = "retired" if self.retired else "stalled" if self.stalled else None
        withheld = self.counts.withheld
        for stream, payload in frames:
            subscribers = self._subscribers.get(stream)
            if not subscribers:
                continue
            route = route_of(stream)
            wrapped: str | None = None
            for conn in subscribers:
                if conn.route != route:
                    withheld[LEGACY if conn.route == LEGACY else "route"] += 1
                elif blocked is not None:
                    withheld[blocked] += 1
                elif conn.session.combined:
                    wrapped = wrapped or wrap(stream, payload)
                    conn.enqueue(PUSH, stream, wrapped)
                else:
                    conn.enqueue(PUSH, stream, payload)
        await self._throttle()

    async def _throttle(self) -> None:
        for conn in self.open_connections:
            if conn.backlog > self.high_water and not await conn.catch_up(self.high_water // 2,
                                                                           self.slow_client_timeout_s):
                log.warning("connection %d is %d frames behind; cutting it off", conn.id, conn.backlog)
                self.counts.closed_slow += 1
                conn.ws.transport.abort()

    # --- misbehaviour ---------------------------------------------------------------------------

    async def drop_connections(self, code: int | None = None) -> int:
        """Drop every open connection: ``None`` aborts the TCP transport without a close frame (the client
        sees 1006), a code (1011, 1013, ...) closes with that code. Returns how many were dropped."""
        victims = self.open_connections
        for conn in victims:
            if code is None:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(code, "fake venue: dropped on request")
        self.counts.dropped += len(victims)
        return len(victims)

    def stall(self, seconds: float) -> None:
        """Keep connections open but push nothing for ``seconds``; frames due meanwhile are lost."""
        self._stall_until = time.monotonic() + seconds

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self._stall_until

    def retire(self) -> None:
        """From now on, handshakes and subscriptions succeed but nothing is ever pushed: the silent failure
        of a retired URL."""
        self.retired = True

    def send_garbage(self, n: int) -> None:
        """Send ``n`` malformed frames (non-JSON, truncated, wrong shapes, binary) to every open connection."""
        for conn in self.open_connections:
            stream = next(iter(conn.session.streams), "btcusdt@aggTrade")
            for data in garbage_frames(n, stream, conn.session.combined):
                conn.enqueue(GARBAGE, stream, data)

    def resend_last(self, n: int) -> None:
        """Send each open connection its last ``n`` pushes again: duplicates, as after a venue hiccup."""
        for conn in self.open_connections:
            last = [s for s in conn.sent if s.kind == PUSH][-n:] if n > 0 else []
            for sent in last:
                conn.enqueue(RESEND, sent.stream, sent.data)

    def fail_rest(self, status: int = 429, count: int = 1, retry_after_s: int = 60) -> None:
        """Answer the next ``count`` REST requests with 429 (limit) or 418 (banned) and ``Retry-After``."""
        if status not in (418, 429):
            raise ValueError("fail_rest status must be 429 or 418")
        self._rest_failure = (status, count, retry_after_s)

    def reject_handshakes(self, status: int = 429, count: int = 1, retry_after_s: int | None = None) -> None:
        """Refuse the next ``count`` websocket handshakes with HTTP ``status`` (429 limit, 418 banned, 403 WAF),
        with a ``Retry-After`` header when ``retry_after_s`` is given."""
        if status not in (403, 418, 429):
            raise ValueError("reject_handshakes status must be 429, 418 or 403")
        self._handshake_rejection = (status, count, retry_after_s)

    # --- HTTP -----------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.startswith("/fapi/"):
            return self._rest(request.path)
        endpoint = parse_ws_path(request.path)
        if endpoint is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        self.counts.handshakes += 1
        self.handshake_times.append(time.monotonic())
        status, remaining, retry_after = self._handshake_rejection
        if remaining > 0:
            self._handshake_rejection = (status, remaining - 1, retry_after)
            self.counts.handshakes_rejected += 1
            response = connection.respond(status, f"{http.HTTPStatus(status).phrase}\n")
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        if len(endpoint.streams) > self.max_streams:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, "Too many streams\n")
        return None

    def _rest(self, path: str) -> Response:
        self.counts.rest_requests += 1
        now = time.monotonic()
        times = self._rest_times
        times.append(now)
        while times[0] <= now - 60.0:
            times.popleft()
        headers = [(WEIGHT_HEADER, str(len(times)))]  # every endpoint served here has weight 1
        status, remaining, retry_after = self._rest_failure
        if remaining > 0:
            self._rest_failure = (status, remaining - 1, retry_after)
            self.counts.rest_failed += 1
            reply = rate_limited_reply(status, retry_after, int(time.time() * 1000))
            headers.append(("Retry-After", str(retry_after)))
        else:
            reply = rest_reply(path, self._open_interest)
        return _json_response(reply.status, reply.body, headers)

    # --- websocket ------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        endpoint = parse_ws_path(ws.request.path)
        assert endpoint is not None  # _process_request refused everything else
        conn = Connection(next(self._ids), ws, ws.request.path, endpoint.route,
                          Session(endpoint.combined, endpoint.streams, self.max_streams), self.keep_sent)
        self.connections.append(conn)
        self.counts.connections += 1
        self._index(conn, added=endpoint.streams)
        sender = asyncio.create_task(conn.send_forever(self.high_water // 2, self.counts))
        try:
            async for message in ws:
                if conn.over_rate(self.max_incoming_per_s):
                    self.counts.closed_rate_limit += 1
                    await ws.close(*RATE_LIMIT_CLOSE)
                    break
                reply = conn.session.handle(message)
                self.counts.control_messages += 1
                if reply.method == "SUBSCRIBE":
                    self.counts.subscribe_messages += 1
                self._index(conn, reply.added, reply.removed)
                conn.enqueue(REPLY, None, reply.text)
        except ConnectionClosed:
            pass
        finally:
            self._index(conn, removed=tuple(conn.session.streams))
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            conn.finish()

    def _index(self, conn: Connection, added: Sequence[str] = (), removed: Sequence[str] = ()) -> None:
        for stream in added:
            self._subscribers.setdefault(stream, set()).add(conn)
        for stream in removed:
            subscribers = self._subscribers.get(stream)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subscribers[stream]


def _json_response(status: int, body: bytes, extra: list[tuple[str, str]]) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *extra,
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)
