"""Episodes from the stage changes, matched against known events: hits, lead times, false alarms.

An episode is one (asset, side, episode id) of the detector: it starts at the first change away from calm,
ends at the return to calm (or the end of the data, ``closed`` false), its peak is the first time its highest
stage was reached -- or, with liquidations on the tape, the bucket of most liquidations of its side among the
times it held that stage. Known events are windows (``start``..``end``, optionally one side) from
``--events`` or derived from simulator labels. An episode overlapping a known event of its side is a hit, with
lead time = the event's onset minus the episode's start (negative: late); otherwise the lead time is measured
to its own peak. Episodes of stage >= ``min_stage`` that overlap none are false alarms, counted per calm day:
the days of the data outside every known event.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from flushwatch.backtest.bars import parse_ts_ms
from flushwatch.backtest.tape import Tape
from flushwatch.signals import StageChange

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class KnownEvent:
    name: str
    start_ns: int
    end_ns: int
    side: str | None = None  # None: either side


@dataclass(frozen=True)
class Episode:
    asset: str
    side: str
    episode_id: str
    start_ns: int
    peak_ns: int
    end_ns: int
    max_stage: int
    closed: bool


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _peak(tape: Tape | None, side: str, spans: list[tuple[int, int]]) -> int | None:
    """The start of the bucket with most liquidations of ``side`` inside ``spans``; None without any."""
    if tape is None:
        return None
    times = tape.times_ns()
    liq = tape.liq(side)
    inside = np.zeros(times.shape[0], np.bool_)
    res_ns = int(tape.res_s * 1e9)
    for lo, hi in spans:
        inside |= (times + res_ns > lo) & (times <= hi)
    if not inside.any() or not (liq[inside] > 0).any():
        return None
    return int(times[np.flatnonzero(inside)[np.argmax(liq[inside])]])


def find_episodes(changes: Sequence[StageChange], end_ns: int, tape: Tape | None = None) -> list[Episode]:
    """The episodes of ``changes`` (in time order) over data ending at ``end_ns``, in start order."""
    open_: dict[tuple[str, str], list[StageChange]] = {}
    done: list[tuple[list[StageChange], int, bool]] = []
    for change in changes:
        key = (change.asset, change.side)
        if change.stage_from == 0 and change.stage > 0 and key not in open_:
            open_[key] = [change]
        elif key in open_ and change.stage != change.stage_from:
            open_[key].append(change)
            if change.stage == 0:
                done.append((open_.pop(key), change.ts, True))
    done += [(chain, end_ns, False) for chain in open_.values()]
    out = []
    for chain, end, closed in done:
        first = chain[0]
        top = max(c.stage for c in chain)
        spans = [(c.ts, nxt.ts if nxt is not None else end)
                 for c, nxt in zip(chain, [*chain[1:], None], strict=True) if c.stage == top]
        peak = _peak(tape, first.side, spans) or spans[0][0]
        out.append(Episode(first.asset, first.side, first.episode_id, first.ts, max(peak, first.ts), end, top, closed))
    return sorted(out, key=lambda e: (e.start_ns, e.asset, e.side))


def read_known_events(path: Path) -> list[KnownEvent]:
    """Known events from JSON (a list of ``{"start", "end", "side"?, "name"?}``) or CSV with those columns;
    times ISO 8601 or epoch ms. Raises ``ValueError`` for a row without start and end."""
    text = path.read_text()
    rows: list[dict[str, str]]
    rows = json.loads(text) if path.suffix.lower() == ".json" else list(csv.DictReader(text.splitlines()))
    out = []
    for k, row in enumerate(rows):
        if "start" not in row or "end" not in row:
            raise ValueError(f"{path}: event {k + 1} needs start and end")
        side = (row.get("side") or "").strip().lower() or None
        out.append(KnownEvent(str(row.get("name") or f"event {k + 1}"), parse_ts_ms(str(row["start"])) * 1_000_000,
                              parse_ts_ms(str(row["end"])) * 1_000_000, side))
    return out


def _overlaps(start: int, end: int, event: KnownEvent) -> bool:
    return start <= event.end_ns and end >= event.start_ns


def match(start: int, end: int, side: str, known: Sequence[KnownEvent]) -> KnownEvent | None:
    """The first known event of ``side`` that the window ``[start, end]`` overlaps."""
    return next((e for e in known if e.side in (None, side) and _overlaps(start, end, e)), None)


def calm_days(t0_ns: int, t1_ns: int, known: Sequence[KnownEvent]) -> float:
    """Days of ``[t0_ns, t1_ns]`` outside the union of the known events."""
    covered, reach = 0, t0_ns
    for event in sorted(known, key=lambda e: e.start_ns):
        lo, hi = max(event.start_ns, reach), min(event.end_ns, t1_ns)
        if hi > lo:
            covered += hi - lo
        reach = max(reach, hi)
    return max(0, t1_ns - t0_ns - covered) / DAY_NS


@dataclass(frozen=True)
class Scored:
    rows: list[dict[str, object]]  # one per episode (alarm), JSON-ready
    hits: list[str]  # names of the known events found
    false_alarms: int
    calm_days: float

    @property
    def per_calm_day(self) -> float | None:
        return self.false_alarms / self.calm_days if self.calm_days > 0 else None


def score(windows: Sequence[tuple[str, str, int, int, int, int]], known: Sequence[KnownEvent], t0_ns: int,
          t1_ns: int, min_stage: int = 3) -> Scored:
    """Score alarm windows ``(asset, side, start, peak, end, max_stage)`` against ``known``."""
    rows: list[dict[str, object]] = []
    hits: list[str] = []
    false_alarms = 0
    for asset, side, start, peak, end, stage in windows:
        event = match(start, end, side, known)
        if event is not None and event.name not in hits:
            hits.append(event.name)
        false = event is None and stage >= min_stage
        false_alarms += false
        rows.append({
            "asset": asset, "side": side, "start": iso(start), "peak": iso(peak), "end": iso(end),
            "max_stage": stage, "known_event": event.name if event else None, "false_alarm": false,
            "lead_s": (event.start_ns - start) / 1e9 if event else (peak - start) / 1e9,
            "lead_reference": "onset" if event else "peak",
        })
    return Scored(rows, hits, false_alarms, calm_days(t0_ns, t1_ns, known))


def episode_windows(episodes: Sequence[Episode]) -> list[tuple[str, str, int, int, int, int]]:
    return [(e.asset, e.side, e.start_ns, e.peak_ns, e.end_ns, e.max_stage) for e in episodes]
