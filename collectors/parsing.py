"""What every venue parser shares: the result type, number checks, dedupe, and the frame guard.

A venue parser is Sans-I/O: ``parse(frame, ts_recv) -> ParseResult`` turns one websocket frame into events,
counted rejects, subscription acks and *replies* -- the messages the protocol obliges the client to send
back (Deribit's ``test_request`` wants a ``public/test``). The connection sends the replies; the parser
never touches a socket.

``guarded`` wraps a venue's own decoding so that no input, however mangled, raises: the size limit is
checked first and every decode failure becomes a ``malformed`` reject.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from collectors.rejects import Reject, RejectReason
from flushwatch.events import Event

NS_PER_MS: Final = 1_000_000
NS_PER_US: Final = 1_000
# Event timestamps travel as int64 nanoseconds (MessagePack on the streams); a larger value is garbage.
_MAX_NS: Final = 2**63 - 1
_INF: Final = math.inf


@dataclass(slots=True)
class ParseResult:
    events: list[Event] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    acks: list[int | str] = field(default_factory=list)
    """Ids (or names) of the venue's answers to subscribe requests."""
    replies: list[str] = field(default_factory=list)
    """Messages to send back on the same connection, in order."""


EMPTY: Final = ParseResult()
"""A frame that carried nothing to keep and nothing wrong (a pong, a heartbeat). Never mutate it."""


def reject(reason: RejectReason, detail: str) -> ParseResult:
    return ParseResult([], [Reject(reason, detail)])


def num(text: str | float | int | None) -> float:
    """A venue number (decimal string or JSON number) as float; NaN when it is not one, so a single range
    check (``positive``, ``math.isfinite``) catches both garbage and out-of-range values."""
    if text is None or isinstance(text, bool):
        return math.nan
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def positive(value: float) -> bool:
    return 0.0 < value < _INF  # False for NaN too


def ms_to_ns(ms: int | float | str) -> int | None:
    """Milliseconds since the epoch as int nanoseconds; ``None`` when not a positive int64-sized time."""
    try:
        value = int(ms)
    except (TypeError, ValueError, OverflowError):
        return None
    return value * NS_PER_MS if 0 < value <= _MAX_NS // NS_PER_MS else None


def us_to_ns(us: int | float | str) -> int | None:
    """Microseconds since the epoch (BitMEX, Deribit's ``usIn``) as int nanoseconds, or ``None``."""
    try:
        value = int(us)
    except (TypeError, ValueError, OverflowError):
        return None
    return value * NS_PER_US if 0 < value <= _MAX_NS // NS_PER_US else None


class Sequencer:
    """Drops what is not newer than the last accepted key of a symbol (trade id, update time, sequence):
    a message repeated on a replacement connection, or an old one arriving late."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._last: dict[str, int] = {}

    def check(self, symbol: str, key: int) -> Reject | None:
        """``None`` (and remember ``key``) if newer, else the reject to count."""
        last = self._last.get(symbol)
        if last is not None and key <= last:
            reason: RejectReason = "duplicate" if key == last else "stale"
            return Reject(reason, f"{symbol} {self._what} {key} after {last}")
        self._last[symbol] = key
        return None

    def forget(self, symbol: str) -> None:
        """After a snapshot that restarts the venue's numbering (a service restart)."""
        self._last.pop(symbol, None)


def guarded(decode: Callable[[bytes | str, int], ParseResult], max_frame_bytes: int,
            ) -> Callable[[bytes | str, int], ParseResult]:
    """``decode`` with the size limit in front and every decode error turned into a ``malformed`` reject."""

    def parse(frame: bytes | str, ts_recv: int) -> ParseResult:
        # For text frames this counts characters, a lower bound of the bytes: close enough for a guard.
        if len(frame) > max_frame_bytes:
            return reject("oversized", f"{len(frame)} > {max_frame_bytes} bytes")
        try:
            return decode(frame, ts_recv)
        except msgspec.DecodeError as exc:  # ValidationError included
            return reject("malformed", str(exc))
        except RecursionError:  # msgspec raises it for absurdly nested JSON
            return reject("malformed", "nested too deeply")
        except UnicodeError:  # a str frame with lone surrogates (websockets never yields one)
            return reject("malformed", "not valid unicode")

    return parse
