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

from array import array
from typing import Final

import numpy as np

from flushwatch.events import DEPTH_BANDS_BPS, Depth, Event, FundingMark, Liquidation, OpenInterest, Trade

TRADE: Final = 0
LIQ: Final = 1
FUNDING: Final = 2
OI: Final = 3
DEPTH: Final = 4
KIND_NAMES: Final = ("trade", "liquidation", "funding", "open_interest", "depth")

_BAND_1PCT: Final = DEPTH_BANDS_BPS.index(100)


class BatchBuilder:
    """Collects events into columns. ``add`` runs once per event in Python, so it only appends to
    ``array.array`` buffers (amortised growth, no NumPy scalar boxing); ``columns`` exposes them as NumPy
    views without copying."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        # Fresh buffers rather than truncation: views handed out by columns() stay valid (an exported
        # array.array cannot be resized).
        self._kind = array("b")
        self._slot = array("i")
        self._t = array("d")
        self._v0 = array("d")
        self._v1 = array("d")
        self._v2 = array("d")
        self._v3 = array("d")
        self._append = (
            self._kind.append,
            self._slot.append,
            self._t.append,
            self._v0.append,
            self._v1.append,
            self._v2.append,
            self._v3.append,
        )

    def __len__(self) -> int:
        return len(self._kind)

    def add(self, event: Event, slot: int) -> None:
        kind, slot_, t, v0, v1, v2, v3 = self._append
        match event:
            case Trade():
                kind(TRADE)
                v0(event.price)
                v1(event.price * event.size)
                v2(1.0 if event.side == "buy" else -1.0)
            case Liquidation():
                kind(LIQ)
                v0(event.price)
                v1(event.price * event.size)
                v2(1.0 if event.side == "long" else -1.0)
            case FundingMark():
                kind(FUNDING)
                v0(event.mark_price)
                v1(event.index_price)
                v2(event.funding_8h)
            case OpenInterest():
                kind(OI)
                v0(event.oi_usd)
                v1(event.oi_base)
                v2(0.0)
            case Depth():
                kind(DEPTH)
                v0(event.mid)
                v1(event.bid_usd[_BAND_1PCT] + event.ask_usd[_BAND_1PCT])
                v2(event.spread_bps)
            case _:
                raise TypeError(f"not an event: {type(event).__name__}")
        slot_(slot)
        t(event.ts_event / 1e9)
        v3(0.0)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(kind, slot, t, v0, v1, v2, v3)`` as NumPy views of the buffers."""
        return (
            np.frombuffer(self._kind, dtype=np.int8),
            np.frombuffer(self._slot, dtype=np.int32),
            np.frombuffer(self._t, dtype=np.float64),
            np.frombuffer(self._v0, dtype=np.float64),
            np.frombuffer(self._v1, dtype=np.float64),
            np.frombuffer(self._v2, dtype=np.float64),
            np.frombuffer(self._v3, dtype=np.float64),
        )
