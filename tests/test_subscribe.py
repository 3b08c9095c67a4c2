"""The reference subscriber (``flushwatch subscribe``) against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from pydantic import SecretStr
from rich.console import Console

from alerts.models import EventPayload, StatusPayload
from alerts.subscribe import STAGE_STYLES, AlertPrinter, format_event, run_subscriber
from flushwatch.servers import RunningServer, ServerUnavailable, free_port, start_mosquitto
from flushwatch.settings import MqttTarget
from flushwatch.signals import StageChange, stage_name
from flushwatch.waiting import until

PREFIX = "fwsub/v1"
T0 = 1_727_740_800_000_000_000


def event(asset: str, stage_from: int, stage: int, *, ts: int = T0, side: str = "long") -> EventPayload:
    return EventPayload.from_signal(StageChange(
        asset=asset, side=side, ts=ts, ts_recv=ts + 1_000, stage_from=stage_from, stage=stage,  # type: ignore[arg-type]
        stage_name=stage_name(stage, False), overheat_score=61.25, episode_id=f"{asset}-{side}-1",
        evidence={"price": 63_123.5, f"liq_ratio_{side}": 7.5, "z1": -3.25, "oi_chg_5m": math.nan, "sigma1m": 0.1},
        thresholds={"liq_trigger_ratio": 6.0}, conditions=["liq_ratio >= liq_trigger_ratio"],
    ))


def recording_console() -> Console:
    return Console(file=io.StringIO(), record=True, width=400, color_system="truecolor", force_terminal=True)


def lines(console: Console) -> list[str]:
    return [line for line in console.export_text(clear=False, styles=False).splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def running_subscriber(target: MqttTarget, console: Console, *, asset: str | None = None,
                             min_stage: int = 0) -> AsyncIterator[asyncio.Task[AlertPrinter]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_subscriber(target, PREFIX, asset, min_stage, console, stop, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


@contextlib.asynccontextmanager
async def publisher(port: int, **auth: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"pub-{uuid.uuid4().hex[:8]}", **auth) as client:
        yield client


async def test_prints_filters_dedups_and_survives_invalid_payloads(mosquitto: RunningServer) -> None:
    console = recording_console()
    target = MqttTarget(host="127.0.0.1", port=mosquitto.port)
    async with publisher(mosquitto.port) as pub:
        await pub.publish(f"{PREFIX}/status", StatusPayload.now("online").encode(), qos=1, retain=True)
        async with running_subscriber(target, console, asset="btc", min_stage=3) as task:
            shown = event("BTC", 1, 3)
            sent: list[tuple[str, bytes | str]] = [
                ("BTC/events", shown.encode()),
                ("BTC/events", shown.encode()),                         # duplicate (redelivery)
                ("BTC/events", b"{not json"),                           # invalid
                ("BTC/events", json.dumps(json.loads(shown.encode()) | {"stage": 9}).encode()),  # invalid
                ("BTC/events", json.dumps({"asset": "BTC", "stage": 4}).encode()),  # invalid
                ("ETH/events", event("ETH", 3, 4).encode()),            # asset filtered out
                ("BTC/events", event("BTC", 0, 1, ts=T0 + 1).encode()),  # below --min-stage
                ("BTC/events", event("ETH", 3, 4, ts=T0 + 2).encode()),  # payload/topic mismatch
                ("BTC/state", b'{"stage": 4}'),                         # not subscribed
                ("BTC/events",                                           # a field added within version 1
                 json.dumps(json.loads(event("BTC", 4, 7, ts=T0 + 4).encode()) | {"new_field": 1}).encode()),
                ("BTC/events", json.dumps(json.loads(shown.encode()) | {"schema_version": 2}).encode()),
                ("BTC/events", event("BTC", 3, 4, ts=T0 + 3).encode()),  # the last one
            ]
            for suffix, payload in sent:
                await pub.publish(f"{PREFIX}/{suffix}", payload, qos=1)
            await until(lambda: "3 ↑ 4 cascade" in console.export_text(clear=False))
        printer = task.result()
    out = lines(console)
    assert "publisher online" in out[0]
    assert len(out) == 1 + 3 + 5, out  # status, three alerts, five invalid
    alerts = [line for line in out if "score 61.25" in line]
    assert len(alerts) == 3
    assert alerts[0].startswith("2024-10-01 00:00:00.000 BTC")
    assert "long  1 ↑ 3 liquidations_triggered" in alerts[0]
    assert "price=63123.5 z1=-3.25 liq_ratio_long=7.5" in alerts[0]
    assert "[liq_ratio >= liq_trigger_ratio]" in alerts[0]
    assert "sigma1m" not in alerts[0] and "oi_chg_5m" not in alerts[0]
    assert "4 ↑ 7 flushed" in alerts[1] and "3 ↑ 4 cascade" in alerts[2]
    invalid = [line for line in out if line.startswith("invalid")]
    assert len(invalid) == 5
    assert all(f"{PREFIX}/BTC/events" in line for line in invalid)
    assert "not JSON" in invalid[0]
    assert "stage: Input should be less than or equal to 7" in invalid[1]
    assert "Field required (+" in invalid[2]
    assert "does not match the topic" in invalid[3]
    assert "schema_version 2" in invalid[4]
    assert not any("ETH " in line for line in alerts)
    assert (printer.shown, printer.duplicates, printer.invalid, printer.filtered) == (3, 1, 5, 2)


async def test_without_filters_every_asset_and_stage_is_shown(mosquitto: RunningServer) -> None:
    console = recording_console()
    target = MqttTarget(host="127.0.0.1", port=mosquitto.port)
    async with publisher(mosquitto.port) as pub, running_subscriber(target, console):
        for payload in (event("ETH", 0, 1), event("SOL", 4, 0, side="short"), event("BTC", 3, 4)):
            await pub.publish(f"{PREFIX}/{payload.asset}/events", payload.encode(), qos=1)
        await until(lambda: "BTC" in console.export_text(clear=False))
    out = lines(console)
    assert [line.split()[2] for line in out] == ["ETH", "SOL", "BTC"]
    assert "short 4 ↓ 0 calm" in out[1]


async def test_username_and_password_come_from_the_target() -> None:
    try:
        broker = start_mosquitto(passwords={"alice": "s3cret"})
    except ServerUnavailable as exc:
        pytest.fail(f"cannot start a real server for the test: {exc}")
    try:
        console = recording_console()
        target = MqttTarget(host="127.0.0.1", port=broker.port, username="alice", password=SecretStr("s3cret"))
        async with publisher(broker.port, username="alice", password="s3cret") as pub, \
                running_subscriber(target, console):
            await pub.publish(f"{PREFIX}/status", StatusPayload.now("offline").encode(), qos=1)
            await until(lambda: "offline" in console.export_text(clear=False))
        assert "publisher offline" in lines(console)[0]
    finally:
        broker.stop()


async def test_an_unreachable_broker_is_reported_and_stop_still_works() -> None:
    console = recording_console()
    stop = asyncio.Event()
    target = MqttTarget(host="127.0.0.1", port=free_port())
    task = asyncio.create_task(run_subscriber(target, PREFIX, None, 0, console, stop, backoff=lambda attempt: 30.0))
    await until(lambda: "unavailable" in console.export_text(clear=False))
    stop.set()
    async with asyncio.timeout(5):
        printer = await task
    assert printer.shown == 0
    assert "retrying in 30.0 s" in lines(console)[0]


def test_the_stage_change_is_coloured() -> None:
    line = format_event(event("BTC", 1, 4))
    styles = {line.plain[span.start:span.end]: str(span.style) for span in line.spans}
    assert styles["4 cascade"] == STAGE_STYLES[4]
    assert styles["1"] == STAGE_STYLES[1]
    assert styles[" ↑ "] == "red"
    down = format_event(event("BTC", 7, 0))
    assert {down.plain[s.start:s.end]: str(s.style) for s in down.spans}[" ↓ "] == "green"


def test_odd_broker_payloads_never_raise() -> None:
    console = recording_console()
    printer = AlertPrinter(console, PREFIX)
    for payload in (None, b"", b"\xff\xfe", 42, 1.5, "[]", b"null", b'"x"', bytearray(b"{}")):
        printer.handle(f"{PREFIX}/BTC/events", payload)
    printer.handle(f"{PREFIX}/status", b"")  # a cleared retained status: ignored
    printer.handle(f"{PREFIX}/status", b'{"status": "maybe"}')
    printer.handle(f"{PREFIX}/BTC/other", b"{}")
    assert printer.invalid == 10 and printer.shown == 0
    assert all(line.startswith("invalid") for line in lines(console))
