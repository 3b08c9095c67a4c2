"""Bars and recordings as the detector's input: time-ordered flushwatch events.

A bar becomes ``SLICES`` equal slices. The price walks the bar's path through its extremes -- open, high,
low, close for a down bar, open, low, high, close for an up bar (the shorter path, ending at the extreme
the bar closed near) -- and each slice carries, at its price: one taker-buy and one taker-sell trade (the bar's
volume split by ``taker_buy_volume``; zero-size prices prints without volume), its share of the bar's long and
short liquidations, the open interest interpolated from the previous bar's close to this one's, and a funding
mark (``funding_8h``; mark = index, bars carry no premium). The same bar always gives the same events.

Recordings are parsed as ``flushwatch replay`` parses them (``Replay.parse``: each venue's parser at the
recorded receive time), without the Redis streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from flushwatch.backtest.bars import Bars
from flushwatch.events import Depth, Event, FundingMark, Liquidation, OpenInterest, PositionSide, Trade, funding_mark
from flushwatch.recordings import Recordings
from flushwatch.replay import Replay, ReplayOptions
from flushwatch.settings import Settings

SLICES: Final = 10  # 3k + 1 slices put one on each of the path's four anchors
VENUE: Final = "bars"
"""The venue of bar events: not a registry venue, so its liquidation coverage is ``unknown``."""


def path_prices(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                slices: int = SLICES) -> np.ndarray:
    """``(n, slices)`` prices along each bar's path, the first slice at the open and the last at the close."""
    down = close < open_
    first = np.where(down, high, low)
    second = np.where(down, low, high)
    anchors = np.stack([open_, first, second, close], axis=1)
    u = np.linspace(0.0, 3.0, slices)
    leg = np.minimum(u.astype(np.int64), 2)
    frac = u - leg
    return anchors[:, leg] * (1.0 - frac) + anchors[:, leg + 1] * frac


def _filled(bars: Bars, name: str, fallback: np.ndarray) -> np.ndarray:
    """The column, ``fallback`` where it is absent or empty."""
    col = bars.columns.get(name)
    return fallback if col is None else np.where(np.isnan(col), fallback, col)


def _previous(values: np.ndarray) -> np.ndarray:
    """Each bar's predecessor value (its own for the first bar, or after a gap in the data)."""
    prev = np.concatenate([values[:1], values[:-1]])
    return np.where(np.isnan(prev), values, prev)


def bar_events(bars: Bars, asset: str = "BTC", symbol: str | None = None) -> list[Event]:
    """The events of ``bars``, in time order (see the module docstring)."""
    close = bars.columns["close"]
    open_ = _filled(bars, "open", close)
    high = _filled(bars, "high", np.maximum(open_, close))
    low = _filled(bars, "low", np.minimum(open_, close))
    prices = path_prices(open_, np.maximum(high, np.maximum(open_, close)), np.minimum(low, np.minimum(open_, close)),
                         close)
    step_ns = round(bars.interval_s * 1e9) // SLICES
    times = bars.ts_ms.astype(np.int64)[:, None] * 1_000_000 + np.arange(SLICES, dtype=np.int64) * step_ns
    volume = bars.columns.get("volume")
    buy = bars.columns.get("taker_buy_volume")
    if volume is None:
        buy_q = sell_q = np.zeros(len(bars))
    else:
        volume = np.nan_to_num(volume)
        buy_q = np.clip(np.nan_to_num(buy, nan=0.5 * volume) if buy is not None else 0.5 * volume, 0.0, volume)
        sell_q = volume - buy_q
    buy_q, sell_q = buy_q / SLICES, sell_q / SLICES
    sides: tuple[PositionSide, ...] = ("long", "short")
    liq = {side: bars.columns.get(f"liq_{side}_usd") for side in sides}
    oi = bars.columns.get("oi_usd")
    oi_path = None if oi is None else _previous(oi)[:, None] + (oi - _previous(oi))[:, None] * (
        np.arange(1, SLICES + 1) / SLICES)
    funding = bars.columns.get("funding_8h")
    sym = symbol or f"{asset}USD"
    out: list[Event] = []
    for b in range(len(bars)):
        for k in range(SLICES):
            t, px = int(times[b, k]), float(prices[b, k])
            common: dict[str, Any] = {"venue": VENUE, "symbol": sym, "asset": asset, "ts_event": t, "ts_recv": t}
            out.append(Trade(**common, price=px, size=float(buy_q[b]), side="buy"))
            if sell_q[b] > 0:
                out.append(Trade(**common, price=px, size=float(sell_q[b]), side="sell"))
            for side, usd in liq.items():
                if usd is not None and usd[b] > 0:
                    out.append(Liquidation(**common, price=px, size=float(usd[b]) / SLICES / px, side=side))
            if oi_path is not None and oi_path[b, k] >= 0:
                out.append(OpenInterest(**common, oi_base=float(oi_path[b, k]) / px, oi_usd=float(oi_path[b, k])))
            if funding is not None and not np.isnan(funding[b]):
                out.append(funding_mark(**common, mark_price=px, index_price=px, funding_rate=float(funding[b]),
                                        funding_interval_h=8.0, next_funding_ts=0))
    return out


