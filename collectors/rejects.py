"""Why a frame or an item of a frame was dropped.

Parsers never raise on bad input: they return ``Reject`` values next to the events they could build, and
the collector counts each in ``flushwatch_feed_rejected_messages_total{venue,reason}`` and logs it at a
limited rate. ``reason`` is one of the fixed strings below, so the metric's cardinality stays small.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

RejectReason = Literal[
    "malformed",  # not JSON, or JSON of the wrong shape
    "oversized",  # over the frame size limit
    "unknown_type",  # a message type or stream the collector does not handle
    "unknown_symbol",  # a symbol outside the watchlist
    "bad_value",  # NaN, infinite, zero or negative price or size
    "stale",  # older than what was already accepted (out of order)
    "duplicate",  # the same update again
    "venue_error",  # an error message from the venue
    "out_of_sync",  # a delta with no snapshot to apply it to (a book or ticker awaiting its snapshot)
]

REASONS: Final[tuple[str, ...]] = RejectReason.__args__  # type: ignore[attr-defined]


class Reject(msgspec.Struct, frozen=True):
    reason: RejectReason
    detail: str
