"""The detector role: events streams in, kernels over NumPy state, signals stream out.

The engine runs on event time. Events are applied in stream order, and the stage machine is evaluated at
every crossing of the ``eval_interval_s`` grid, just before the first event past the boundary is applied.
Evaluation times therefore depend only on the events, not on how reads happened to be batched, so a
replay of the same stream yields the same signals.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, cast

import msgspec
import numpy as np

from collectors.venues import coverage_of
from detector.batch import by_time, stream_columns
from detector.calendar import TradFiCalendar
from detector.checkpoint import CheckpointError, decode, encode, flatten, unflatten
from detector.extras import Extras, allocate_extras, apply_extras, fill_external, grow_extras
from detector.hawkes import hawkes_refit
from detector.kernels import apply_batch
from detector.market import (
    DEPTH_STALE_S,
    GRACE_S,
    OI_STALE_S,
    Market,
    allocate_market,
    fold_market,
    grow_market,
    venue_views,
)
from detector.params import pack
from detector.stages import evaluate
from detector.state import (
    CHANGED_OVERHEAT,
    CHANGED_PAUSE,
    CHANGED_STAGE,
    F_OVERHEAT_LONG,
    F_OVERHEAT_SHORT,
    FEATURE_NAMES,
    REJECT_REASONS,
    SIDE_NAMES,
    TOTAL_NAMES,
    DetectorState,
    allocate,
    describe,
    thresholds,
    with_rows_of,
)
from flushwatch.events import Event
from flushwatch.settings import Settings
from flushwatch.signals import AssetState, SideState, Signal, StageChange, stage_name
from flushwatch.telemetry import (
    DETECTOR_REJECTED,
)

log = logging.getLogger(__name__)

_NEVER = -(1 << 62)


FUEL_CALIB_WINDOW_S: Final = 180.0  # realised liquidations this long after a sweep are compared with it
HAWKES_ITERS: Final = 60


def known_coverage(venue: str) -> str:
    """The registry's liquidation coverage of ``venue``; ``unknown`` for a name it does not know (tests,
    synthetic feeds)."""
    try:
        return coverage_of(venue)
    except (KeyError, ImportError):
        return "unknown"


_OVERHEAT: Final = (F_OVERHEAT_LONG, F_OVERHEAT_SHORT)
"""The overheat score's feature column, by side."""


def _episode(asset: str, s: int, start: float, peak_stage: int) -> str:
    """The id of the episode of ``asset``'s side ``s`` (one that started and reached a stage), or ''."""
    return f"{asset}-{SIDE_NAMES[s]}-{int(start)}" if math.isfinite(start) and peak_stage else ""


def _numbered(names: list[str], known: Callable[[str], int | None], add: Callable[[str], int]) -> list[int]:
    """The number of each name; names not ``known`` yet are first ``add``-ed in order of first appearance (so
    numbering depends on the stream only), once each however often they occur."""
    found = [known(name) for name in names]
    if None not in found:
        return cast(list[int], found)
    for name in dict.fromkeys(name for name, number in zip(names, found, strict=True) if number is None):
        add(name)
    return cast(list[int], [known(name) for name in names])


class _Rows(NamedTuple):
    active: np.ndarray
    recv: np.ndarray
    state_due: np.ndarray


class _Whole(NamedTuple):
    """Every array a detector holds, for ``checkpoint``."""

    state: DetectorState
    extras: Extras
    market: Market
    rows: _Rows


_segment_encoder = msgspec.msgpack.Encoder()
_segment_decoder = msgspec.msgpack.Decoder(list[Event])


