"""AlertService end to end: signals written to a real Redis, read back from a real mosquitto and the exporter."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import msgspec
import pytest
from conftest import receive, subscriber
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from alerts.exporter import AssetStateCollector
from alerts.models import EventPayload, StatePayload
from alerts.mqtt import MqttPublisher
from alerts.service import AlertService
from flushwatch.servers import RunningServer, start_redis
from flushwatch.settings import MqttTarget
from flushwatch.signals import (
    FEATURE_NAMES,
    TOTAL_KEYS,
    AssetState,
    SideState,
    Signal,
    StageChange,
    packed,
    stage_name,
)
from flushwatch.streams import ALERTS_GROUP, encode_batch, shard_of, signals_key

PREFIX = "fwsvc/v1"
SHARDS = (0, 1)
T0 = 1_727_740_800_000_000_000
SECOND = 1_000_000_000


def key_of(asset: str) -> str:
    return signals_key(shard_of(asset, len(SHARDS)))


def snapshot(asset: str, *, long_stage: int = 0, long_score: float = 20.0, short_score: float = 5.0,
             ts: int = T0, episode: str = "") -> AssetState:
    return AssetState(
        asset=asset,
        ts=ts,
        ts_recv=time.time_ns(),
        long=SideState("long", long_stage, stage_name(long_stage, False), long_score, episode),
        short=SideState("short", 0, "calm", short_score, ""),
        feature_values=packed({"price": 63_000.0, "funding_8h": 0.0004, "z1": math.nan}, FEATURE_NAMES),
        total_values=packed({"liq_long_usd": 1e6, "liq_short_usd": 0.0, "taker_buy_usd": 5e8, "taker_sell_usd": 6e8,
                             "trades": 1000.0}, TOTAL_KEYS),
    )


def change(asset: str, side: str, stage_from: int, stage: int, ts: int, episode: str = "ep-1",
           paused: bool = False) -> StageChange:
    return StageChange(
        asset=asset,
        side=side,  # type: ignore[arg-type]
        ts=ts,
        ts_recv=time.time_ns(),
        stage_from=stage_from,
        stage=stage,
        stage_name=stage_name(stage, False),
        overheat_score=55.5,
        episode_id=episode,
        evidence={"liq_ratio_long": 7.5, "z1": -3.2, "oi_chg_5m": math.nan},
        thresholds={"liq_trigger_ratio": 6.0},
        paused=paused,
        conditions=["liq_rate >= 6 x baseline"],
    )


def entry(signals: list[Signal]) -> dict[FieldT, EncodableT]:
    # copied into the wider (invariant) dict type that redis-py's xadd is annotated with
    return {name: value for name, value in encode_batch(signals).items()}


async def write(redis: Redis, *signals: Signal) -> None:
    await redis.xadd(key_of(signals[0].asset), entry(list(signals)))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], Awaitable[bool]], wait_s: float = 10.0) -> None:
    async with asyncio.timeout(wait_s):
        while not await check():  # noqa: ASYNC110 -- polls another process's state; no event to wait on
            await asyncio.sleep(0.02)


async def pending(redis: Redis) -> int:
    total = 0
    for shard in SHARDS:
        info = await redis.xpending(signals_key(shard), ALERTS_GROUP)
        total += int(info["pending"])
    return total


@dataclass
class Harness:
    service: AlertService
    redis: Redis
    collector: AssetStateCollector
    registry: CollectorRegistry


@contextlib.asynccontextmanager
async def running(redis_url: str, mqtt_port: int | None, *, consumer: str = "alerts-1") -> AsyncIterator[Harness]:
    redis = Redis.from_url(redis_url)
    publisher = None
    if mqtt_port is not None:
        publisher = MqttPublisher(MqttTarget(host="127.0.0.1", port=mqtt_port), prefix=PREFIX,
                                  client_id=f"svc-{uuid.uuid4().hex[:8]}", queue_max=1000)
        publisher.start()
    collector = AssetStateCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    service = AlertService(redis, SHARDS, publisher, collector, consumer=consumer, block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.ready.wait(), 10)
        yield Harness(service, redis, collector, registry)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        if publisher is not None:
            await publisher.close()
        await redis.aclose()



def body(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    decoded: dict[str, Any] = json.loads(message.payload)
    return decoded


async def test_signals_become_state_event_and_metrics(redis_server: RunningServer, mosquitto: RunningServer) -> None:
    metrics_seen = sample("flushwatch_pipeline_latency_seconds_count", sink="metrics")
    mqtt_seen = sample("flushwatch_pipeline_latency_seconds_count", sink="mqtt")
    async with running(redis_server.url, mosquitto.port) as h, \
            subscriber(mosquitto.port, f"{PREFIX}/+/events", f"{PREFIX}/+/state") as live:
        ts = T0 + 5 * SECOND
        await write(h.redis, change("BTC", "long", 0, 3, ts, "BTC-long-1"),
                    snapshot("BTC", long_stage=3, long_score=55.5, ts=ts, episode="BTC-long-1"))
        await write(h.redis, snapshot("ETH", short_score=70.0))
        received = await receive(live, 3)
        topics = [m.topic.value for m in received]
        # the event precedes the state of its batch; ETH (another shard) may come before or after both
        assert topics.index(f"{PREFIX}/BTC/events") < topics.index(f"{PREFIX}/BTC/state")
        by_topic = {m.topic.value: m for m in received}

        event = body(by_topic[f"{PREFIX}/BTC/events"])
        raw_key = f"BTC|long|BTC-long-1|0|3|{ts}".encode()
        assert 0 < event.pop("received_ns") <= time.time_ns()  # the trigger frame's local receipt time
        assert event == {
            "schema_version": 1, "asset": "BTC", "side": "long", "stage": 3, "stage_from": 0,
            "stage_name": "liquidations_triggered", "overheat_score": 55.5, "ts": "2024-10-01T00:00:05.000000Z",
            "ts_ns": ts, "episode_id": "BTC-long-1", "evidence": {"liq_ratio_long": 7.5, "z1": -3.2},
            "thresholds": {"liq_trigger_ratio": 6.0}, "conditions": ["liq_rate >= 6 x baseline"], "paused": False,
            "idempotency_key": hashlib.sha256(raw_key).hexdigest()[:32],
        }
        state = body(by_topic[f"{PREFIX}/BTC/state"])
        assert {k: state[k] for k in ("asset", "side", "stage", "stage_name", "overheat_score", "episode_id",
                                      "ts_ns")} == {
            "asset": "BTC", "side": "long", "stage": 3, "stage_name": "liquidations_triggered",
            "overheat_score": 55.5, "episode_id": "BTC-long-1", "ts_ns": ts}
        assert state["sides"]["short"] == {"stage": 0, "stage_name": "calm", "overheat_score": 5.0,
                                           "episode_id": None, "paused": False}
        assert state["features"] == {"funding_8h": 0.0004, "price": 63_000.0}  # NaN left out
        eth = body(by_topic[f"{PREFIX}/ETH/state"])
        assert (eth["side"], eth["stage"], eth["overheat_score"], eth["episode_id"]) == ("short", 0, 70.0, None)

        async with subscriber(mosquitto.port, f"{PREFIX}/+/state") as late:
            retained = {m.topic.value: m for m in await receive(late, 2)}
        assert all(m.retain for m in retained.values())
        assert {t: m.payload for t, m in retained.items()} == {
            t: by_topic[t].payload for t in (f"{PREFIX}/BTC/state", f"{PREFIX}/ETH/state")}

        assert h.registry.get_sample_value("flushwatch_stage", {"asset": "BTC", "side": "long"}) == 3
        assert h.registry.get_sample_value("flushwatch_overheat_score", {"asset": "ETH", "side": "short"}) == 70
        assert h.registry.get_sample_value("flushwatch_liquidations_usd_total",
                                           {"asset": "BTC", "side": "long"}) == 1e6

        async def acked() -> bool:
            return await pending(h.redis) == 0

        await eventually(acked)
    assert sample("flushwatch_pipeline_latency_seconds_count", sink="metrics") - metrics_seen == 2
    assert sample("flushwatch_pipeline_latency_seconds_count", sink="mqtt") - mqtt_seen == 1


async def test_cooldown_holds_back_repeats_and_lower_stages(redis_server: RunningServer,
                                                           mosquitto: RunningServer) -> None:
    suppressed = sample("flushwatch_alerts_suppressed_events_total", reason="cooldown")
    async with running(redis_server.url, mosquitto.port) as h, \
            subscriber(mosquitto.port, f"{PREFIX}/+/events") as live:
        first = change("BTC", "long", 0, 3, T0)
        for signal in (
            first,
            first,  # redelivered: the same stage within the window
            change("BTC", "long", 3, 0, T0 + 10 * SECOND),  # lower, within 300 s: held back
            change("BTC", "short", 0, 1, T0 + 20 * SECOND, "ep-2"),  # the other side has its own window
            change("BTC", "long", 0, 3, T0 + 60 * SECOND),  # same stage again, within 300 s: held back
            change("BTC", "long", 3, 4, T0 + 70 * SECOND),  # escalation: at once
            change("BTC", "long", 4, 4, T0 + 90 * SECOND, paused=True),  # a pause: news, at once
            change("BTC", "long", 4, 4, T0 + 95 * SECOND),  # resumes within 300 s: held back
            change("BTC", "long", 4, 4, T0 + 99 * SECOND, paused=True),  # and pauses again: held back
            change("BTC", "long", 4, 3, T0 + 400 * SECOND),  # lower, but 310 s after the last published
        ):
            await write(h.redis, signal)
        events = [body(m) for m in await receive(live, 5)]  # the last written is the last published
    assert [(e["side"], e["stage_from"], e["stage"], e["ts_ns"], e["paused"]) for e in events] == [
        ("long", 0, 3, T0, False),
        ("short", 0, 1, T0 + 20 * SECOND, False),
        ("long", 3, 4, T0 + 70 * SECOND, False),
        ("long", 4, 4, T0 + 90 * SECOND, True),
        ("long", 4, 3, T0 + 400 * SECOND, False),
    ]
    assert events[0]["idempotency_key"] == EventPayload.from_signal(first).idempotency_key
    assert len({e["idempotency_key"] for e in events}) == 5
    assert sample("flushwatch_alerts_suppressed_events_total", reason="cooldown") - suppressed == 5


async def test_states_coalesce_per_asset_within_a_batch(redis_server: RunningServer,
                                                       mosquitto: RunningServer) -> None:
    async with running(redis_server.url, mosquitto.port) as h, \
            subscriber(mosquitto.port, f"{PREFIX}/+/state") as live:
        await write(h.redis, snapshot("BTC", long_score=10.0), snapshot("BTC", long_score=20.0),
                    snapshot("ETH"), snapshot("BTC", long_score=30.0))
        await write(h.redis, snapshot("SOL"))  # a later batch: everything before it has been delivered
        received = await receive(live, 3)
    assert [(m.topic.value, body(m)["overheat_score"]) for m in received] == [
        (f"{PREFIX}/BTC/state", 30.0), (f"{PREFIX}/ETH/state", 20.0), (f"{PREFIX}/SOL/state", 20.0)]


async def test_bad_entries_are_counted_acked_and_skipped(redis_server: RunningServer) -> None:
    undecodable = sample("flushwatch_alerts_rejected_signals_total", reason="undecodable")
    async with running(redis_server.url, None) as h:  # no MQTT: the exporter alone
        btc = key_of("BTC")
        await h.redis.xadd(btc, {"v": "1", "n": "1", "b": b"\xc1junk"})
        await h.redis.xadd(btc, {"unrelated": "field"})
        await h.redis.xadd(btc, {"v": "9", "n": "0", "b": encode_batch([snapshot("BTC")])[b"b"]})
        # packed by a detector whose features are in another order: refused, not read under the wrong names
        other = msgspec.to_builtins(snapshot("BTC", long_stage=2), builtin_types=(bytes,))
        other["layout"] ^= 1
        await h.redis.xadd(btc, {**encode_batch([]), b"n": b"1", b"b": msgspec.msgpack.encode([other])})
        await write(h.redis, snapshot("BTC", long_stage=1, long_score=math.nan))

        async def exported_and_acked() -> bool:
            stage = h.registry.get_sample_value("flushwatch_stage", {"asset": "BTC", "side": "long"})
            return stage == 1 and await pending(h.redis) == 0

        await eventually(exported_and_acked)
        assert h.registry.get_sample_value("flushwatch_overheat_score", {"asset": "BTC", "side": "long"}) is None
    assert sample("flushwatch_alerts_rejected_signals_total", reason="undecodable") - undecodable == 4


async def test_pending_entries_of_a_previous_run_are_processed(redis_server: RunningServer,
                                                              mosquitto: RunningServer) -> None:
    invalid = sample("flushwatch_alerts_rejected_signals_total", reason="invalid")
    redis = Redis.from_url(redis_server.url)
    btc = key_of("BTC")
    try:  # a previous run read an entry and died before acknowledging it
        await redis.xgroup_create(btc, ALERTS_GROUP, id="$", mkstream=True)
        await redis.xadd(btc, entry([snapshot("SOL", long_score=math.nan), snapshot("BTC", long_stage=1)]))
        await redis.xreadgroup(ALERTS_GROUP, "alerts-1", {btc: ">"})
        assert int((await redis.xpending(btc, ALERTS_GROUP))["pending"]) == 1
    finally:
        await redis.aclose()
    async with subscriber(mosquitto.port, f"{PREFIX}/+/state") as live, \
            running(redis_server.url, mosquitto.port, consumer="alerts-1") as h:
        (recovered,) = await receive(live, 1)
        assert (recovered.topic.value, body(recovered)["stage"]) == (f"{PREFIX}/BTC/state", 1)  # SOL is invalid
        await write(h.redis, snapshot("ETH"))  # and new entries follow
        (fresh,) = await receive(live, 1)
        assert fresh.topic.value == f"{PREFIX}/ETH/state"

        async def acked() -> bool:
            return await pending(h.redis) == 0

        await eventually(acked)
    assert sample("flushwatch_alerts_rejected_signals_total", reason="invalid") - invalid == 1


async def test_service_survives_a_redis_restart(redis_server: RunningServer) -> None:
    errors = sample("flushwatch_redis_errors_total", role="alerts")
    async with running(redis_server.url, None) as h:
        await write(h.redis, snapshot("BTC", long_stage=1))

        async def exported(stage: int) -> bool:
            return h.registry.get_sample_value("flushwatch_stage", {"asset": "BTC", "side": "long"}) == stage

        await eventually(lambda: exported(1))
        redis_server.stop()

        async def failing() -> bool:
            return sample("flushwatch_redis_errors_total", role="alerts") > errors

        await eventually(failing)
        restarted = start_redis(port=redis_server.port)
        try:
            async def group_recreated() -> bool:
                with contextlib.suppress(Exception):
                    groups = await h.redis.xinfo_groups(key_of("BTC"))
                    return any(g["name"] == ALERTS_GROUP.encode() for g in groups)
                return False

            await eventually(group_recreated)
            await write(h.redis, snapshot("BTC", long_stage=4))
            await eventually(lambda: exported(4))
        finally:
            restarted.stop()


def test_payloads_absorb_float_noise_but_reject_impossible_values() -> None:
    noisy = snapshot("BTC", long_score=100.00000000000001, short_score=-1e-15)
    state = StatePayload.from_signal(noisy)
    assert (state.side, state.overheat_score, state.sides.short.overheat_score) == ("long", 100.0, 0.0)
    tie = StatePayload.from_signal(snapshot("BTC", long_score=30.0, short_score=30.0))
    assert tie.side == "long"  # a full tie names the longs
    for bad in (snapshot("BTC", long_score=100.5), snapshot("BTC", short_score=math.nan),
                snapshot("BTC/PERP"), snapshot("BTC", ts=-1), snapshot("BTC", ts=10**30)):
        with pytest.raises(ValueError):
            StatePayload.from_signal(bad)
    with pytest.raises(ValueError):
        EventPayload.from_signal(msgspec.structs.replace(change("BTC", "long", 0, 3, T0), stage=9))
    assert StatePayload.from_signal(noisy).encode() == state.encode()  # stable bytes for the same snapshot
