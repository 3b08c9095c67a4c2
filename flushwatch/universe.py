"""Which instruments each enabled venue watches, kept current: instrument metadata from the venues' REST
APIs at start and every ``universe.refresh_s``, the universe (a list of assets or ``top:N``) resolved
against it, and one collector per venue restarted when its picks change.

A venue whose metadata cannot be fetched keeps running on its previous picks, and is retried sooner than
the refresh period; a venue that never answered is not started (its parser needs contract sizes), except
Binance with a named watchlist, whose symbols follow from the asset names (``BTC`` -> ``BTCUSDT``).
Explicit ``symbols`` in a venue's settings override the universe for that venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, cast

import httpx
from prometheus_client import Gauge

from collectors.base import FrameTap
from collectors.binance.collector import BinanceCollector
from collectors.binance.instruments import DEFAULT_FUNDING_INTERVAL_H
from collectors.binance.instruments import fetch_instruments as fetch_binance
from collectors.binance.spec import asset_of
from collectors.instruments import Instrument, RankBy, parse_universe, pick, rank_assets
from collectors.queue import EventQueue
from collectors.venue import ConnectionSettings, VenueCollector
from collectors.venues import BINANCE, GENERIC, spec_of
from flushwatch.settings import BinanceSettings, Settings, VenueSettings

log = logging.getLogger(__name__)

RETRY_S: Final = 30.0
"""How soon a venue whose metadata failed is asked again (the refresh period is typically an hour)."""
REQUEST_TIMEOUT_S: Final = 20.0

REFUSED_INSTRUMENTS: Final = Gauge(
    "flushwatch_universe_refused_instruments",
    "Instruments the universe picked on a venue beyond its max_instruments, and so not watched.", ["venue"])


class Collector(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def enabled_venues(settings: Settings) -> list[str]:
    venues = [BINANCE] if settings.binance.enabled else []
    return venues + [v for v in GENERIC if cast(VenueSettings, getattr(settings, v)).enabled]


def binance_by_name(assets: Sequence[str]) -> list[Instrument]:
    """Binance's USDT perpetuals named after the assets, for when its metadata is out of reach."""
    return [Instrument(BINANCE, f"{a}USDT", a, "linear", 1.0, DEFAULT_FUNDING_INTERVAL_H) for a in assets]


def _assets(settings: Settings, catalog: dict[str, list[Instrument]]) -> list[str]:
    """The universe's assets, most important first (by rank for ``top:N``, as listed otherwise)."""
    top, named = parse_universe(settings.universe.watch)
    everything = [i for instruments in catalog.values() for i in instruments]
    return rank_assets(everything, top, cast(RankBy, settings.universe.rank_by)) if top else named


def _own(settings: Settings, venue: str) -> BinanceSettings | VenueSettings:
    return settings.binance if venue == BINANCE else cast(VenueSettings, getattr(settings, venue))


def choose(settings: Settings, catalog: dict[str, list[Instrument]]) -> dict[str, list[Instrument]]:
    """The instruments each venue of ``catalog`` should watch now (a pure function of its inputs)."""
    assets = _assets(settings, catalog)
    picks: dict[str, list[Instrument]] = {}
    for venue, instruments in catalog.items():
        explicit = _own(settings, venue).symbols
        if explicit:
            by_symbol = {i.symbol: i for i in instruments}
            picks[venue] = [by_symbol[s] for s in explicit if s in by_symbol]
            if venue == BINANCE:  # listed or not, Binance's symbols need no metadata
                picks[venue] += [Instrument(BINANCE, s, asset_of(s), "linear", 1.0, DEFAULT_FUNDING_INTERVAL_H)
                                 for s in explicit if s not in by_symbol]
            missing = [s for s in explicit if s not in {i.symbol for i in picks[venue]}]
            if missing:
                log.warning("%s: symbols not listed by the venue, skipped: %s", venue, ", ".join(missing))
        else:
            picks[venue] = pick(instruments, assets)
    return picks


def within_limits(settings: Settings, catalog: dict[str, list[Instrument]], picks: dict[str, list[Instrument]],
                  ) -> tuple[dict[str, list[Instrument]], dict[str, list[str]]]:
    """``picks`` cut to each venue's ``max_instruments``, and the symbols cut. A venue's own ``symbols`` keep
    their listed order; universe picks keep the universe's (the largest of a ``top:N`` first)."""
    rank = {asset: i for i, asset in enumerate(_assets(settings, catalog))}
    kept: dict[str, list[Instrument]] = {}
    refused: dict[str, list[str]] = {}
    for venue, chosen in picks.items():
        own = _own(settings, venue)
        ordered = chosen if own.symbols else sorted(chosen, key=lambda i: rank.get(i.asset, len(rank)))
        allowed = {i.symbol for i in ordered[:own.max_instruments]}
        kept[venue] = [i for i in chosen if i.symbol in allowed]
        refused[venue] = [i.symbol for i in ordered[own.max_instruments:]]
    return kept, refused


@dataclass
class _Running:
    symbols: tuple[str, ...]
    collector: BinanceCollector | VenueCollector
    stop: asyncio.Event
    task: asyncio.Task[None]


