"""Every bound on what the outside world can make flushwatch hold is a setting, refused at start when it is out
of range, and enforced with a counted reason.

Already shown elsewhere, not repeated here: Binance's ``max_frame_bytes`` on a live socket
(``test_collector.py``: oversized frames counted, the connection kept), ``writer.queue_max_events``
(``test_writer.py::test_queue_bound_is_counted``), ``writer.buffer_max_events`` and ``writer.events_maxlen``
(``test_writer.py``), ``binance.streams_per_connection`` (``test_binance_parse.py``), the live page's
asset, history and stream bounds (``test_live_page.py``). Here: the generic venues' frame limit as their
settings deliver it, the per-venue instrument limit, and every limit's range.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from collectors.instruments import Instrument
from collectors.queue import EventQueue
from collectors.venues import GENERIC
from flushwatch.fake.bybit import BybitProtocol
from flushwatch.fake.venue_server import FakeVenue
from flushwatch.settings import SettingsError, load_settings
from flushwatch.telemetry import FEED_REJECTED
from flushwatch.universe import REFUSED_INSTRUMENTS, Markets, choose, within_limits


@pytest.mark.parametrize(("env", "value"), [
    ("FLUSHWATCH_BINANCE__MAX_FRAME_BYTES", "100"),
    ("FLUSHWATCH_BYBIT__MAX_FRAME_BYTES", "0"),
    ("FLUSHWATCH_BINANCE__MAX_INSTRUMENTS", "0"),
    ("FLUSHWATCH_OKX__MAX_INSTRUMENTS", "1001"),
    ("FLUSHWATCH_DERIBIT__MAX_INSTRUMENTS", "many"),
    ("FLUSHWATCH_BINANCE__STREAMS_PER_CONNECTION", "0"),
    ("FLUSHWATCH_BINANCE__STREAMS_PER_CONNECTION", "1025"),
    ("FLUSHWATCH_WRITER__QUEUE_MAX_EVENTS", "99"),
    ("FLUSHWATCH_WRITER__BUFFER_MAX_EVENTS", "-1"),
    ("FLUSHWATCH_WRITER__BATCH_MAX_EVENTS", "0"),
    ("FLUSHWATCH_WRITER__EVENTS_MAXLEN", "10"),
    ("FLUSHWATCH_WRITER__SIGNALS_MAXLEN", "0"),
    ("FLUSHWATCH_WRITER__RETENTION_S", "0"),
])
def test_a_limit_out_of_range_fails_at_start_naming_it(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    name = env.removeprefix("FLUSHWATCH_").lower().replace("__", ".")
    with pytest.raises(SettingsError, match=rf"setting {name} \({env}\)"):
        load_settings()


def test_the_command_line_refuses_a_bad_limit_before_doing_anything(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "flushwatch", "config", "check"], capture_output=True, text=True,
                            env={"FLUSHWATCH_HYPERLIQUID__MAX_INSTRUMENTS": "0", "PATH": "/usr/bin:/bin",
                                 "FLUSHWATCH_SECRETS_DIR": str(tmp_path)}, timeout=60)
    assert result.returncode == 2, result
    said = " ".join((result.stdout + result.stderr).split())  # unwrapped: the terminal width wraps it
    assert "setting hyperliquid.max_instruments (FLUSHWATCH_HYPERLIQUID__MAX_INSTRUMENTS)" in said


# ------------------------------------------------------------------------------------------ frame size


@pytest.mark.parametrize("venue", GENERIC)
def test_a_generic_venues_frame_limit_comes_from_its_settings_and_is_counted(venue: str,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(**{venue: {"enabled": True, "max_frame_bytes": 1024}})
    markets = Markets(settings, EventQueue(100))
    instrument = Instrument(venue, "BTCUSDT", "BTC", "linear", 1.0, 8.0)
    collector = markets._collector(venue, [instrument])
    before = FEED_REJECTED.labels(venue, "oversized")._value.get()
    with caplog.at_level(logging.WARNING, logger="collectors.base"):
        collector.sink(b'{"pad":"' + b"x" * 1024 + b'"}', 1)
        collector.sink(b"{}" + b" " * 1022, 2)  # exactly at the limit: decoded (and refused for its content)
    assert FEED_REJECTED.labels(venue, "oversized")._value.get() - before == 1
    assert any("oversized" in r.getMessage() and "1034 > 1024" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ instruments


def inst(symbol: str, asset: str, oi: float) -> Instrument:
    return Instrument("bybit", symbol, asset, "linear", 1.0, 8.0, oi_usd=oi)


CATALOG = [inst("BTCUSDT", "BTC", 5e9), inst("ETHUSDT", "ETH", 2e9), inst("SOLUSDT", "SOL", 1e9),
           inst("DOGEUSDT", "DOGE", 6e8)]


def test_a_top_n_beyond_the_limit_keeps_the_largest() -> None:
    settings = load_settings(universe={"watch": "top:4"}, binance={"enabled": False},
                             bybit={"enabled": True, "max_instruments": 2})
    catalog = {"bybit": CATALOG}
    kept, refused = within_limits(settings, catalog, choose(settings, catalog))
    assert [i.symbol for i in kept["bybit"]] == ["BTCUSDT", "ETHUSDT"]
    assert refused == {"bybit": ["SOLUSDT", "DOGEUSDT"]}


def test_explicit_symbols_beyond_the_limit_keep_the_first_listed() -> None:
    settings = load_settings(binance={"enabled": False},
                             bybit={"enabled": True, "max_instruments": 1, "symbols": ["SOLUSDT", "BTCUSDT"]})
    catalog = {"bybit": CATALOG}
    kept, refused = within_limits(settings, catalog, choose(settings, catalog))
    assert ([i.symbol for i in kept["bybit"]], refused) == (["SOLUSDT"], {"bybit": ["BTCUSDT"]})


async def test_a_venue_subscribes_no_more_than_its_limit_and_counts_and_logs_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    async with FakeVenue(BybitProtocol(CATALOG)) as venue:
        settings = load_settings(universe={"watch": "top:4"}, binance={"enabled": False},
                                 bybit={"enabled": True, "ws_url": venue.ws_url, "rest_url": venue.rest_url,
                                        "max_instruments": 3})
        markets = Markets(settings, EventQueue(1000))
        with caplog.at_level(logging.WARNING, logger="flushwatch.universe"):
            async with httpx.AsyncClient() as client:
                assert await markets.refresh(client) is True
        try:
            collector = markets.collector("bybit")
            assert collector is not None
            assert [i.symbol for i in collector.instruments] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
            assert not any("DOGE" in topic for c in collector.connections for topic in c.streams)
            assert REFUSED_INSTRUMENTS.labels("bybit")._value.get() == 1
            [line] = [r for r in caplog.records if "max_instruments" in r.getMessage()]
            assert "DOGEUSDT" in line.getMessage() and line.__dict__["venue"] == "bybit"
            # a larger limit next time: nothing refused any more
            markets.settings = settings.model_copy(update={"bybit": settings.bybit.model_copy(
                update={"max_instruments": 10})})
            async with httpx.AsyncClient() as client:
                await markets.refresh(client)
            assert REFUSED_INSTRUMENTS.labels("bybit")._value.get() == 0
        finally:
            for running in markets._running.values():
                running.stop.set()
            await asyncio.gather(*(r.task for r in markets._running.values()), return_exceptions=True)
