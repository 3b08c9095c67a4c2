"""The built-in live page served beside ``/metrics``: every asset's stage, side and score, with small charts.

For users who do not run Grafana. Routes (GET and HEAD only; anything else is 405):

* ``/`` -- the page (``alerts/live/index.html``), ``/live/app.js`` and ``/live/style.css`` -- static files
  shipped in the package, no build step;
* ``/api/assets`` -- JSON: the newest snapshot of every asset, a rolling history for the charts (the last
  ``window_s`` of event time, one point per ``step_s`` at most) and the recent stage changes;
* ``/api/events`` -- server-sent events: one ``data:`` line per snapshot (``event: state``) or stage change
  (``event: change``), ``id:`` a sequence number (``/api/assets`` gives the one it is current to), and a
  keep-alive comment when nothing happened for ``keepalive_s``.

The alert role pushes on the event loop's thread; the HTTP server runs each request on a thread of its own.
The two meet in one condition variable: a push holds its lock only to append to bounded buffers and wake the
streams, and a stream never writes to its socket while holding it, so a slow or stalled browser cannot hold
back the alert role. A stream that falls more than ``backlog`` events behind gets ``event: reset`` (the page
reloads ``/api/assets``) instead of a queue growing without bound.

Nothing here is writable or secret: snapshots of public market data, no settings, no URLs.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from typing import Any, Final

from alerts.models import _side_at_risk
from flushwatch.signals import STAGE_NAMES, AssetState, SideState, StageChange

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/live/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/live/style.css": ("style.css", "text/css; charset=utf-8"),
}
ROUTES: Final = frozenset({*_STATIC, "/api/assets", "/api/events"})
"""The paths the live page answers."""

_COMMON_HEADERS: Final = [
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
]
# The page loads only its own script and stylesheet and talks only to its own origin.
_CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_RESET: Final = b"event: reset\ndata: {}\n\n"
"""Tells a stream's page to reload ``/api/assets``: it missed events, or the page was cleared."""

_FEATURES: Final = ("price", "liq_rate_long", "liq_rate_short", "oi_usd", "funding_8h")
"""The features a snapshot shows (same keys as ``AssetState.features``)."""
_HISTORY_FIELDS: Final = ("t", "price", "liq_rate_long", "liq_rate_short", "oi_usd")
"""One chart point: event time in seconds, then the charted features."""


def _finite(value: float | None) -> float | None:
    # JSON has no NaN: a missing or non-finite value is null and the page leaves a gap.
    return float(value) if value is not None and math.isfinite(value) else None


def _side(side: SideState) -> dict[str, Any]:
    return {"stage": side.stage, "stage_name": side.stage_name, "overheat_score": _finite(side.overheat_score),
            "paused": side.paused}


def _record(state: AssetState) -> dict[str, Any]:
    risk = _side_at_risk(state)
    record: dict[str, Any] = {
        "asset": state.asset,
        "ts": state.ts / 1e9,
        "side": risk.side,
        "stage": risk.stage,
        "stage_name": risk.stage_name,
        "overheat_score": _finite(risk.overheat_score),
        "paused": risk.paused,
        "sides": {"long": _side(state.long), "short": _side(state.short)},
    }
    features = state.features
    for key in _FEATURES:
        record[key] = _finite(features.get(key))
    return record


def _change(change: StageChange) -> dict[str, Any]:
    return {"asset": change.asset, "side": change.side, "ts": change.ts / 1e9, "stage_from": change.stage_from,
            "stage_from_name": STAGE_NAMES.get(change.stage_from, str(change.stage_from)), "stage": change.stage,
            "stage_name": change.stage_name,
            "overheat_score": _finite(change.overheat_score), "paused": change.paused}


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass
class _Asset:
    record: dict[str, Any]
    history: deque[tuple[Any, ...]]


