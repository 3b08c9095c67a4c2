"""The alert role's loop: detector signals from Redis -> exporter snapshot + MQTT state and events.

Per read batch (one XREADGROUP reply of one shard; each shard has its own reader):

* every ``StageChange`` becomes an ``EventPayload`` on ``<asset>/events``, in stream order, unless the
  cooldown holds it back (transitions only -- the detector emits nothing else -- escalations at once, a same
  or lower stage of the same asset and side only ``cooldown_s`` of event time after the last published one);
* the newest ``AssetState`` of each asset updates the exporter and becomes one retained ``<asset>/state``
  message (the detector sends a snapshot with every change, so the state follows its events); with
  ``coalesce_states=False`` (replays) every snapshot is published, in stream order;
* then the batch is acknowledged: every message is in the sink's outbox by then, and an entry that could not
  be decoded is counted, logged and acknowledged too, so it cannot come back.

On start the consumer first re-reads its own pending entries (id ``0``): a batch read but not acknowledged
before a crash or a Redis error is processed again, and its events keep their idempotency keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import StreamIdT

from alerts.exporter import AssetStateCollector
from alerts.livepage import LIVE_PAGE
from alerts.models import EventPayload, StatePayload, events_topic, state_topic
from alerts.mqtt import AlertSink
from flushwatch.signals import AssetState, StageChange
from flushwatch.streams import ALERTS_GROUP, decode_signals, ensure_group, entries_of, signals_key
from flushwatch.telemetry import PIPELINE_LATENCY, WRITER_ERRORS, RateLimitedLog

log = logging.getLogger(__name__)

SIGNALS_REJECTED: Final = Counter(
    "flushwatch_alerts_rejected_signals_total",
    "Signal stream entries (undecodable) or signals (invalid) the alert role could not use.",
    ["reason"],
)
EVENTS_SUPPRESSED: Final = Counter(
    "flushwatch_alerts_suppressed_events_total", "Stage changes not published as events, by reason.", ["reason"]
)

_PENDING: Final = "0"
_NEW: Final = ">"


class Cooldown:
    """Admits a stage change if it escalates, if it pauses an episode that the last admitted change left
    running (news: the flush is not done, fuel remains), or if ``seconds`` of event time passed since the
    last admitted change of the same asset and side."""

    def __init__(self, seconds: float) -> None:
        self._window_ns = int(seconds * 1e9)
        self._last: dict[tuple[str, str], tuple[int, int, bool]] = {}

    def admit(self, change: StageChange) -> bool:
        key = (change.asset, change.side)
        last = self._last.get(key)
        first_pause = last is not None and change.paused and not last[2] and change.stage == last[0]
        if last is not None and change.stage <= last[0] and change.ts - last[1] < self._window_ns and not first_pause:
            return False
        self._last[key] = (change.stage, change.ts, change.paused)
        return True


def _age_s(ts_recv: int) -> float:
    return max(0.0, (time.time_ns() - ts_recv) / 1e9)


class AlertService:
    """Consumes ``signals_key(shard)`` of ``shards`` as ``consumer`` in group ``ALERTS_GROUP``.

    ``sink`` None runs without MQTT (exporter only). ``ready`` is set once every consumer group exists: the
    groups start at the stream's end (``$``), so signals written before the first ever start are not replayed.
    """

    def __init__(
        self,
        redis: Redis,
        shards: Sequence[int],
        sink: AlertSink | None,
        exporter_state: AssetStateCollector,
        *,
        consumer: str,
        read_count: int = 256,
        block_ms: int = 100,
        cooldown_s: float = 300.0,
        retry_max_s: float = 5.0,
        coalesce_states: bool = True,
    ) -> None:
        if not 1 <= block_ms <= 2000:
            raise ValueError("block_ms must be within 1..2000 (below the client's 5 s socket timeout)")
        self._redis = redis
        self._keys = [signals_key(shard) for shard in shards]
        self._sink = sink
        self._exporter = exporter_state
        self._consumer = consumer
        self._read_count = read_count
        self._block_ms = block_ms
        self._cooldown = Cooldown(cooldown_s)
        self._retry_max_s = retry_max_s
        # Which snapshots share a read, and so which are coalesced, depends on timing: a replay, which must
        # publish the same payloads every time, turns coalescing off and publishes every snapshot in order.
        self._coalesce_states = coalesce_states
        self._groups: set[str] = set()
        self._warn = RateLimitedLog(log)
        self.ready = asyncio.Event()
        # Exported at 0 from the start, not at the first reject, suppression or error.
        for reason in ("undecodable", "invalid"):
            SIGNALS_REJECTED.labels(reason=reason)
        EVENTS_SUPPRESSED.labels(reason="cooldown")
        WRITER_ERRORS.labels(role="alerts")

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set and a read finds nothing more: what the detector emitted
        while shutting down is still published."""
        await asyncio.gather(*(self._follow(key, stop) for key in self._keys))

    async def _follow(self, key: str, stop: asyncio.Event) -> None:
        """One shard's signals. A reader per shard rather than one XREADGROUP over every stream: on Redis
        Cluster the shards live in different slots, and one command may only touch one slot. A shard's assets
        are its own, so the cooldown of an asset never depends on another shard's order."""
        group_exists = False
        failures = 0
        cursor: StreamIdT = _PENDING
        while True:
            try:
                if not group_exists:
                    await ensure_group(self._redis, key, ALERTS_GROUP, "$")
                    group_exists, cursor = True, _PENDING
                    self._groups.add(key)
                    if len(self._groups) == len(self._keys):
                        self.ready.set()
                reply = await self._redis.xreadgroup(ALERTS_GROUP, self._consumer, {key: cursor},
                                                     count=self._read_count, block=self._block_ms)
                if not await self._process(reply):
                    if cursor == _PENDING:  # own pending entries all re-processed
                        cursor = _NEW
                    elif stop.is_set():
                        return
                failures = 0
            except RedisError as exc:
                if stop.is_set():
                    return
                # Redis may have restarted without its data: recreate the group, re-read what is pending.
                group_exists = False
                WRITER_ERRORS.labels(role="alerts").inc()
                self._warn.warning("redis", "alerts: Redis error, retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(self._retry_max_s, 0.1 * 2.0 ** min(failures, 16)))
                failures += 1

    async def _process(self, reply: Any) -> int:
        """Handle one read; returns how many entries it held."""
        acks: dict[str, list[bytes]] = {}
        snapshots: dict[str, AssetState] = {}
        for stream, entry_id, fields in entries_of(reply):
            acks.setdefault(stream, []).append(entry_id)
            try:
                signals = decode_signals(fields)
            except ValueError as exc:  # msgspec.DecodeError is one
                self._reject("undecodable", "entry %r of %s: %s", entry_id, stream, exc)
                continue
            for signal in signals:
                if isinstance(signal, StageChange):
                    await self._on_change(signal)
                elif self._coalesce_states:
                    snapshots[signal.asset] = signal
                else:
                    await self._on_state(signal)
        for state in snapshots.values():
            await self._on_state(state)
        for stream, ids in acks.items():
            await self._redis.xack(stream, ALERTS_GROUP, *ids)
        return sum(len(ids) for ids in acks.values())

    async def _on_change(self, change: StageChange) -> None:
        LIVE_PAGE.change(change)  # every change, as the detector sent it: the page is no alert channel
        if self._sink is None:
            return
        try:
            payload = EventPayload.from_signal(change)
        except ValueError as exc:
            self._reject("invalid", "stage change of %r: %s", change.asset, exc)
            return
        if not self._cooldown.admit(change):
            EVENTS_SUPPRESSED.labels(reason="cooldown").inc()
            return
        await self._sink.publish(events_topic(change.asset), payload.encode(), retain=False, kind="event")
        PIPELINE_LATENCY.labels(sink="mqtt").observe(_age_s(change.ts_recv))

    async def _on_state(self, state: AssetState) -> None:
        self._exporter.update(state)
        LIVE_PAGE.update(state)
        PIPELINE_LATENCY.labels(sink="metrics").observe(_age_s(state.ts_recv))
        if self._sink is None:
            return
        try:
            payload = StatePayload.from_signal(state)
        except ValueError as exc:
            self._reject("invalid", "snapshot of %r: %s", state.asset, exc)
            return
        await self._sink.publish(state_topic(state.asset), payload.encode(), retain=True, kind="state")

    def _reject(self, reason: str, msg: str, *args: object) -> None:
        SIGNALS_REJECTED.labels(reason=reason).inc()
        self._warn.warning(reason, "alerts: dropped %s signal: " + msg, reason, *args)