def _widened(array: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    """``array`` extended to ``capacity`` entries, the new ones set to ``fill``."""
    return np.concatenate([array, np.full(capacity - array.shape[0], fill, array.dtype)])


class Detector:
    """The event-time core, without I/O: feed events, get signals. Used by the engine and by replays."""

    def __init__(self, settings: Settings, capacity: int = 64,
                 coverage: Callable[[str], str] = known_coverage) -> None:
        self.coverage = coverage
        self.market = allocate_market(capacity)
        self.venues: list[str] = []
        """Venue names by the id the market arrays know them by."""
        self._venue_ids: dict[str, int] = {}
        self._fold_args = (int(GRACE_S * 1e9), int(OI_STALE_S * 1e9), int(DEPTH_STALE_S * 1e9))
        self._params = pack(settings.detector)
        self._thresholds = thresholds(settings.detector)
        self.state = allocate(capacity)
        self.extras = allocate_extras(capacity)
        d = settings.detector
        self._fuel_args = (np.array(d.fuel_leverage), np.array(d.fuel_leverage_weight), d.fuel_mmr,
                           d.fuel_bucket_width, FUEL_CALIB_WINDOW_S)
        self._hawkes_args = (d.hawkes_window_s, d.hawkes_refit_s, d.hawkes_beta_min, d.hawkes_beta_max, HAWKES_ITERS)
        self._fill_args = (d.fuel_half_life_s, d.sweep_trigger_share)
        self._active = np.zeros(capacity, dtype=np.bool_)
        self._recv = np.zeros(capacity, dtype=np.int64)
        self._slots: dict[str, int] = {}
        self.assets: list[str] = []
        self._grid_ns = round(settings.detector.eval_interval_s * 1e9)
        self._next_eval_ns = _NEVER
        self._state_every = settings.detector.state_interval_s
        self._state_due = np.full(capacity, -math.inf)
        self._calendar = TradFiCalendar(settings.detector.tradfi_sessions)
        self._trigger_recv = 0
        self._segment: list[Event] = []  # events of the evaluation segment in progress, applied when it ends
        self._segment_slots: list[int] = []
        self.events = 0

    def _slot(self, asset: str) -> int:
        slot = self._slots.get(asset)
        if slot is None:
            slot = len(self.assets)
            if slot >= self._active.shape[0]:
                capacity = 2 * self._active.shape[0]
                self.state = with_rows_of(self.state, allocate(capacity))
                self.extras = grow_extras(self.extras, capacity)
                self.market = grow_market(self.market, capacity, self.market.oi_usd.shape[1])
                self._active = _widened(self._active, capacity, False)
                self._recv = _widened(self._recv, capacity, 0)
                self._state_due = _widened(self._state_due, capacity, -math.inf)
            self._slots[asset] = slot
            self.assets.append(asset)
        return slot

    def _venue_id(self, venue: str) -> int:
        found = self._venue_ids.get(venue)
        if found is None:
            found = self._venue_ids[venue] = len(self.venues)
            self.venues.append(venue)
            width = self.market.oi_usd.shape[1]
            if found >= width:
                self.market = grow_market(self.market, self._active.shape[0], 2 * width)
        return found

    def process(self, events: Sequence[Event]) -> list[Signal]:
        """Take events in order; returns the signals of every evaluation their times crossed.

        Events are applied one evaluation segment at a time, when an event crosses the grid: a segment is
        then folded, sorted by event time and ingested whole, however the reads that brought it were cut,
        which is what makes a replay reproducible byte for byte."""
        signals: list[Signal] = []
        n = len(events)
        if not n:
            return signals
        slots = _numbered([e.asset for e in events], self._slots.get, self._slot)
        ts = np.array([e.ts_event for e in events], np.int64)
        start = 0
        while start < n:
            later = np.flatnonzero(ts[start:] >= self._next_eval_ns)
            stop = n if not len(later) else start + int(later[0])
            self._segment.extend(events[start:stop])
            self._segment_slots.extend(slots[start:stop])
            if stop == n:
                break
            # The event at ``stop`` crosses the grid: the segment before it is complete; evaluate at the boundary.
            self._apply_segment()
            if self._next_eval_ns > _NEVER:
                self._trigger_recv = events[stop].ts_recv
                signals += self._evaluate(self._next_eval_ns * 1e-9)
            self._next_eval_ns = (int(ts[stop]) // self._grid_ns + 1) * self._grid_ns
            start = stop
        self.events += n
        return signals

    def _apply_segment(self) -> None:
        if not self._segment:
            return
        part, part_slots = self._segment, self._segment_slots
        self._segment, self._segment_slots = [], []
        venues = _numbered([e.venue for e in part], self._venue_ids.get, self._venue_id)
        columns = stream_columns(part, part_slots, venues)
        kind, slot, venue, ts, v0, v1, v2, _, _ = columns
        fold_market(self.market, kind, slot, venue, ts, v0, v1, v2, *self._fold_args)
        kind, slot, t, v0, v1, v2, v3, recv = by_time(columns)
        np.maximum.at(self._recv, slot, recv)
        self.ingest(kind, slot, t, v0, v1, v2, v3)

    def baselines(self, keep: Callable[[str], bool] = lambda asset: True) -> bytes:
        """The hour-of-week baselines of the assets ``keep`` selects, as bytes to persist
        (``restore_baselines`` reads them)."""
        season = self.extras.season
        rows = [slot for slot, asset in enumerate(self.assets) if keep(asset)]
        out = io.BytesIO()
        np.savez_compressed(out, assets=np.array([self.assets[r] for r in rows], dtype=str),
                            median=season.median[rows], spread=season.spread[rows], count=season.count[rows])
        return out.getvalue()

    def restore_baselines(self, blob: bytes) -> int:
        """Load what ``baselines`` saved; returns how many assets it covered. Rows of assets already being
        accumulated are replaced: history of weeks outweighs the minutes since the start."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as saved:
            assets = [str(a) for a in saved["assets"]]
            for row, asset in enumerate(assets):
                slot = self._slot(asset)
                season = self.extras.season
                season.median[slot] = saved["median"][row]
                season.spread[slot] = saved["spread"][row]
                season.count[slot] = saved["count"][row]
        return len(assets)

    def checkpoint(self) -> bytes:
        """The whole state as bytes (``restore`` takes them back): a detector restored from it and fed what
        followed gives the signals of one that never stopped."""
        meta = {"assets": self.assets, "next_eval_ns": self._next_eval_ns, "trigger_recv": self._trigger_recv,
                "events": self.events, "segment": _segment_encoder.encode(self._segment),
                "segment_slots": self._segment_slots, "venues": self.venues,
                "venue_width": self.market.oi_usd.shape[1]}
        whole = _Whole(self.state, self.extras, self.market, _Rows(self._active, self._recv, self._state_due))
        return encode(self._active.shape[0], flatten(whole), meta)

    def restore(self, blob: bytes) -> None:
        """Become the detector ``checkpoint`` saved; raises ``CheckpointError`` (leaving this one as it was)
        for bytes that are not a checkpoint of this version."""
        saved = decode(blob)
        n, meta = saved.capacity, saved.meta
        try:
            segment = _segment_decoder.decode(meta["segment"])
            assets = [str(a) for a in meta["assets"]]
            venues = [str(v) for v in meta["venues"]]
            width = int(meta["venue_width"])
            clocks = int(meta["next_eval_ns"]), int(meta["trigger_recv"]), int(meta["events"])
            segment_slots = [int(s) for s in meta["segment_slots"]]
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"checkpoint metadata unreadable: {exc!r}") from None
        template = _Whole(allocate(n), allocate_extras(n), allocate_market(n, width),
                          _Rows(np.zeros(n, np.bool_), np.zeros(n, np.int64), np.full(n, -math.inf)))
        whole = unflatten(template, saved.arrays)
        self.state, self.extras, self.market = whole.state, whole.extras, whole.market
        self._active, self._recv, self._state_due = whole.rows
        self.assets, self._slots = assets, {asset: slot for slot, asset in enumerate(assets)}
        self.venues, self._venue_ids = venues, {venue: i for i, venue in enumerate(venues)}
        self._next_eval_ns, self._trigger_recv, self.events = clocks
        self._segment, self._segment_slots = segment, segment_slots

    def ingest(self, kind: np.ndarray, slot: np.ndarray, t: np.ndarray, v0: np.ndarray, v1: np.ndarray,
               v2: np.ndarray, v3: np.ndarray) -> None:
        """The kernels' part of applying a columnar batch (``detector.batch``): state, baselines, arrivals, fuel."""
        self._active[slot] = True
        rejected = apply_batch(self.state, kind, slot, t, v0, v1, v2, v3, self._params)
        x = self.extras
        apply_extras(x.season, x.hawkes, x.fuel, x.tape, kind, slot, t, v0, v1, v2, *self._fuel_args)
        for reason, count in zip(REJECT_REASONS, rejected, strict=True):
            if count:
                DETECTOR_REJECTED.labels(reason).inc(int(count))

    def step(self, now: float) -> None:
        """The kernels' part of an evaluation at event time ``now``: refit the branching ratios that are due,
        fill in the companions' outputs, then features and stages."""
        x = self.extras
        hawkes_refit(x.hawkes, now, self._active, *self._hawkes_args)
        fill_external(self.state, x.season, x.hawkes, x.fuel, x.swept_seen, x.swept_ring, x.swept_last, now,
                      self._active, *self._fill_args)
        evaluate(self.state, now, self._active, self._params, float(self._calendar.closed(now)))

    def _evaluate(self, now: float) -> list[Signal]:
        state = self.state
        self.step(now)
        ts = int(now * 1e9)
        signals: list[Signal] = []
        due = np.flatnonzero(self._active & ((state.changed.max(axis=1) != 0) | (self._state_due <= now)))
        if not len(due):
            return signals
        self._state_due[due] = now + self._state_every
        # Each array's due rows as Python values in one call: indexing NumPy per field and slot costs more than
        # the snapshot it fills.
        features = state.features[due].tolist()
        stages, hot, paused = state.stage[due].tolist(), state.overheated[due].tolist(), state.paused[due].tolist()
        starts, peaks = state.episode_start[due].tolist(), state.peak_stage[due].tolist()
        changed, stage_from, cond_bits = state.changed[due].tolist(), state.stage_from[due].tolist(), \
            state.cond_bits[due].tolist()
        totals, recv = state.totals[due].tolist(), self._recv[due].tolist()
        venues = venue_views(self.market, due, self.venues, self.coverage)
        for k, slot in enumerate(due.tolist()):
            asset = self.assets[slot]
            evidence = dict(zip(FEATURE_NAMES, features[k], strict=True))
            sides = [SideState(SIDE_NAMES[s], stages[k][s], stage_name(stages[k][s], bool(hot[k][s])),
                               features[k][_OVERHEAT[s]],
                               _episode(asset, s, starts[k][s], peaks[k][s]), bool(paused[k][s])) for s in (0, 1)]
            for s, side in enumerate(sides):
                bits = changed[k][s]
                # The overheating band renames stage 0 (calm <-> overheated); in a cascade it changes nothing. A
                # pause (exhausted, fuel remains) or its end is news within the stage.
                if bits & (CHANGED_STAGE | CHANGED_PAUSE) or (bits & CHANGED_OVERHEAT and side.stage == 0):
                    signals.append(StageChange(
                        asset=asset, side=side.side, ts=ts, ts_recv=self._trigger_recv,
                        stage_from=stage_from[k][s] if bits & CHANGED_STAGE else side.stage, stage=side.stage,
                        stage_name=side.stage_name, overheat_score=side.overheat_score, episode_id=side.episode_id,
                        evidence=dict(evidence), thresholds=self._thresholds, conditions=describe(cond_bits[k][s]),
                        paused=side.paused))
            signals.append(AssetState(asset=asset, ts=ts, ts_recv=recv[k], long=sides[0], short=sides[1],
                                      features=evidence, totals=dict(zip(TOTAL_NAMES, totals[k], strict=True)),
                                      venues=venues[k]))
        return signals
