"""The detector role: events streams in, kernels over NumPy state, signals stream out.

The engine runs on event time. Events are applied in stream order, and the stage machine is evaluated at
every crossing of the ``eval_interval_s`` grid, just before the first event past the boundary is applied.
Evaluation times therefore depend only on the events, not on how reads happened to be batched, so a
replay of the same stream yields the same signals.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, cast

import msgspec
import numpy as np

from collectors.venues import coverage_of
from detector.batch import to_columns
from detector.calendar import TradFiCalendar
from detector.extras import allocate_extras, apply_extras, fill_external, grow_extras
from detector.hawkes import hawkes_refit
from detector.kernels import apply_batch
from detector.market import MarketView
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
    TOTAL_NAMES,
    allocate,
    describe,
    evidence,
    thresholds,
    with_rows_of,
)
from flushwatch.events import Event
from flushwatch.redis_client import REDIS_ERRORS
from flushwatch.settings import Settings
from flushwatch.signals import AssetState, SideState, Signal, StageChange, stage_name
from flushwatch.streams import (
    DETECTOR_GROUP,
    baselines_key,
    decode_events,
    encode_batch,
    ensure_group,
    entries_of,
    events_key,
    shard_of,
    signals_key,
)
from flushwatch.telemetry import (
    DETECTOR_EVENTS,
    DETECTOR_LAG,
    DETECTOR_PENDING,
    DETECTOR_REJECTED,
    WRITER_ERRORS,
    RateLimitedLog,
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


def _widened(array: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    """``array`` extended to ``capacity`` entries, the new ones set to ``fill``."""
    return np.concatenate([array, np.full(capacity - array.shape[0], fill, array.dtype)])


class Detector:
    """The event-time core, without I/O: feed events, get signals. Used by the engine and by replays."""

    def __init__(self, settings: Settings, capacity: int = 64,
                 coverage: Callable[[str], str] = known_coverage) -> None:
        self.market = MarketView(coverage)
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
                self._active = _widened(self._active, capacity, False)
                self._recv = _widened(self._recv, capacity, 0)
                self._state_due = _widened(self._state_due, capacity, -math.inf)
            self._slots[asset] = slot
            self.assets.append(asset)
        return slot

    def process(self, events: Sequence[Event]) -> list[Signal]:
        """Take events in order; returns the signals of every evaluation their times crossed.

        Events are applied one evaluation segment at a time, when an event crosses the grid: a segment is
        then folded, sorted by event time and ingested whole, however the reads that brought it were cut,
        which is what makes a replay reproducible byte for byte."""
        signals: list[Signal] = []
        n = len(events)
        if not n:
            return signals
        slots_get = self._slots.get
        found = [slots_get(e.asset) for e in events]
        slots = ([self._slot(e.asset) if s is None else s for e, s in zip(events, found, strict=True)]
                 if None in found else cast(list[int], found))
        ts = np.fromiter((e.ts_event for e in events), np.int64, n)
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
        part, part_slots = self.market.fold(self._segment), self._segment_slots
        self._segment, self._segment_slots = [], []
        kind, slot, t, v0, v1, v2, v3, recv = to_columns(part, part_slots)
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
        due = self._active & ((state.changed.max(axis=1) != 0) | (self._state_due <= now))
        for slot in np.flatnonzero(due).tolist():
            asset = self.assets[slot]
            sides = [self._side(slot, s) for s in (0, 1)]
            for s in (0, 1):
                bits = int(state.changed[slot, s])
                # The overheating band renames stage 0 (calm <-> overheated); in a cascade it changes nothing. A
                # pause (exhausted, fuel remains) or its end is news within the stage.
                if bits & (CHANGED_STAGE | CHANGED_PAUSE) or (bits & CHANGED_OVERHEAT and sides[s].stage == 0):
                    signals.append(self._change(slot, s, ts, sides[s], bool(bits & CHANGED_STAGE)))
            self._state_due[slot] = now + self._state_every
            signals.append(
                AssetState(
                    asset=asset,
                    ts=ts,
                    ts_recv=int(self._recv[slot]),
                    long=sides[0],
                    short=sides[1],
                    features=evidence(state, slot),
                    totals=dict(zip(TOTAL_NAMES, state.totals[slot].tolist(), strict=True)),
                    venues=self.market.venues(asset),
                )
            )
        return signals

    def _episode(self, slot: int, s: int) -> str:
        start = self.state.episode_start[slot, s]
        if not math.isfinite(start) or self.state.peak_stage[slot, s] == 0:
            return ""
        return f"{self.assets[slot]}-{SIDE_NAMES[s]}-{int(start)}"

    def _side(self, slot: int, s: int) -> SideState:
        state = self.state
        stage = int(state.stage[slot, s])
        return SideState(
            side=SIDE_NAMES[s],
            stage=stage,
            stage_name=stage_name(stage, bool(state.overheated[slot, s])),
            overheat_score=float(state.features[slot, F_OVERHEAT_LONG if s == 0 else F_OVERHEAT_SHORT]),
            episode_id=self._episode(slot, s),
            paused=bool(state.paused[slot, s]),
        )

    def _change(self, slot: int, s: int, ts: int, side: SideState, stage_moved: bool) -> StageChange:
        return StageChange(
            asset=self.assets[slot],
            side=side.side,
            ts=ts,
            ts_recv=self._trigger_recv,
            stage_from=int(self.state.stage_from[slot, s]) if stage_moved else side.stage,
            stage=side.stage,
            stage_name=side.stage_name,
            overheat_score=side.overheat_score,
            episode_id=side.episode_id,
            evidence=evidence(self.state, slot),
            thresholds=self._thresholds,
            conditions=describe(int(self.state.cond_bits[slot, s])),
            paused=side.paused,
        )


def _owned_by(asset: str, shard: int, shards: int) -> bool:
    return shard_of(asset, shards) == shard


class DetectorEngine:
    """Reads the events streams of ``shards`` through the ``detector`` consumer group and writes signals."""

    def __init__(
        self,
        redis: Any,
        settings: Settings,
        *,
        shards: Sequence[int],
        consumer: str,
        on_signals: Callable[[list[Signal]], None] | None = None,
        capacity: int = 64,
        persist_baselines: bool = True,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._shards = list(shards)
        self._persist = persist_baselines
        self._keys = [events_key(s) for s in shards]
        self._consumer = consumer
        self._on_signals = on_signals
        self.detector = Detector(settings, capacity)
        self._warn = RateLimitedLog(log)
        # Exported at 0 from the start, not at the first reject or error.
        for reason in (*REJECT_REASONS, "undecodable_entry"):
            DETECTOR_REJECTED.labels(reason)
        WRITER_ERRORS.labels("detector")

    async def load_baselines(self) -> None:
        """Warm the hour-of-week baselines from what the previous run of these shards saved."""
        for shard in self._shards:
            try:
                blob = await self._redis.get(baselines_key(shard))
            except REDIS_ERRORS as exc:
                self._warn.warning("detector-baselines", "detector: baselines not loaded: %s", exc)
                return
            if blob:
                try:
                    n = self.detector.restore_baselines(blob)
                except (ValueError, KeyError, OSError) as exc:  # a damaged blob costs the history, not the start
                    self._warn.warning("detector-baselines", "detector: baselines of shard %d unreadable: %s",
                                       shard, exc)
                    continue
                log.info("detector: hour-of-week baselines of %d assets restored (shard %d)", n, shard)

    async def save_baselines(self, *, raise_errors: bool = False) -> None:
        shards = self._settings.shards
        try:
            for shard in self._shards:
                blob = self.detector.baselines(partial(_owned_by, shard=shard, shards=shards))
                await self._redis.set(baselines_key(shard), blob)
        except REDIS_ERRORS as exc:
            if raise_errors:
                raise
            WRITER_ERRORS.labels("detector").inc()
            self._warn.warning("detector-baselines", "detector: baselines not saved: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set and the streams are drained; our own pending entries go first. The
        hour-of-week baselines are loaded first, saved every ``baselines_save_s`` and on the way out (unless
        ``persist_baselines`` is off: a replay starts from nothing and leaves nothing behind)."""
        if not self._persist:
            await self._run(stop)
            return
        await self.load_baselines()
        try:
            await self._run(stop)
        finally:
            await self.save_baselines()

    async def _run(self, stop: asyncio.Event) -> None:
        for key in self._keys:
            await ensure_group(self._redis, key, DETECTOR_GROUP, "0")
        cursor = dict.fromkeys(self._keys, "0")
        det = self._settings.detector
        next_pending_check = 0.0
        next_save = time.monotonic() + det.baselines_save_s
        while True:
            try:
                reply = await self._redis.xreadgroup(
                    DETECTOR_GROUP, self._consumer, cursor, count=det.read_count, block=det.block_ms
                )
            except REDIS_ERRORS as exc:
                WRITER_ERRORS.labels("detector").inc()
                self._warn.warning("detector-read", "detector: Redis read failed: %s", exc)
                if stop.is_set():
                    return
                await asyncio.sleep(0.5)
                continue
            entries = list(entries_of(reply))
            if not entries:
                if any(v == "0" for v in cursor.values()):
                    cursor = dict.fromkeys(self._keys, ">")
                    continue
                if stop.is_set():
                    return
                continue
            await self._handle(entries)
            if time.monotonic() >= next_pending_check:
                next_pending_check = time.monotonic() + 5.0
                await self._report_pending()
            if self._persist and time.monotonic() >= next_save:
                next_save = time.monotonic() + det.baselines_save_s
                await self.save_baselines()

    async def _handle(self, entries: list[tuple[str, bytes, dict[Any, Any]]]) -> None:
        events: list[Event] = []
        acks: dict[str, list[bytes]] = {}
        for stream, entry_id, fields in entries:
            acks.setdefault(stream, []).append(entry_id)
            try:
                events.extend(decode_events(fields))
            except (ValueError, msgspec.DecodeError) as exc:
                DETECTOR_REJECTED.labels("undecodable_entry").inc()
                self._warn.warning("detector-decode", "detector: dropped undecodable entry %r: %s", entry_id, exc)
        signals = self.detector.process(events)
        DETECTOR_EVENTS.inc(len(events))
        if events:
            DETECTOR_LAG.set(max(0.0, time.time() - max(e.ts_recv for e in events) * 1e-9))
        by_shard: dict[int, list[Signal]] = {}
        shards = self._settings.shards
        for signal in signals:
            by_shard.setdefault(shard_of(signal.asset, shards), []).append(signal)
        batches = {signals_key(shard): encode_batch(items) for shard, items in by_shard.items()}
        while True:
            pipe = self._redis.pipeline(transaction=False)
            for key, fields in batches.items():
                pipe.xadd(key, fields, maxlen=self._settings.writer.signals_maxlen, approximate=True)
            for stream, ids in acks.items():
                pipe.xack(stream, DETECTOR_GROUP, *ids)
            try:
                await pipe.execute()
                break
            except REDIS_ERRORS as exc:
                # The events are already in the detector's state: keep trying rather than re-read them.
                WRITER_ERRORS.labels("detector").inc()
                self._warn.warning("detector-write", "detector: Redis write failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
        if self._on_signals and signals:
            self._on_signals(signals)

    async def _report_pending(self) -> None:
        try:
            total = 0
            for key in self._keys:
                info = await self._redis.xpending(key, DETECTOR_GROUP)
                total += int(info["pending"] if isinstance(info, dict) else info[0])
            DETECTOR_PENDING.set(total)
        except REDIS_ERRORS:
            WRITER_ERRORS.labels("detector").inc()