class Markets:
    """Runs the collectors of every enabled venue on the universe's picks, refreshing them on schedule."""

    def __init__(self, settings: Settings, queue: EventQueue, *, tap: FrameTap | None = None,
                 only: Collection[str] | None = None) -> None:
        self.settings = settings
        self.own = [v for v in enabled_venues(settings) if only is None or v in only]
        """The venues this process collects (``flushwatch collect --venue``). The universe is still chosen over
        every enabled venue, so collector processes of different venues agree on what ``top:N`` means."""
        self._queue = queue
        self._tap = tap
        self.catalog: dict[str, list[Instrument]] = {}
        """The newest metadata of each venue that answered."""
        self.picks: dict[str, list[Instrument]] = {}
        self._running: dict[str, _Running] = {}
        self.refreshed = asyncio.Event()
        """Set after each refresh (tests and the CLI wait on it)."""

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
                while not stop.is_set():
                    complete = await self.refresh(client)
                    self.refreshed.set()
                    wait = self.settings.universe.refresh_s if complete else RETRY_S
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            for running in self._running.values():
                running.stop.set()
            if self._running:
                await asyncio.gather(*(r.task for r in self._running.values()), return_exceptions=True)

    async def refresh(self, client: httpx.AsyncClient) -> bool:
        """Fetch every venue's metadata, re-pick, restart the venues whose picks changed; True if every venue
        answered."""
        venues = enabled_venues(self.settings)
        answers = await asyncio.gather(*(self._fetch(v, client) for v in venues))
        complete = True
        for venue, instruments in zip(venues, answers, strict=True):
            if instruments is not None:
                self.catalog[venue] = instruments
            else:
                complete = False
                if venue == BINANCE and venue not in self.catalog and not parse_universe(
                        self.settings.universe.watch)[0]:
                    self.catalog[venue] = binance_by_name(parse_universe(self.settings.universe.watch)[1])
        self.picks, refused = within_limits(self.settings, self.catalog, choose(self.settings, self.catalog))
        for venue, chosen in self.picks.items():
            if venue in self.own:
                REFUSED_INSTRUMENTS.labels(venue).set(len(refused[venue]))
                if refused[venue]:
                    log.warning("%s: max_instruments is %d; not watching %s", venue, len(chosen),
                                ", ".join(refused[venue]), extra={"venue": venue})
                self._restart_if_changed(venue, chosen)
        return complete

    async def _fetch(self, venue: str, client: httpx.AsyncClient) -> list[Instrument] | None:
        if venue == BINANCE and self.settings.binance.symbols:
            return []  # explicit symbols: nothing to look up
        try:
            if venue == BINANCE:
                return await fetch_binance(client, self.settings.binance.rest_url)
            spec = spec_of(venue)
            rest_url = cast(VenueSettings, getattr(self.settings, venue)).rest_url or spec.rest_url
            return await spec.fetch_instruments(client, rest_url)
        except Exception as exc:  # any failure of a remote API: keep the old picks, ask again soon
            log.warning("%s: instrument metadata unavailable (%s); retrying in %.0f s", venue, exc, RETRY_S)
            return None

    def _restart_if_changed(self, venue: str, chosen: list[Instrument]) -> None:
        symbols = tuple(i.symbol for i in chosen)
        running = self._running.get(venue)
        if running is not None and running.symbols == symbols and not running.task.done():
            return
        if running is not None:
            log.info("%s: watchlist changed to %s; renewing its connections", venue, ", ".join(symbols) or "nothing")
            running.stop.set()
        if not symbols:
            self._running.pop(venue, None)
            log.warning("%s: nothing to watch (no listed perpetual for the universe)", venue)
            return
        stop = asyncio.Event()
        collector = self._collector(venue, chosen)
        task = asyncio.create_task(collector.run(stop), name=venue)
        task.add_done_callback(_report_failure)
        self._running[venue] = _Running(symbols, collector, stop, task)
        log.info("%s: watching %s", venue, ", ".join(symbols))

    def stale_feeds(self, now_ns: int) -> list[str]:
        """Enabled venues without an event within their ``stale_after_s`` (or without a running collector):
        what keeps ``/readyz`` from answering ready."""
        stale = []
        for venue in self.own:
            running = self._running.get(venue)
            window_ns = int(getattr(self.settings, venue).stale_after_s * 1e9)
            newest = max(running.collector.sink.last_event_ns.values(), default=0) if running else 0
            if running is None or running.task.done() or now_ns - newest > window_ns:
                stale.append(venue)
        return stale

    def collector(self, venue: str) -> BinanceCollector | VenueCollector | None:
        """The running collector of ``venue``, if any."""
        running = self._running.get(venue)
        return running.collector if running is not None else None

    def _collector(self, venue: str, chosen: list[Instrument]) -> BinanceCollector | VenueCollector:
        if venue == BINANCE:
            binance = self.settings.binance.model_copy(update={"symbols": [i.symbol for i in chosen]})
            intervals = {i.symbol: i.funding_interval_h for i in chosen if i.funding_interval_h > 0}
            return BinanceCollector(binance, self._queue, tap=self._tap, funding_interval_h=intervals)
        spec = spec_of(venue)
        own = cast(VenueSettings, getattr(self.settings, venue))
        connection = ConnectionSettings(
            ws_url=own.ws_url or spec.ws_url, stale_after_s=own.stale_after_s,
            max_connection_age_s=own.max_connection_age_s, max_frame_bytes=own.max_frame_bytes,
            backoff_initial_s=own.backoff_initial_s, backoff_max_s=own.backoff_max_s,
        )
        return VenueCollector(spec, chosen, connection, self._queue, tap=self._tap)


def _report_failure(task: asyncio.Task[None]) -> None:
    """A collector that died is restarted at the next refresh; say why it died now."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s collector failed; restarting it at the next refresh", task.get_name(), exc_info=task.exception())


def build_collectors(settings: Settings, queue: EventQueue, *, tap: FrameTap | None = None) -> list[Collector]:
    """What ``flushwatch run`` and ``flushwatch record`` run to collect: every enabled venue, kept current."""
    return [Markets(settings, queue, tap=tap)]
