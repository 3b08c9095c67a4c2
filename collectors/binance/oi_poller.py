"""Binance open interest by REST polling (there is no open-interest stream).

``GET /fapi/v1/openInterest?symbol=X`` costs weight 1 of the IP's per-minute budget, shared with everything
else on the host that calls Binance. The poller walks the watchlist round-robin so each symbol comes up about
every ``oi_poll_interval_s``, reads the IP's used weight from ``X-MBX-USED-WEIGHT-1M`` on every answer and
stretches its interval as the usage nears ``oi_weight_budget``. 429 (rate limit) and 418 (IP ban) are
honoured through ``Retry-After``: ignoring a 429 is what turns it into a 418. Nothing here raises on a bad
answer or a broken network; every outcome is counted in ``flushwatch_rest_requests_total{outcome}`` as
``ok``, ``rate_limited`` (429), ``banned`` (418), ``http_error`` (any other status) or ``network_error``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

import httpx

from collectors.base import FrameTap
from collectors.binance.parse import VENUE, BinanceParser, ParseResult
from flushwatch.backoff import Backoff, jittered_exponential
from flushwatch.settings import BinanceSettings
from flushwatch.telemetry import REST_REQUESTS, REST_WEIGHT_USED, RateLimitedLog

log = logging.getLogger(__name__)

OPEN_INTEREST_PATH: Final = "/fapi/v1/openInterest"
REQUEST_WEIGHT: Final = 1
WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
WINDOW_S: Final = 60.0
"""The used weight counts over one minute, so waiting this long always finds a fresh window."""
REQUEST_TIMEOUT_S: Final = 10.0
MAX_COUNTED_FAILURES: Final = 64

Pace = Callable[[float, float], float]
"""``(base_delay_s, used_ratio) -> delay_s`` before the next request."""


def stretch_delay(base_s: float, used_ratio: float) -> float:
    """The default pacing policy: the base delay while under half the budget, then stretched by
    ``0.5 / (1 - used_ratio)`` (2x at 75 %, 5x at 90 %), and a whole window at or over the budget."""
    if used_ratio <= 0.5:
        return base_s
    if used_ratio >= 1.0:
        return max(base_s, WINDOW_S)
    return max(base_s, min(base_s * 0.5 / (1.0 - used_ratio), WINDOW_S))


def _retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds; ``None`` when absent or not a number (Binance sends seconds)."""
    try:
        value = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


async def _stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True


class OpenInterestPoller:
    """Polls open interest of ``settings.symbols`` and hands each answer, parsed, to ``emit``.

    ``emit`` gets the ``ParseResult`` of ``parser.open_interest`` (events and rejects alike: the caller counts
    rejects). ``client`` is for tests and for sharing a connection pool; the poller closes only a client it
    created. ``clock`` gives the receive time in ns. ``pace`` and ``backoff`` (delay before retry number n
    when the venue gives no ``Retry-After``) are the policies; the defaults follow ``settings``. ``tap`` sees each
    successful body as an ``http`` frame (``flushwatch record``).
    """

    def __init__(
        self,
        settings: BinanceSettings,
        parser: BinanceParser,
        emit: Callable[[ParseResult], None],
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], int] = time.time_ns,
        pace: Pace = stretch_delay,
        backoff: Backoff | None = None,
        tap: FrameTap | None = None,
    ) -> None:
        self._settings = settings
        self._tap = tap
        self._parser = parser
        self._emit = emit
        self._client = client
        self._clock = clock
        self._pace = pace
        self._backoff_delay = backoff or jittered_exponential(settings.backoff_initial_s, settings.backoff_max_s)
        self._url = settings.rest_url.rstrip("/") + OPEN_INTEREST_PATH
        symbols = settings.symbols
        # Spread the symbols over the interval, but never spend more than the whole budget alone.
        self._base_delay_s = max(
            settings.oi_poll_interval_s / len(symbols), WINDOW_S * REQUEST_WEIGHT / settings.oi_weight_budget
        )
        self._used_ratio = 0.0
        self._failures = 0
        self._warn = RateLimitedLog(log)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        client = self._client or httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S)
        try:
            turn = 0
            symbols = self._settings.symbols
            while not stop.is_set():
                delay_s = await self._poll(client, symbols[turn % len(symbols)])
                turn += 1
                if await _stopped_within(stop, delay_s):
                    return
        finally:
            if self._client is None:
                await client.aclose()

    async def _poll(self, client: httpx.AsyncClient, symbol: str) -> float:
        """One request; returns how long to wait before the next."""
        try:
            response = await client.get(self._url, params={"symbol": symbol})
        except httpx.HTTPError as exc:
            REST_REQUESTS.labels(VENUE, "network_error").inc()
            self._warn.warning("network", "open interest poll of %s failed: %r", symbol, exc)
            return self._backoff(None)
        self._note_weight(response.headers)
        status = response.status_code
        if status in (429, 418):
            REST_REQUESTS.labels(VENUE, "rate_limited" if status == 429 else "banned").inc()
            retry_after = _retry_after(response.headers)
            self._warn.warning(f"http{status}", "open interest poll got HTTP %d, retry after %s s", status, retry_after)
            return self._backoff(retry_after)
        if status != 200:
            REST_REQUESTS.labels(VENUE, "http_error").inc()
            self._warn.warning("http", "open interest poll of %s got HTTP %d", symbol, status)
            return self._backoff(None)
        REST_REQUESTS.labels(VENUE, "ok").inc()
        self._failures = 0
        ts_recv = self._clock()
        if self._tap is not None:  # recorded with the receive time the parser gets, so a replay parses alike
            self._tap("http", VENUE, f"{OPEN_INTEREST_PATH}?symbol={symbol}", ts_recv, response.content)
        self._emit(self._parser.open_interest(response.content, ts_recv))
        return self._pace(self._base_delay_s, self._used_ratio)

    def _note_weight(self, headers: httpx.Headers) -> None:
        try:
            used = float(headers[WEIGHT_HEADER])
        except (KeyError, ValueError):
            return  # keep the last reading: one odd answer says nothing about the window
        if not 0.0 <= used < math.inf:
            return
        self._used_ratio = used / self._settings.oi_weight_budget
        REST_WEIGHT_USED.labels(VENUE).set(self._used_ratio)

    def _backoff(self, retry_after_s: float | None) -> float:
        """The venue's ``Retry-After`` when given (a ban lasts what it lasts), else the backoff policy."""
        # Bounded: past a few dozen failures the policy is at its cap anyway, and an exponential of an
        # unbounded count overflows after a long outage (a geo-blocked host fails forever).
        self._failures = min(self._failures + 1, MAX_COUNTED_FAILURES)
        if retry_after_s is not None:
            return max(retry_after_s, self._base_delay_s)
        return self._backoff_delay(self._failures)
