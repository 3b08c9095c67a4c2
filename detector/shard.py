"""The detector role for one shard: its events stream in through a consumer group, signals out, and the whole
state checkpointed to Redis so a restarted shard resumes where it stopped.

Exactly-once output from at-least-once input:

* Entries are acknowledged only together with a checkpoint that includes them (one ``MULTI``: ``SET``
  checkpoint, ``XACK``), every ``checkpoint_s`` and on shutdown. After a crash the shard restores the
  checkpoint and reads its pending entries again -- first claiming, with ``XAUTOCLAIM``, any left with a
  consumer of another name (a pod that was replaced) -- in stream order, so its state becomes what an
  uninterrupted run would have.
* Signals are written as they are made, in one ``MULTI`` with ``fw:{s<i>}:emitted``, the event time of the
  newest evaluation written. Signals depend only on the events and their order, so those recomputed from the
  re-read entries are the ones already written: everything up to that time is dropped (counted), and the
  signals stream gets each signal once.

Every key of a shard carries the hash tag ``{s<i>}``, so a transaction is within one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from detector.batch import StreamColumns, joined
from detector.checkpoint import CheckpointError
from detector.engine import Detector
from detector.state import REJECT_REASONS
from flushwatch.redis_client import REDIS_ERRORS
from flushwatch.settings import Settings
from flushwatch.signals import Signal
from flushwatch.streams import (
    DETECTOR_GROUP,
    baselines_key,
    checkpoint_key,
    emitted_key,
    encode_batch,
    ensure_group,
    entries_of,
    entry_payload,
    events_key,
    shard_of,
    signals_key,
    trim_older,
)
from flushwatch.telemetry import (
    DETECTOR_CHECKPOINTS,
    DETECTOR_EVENTS,
    DETECTOR_LAG,
    DETECTOR_PENDING,
    DETECTOR_REJECTED,
    DETECTOR_RESUMED,
    WRITER_ERRORS,
    RateLimitedLog,
)

log = logging.getLogger(__name__)

CLAIM_BATCH: Final = 1000
RETRY_S: Final = 0.5


class DetectorEngine:
    """Reads shard ``shard``'s events stream through the ``detector`` consumer group and writes its signals.

    ``persist`` off (replays, benchmarks): no checkpoint, no baselines, entries acknowledged as processed."""

    def __init__(
        self,
        redis: Any,
        settings: Settings,
        *,
        shard: int = 0,
        consumer: str | None = None,
        on_signals: Callable[[list[Signal]], None] | None = None,
        capacity: int = 64,
        persist: bool = True,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self.shard = shard
        self._persist = persist
        self._key = events_key(shard)
        self._consumer = consumer or f"detector-{shard}"
        self._on_signals = on_signals
        self.detector = Detector(settings, capacity)
        self._unacked: list[bytes] = []
        """Entries processed since the last checkpoint: acknowledged with the next one."""
        self.emitted_ns = -1
        """Event time of the newest signals written; recomputed ones up to it are not written again."""
        self.resumed = False
        """Whether the state came from a checkpoint."""
        self._warn = RateLimitedLog(log)
        # Exported at 0 from the start, not at the first reject or error.
        for reason in (*REJECT_REASONS, "undecodable_entry"):
            DETECTOR_REJECTED.labels(reason)
        for outcome in ("written", "failed", "restored", "refused"):
            DETECTOR_CHECKPOINTS.labels(outcome)
        WRITER_ERRORS.labels("detector")

    # --- state in Redis -------------------------------------------------------------------------------

    async def resume(self) -> None:
        """Restore the checkpoint (else the saved hour-of-week baselines) and the emitted watermark, and claim
        the entries a previous consumer of this shard left pending."""
        redis = self._redis
        blob, emitted = await redis.mget(checkpoint_key(self.shard), emitted_key(self.shard))
        self.emitted_ns = int(emitted) if emitted else -1
        if blob:
            try:
                self.detector.restore(blob)
                self.resumed = True
                DETECTOR_CHECKPOINTS.labels("restored").inc()
                log.info("detector shard %d: resumed from its checkpoint (%d assets, %d events)", self.shard,
                         len(self.detector.assets), self.detector.events)
            except CheckpointError as exc:  # an upgrade changed the layout: history is lost, not the start
                DETECTOR_CHECKPOINTS.labels("refused").inc()
                log.warning("detector shard %d: checkpoint not usable (%s); starting from the baselines",
                            self.shard, exc)
        if not self.resumed:
            await self.load_baselines()
        await ensure_group(redis, self._key, DETECTOR_GROUP, "0")
        claimed = await self._claim()
        if claimed:
            log.info("detector shard %d: claimed %d pending entries of replaced consumers", self.shard, claimed)

    async def _claim(self) -> int:
        """XAUTOCLAIM every entry pending with another consumer of the group: this shard has one owner, so any
        other consumer of its stream is a dead predecessor."""
        claimed, cursor = 0, "0-0"
        while True:
            # Not JUSTID: redis-py's parser drops the cursor of that reply form.
            reply = await self._redis.xautoclaim(self._key, DETECTOR_GROUP, self._consumer, min_idle_time=0,
                                                 start_id=cursor, count=CLAIM_BATCH)
            cursor, entries = reply[0], reply[1]
            claimed += len(entries)
            if cursor in (b"0-0", "0-0"):
                return claimed

    async def load_baselines(self) -> None:
        """Warm the hour-of-week baselines from what a previous run or a backtest saved for this shard."""
        try:
            blob = await self._redis.get(baselines_key(self.shard))
        except REDIS_ERRORS as exc:
            self._warn.warning("detector-baselines", "detector: baselines not loaded: %s", exc)
            return
        if not blob:
            return
        try:
            n = self.detector.restore_baselines(blob)
        except (ValueError, KeyError, OSError) as exc:  # a damaged blob costs the history, not the start
            self._warn.warning("detector-baselines", "detector: baselines of shard %d unreadable: %s", self.shard, exc)
            return
        log.info("detector: hour-of-week baselines of %d assets restored (shard %d)", n, self.shard)

    async def save_baselines(self, *, raise_errors: bool = False) -> None:
        """The baselines alone, under a key of their own: they outlive a checkpoint an upgrade cannot read, and
        a backtest can seed them."""
        try:
            shards = self._settings.shards
            blob = self.detector.baselines(lambda asset: shard_of(asset, shards) == self.shard)
            await self._redis.set(baselines_key(self.shard), blob)
        except REDIS_ERRORS as exc:
            if raise_errors:
                raise
            WRITER_ERRORS.labels("detector").inc()
            self._warn.warning("detector-baselines", "detector: baselines not saved: %s", exc)

    async def checkpoint(self) -> bool:
        """Write the state and acknowledge the entries it covers, atomically; False if Redis refused (the entries
        stay pending and the next checkpoint covers them)."""
        # In a thread: with a thousand instruments it takes a few hundred ms, which the event loop (receive
        # loops, in ``flushwatch run``) must not wait for. No copy is needed: only this task changes the state,
        # and it waits here.
        blob = await asyncio.to_thread(self.detector.checkpoint)
        acks = self._unacked
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(checkpoint_key(self.shard), blob)
                if acks:
                    pipe.xack(self._key, DETECTOR_GROUP, *acks)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            DETECTOR_CHECKPOINTS.labels("failed").inc()
            self._warn.warning("detector-checkpoint", "detector shard %d: checkpoint not written: %s", self.shard, exc)
            return False
        self._unacked = []
        DETECTOR_CHECKPOINTS.labels("written").inc()
        try:
            await trim_older(self._redis, [signals_key(self.shard)], self._settings.writer.retention_s)
        except REDIS_ERRORS as exc:
            WRITER_ERRORS.labels("detector").inc()
            self._warn.warning("detector-trim", "detector shard %d: signals not trimmed: %s", self.shard, exc)
        return True

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set and the stream is drained; pending entries go first. With ``persist``,
        resume first, checkpoint every ``checkpoint_s``, and checkpoint and save the baselines on the way out."""
        if not self._persist:
            await ensure_group(self._redis, self._key, DETECTOR_GROUP, "0")
            await self._run(stop)
            return
        await self.resume()
        try:
            await self._run(stop)
        finally:
            await self.checkpoint()
            await self.save_baselines()

    async def _run(self, stop: asyncio.Event) -> None:
        cursor = "0"
        det = self._settings.detector
        next_pending_check = 0.0
        now = time.monotonic()
        next_checkpoint, next_save = now + det.checkpoint_s, now + det.baselines_save_s
        while True:
            try:
                reply = await self._redis.xreadgroup(DETECTOR_GROUP, self._consumer, {self._key: cursor},
                                                     count=det.read_count, block=det.block_ms)
            except REDIS_ERRORS as exc:
                WRITER_ERRORS.labels("detector").inc()
                self._warn.warning("detector-read", "detector: Redis read failed: %s", exc)
                if stop.is_set():
                    return
                await asyncio.sleep(RETRY_S)
                continue
            entries = list(entries_of(reply))
            if entries:
                await self._handle(entries)
                if cursor != ">":  # our pending history is acknowledged only at the next checkpoint: page on
                    cursor = entries[-1][1].decode()
            elif cursor != ">":
                cursor = ">"  # our pending entries are done: new ones from now on
            elif stop.is_set():
                return
            now = time.monotonic()
            if now >= next_pending_check:
                next_pending_check = now + 5.0
                await self._report_pending()
            if self._persist and now >= next_checkpoint:
                next_checkpoint = now + det.checkpoint_s
                await self.checkpoint()
            if self._persist and now >= next_save:
                next_save = now + det.baselines_save_s
                await self.save_baselines()

    async def _handle(self, entries: list[tuple[str, bytes, dict[Any, Any]]]) -> None:
        chunks: list[StreamColumns] = []
        ids = []
        for _, entry_id, fields in entries:
            ids.append(entry_id)
            try:
                chunks.append(self.detector.entry_columns(entry_payload(fields)))
            except ValueError as exc:  # msgspec.DecodeError is one
                DETECTOR_REJECTED.labels("undecodable_entry").inc()
                self._warn.warning("detector-decode", "detector: dropped undecodable entry %r: %s", entry_id, exc)
        signals: list[Signal] = []
        if chunks:
            columns = joined(chunks)
            signals = self.detector.process_columns(columns)
            recv = columns[8]
            DETECTOR_EVENTS.inc(len(recv))
            if len(recv):
                DETECTOR_LAG.labels(str(self.shard)).set(max(0.0, time.time() - int(recv.max()) * 1e-9))
        fresh = [s for s in signals if s.ts > self.emitted_ns]
        if len(fresh) < len(signals):
            DETECTOR_RESUMED.inc(len(signals) - len(fresh))
        if self._persist:
            self._unacked += ids
        if not fresh and self._persist:
            return
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    if fresh:
                        pipe.xadd(signals_key(self.shard), encode_batch(fresh),
                                  maxlen=self._settings.writer.signals_maxlen, approximate=True)
                        pipe.set(emitted_key(self.shard), max(s.ts for s in fresh))
                    if not self._persist:
                        pipe.xack(self._key, DETECTOR_GROUP, *ids)
                    await pipe.execute()
                break
            except REDIS_ERRORS as exc:
                # The events are already in the detector's state: keep trying rather than re-read them.
                WRITER_ERRORS.labels("detector").inc()
                self._warn.warning("detector-write", "detector: Redis write failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_S)
        if fresh:
            self.emitted_ns = max(s.ts for s in fresh)
            if self._on_signals:
                self._on_signals(fresh)

    async def _report_pending(self) -> None:
        try:
            info = await self._redis.xpending(self._key, DETECTOR_GROUP)
            DETECTOR_PENDING.labels(str(self.shard)).set(int(info["pending"] if isinstance(info, dict) else info[0]))
        except REDIS_ERRORS:
            WRITER_ERRORS.labels("detector").inc()