class LivePage:
    """Keeps what the page shows, and serves it (a WSGI app for the paths in :data:`ROUTES`).

    ``update`` and ``change`` are the feed (any thread, never blocking on a client); everything is bounded:
    ``max_assets`` assets (later ones are ignored), ``history_max`` points of at most ``window_s`` of event
    time per asset, ``changes_max`` recent changes, ``backlog`` events for streams that are behind, and
    ``max_streams`` concurrent ``/api/events`` streams (more get 503; the page then polls).
    """

    def __init__(
        self,
        *,
        window_s: float = 900.0,
        step_s: float = 1.0,
        history_max: int = 900,
        max_assets: int = 256,
        changes_max: int = 50,
        backlog: int = 1024,
        max_streams: int = 16,
        keepalive_s: float = 15.0,
    ) -> None:
        if history_max < 1 or backlog < 1 or max_streams < 1 or max_assets < 1:
            raise ValueError("history_max, backlog, max_streams and max_assets must be at least 1")
        if not (window_s > 0 and step_s > 0 and keepalive_s > 0):
            raise ValueError("window_s, step_s and keepalive_s must be positive")
        self.window_s = window_s
        self.step_s = step_s
        self.history_max = history_max
        self.max_assets = max_assets
        self.keepalive_s = keepalive_s
        self._cond = threading.Condition(threading.Lock())
        self._assets: dict[str, _Asset] = {}
        self._changes: deque[dict[str, Any]] = deque(maxlen=changes_max)
        self._backlog: deque[bytes] = deque(maxlen=backlog)
        self._seq = 0
        self._streams = threading.BoundedSemaphore(max_streams)
        self._ignored: set[str] = set()
        self._static: dict[str, bytes] = {}

    # -- the feed (the alert role's thread) -------------------------------------------------------------

    def update(self, state: AssetState) -> None:
        """A new snapshot of ``state.asset``."""
        record = _record(state)
        point = (record["ts"], *(record[key] for key in _HISTORY_FIELDS[1:]))
        data = _encode({**record, "point": point})
        with self._cond:
            asset = self._assets.get(state.asset)
            if asset is None:
                if len(self._assets) >= self.max_assets:
                    self._ignore(state.asset)
                    return
                asset = self._assets[state.asset] = _Asset(record, deque(maxlen=self.history_max))
            asset.record = record
            history = asset.history
            t = record["ts"]
            # One point per step of event time (the newest in it): the charts cover window_s whatever the
            # snapshot cadence, a replay's included.
            if history and t // self.step_s == history[-1][0] // self.step_s:
                history[-1] = point
            else:
                history.append(point)
            while history[0][0] < t - self.window_s:
                history.popleft()
            self._publish("state", data)

    def change(self, change: StageChange) -> None:
        """A stage change of one side of ``change.asset``."""
        payload = _change(change)
        data = _encode(payload)
        with self._cond:
            if change.asset not in self._assets and len(self._assets) >= self.max_assets:
                return
            self._changes.append(payload)
            self._publish("change", data)

    def clear(self) -> None:
        """Forget every asset and change (a new run in the same process); open streams are told to reload."""
        with self._cond:
            self._assets.clear()
            self._changes.clear()
            self._ignored.clear()
            # An event that no backlog holds: every open stream finds itself behind and sends a reset.
            self._backlog.clear()
            self._seq += 1
            self._cond.notify_all()

    def _publish(self, kind: str, data: str) -> None:
        # Under the lock, with the JSON encoded before it was taken: once for every stream, and no longer
        # than an append holds up the streams (or they the feed).
        self._seq += 1
        self._backlog.append(f"id: {self._seq}\nevent: {kind}\ndata: {data}\n\n".encode())
        self._cond.notify_all()

    def _ignore(self, asset: str) -> None:
        if asset not in self._ignored:
            self._ignored.add(asset)
            log.warning("live page: already %d assets, not showing %s", self.max_assets, asset)

    # -- what the page reads ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What ``/api/assets`` answers: ``seq`` is the last event it includes."""
        with self._cond:
            seq = self._seq
            changes = list(self._changes)
            taken = [(asset.record, list(asset.history)) for asset in self._assets.values()]
        assets = []
        for record, history in sorted(taken, key=lambda item: item[0]["asset"]):
            columns = {name: [point[i] for point in history] for i, name in enumerate(_HISTORY_FIELDS)}
            assets.append({**record, "history": columns})
        return {"seq": seq, "window_s": self.window_s, "step_s": self.step_s, "assets": assets, "changes": changes}

    # -- HTTP ---------------------------------------------------------------------------------------------

    routes: Final = ROUTES

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse, *, alive: Callable[[], bool] | None = None
    ) -> Iterable[bytes]:
        """Answers the paths in :data:`ROUTES` (404 otherwise); ``alive`` turns False when the server stops,
        which ends the open event streams."""
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in ROUTES:
            return _plain(start_response, "404 Not Found", "not found\n")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                                      ("Allow", "GET, HEAD"), *_COMMON_HEADERS])
            return [b"read-only: GET or HEAD\n"]
        head = method == "HEAD"
        if path == "/api/events":
            return self._events(environ, start_response, head, alive or (lambda: True))
        if path == "/api/assets":
            body = _encode(self.snapshot()).encode()
            content_type = "application/json"
        else:
            name, content_type = _STATIC[path]
            body = self._file(name)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *_COMMON_HEADERS]
        if path == "/":
            headers.append(("Content-Security-Policy", _CSP))
        start_response("200 OK", headers)
        return [] if head else [body]

    def _file(self, name: str) -> bytes:
        body = self._static.get(name)
        if body is None:
            body = self._static[name] = resources.files("alerts").joinpath("live", name).read_bytes()
        return body

    def _events(
        self, environ: dict[str, Any], start_response: StartResponse, head: bool, alive: Callable[[], bool]
    ) -> Iterable[bytes]:
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), *_COMMON_HEADERS]
        if head:
            start_response("200 OK", headers)
            return []
        if not self._streams.acquire(blocking=False):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("Retry-After", "10"), *_COMMON_HEADERS])
            return [b"too many live streams; poll /api/assets\n"]
        try:
            last = int(environ.get("HTTP_LAST_EVENT_ID", ""))
        except ValueError:
            last = None
        start_response("200 OK", headers)
        return _Stream(self._stream(last, alive), self._streams.release)

    def _after(self, cursor: int) -> list[bytes] | None:
        """The events after ``cursor``, or None if the backlog no longer holds them all (under the lock)."""
        behind = self._seq - cursor
        if not 0 <= behind <= len(self._backlog):
            return None
        return list(islice(reversed(self._backlog), behind))[::-1]

    def _stream(self, last: int | None, alive: Callable[[], bool]) -> Iterator[bytes]:
        with self._cond:
            cursor = self._seq
            # A reconnecting page resumes where it left off if the backlog still holds it, else reloads.
            missed = self._after(last) if last is not None else []
        yield b"retry: 2000\n: connected\n\n"
        if missed is None or missed:
            yield _RESET if missed is None else b"".join(missed)
        quiet_since = time.monotonic()
        # Short waits so a stopped server ends its streams promptly; keep-alives only after keepalive_s.
        wait_s = min(1.0, self.keepalive_s)
        while alive():
            with self._cond:
                if self._seq == cursor:
                    self._cond.wait(wait_s)
                chunks = self._after(cursor)
                cursor = self._seq
            now = time.monotonic()
            if chunks is None or chunks:
                quiet_since = now
                yield _RESET if chunks is None else b"".join(chunks)
            elif now - quiet_since >= self.keepalive_s:
                quiet_since = now
                yield b": keep-alive\n\n"


class _Stream:
    """The event stream's body: ``close`` (the server calls it when the client goes, or the stream ends)
    frees the stream's slot exactly once, even if the body was never iterated."""

    def __init__(self, body: Iterator[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        release, self._release = self._release, None
        if release is not None:
            release()


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *_COMMON_HEADERS])
    return [text.encode()]


LIVE_PAGE: Final = LivePage()
"""The process's live page: the alert role feeds it and the metrics server serves it (like prometheus_client's
``REGISTRY``, one per process)."""
