"""``/metrics``, ``/healthz`` and the live page (``alerts.livepage``), and the per-asset metrics built from the
detector's newest snapshots.

The HTTP server is the standard library's threaded WSGI server on its own daemon thread (what
``prometheus_client.start_http_server`` uses), not an asyncio server: a scrape serialises every metric,
and on a thread it cannot delay the event loop that consumes the signals stream. ``/metrics`` is
prometheus_client's own WSGI app (content negotiation, gzip, ``name[]`` filters); ``/healthz`` is added
beside it.

Per-asset metrics (:class:`AssetStateCollector`), all computed at scrape time from the newest snapshot of
each asset; a feature that is missing or not finite is left out rather than exported as ``NaN``:

* ``flushwatch_stage{asset,side}`` -- stage 0..7 of the side's positions (names in ``flushwatch.signals``);
* ``flushwatch_overheat_score{asset,side}`` -- overheating score on a 0..100 scale (a score, not a ratio);
* ``flushwatch_price_usd``, ``flushwatch_funding_rate_8h_ratio``, ``flushwatch_open_interest_usd``,
  ``flushwatch_premium_ratio``, ``flushwatch_spread_ratio``, ``flushwatch_depth_1pct_usd`` -- ``{asset}``;
* ``flushwatch_liquidation_rate_usd{asset,side}`` -- liquidated notional per minute (detector's fast average);
* ``flushwatch_liquidation_intensity_ratio``, ``flushwatch_branching_ratio``,
  ``flushwatch_liquidations_to_depth_ratio``, ``flushwatch_fuel_calibration_ratio``, ``flushwatch_paused`` --
  ``{asset,side}``: the evidence of stages 3-7;
* ``flushwatch_fuel_usd{asset,side,band}`` -- the ESTIMATED liquidation fuel within 1/2/5/10 % of the price;
* ``flushwatch_liquidations_usd_total{asset,side}``, ``flushwatch_taker_volume_usd_total{asset,side}``,
  ``flushwatch_asset_events_total{asset}`` -- counters since the detector started (a restart is a reset);
* ``flushwatch_asset_state_timestamp_seconds{asset}`` -- event time of the snapshot, for staleness alerts.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import flushwatch
import flushwatch.telemetry  # registers the shared process metrics served on /metrics
from alerts.livepage import LIVE_PAGE, LivePage
from collectors.instruments import COVERAGE_VALUE
from flushwatch.signals import EVENT_COUNT_KEYS, AssetState

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]
"""Returns (healthy, message); ``/healthz`` answers 200 or 503 with the message."""

BUILD_INFO: Final = Gauge("flushwatch_build_info", "Always 1; the version is a label.", ["version"])
BUILD_INFO.labels(version=flushwatch.__version__).set(1)

_ASSET_GAUGES: Final[tuple[tuple[str, str, str, float], ...]] = (
    # (metric, help, feature, scale to base units)
    ("flushwatch_price_usd", "Last trade price.", "price", 1.0),
    ("flushwatch_funding_rate_8h_ratio", "Funding rate per 8 hours as a fraction (0.0001 = 0.01 %).",
     "funding_8h", 1.0),
    ("flushwatch_open_interest_usd", "Open interest in USD.", "oi_usd", 1.0),
    ("flushwatch_premium_ratio", "Premium of the mark price over the index, as a fraction.", "premium_bps", 1e-4),
    ("flushwatch_spread_ratio", "Bid-ask spread as a fraction of the mid price.", "spread_bps", 1e-4),
    ("flushwatch_depth_1pct_usd", "Order-book depth within 1 % of the mid price, in USD.", "depth1_usd", 1.0),
)
_SIDE_GAUGES: Final[tuple[tuple[str, str, dict[str, str]], ...]] = (
    # (metric, help, {side label: feature})
    ("flushwatch_liquidation_rate_usd", "Liquidated notional per minute by position side (fast average).",
     {"long": "liq_rate_long", "short": "liq_rate_short"}),
    ("flushwatch_liquidation_intensity_ratio", "Liquidation rate over its baseline (recent hours, and the usual "
     "level of this hour of the week), by position side.", {"long": "liq_ratio_long", "short": "liq_ratio_short"}),
    ("flushwatch_branching_ratio", "Hawkes branching ratio of liquidation arrivals (liquidations one liquidation "
     "triggers; 1 is criticality), by position side.", {"long": "branching_long", "short": "branching_short"}),
    ("flushwatch_liquidations_to_depth_ratio", "Liquidations per minute over order-book depth within 1 % (above 1: "
     "forced orders outgrow the book).", {"long": "liq_to_depth_long", "short": "liq_to_depth_short"}),
    ("flushwatch_fuel_calibration_ratio", "Realised over estimated liquidations after the fuel map's swept "
     "clusters (1: the estimate was right).", {"long": "fuel_calibration_long", "short": "fuel_calibration_short"}),
)
_FUEL_BANDS: Final = ("1pct", "2pct", "5pct", "10pct")
_SIDE_COUNTERS: Final[tuple[tuple[str, str, dict[str, str]], ...]] = (
    # (metric, help, {side label: key of AssetState.totals})
    ("flushwatch_liquidations_usd_total", "Liquidated notional since the detector started, by position side.",
     {"long": "liq_long_usd", "short": "liq_short_usd"}),
    ("flushwatch_taker_volume_usd_total", "Traded notional since the detector started, by taker side.",
     {"buy": "taker_buy_usd", "sell": "taker_sell_usd"}),
)


def _value(values: dict[str, float], key: str, scale: float = 1.0) -> float | None:
    value = values.get(key)
    return value * scale if value is not None and math.isfinite(value) else None


_VENUE_GAUGES: Final = (
    ("flushwatch_venue_open_interest_usd", "Open interest (one side, USD) of the asset on one venue.", "oi_usd"),
    ("flushwatch_venue_funding_rate_8h", "Funding rate of the asset on one venue, restated per 8 hours.",
     "funding_8h"),
    ("flushwatch_venue_premium_bps", "Mark over index of the asset on one venue, in basis points.", "premium_bps"),
    ("flushwatch_venue_depth_1pct_usd", "Order book notional within 1 % of mid of the asset on one venue.",
     "depth_1pct_usd"),
)


def _venue_families(states: Sequence[AssetState]) -> Iterator[Metric]:
    """The per-venue detail behind each asset's market view, and what each venue's liquidation feed covers."""
    for name, help_text, attr in _VENUE_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=["asset", "venue"])
        for state in states:
            for venue, view in state.venues.items():
                value = getattr(view, attr)
                if value is not None and math.isfinite(value):
                    family.add_metric([state.asset, venue], value)
        yield family
    liquidated = CounterMetricFamily(
        "flushwatch_venue_liquidations_usd", "Liquidated notional (USD) of the asset on one venue since the "
        "detector started, by position side; a sampled feed shows a lower bound.", labels=["asset", "venue", "side"])
    coverage = GaugeMetricFamily(
        "flushwatch_venue_liquidation_coverage", "What a venue's public liquidation feed shows for the asset: "
        "2 every liquidation, 1 a sample (a lower bound), 0 none.", labels=["asset", "venue", "coverage"])
    for state in states:
        for venue, view in state.venues.items():
            liquidated.add_metric([state.asset, venue, "long"], view.liq_long_usd)
            liquidated.add_metric([state.asset, venue, "short"], view.liq_short_usd)
            coverage.add_metric([state.asset, venue, view.coverage], COVERAGE_VALUE.get(view.coverage, 0))
    yield liquidated
    yield coverage


class AssetStateCollector(Collector):
    """Holds the newest ``AssetState`` per asset and renders it at scrape time (on the server's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, AssetState] = {}

    def update(self, state: AssetState) -> None:
        with self._lock:
            self._states[state.asset] = state

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: s.asset)
        # Each snapshot's values by name once per scrape: ``AssetState`` makes the dicts on each access.
        features = {state.asset: state.features for state in states}
        totals = {state.asset: state.totals for state in states}
        stage = GaugeMetricFamily("flushwatch_stage", "Flush stage 0..7 of the positions of one side.",
                                  labels=["asset", "side"])
        score = GaugeMetricFamily("flushwatch_overheat_score", "Overheating score of one side, 0..100.",
                                  labels=["asset", "side"])
        stamp = GaugeMetricFamily("flushwatch_asset_state_timestamp_seconds",
                                  "Event time of the newest detector snapshot of the asset.", labels=["asset"])
        events = CounterMetricFamily("flushwatch_asset_events_total",
                                     "Events the detector processed for the asset since it started, by kind.",
                                     labels=["asset", "kind"])
        for state in states:
            for side in (state.long, state.short):
                if math.isfinite(side.overheat_score):
                    score.add_metric([state.asset, side.side], side.overheat_score)
                stage.add_metric([state.asset, side.side], side.stage)
            stamp.add_metric([state.asset], state.ts / 1e9)
            for kind in EVENT_COUNT_KEYS:
                if (count := _value(totals[state.asset], kind)) is not None:
                    events.add_metric([state.asset, kind], count)
        yield from (stage, score, stamp, events)
        for name, help_text, feature, scale in _ASSET_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["asset"])
            for state in states:
                if (value := _value(features[state.asset], feature, scale)) is not None:
                    family.add_metric([state.asset], value)
            yield family
        for name, help_text, by_side in _SIDE_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["asset", "side"])
            self._per_side(family, states, by_side, lambda s: features[s.asset])
            yield family
        for name, help_text, keys in _SIDE_COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=["asset", "side"])
            self._per_side(counter, states, keys, lambda s: totals[s.asset])
            yield counter
        fuel = GaugeMetricFamily(
            "flushwatch_fuel_usd", "ESTIMATED notional of leveraged positions whose liquidation price lies within "
            "the band of the price: longs below it, shorts above (a model, not observed positions).",
            labels=["asset", "side", "band"])
        paused = GaugeMetricFamily("flushwatch_paused", "1 while an exhausted episode lacks the recovery signs of "
                                   "a flush: a pause, fuel remains.", labels=["asset", "side"])
        for state in states:
            for side_name, where in (("long", "below"), ("short", "above")):
                for band in _FUEL_BANDS:
                    if (value := _value(features[state.asset], f"fuel_{where}_{band}_usd")) is not None:
                        fuel.add_metric([state.asset, side_name, band], value)
            for side_state in (state.long, state.short):
                paused.add_metric([state.asset, side_state.side], float(side_state.paused))
        yield fuel
        yield paused
        yield from _venue_families(states)

    @staticmethod
    def _per_side(
        family: GaugeMetricFamily | CounterMetricFamily,
        states: Iterable[AssetState],
        keys: dict[str, str],
        source: Callable[[AssetState], dict[str, float]],
    ) -> None:
        for state in states:
            for side, key in keys.items():
                if (value := _value(source(state), key)) is not None:
                    family.add_metric([state.asset, side], value)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
        pass


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``/metrics`` from ``registry``, ``/healthz`` from ``health`` (alive), ``/readyz`` from ``ready``
    (able to do its job) and the live page ``live`` (``/``,
    ``/live/*``, ``/api/*``; None serves none) on ``host:port``.

    ``port`` 0 binds a free port (read it back from ``.port``); the daemon does not start the server at
    all when its setting is 0.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry = REGISTRY,
        health: HealthCheck | None = None,
        ready: HealthCheck | None = None,
        live: LivePage | None = LIVE_PAGE,
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._health = health
        self._ready = ready
        self._live = live
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = _Server6 if family == socket.AF_INET6 else ThreadingWSGIServer
        self._server = make_server(host, port, self._app, server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):  # nothing here is writable, whatever the path
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                                      ("Allow", "GET, HEAD")])
            return [b"read-only: GET or HEAD\n"]
        if method == "GET":
            return self._route(environ, start_response)
        # HEAD: the GET's status and headers without its body (prometheus_client's app answers HEAD with 405,
        # and wsgiref sends whatever an app returns, even to a HEAD)
        body = self._route({**environ, "REQUEST_METHOD": "GET"}, start_response)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return []

    def _route(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path in ("/healthz", "/readyz"):
            healthy, message = self._check(self._health if path == "/healthz" else self._ready)
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [message.encode() + b"\n"]
        if self._live is not None and (path or "/") in self._live.routes:
            # close() stops serve_forever but not the request threads: an open event stream ends on seeing that.
            return self._live(environ, start_response, alive=self._thread.is_alive)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"see /metrics, /healthz and /\n" if self._live is not None else b"see /metrics and /healthz\n"]

    @staticmethod
    def _check(check: HealthCheck | None) -> tuple[bool, str]:
        if check is None:
            return True, "ok"
        try:
            return check()
        except Exception as exc:  # a failing check is an unhealthy answer, not a dead server
            log.exception("health check failed")
            return False, f"health check failed: {exc!r}"
