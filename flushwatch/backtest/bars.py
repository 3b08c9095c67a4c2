"""Bar CSVs: the documented generic format and Binance kline files as Binance publishes them.

Generic: a header row with ``ts`` (bar open time, ISO 8601 or epoch milliseconds) and ``close``, and any of
``open, high, low, volume, taker_buy_volume`` (base units), ``liq_long_usd, liq_short_usd`` (liquidated
notional per position side), ``oi_usd`` (open interest at the bar's close) and ``funding_8h`` (a fraction per
8 h: 0.0001 = 0.01 %). An absent column, or an empty cell, is evidence the detector does not get.

Binance klines (``open_time, open, high, low, close, volume, close_time, quote_volume, count,
taker_buy_volume, taker_buy_quote_volume, ignore``) are read with or without their header row; open times in
microseconds (Binance's spot archives since 2025) are recognised by their size.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np

OPTIONAL_COLUMNS: Final = (
    "open", "high", "low", "volume", "taker_buy_volume", "liq_long_usd", "liq_short_usd", "oi_usd", "funding_8h",
)
KLINE_COLUMNS: Final = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)
_KLINE_USED: Final = ("open", "high", "low", "close", "volume", "taker_buy_volume")
_MICROSECONDS: Final = 10**14  # an epoch-ms value this large is in the year 5138: it is microseconds


class BarsError(ValueError):
    """The file is not a bar CSV this reader knows, with the line that says why."""


@dataclass(frozen=True)
class Bars:
    """Bars in time order. ``columns`` holds ``close`` and the optional columns present, float64 ``(n,)``
    each, NaN for an empty cell; ``interval_s`` is the median spacing of the open times."""

    ts_ms: np.ndarray  # (n,) int64, bar open time
    interval_s: float
    columns: dict[str, np.ndarray]
    source: str  # "generic" or "binance_kline"

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])


def parse_ts_ms(text: str) -> int:
    """Epoch milliseconds from epoch milliseconds (microseconds when that large) or ISO 8601 (UTC if no
    offset is given)."""
    text = text.strip()
    try:
        value = int(float(text)) if text.replace(".", "", 1).isdigit() else None
    except ValueError:
        value = None
    if value is not None:
        return value // 1000 if value >= _MICROSECONDS else value
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BarsError(f"not a time (ISO 8601 or epoch ms): {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def _number(text: str, where: str) -> float:
    if not text.strip():
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise BarsError(f"{where}: not a number: {text!r}") from None


def _is_kline_row(row: list[str]) -> bool:
    return len(row) >= len(_KLINE_USED) + 1 and row[0].strip().isdigit()


def read_bars(path: Path) -> Bars:
    """The bars of ``path`` (generic or Binance kline CSV), sorted by time; raises ``BarsError``."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise BarsError(f"{path}: empty")
    head = [cell.strip().lower() for cell in rows[0]]
    if head[0] == "open_time" or _is_kline_row(rows[0]):
        names, body, source = list(KLINE_COLUMNS), rows[1:] if head[0] == "open_time" else rows, "binance_kline"
        wanted: tuple[str, ...] = _KLINE_USED
    else:
        names, body, source = head, rows[1:], "generic"
        wanted = ("close", *(c for c in OPTIONAL_COLUMNS if c in head))
        for required in ("ts", "close"):
            if required not in names:
                raise BarsError(f"{path}: no {required!r} column (header: {', '.join(names)})")
    time_col = names[0] if source == "binance_kline" else "ts"
    index = {name: names.index(name) for name in (time_col, *wanted)}
    ts = np.empty(len(body), np.int64)
    values = {name: np.empty(len(body)) for name in wanted}
    for r, row in enumerate(body):
        where = f"{path}:{r + 1 + (len(rows) - len(body))}"
        if len(row) <= max(index.values()):
            raise BarsError(f"{where}: {len(row)} fields, expected {max(index.values()) + 1}")
        ts[r] = parse_ts_ms(row[index[time_col]])
        for name in wanted:
            values[name][r] = _number(row[index[name]], where)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        raise BarsError(f"{path}: two bars with the same time")
    if not (values["close"] > 0).all():
        raise BarsError(f"{path}: every bar needs a positive close")
    interval = float(np.median(np.diff(ts))) / 1000 if len(ts) > 1 else 60.0
    return Bars(ts, interval, {name: v[order] for name, v in values.items()}, source)
