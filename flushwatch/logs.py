"""Logging: rich text on a terminal, one JSON object per line anywhere else (Docker, systemd, Kubernetes), so
a log shipper gets the level, the logger and the venue or asset a line is about as fields, not as prose."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Final, TextIO

from rich.console import Console
from rich.logging import RichHandler

CONTEXT: Final = ("venue", "asset", "symbol", "shard", "suppressed")
"""``extra=`` keys carried as JSON fields (``RateLimitedLog`` passes its context and the suppressed count)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT:
            if (value := record.__dict__.get(key)) is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, console: Console | None = None, *, stream: TextIO | None = None) -> None:
    """Rich on a terminal (or the given console), JSON lines otherwise."""
    handler: logging.Handler
    if console is not None or (stream is None and sys.stderr.isatty()):
        handler = RichHandler(console=console or Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
