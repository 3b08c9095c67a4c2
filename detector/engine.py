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

import numpy as np

from collectors.venues import coverage_of
from detector.batch import StreamColumns, by_time, joined, stream_columns
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
    REJECT_REASONS,
    SIDE_NAMES,
    DetectorState,
    allocate,
    describe,
    evidence,
    thresholds,
    with_rows_of,
)
from detector.wire import ASSET, VENUE, NameTable, wire_columns
from flushwatch.events import Event
from flushwatch.settings import Settings
from flushwatch.signals import AssetState, SideState, Signal, StageChange, stage_name
from flushwatch.streams import decode_event_batch
from flushwatch.telemetry import (
    DETECTOR_REJECTED,
)

log = logging.getLogger(__name__)

_NEVER = -(1 << 62)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


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


def _numbered(names: list[str], numbers: dict[str, int], add: Callable[[str], int]) -> list[int]:
    """The number of each name in ``numbers``; names not in it yet are first ``add``-ed in order of first
    appearance (so numbering depends on the stream only), once each however often they occur."""
    try:
        return list(map(numbers.__getitem__, names))  # a C loop: this runs for every event read
    except KeyError:
        for name in dict.fromkeys(names):
            if name not in numbers:
                add(name)
        return list(map(numbers.__getitem__, names))


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


_SEGMENT_DTYPES: Final = (np.int8, np.int32, np.int32, np.int64, np.float64, np.float64, np.float64, np.float64,
                           np.int64)
"""The dtypes of ``StreamColumns``, in order: what a checkpoint's segment is read back as."""


def _segment_blobs(segment: list[StreamColumns]) -> list[bytes]:
    """The segment in progress as one buffer per column, for a checkpoint."""
    if not segment:
        return []
    return [column.astype(dtype, copy=False).tobytes()
            for column, dtype in zip(joined(segment), _SEGMENT_DTYPES, strict=True)]