def recording_events(paths: Sequence[Path], settings: Settings) -> tuple[list[Event], list[str]]:
    """The events of recordings, parsed as ``flushwatch replay`` parses them, and the problems met."""
    replay = Replay(paths, settings, ReplayOptions())
    recordings: Recordings = replay.recordings
    events: list[Event] = []
    for record in recordings:
        events += replay.parse(record)
    events.sort(key=lambda e: e.ts_event)
    return events, list(recordings.problems)


EVIDENCE: Final = (
    ("liquidations", "no liquidations: taker flow against the side stands in for them after a shock "
     "(proxy_trigger_ratio), and the liquidation baselines see nothing"),
    ("liq_long", "no long liquidations: the long side cannot reach stage 3+"),
    ("liq_short", "no short liquidations: the short side cannot reach stage 3+"),
    ("open_interest", "no open interest: OI purge (a stage-7 sign), the OI drop of stage 4 and the OI build of "
                      "the overheat score are unknown"),
    ("funding", "no funding: funding reset (a stage-7 sign) and the funding part of the overheat score are unknown"),
    ("premium", "no mark/index premium: the premium part of the overheat score and of the air pocket are unknown"),
    ("taker_flow", "no taker buy/sell split: trade imbalance unknown, a shock (stage 1) cannot be confirmed and "
                   "the liquidation share of stage 4 is unknown"),
    ("depth", "no order book: air pocket (stage 2), thin-book impact (stage 5) and depth back (a stage-7 sign) "
              "are unknown"),
)
"""What each kind of evidence is, and what its absence costs, in words."""


def missing_evidence(events: Sequence[Event]) -> list[str]:
    """The ``EVIDENCE`` texts of what ``events`` never carry."""
    seen: set[str] = set()
    sides: set[tuple[str, bool]] = set()
    for e in events:
        if isinstance(e, Liquidation):
            seen.update(("liquidations", f"liq_{e.side}"))
        elif isinstance(e, OpenInterest):
            seen.add("open_interest")
        elif isinstance(e, FundingMark):
            seen.add("funding")
            if e.mark_price != e.index_price:
                seen.add("premium")
        elif isinstance(e, Depth):
            seen.add("depth")
        elif isinstance(e, Trade) and e.size > 0:
            sides.add((e.asset, e.side == "buy"))
    if any((asset, not buy) in sides for asset, buy in sides):
        seen.add("taker_flow")
    if "liquidations" not in seen:
        seen.update(("liq_long", "liq_short"))
    return [text for key, text in EVIDENCE if key not in seen]


def bar_gaps(bars: Bars) -> list[str]:
    """What ``bars`` lack that their events hide: volume without ``taker_buy_volume`` is split evenly."""
    if "volume" in bars.columns and "taker_buy_volume" not in bars.columns:
        return [text for key, text in EVIDENCE if key == "taker_flow"]
    return []
