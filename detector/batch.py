"""Columnar batches: the detector's input, one row per event, in the units the kernels work in.

Columns: ``kind`` int8, ``slot`` int32, ``t`` float64 event time in seconds, ``v0..v3`` float64:

========  ===========  ==================  ===============================  ==========
kind      v0           v1                  v2                               v3
========  ===========  ==================  ===============================  ==========
TRADE     price        notional USD        +1 taker buy / -1 taker sell     0
LIQ       price        notional USD        +1 long / -1 short liquidated    0
FUNDING   mark         index               funding_8h                       0
OI        oi_usd       oi_base             0                                0
DEPTH     mid          bid+ask USD in 1 %  spread_bps                       0
========  ===========  ==================  ===============================  ==========

``v3`` is carried for a future value and is 0 in this version. Nothing is validated here: the kernel
(``detector.kernels.apply_batch``) checks every row and counts what it refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, cast

import numpy as np

from flushwatch.events import DEPTH_BANDS_BPS, Depth, Event, FundingMark, Liquidation, OpenInterest, Trade

TRADE: Final = 0
LIQ: Final = 1
FUNDING: Final = 2
OI: Final = 3
DEPTH: Final = 4
KIND_NAMES: Final = ("trade", "liquidation", "funding", "open_interest", "depth")

_BAND_1PCT: Final = DEPTH_BANDS_BPS.index(100)


Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(kind, slot, t, v0, v1, v2, v3, recv)``; ``recv`` is each row's local receive time in ns."""

_KINDS: Final[dict[type, int]] = {Trade: TRADE, Liquidation: LIQ, FundingMark: FUNDING, OpenInterest: OI, Depth: DEPTH}


def _values(cls: type, group: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``v0, v1, v2`` of one kind: one comprehension per column is several times cheaper than a branch per
    event, which is what lets the detector keep up with a crash from Python."""
    if cls is Trade or cls is Liquidation:
        fills = cast(list[Trade | Liquidation], group)
        price = np.array([e.price for e in fills])
        up = "buy" if cls is Trade else "long"
        side = np.array([1.0 if e.side == up else -1.0 for e in fills])
        return price, price * np.array([e.size for e in fills]), side
    if cls is FundingMark:
        marks = cast(list[FundingMark], group)
        return (np.array([e.mark_price for e in marks]), np.array([e.index_price for e in marks]),
                np.array([e.funding_8h for e in marks]))
    if cls is OpenInterest:
        ois = cast(list[OpenInterest], group)
        return np.array([e.oi_usd for e in ois]), np.array([e.oi_base for e in ois]), np.zeros(len(ois))
    books = cast(list[Depth], group)
    return (np.array([e.mid for e in books]),
            np.array([e.bid_usd[_BAND_1PCT] + e.ask_usd[_BAND_1PCT] for e in books]),
            np.array([e.spread_bps for e in books]))


StreamColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                      np.ndarray, np.ndarray]
"""``(kind, slot, venue, ts, v0, v1, v2, v3, recv)`` in stream order; ``ts`` is the event time in ns."""


def stream_columns(events: Sequence[Event], slots: Sequence[int], venues: Sequence[int]) -> StreamColumns:
    """The columns of ``events`` in their own order (``slots[i]`` and ``venues[i]`` number the asset and the
    venue of ``events[i]``): what the market fold (``detector.market.fold_market``) reads, row by row.

    Each kind's rows are filled in place, one comprehension per column (several times cheaper than a branch
    per event)."""
    codes = list(map(_KINDS.get, map(type, events)))
    if None in codes:
        raise TypeError(f"not an event: {type(events[codes.index(None)]).__name__}")
    kind = np.array(codes, np.int8)
    n = len(events)
    ts, recv = np.empty(n, np.int64), np.empty(n, np.int64)
    v0, v1, v2 = np.empty(n), np.empty(n), np.empty(n)
    for cls, code in _KINDS.items():
        rows = np.flatnonzero(kind == code)
        if not len(rows):
            continue
        group = list(map(events.__getitem__, rows.tolist())) if len(rows) < n else list(events)
        ts[rows] = [e.ts_event for e in group]
        recv[rows] = [e.ts_recv for e in group]
        v0[rows], v1[rows], v2[rows] = _values(cls, group)
    return (kind, np.array(slots, np.int32), np.array(venues, np.int32), ts, v0, v1, v2, np.zeros(n), recv)


def joined(parts: list[StreamColumns]) -> StreamColumns:
    """Consecutive chunks of stream columns as one."""
    if len(parts) == 1:
        return parts[0]
    return cast(StreamColumns, tuple(np.concatenate(column) for column in zip(*parts, strict=True)))


def by_time(columns: StreamColumns) -> Columns:
    """Stream columns as the kernels take them: ``t`` in seconds, rows in event-time order (stably, so equal
    times keep their stream order; the kernels fold rows in array order), the venue column dropped."""
    kind, slot, _, ts, v0, v1, v2, v3, recv = columns
    t = ts / 1e9
    order = np.argsort(t, kind="stable")
    return kind[order], slot[order], t[order], v0[order], v1[order], v2[order], v3[order], recv[order]


def to_columns(events: Sequence[Event], slots: Sequence[int]) -> Columns:
    """The columns of ``events`` (``slots[i]`` is the slot of ``events[i]``), in event-time order."""
    return by_time(stream_columns(events, slots, [0] * len(events)))


class BatchBuilder:
    """Collects ``(event, slot)`` pairs one at a time and turns them into columns with ``to_columns``."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._slots: list[int] = []

    def __len__(self) -> int:
        return len(self._events)

    def clear(self) -> None:
        self._events, self._slots = [], []

    def add(self, event: Event, slot: int) -> None:
        if type(event) not in _KINDS:
            raise TypeError(f"not an event: {type(event).__name__}")
        self._events.append(event)
        self._slots.append(slot)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(kind, slot, t, v0, v1, v2, v3)`` in event-time order."""
        return to_columns(self._events, self._slots)[:7]