def _segment_of(blobs: list[bytes]) -> list[StreamColumns]:
    """What ``_segment_blobs`` wrote; raises ``ValueError`` for buffers that are not the columns of one segment."""
    if not blobs:
        return []
    if len(blobs) != len(_SEGMENT_DTYPES):
        raise ValueError(f"a segment has {len(_SEGMENT_DTYPES)} columns, not {len(blobs)}")
    columns = tuple(np.frombuffer(blob, dtype).copy() for blob, dtype in zip(blobs, _SEGMENT_DTYPES, strict=True))
    if len({len(c) for c in columns}) != 1:
        raise ValueError("segment columns of different lengths")
    return [cast(StreamColumns, columns)]


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
        self._names = NameTable()
        """``self._slots`` and ``self._venue_ids`` as the wire path reads them: cleared when they are replaced."""
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
        self._segment: list[StreamColumns] = []  # the evaluation segment in progress, applied when it ends
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
        """Take events in order; returns the signals of every evaluation their times crossed."""
        return self.process_columns(self.columns_of(events)) if events else []

    def columns_of(self, events: Sequence[Event]) -> StreamColumns:
        """The stream columns of ``events``, numbering the assets and venues it has not met yet."""
        slots = _numbered([e.asset for e in events], self._slots, self._slot)
        venues = _numbered([e.venue for e in events], self._venue_ids, self._venue_id)
        return stream_columns(events, slots, venues)

    def entry_columns(self, payload: bytes) -> StreamColumns:
        """The stream columns of one stream entry's batch (``flushwatch.streams.entry_payload``): read straight
        from the bytes (``detector.wire``), or through event objects for what that path does not read. Raises
        ``ValueError`` (``msgspec.DecodeError`` is one) for a payload that is not a batch of events."""
        base = len(self.assets), len(self.venues)
        wire = wire_columns(payload, self._names, base)
        if wire is None:
            events = decode_event_batch(payload)
            # msgspec takes any int up to 2**64 for a time; refused before a name is numbered, not half-applied
            if not all(_INT64_MIN <= e.ts_event <= _INT64_MAX and _INT64_MIN <= e.ts_recv <= _INT64_MAX
                       for e in events):
                raise ValueError("an event time outside the int64 range")
            return self.columns_of(events)
        # Names are numbered in order of first appearance in the entry, as columns_of numbers them: those the
        # table holds come numbered, and the others are numbered here after them, as new names in that order.
        slots = self._learned(ASSET, wire.asset, wire.asset_names, base[ASSET], self._slots, self._slot)
        venues = self._learned(VENUE, wire.venue, wire.venue_names, base[VENUE], self._venue_ids, self._venue_id)
        return (wire.kind, slots, venues, wire.ts, wire.v0, wire.v1, wire.v2, np.zeros(len(wire.ts)), wire.recv)

    def _learned(self, which: int, column: np.ndarray, new: list[str], base: int, numbers: dict[str, int],
                 add: Callable[[str], int]) -> np.ndarray:
        """``column`` of ``wire_columns`` with its ``new`` names (numbered ``base + i`` there) numbered as
        ``numbers`` has them or ``add`` numbers them, and taught to the name table."""
        if not new:
            return column
        got = _numbered(new, numbers, add)
        self._names.learn(which, new, got)
        if got == list(range(base, base + len(got))):
            return column
        # Some were numbered before the table held them (by ``columns_of``, ``restore_baselines``, a restore).
        return np.concatenate([np.arange(base, dtype=np.int32), np.array(got, np.int32)])[column]

    def process_columns(self, columns: StreamColumns) -> list[Signal]:
        """Take events as stream columns (``detector.batch.stream_columns``, slots and venue ids from this
        detector), in stream order; returns the signals of every evaluation their times crossed.

        Events are applied one evaluation segment at a time, when an event crosses the grid: a segment is
        then folded, sorted by event time and ingested whole, however the reads that brought it were cut,
        which is what makes a replay reproducible byte for byte."""
        signals: list[Signal] = []
        ts, recv = columns[3], columns[8]
        n = len(ts)
        start = 0
        while start < n:
            later = np.flatnonzero(ts[start:] >= self._next_eval_ns)
            stop = n if not len(later) else start + int(later[0])
            if stop > start:
                whole = start == 0 and stop == n
                self._segment.append(columns if whole else cast(StreamColumns, tuple(c[start:stop] for c in columns)))
            if stop == n:
                break
            # The event at ``stop`` crosses the grid: the segment before it is complete; evaluate at the boundary.
            self._apply_segment()
            if self._next_eval_ns > _NEVER:
                self._trigger_recv = int(recv[stop])
                signals += self._evaluate(self._next_eval_ns * 1e-9)
            self._next_eval_ns = (int(ts[stop]) // self._grid_ns + 1) * self._grid_ns
            start = stop
        self.events += n
        return signals

    def _apply_segment(self) -> None:
        if not self._segment:
            return
        columns, self._segment = joined(self._segment), []
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
                "events": self.events, "segment": _segment_blobs(self._segment), "venues": self.venues,
                "venue_width": self.market.oi_usd.shape[1]}
        whole = _Whole(self.state, self.extras, self.market, _Rows(self._active, self._recv, self._state_due))
        return encode(self._active.shape[0], flatten(whole), meta)

    def restore(self, blob: bytes) -> None:
        """Become the detector ``checkpoint`` saved; raises ``CheckpointError`` (leaving this one as it was)
        for bytes that are not a checkpoint of this version."""
        saved = decode(blob)
        n, meta = saved.capacity, saved.meta
        try:
            segment = _segment_of(meta["segment"])
            assets = [str(a) for a in meta["assets"]]
            venues = [str(v) for v in meta["venues"]]
            width = int(meta["venue_width"])
            clocks = int(meta["next_eval_ns"]), int(meta["trigger_recv"]), int(meta["events"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint metadata unreadable: {exc!r}") from None
        template = _Whole(allocate(n), allocate_extras(n), allocate_market(n, width),
                          _Rows(np.zeros(n, np.bool_), np.zeros(n, np.int64), np.full(n, -math.inf)))
        whole = unflatten(template, saved.arrays)
        self.state, self.extras, self.market = whole.state, whole.extras, whole.market
        self._active, self._recv, self._state_due = whole.rows
        self.assets, self._slots = assets, {asset: slot for slot, asset in enumerate(assets)}
        self.venues, self._venue_ids = venues, {venue: i for i, venue in enumerate(venues)}
        self._names.clear()
        self._next_eval_ns, self._trigger_recv, self.events = clocks
        self._segment = segment

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
        # Each array's due rows in one call: indexing NumPy per field and slot costs more than the snapshot it
        # fills. Features and totals travel packed: a slice of their rows' bytes each.
        rows = state.features[due]
        features = rows.astype("<f8", copy=False).tobytes()
        totals = state.totals[due].astype("<f8", copy=False).tobytes()
        f_width, t_width = rows.shape[1] * 8, state.totals.shape[1] * 8
        overheat = rows[:, _OVERHEAT].tolist()
        stages, hot, paused = state.stage[due].tolist(), state.overheated[due].tolist(), state.paused[due].tolist()
        starts, peaks = state.episode_start[due].tolist(), state.peak_stage[due].tolist()
        changed, stage_from, cond_bits = state.changed[due].tolist(), state.stage_from[due].tolist(), \
            state.cond_bits[due].tolist()
        recv = self._recv[due].tolist()
        venues = venue_views(self.market, due, self.venues, self.coverage)
        assets = self.assets
        # A few hundred snapshots a second: one pass over the rows, an episode id made only for a side that has
        # an episode.
        for k, (slot, score, stage, hot_, paused_, start, peak, bits, came_from, held, recv_k, venue) in enumerate(
                zip(due.tolist(), overheat, stages, hot, paused, starts, peaks, changed, stage_from, cond_bits,
                    recv, venues, strict=True)):
            asset = assets[slot]
            sides = [SideState(SIDE_NAMES[s], stage[s], stage_name(stage[s], hot_[s] == 1), score[s],
                               _episode(asset, s, start[s], peak[s]) if peak[s] else "", paused_[s] == 1)
                     for s in (0, 1)]
            if bits[0] or bits[1]:
                for s, side in enumerate(sides):
                    b = bits[s]
                    # The overheating band renames stage 0 (calm <-> overheated); in a cascade it changes nothing.
                    # A pause (exhausted, fuel remains) or its end is news within the stage.
                    if b & (CHANGED_STAGE | CHANGED_PAUSE) or (b & CHANGED_OVERHEAT and side.stage == 0):
                        signals.append(StageChange(
                            asset=asset, side=side.side, ts=ts, ts_recv=self._trigger_recv,
                            stage_from=came_from[s] if b & CHANGED_STAGE else side.stage, stage=side.stage,
                            stage_name=side.stage_name, overheat_score=side.overheat_score,
                            episode_id=side.episode_id, evidence=evidence(state, slot), thresholds=self._thresholds,
                            conditions=describe(held[s]), paused=side.paused))
            signals.append(AssetState(asset, ts, recv_k, sides[0], sides[1], features[k * f_width:(k + 1) * f_width],
                                      totals[k * t_width:(k + 1) * t_width], venue))
        return signals
