"""The open-interest poller against a real local HTTP server that plays Binance's REST answers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import tardis_messages
from prometheus_client import REGISTRY

from collectors.binance.oi_poller import OpenInterestPoller, stretch_delay
from collectors.binance.parse import BinanceParser, ParseResult
from flushwatch.events import OpenInterest
from flushwatch.settings import BinanceSettings

NS = 1_000_000
BTC_MARK = 11857.56  # the recorded btcusdt@markPrice@1s frame
ETH_MARK = 2366.55
SLACK_S = 0.005  # timer granularity
WAIT_S = 10.0  # for conditions that take well under a second

Answer = tuple[int, dict[str, str], bytes] | None
"""(status, headers, body), or None to drop the connection without answering."""


def oi_body(symbol: str, oi: str, time_ms: int) -> bytes:
    return json.dumps({"openInterest": oi, "symbol": symbol, "time": time_ms}).encode()


def ok(n: int, symbol: str, weight: int = 12) -> Answer:
    return 200, {"X-MBX-USED-WEIGHT-1M": str(weight)}, oi_body(symbol, f"{1000 + n}.5", 1597536010000 + n)


@dataclass
class FakeBinance:
    """A tiny HTTP/1.1 keep-alive server; ``answer(n, symbol)`` decides the reply to request number n."""

    answer: Callable[[int, str], Answer]
    requests: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic s, path, symbol)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait_requests(self, n: int) -> None:
        async with asyncio.timeout(WAIT_S), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n)

    def gaps(self) -> list[float]:
        return [b[0] - a[0] for a, b in pairwise(self.requests)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                parts = urlsplit(target)
                symbol = parse_qs(parts.query).get("symbol", [""])[0]
                n = len(self.requests)
                async with self._arrived:
                    self.requests.append((time.monotonic(), parts.path, symbol))
                    self._arrived.notify_all()
                answer = self.answer(n, symbol)
                if answer is None:
                    return
                status, headers, body = answer
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


StartFake = Callable[[Callable[[int, str], Answer]], Awaitable[FakeBinance]]


@pytest.fixture
async def start_fake() -> AsyncIterator[StartFake]:
    """Starts fake servers on free ports; closes them after the test."""
    servers: list[FakeBinance] = []

    async def start(answer: Callable[[int, str], Answer]) -> FakeBinance:
        server = FakeBinance(answer)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def marked_parser(symbols: list[str]) -> BinanceParser:
    """A parser that has seen a real mark price of BTCUSDT (and a derived one of ETHUSDT)."""
    parser = BinanceParser(symbols)
    mark = next(m for m in tardis_messages("binance-futures.ndjson") if m["stream"] == "btcusdt@markPrice@1s")
    assert len(parser.parse(json.dumps(mark), 1).events) == 1
    mark["data"].update(s="ETHUSDT", p=str(ETH_MARK), i=str(ETH_MARK))
    if "ETHUSDT" in symbols:
        assert len(parser.parse(json.dumps(mark), 1).events) == 1
    return parser


def counter(outcome: str) -> float:
    value = REGISTRY.get_sample_value("flushwatch_rest_requests_total", {"venue": "binance", "outcome": outcome})
    return value or 0.0


def weight_ratio() -> float | None:
    return REGISTRY.get_sample_value("flushwatch_rest_weight_used_ratio", {"venue": "binance"})


@dataclass
class RecordingBackoff:
    """A deterministic backoff policy (``step_s`` x attempt) that records the attempt numbers it was asked."""

    step_s: float
    attempts: list[int] = field(default_factory=list)

    def __call__(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return self.step_s * attempt


class Run:
    """The poller running as a task; ``stop()`` ends it and re-raises anything it raised."""

    def __init__(self, poller: OpenInterestPoller) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(poller.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout=5)


def settings_for(server: FakeBinance, symbols: list[str], **kwargs: float) -> BinanceSettings:
    return BinanceSettings(symbols=symbols, rest_url=server.url, **kwargs)


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("base", "ratio", "delay"),
    [(1.0, 0.0, 1.0), (1.0, 0.5, 1.0), (1.0, 0.75, 2.0), (1.0, 0.9, 5.0), (1.0, 1.0, 60.0), (1.0, 3.0, 60.0)],
)
def test_stretch_delay_policy(base: float, ratio: float, delay: float) -> None:
    assert stretch_delay(base, ratio) == pytest.approx(delay)


def test_stretch_delay_never_shortens_a_long_interval() -> None:
    assert stretch_delay(100.0, 0.9) == 100.0
    assert stretch_delay(100.0, 1.5) == 100.0


async def test_round_robin_paced_and_valued_at_mark(start_fake: StartFake) -> None:
    server = await start_fake(ok)
    emitted: list[ParseResult] = []
    before = counter("ok")
    # Two symbols every 0.4 s: one request every 0.2 s.
    settings = settings_for(server, ["BTCUSDT", "ETHUSDT"], oi_poll_interval_s=0.4)
    run = Run(OpenInterestPoller(settings, marked_parser(["BTCUSDT", "ETHUSDT"]), emitted.append, clock=lambda: 77))
    await server.wait_requests(4)
    await run.stop()

    assert [(path, symbol) for _, path, symbol in server.requests[:4]] == [
        ("/fapi/v1/openInterest", "BTCUSDT"),
        ("/fapi/v1/openInterest", "ETHUSDT"),
        ("/fapi/v1/openInterest", "BTCUSDT"),
        ("/fapi/v1/openInterest", "ETHUSDT"),
    ]
    assert all(gap >= 0.2 - SLACK_S for gap in server.gaps())
    assert counter("ok") - before == len(server.requests) == len(emitted)
    assert emitted[0] == ParseResult(
        [OpenInterest("binance", "BTCUSDT", "BTC", 1597536010000 * NS, 77, 1000.5, 1000.5 * BTC_MARK)], [], []
    )
    eth = emitted[1].events[0]
    assert isinstance(eth, OpenInterest)
    assert (eth.symbol, eth.asset, eth.oi_base, eth.oi_usd) == ("ETHUSDT", "ETH", 1001.5, 1001.5 * ETH_MARK)
    assert weight_ratio() == pytest.approx(12 / 1200)


async def test_interval_stretches_with_used_weight(start_fake: StartFake) -> None:
    # The first answer reports 90 % of the budget used (-> 5x the 0.1 s interval), the next ones 1 %.
    server = await start_fake(lambda n, s: ok(n, s, weight=1080 if n == 0 else 12))
    settings = settings_for(server, ["BTCUSDT"], oi_poll_interval_s=0.1, oi_weight_budget=1200)
    run = Run(OpenInterestPoller(settings, marked_parser(["BTCUSDT"]), lambda r: None))
    await server.wait_requests(3)
    await run.stop()
    gaps = server.gaps()
    assert gaps[0] >= 0.5 - SLACK_S
    assert 0.1 - SLACK_S <= gaps[1] < gaps[0]
    assert weight_ratio() == pytest.approx(12 / 1200)


async def test_own_rate_never_exceeds_the_budget(start_fake: StartFake) -> None:
    # Three symbols every 0.03 s would be 6000 requests a minute; a budget of 120 allows one per 0.5 s.
    server = await start_fake(ok)
    settings = settings_for(server, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], oi_poll_interval_s=0.03, oi_weight_budget=120)
    run = Run(OpenInterestPoller(settings, BinanceParser(["BTCUSDT", "ETHUSDT", "SOLUSDT"]), lambda r: None))
    await server.wait_requests(3)
    await run.stop()
    assert all(gap >= 0.5 - SLACK_S for gap in server.gaps())


async def test_429_retry_after_is_honoured(start_fake: StartFake) -> None:
    def answer(n: int, symbol: str) -> Answer:
        if n == 0:
            return 429, {"Retry-After": "1", "X-MBX-USED-WEIGHT-1M": "1250"}, b'{"code":-1003,"msg":"Too many."}'
        return ok(n, symbol)

    server = await start_fake(answer)
    emitted: list[ParseResult] = []
    limited, fine = counter("rate_limited"), counter("ok")
    settings = settings_for(server, ["BTCUSDT"], oi_poll_interval_s=0.05)
    run = Run(OpenInterestPoller(settings, marked_parser(["BTCUSDT"]), emitted.append))
    await server.wait_requests(2)
    await run.stop()
    assert server.gaps()[0] >= 1.0 - SLACK_S
    assert counter("rate_limited") - limited == 1
    assert counter("ok") - fine == len(emitted) == len(server.requests) - 1
    first = emitted[0].events[0]
    assert isinstance(first, OpenInterest)
    assert (first.oi_base, first.oi_usd) == (1001.5, 1001.5 * BTC_MARK)


async def test_418_without_retry_after_backs_off_and_resets(start_fake: StartFake) -> None:
    plan = {0: 418, 1: 418, 3: 418}

    def answer(n: int, symbol: str) -> Answer:
        return (plan[n], {}, b"") if n in plan else ok(n, symbol)

    server = await start_fake(answer)
    backoff = RecordingBackoff(0.15)
    banned = counter("banned")
    settings = settings_for(server, ["BTCUSDT"], oi_poll_interval_s=0.05)
    run = Run(OpenInterestPoller(settings, marked_parser(["BTCUSDT"]), lambda r: None, backoff=backoff))
    await server.wait_requests(5)
    await run.stop()
    assert backoff.attempts == [1, 2, 1]  # the success in between resets the count
    gaps = server.gaps()
    assert gaps[0] >= 0.15 - SLACK_S and gaps[1] >= 0.3 - SLACK_S and gaps[3] >= 0.15 - SLACK_S
    assert counter("banned") - banned == 3


async def test_network_errors_and_bad_answers_never_crash(start_fake: StartFake) -> None:
    def answer(n: int, symbol: str) -> Answer:
        if n == 0:
            return None  # connection dropped without an answer
        if n == 1:
            return 500, {}, b"internal error"
        if n == 2:
            return 200, {"X-MBX-USED-WEIGHT-1M": "not a number"}, b"<html>gateway</html>"
        return ok(n, symbol)

    server = await start_fake(answer)
    emitted: list[ParseResult] = []
    backoff = RecordingBackoff(0.05)
    network, http = counter("network_error"), counter("http_error")
    settings = settings_for(server, ["BTCUSDT"], oi_poll_interval_s=0.05)
    run = Run(OpenInterestPoller(settings, marked_parser(["BTCUSDT"]), emitted.append, backoff=backoff))
    await server.wait_requests(4)
    await run.stop()
    assert counter("network_error") - network == 1
    assert counter("http_error") - http == 1
    assert backoff.attempts == [1, 2]
    # The garbage 200 is handed over as a counted reject; the next answer is an event.
    assert [r.reason for r in emitted[0].rejects] == ["malformed"] and emitted[0].events == []
    assert isinstance(emitted[1].events[0], OpenInterest) and emitted[1].events[0].oi_base == 1003.5


async def test_stop_interrupts_a_long_ban(start_fake: StartFake) -> None:
    server = await start_fake(lambda n, s: (418, {"Retry-After": "3600"}, b""))
    settings = settings_for(server, ["BTCUSDT"])
    run = Run(OpenInterestPoller(settings, BinanceParser(["BTCUSDT"]), lambda r: None))
    await server.wait_requests(1)
    started = time.monotonic()
    await run.stop()
    assert time.monotonic() - started < 2.0
    assert len(server.requests) == 1


async def test_unreachable_venue_is_retried(start_fake: StartFake) -> None:
    server = await start_fake(ok)
    url = server.url
    await server.close()  # nothing listens on the port any more
    attempts: list[int] = []
    retried = asyncio.Event()

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        if attempt == 3:
            retried.set()
        return 0.01

    network = counter("network_error")
    settings = BinanceSettings(symbols=["BTCUSDT"], rest_url=url)
    run = Run(OpenInterestPoller(settings, BinanceParser(["BTCUSDT"]), lambda r: None, backoff=backoff))
    await asyncio.wait_for(retried.wait(), timeout=10)
    await run.stop()
    assert attempts[:3] == [1, 2, 3]
    assert counter("network_error") - network == len(attempts)
