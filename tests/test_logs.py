"""Structured logs: JSON lines off a terminal, with the venue or asset as fields, repeats rate-limited."""

from __future__ import annotations

import io
import json
import logging

from flushwatch.logs import configure_logging
from flushwatch.telemetry import RateLimitedLog


def test_off_a_terminal_every_line_is_json_with_its_context_and_repeats_are_counted() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    try:
        log = logging.getLogger("flushwatch.test")
        warn = RateLimitedLog(log, interval=60.0)
        for _ in range(3):
            warn.warning("bybit:bad_json", "%s: dropped input (%s)", "bybit", "bad_json", venue="bybit")
        warn._last["bybit:bad_json"] -= 61  # the interval has passed
        warn.warning("bybit:bad_json", "%s: dropped input (%s)", "bybit", "bad_json", venue="bybit")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("detector failed", extra={"asset": "BTC"})
    finally:
        configure_logging("WARNING", stream=io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["bybit: dropped input (bad_json)",
                                               "bybit: dropped input (bad_json) (2 similar suppressed)",
                                               "detector failed"]
    assert lines[0]["venue"] == "bybit" and lines[0]["level"] == "WARNING" and lines[0]["logger"] == "flushwatch.test"
    assert lines[1]["suppressed"] == 2 and lines[0]["ts"].endswith("+00:00")
    assert lines[2]["asset"] == "BTC" and "ValueError: boom" in lines[2]["exc"]
