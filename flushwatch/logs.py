"""Logging: rich text on a terminal, one JSON object per line anywhere else (Docker, systemd, Kubernetes), so
a log shipper gets the level, the logger and the venue or asset a line is about as fields, not as prose."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Final, TextIO

from rich.console import Console
from rich.logging import RichHandler

CONTEXT: Final = ("venue", "asset", "symbol", "shard", "suppressed")
"""``extra=`` keys carried as JSON fields (``RateLimitedLog`` passes its context and the suppressed count)."""


MASK: Final = "********"
# scheme://user:password@host -- the netloc ends at the next "/", "?", "#" or blank; its last "@" ends the
# credentials, so a password holding an unescaped "@" is masked whole.
_CREDENTIALS: Final = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<netloc>[^/?#\s\"'<>]*@)")


# redis-py also takes the password as a query parameter (redis://host/0?password=...).
_QUERY_PASSWORD: Final = re.compile(r"([?&]password=)[^&#\s\"'<>]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it masked (``redis://:********@host``). Connection errors
    and warnings quote the URL they failed on, and a log line must never carry a secret."""
    if "://" not in text:
        return text
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", _CREDENTIALS.sub(_mask, text))


def _mask(match: re.Match[str]) -> str:
    userinfo = match["netloc"][:-1]
    user, colon, _ = userinfo.partition(":")
    return f"{match['scheme']}{user}{':' + MASK if colon else ''}@"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in CONTEXT:
            if (value := record.__dict__.get(key)) is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The message (and any traceback) with URL passwords masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str, console: Console | None = None, *, stream: TextIO | None = None) -> None:
    """Rich on a terminal (or the given console), JSON lines otherwise."""
    handler: logging.Handler
    if console is not None or (stream is None and sys.stderr.isatty()):
        handler = RichHandler(console=console or Console(stderr=True), show_path=False)
        handler.setFormatter(TextFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
