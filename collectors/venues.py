"""The venue registry: every venue flushwatch reads, its liquidation coverage, and how to parse it.

Binance runs its own collector (two endpoints since the 2026 URL split, and REST-polled open interest);
every other venue is a ``VenueSpec`` run by ``collectors.venue.VenueCollector``. Venue modules are imported
on first use, so a process that reads one venue does not load the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Final

from collectors.instruments import Coverage, Instrument
from collectors.venue import VenueParser, VenueSpec

BINANCE: Final = "binance"
GENERIC: Final = ("bybit", "okx", "hyperliquid", "deribit", "bitmex")
"""Run by the generic collector, one ``VenueSpec`` each."""
ALL: Final = (BINANCE, *GENERIC)


def spec_of(venue: str) -> VenueSpec:
    if venue not in GENERIC:
        raise KeyError(f"no generic venue {venue!r}; known: {', '.join(GENERIC)}")
    spec: VenueSpec = importlib.import_module(f"collectors.{venue}").SPEC
    return spec


def coverage_of(venue: str) -> Coverage:
    return "sampled" if venue == BINANCE else spec_of(venue).coverage


def parser_for(venue: str, instruments: Sequence[Instrument], max_frame_bytes: int) -> VenueParser:
    """The venue's frame parser for ``instruments`` (what replays use; live collectors build their own)."""
    if venue == BINANCE:
        from collectors.binance.parse import BinanceParser

        return BinanceParser([i.symbol for i in instruments], max_frame_bytes=max_frame_bytes,
                             funding_interval_h={i.symbol: i.funding_interval_h for i in instruments
                                                 if i.funding_interval_h > 0})
    return spec_of(venue).parser(instruments, max_frame_bytes)
