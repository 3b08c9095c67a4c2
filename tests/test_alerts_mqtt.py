"""MqttPublisher against a real mosquitto, read back with a real aiomqtt subscriber."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from datetime import datetime
from typing import Any

import aiomqtt
import pytest
from conftest import receive, subscriber
from prometheus_client import REGISTRY

import flushwatch
from alerts.mqtt import MqttPublisher
from flushwatch.servers import RunningServer, free_port, start_mosquitto
from flushwatch.settings import MqttTarget

PREFIX = "fwtest/v1"
STATUS = f"{PREFIX}/status"


class RecordingBackoff:
    """A fixed reconnect delay that tells the test when an attempt failed.

    The delay is the test's window: a broker (re)started right after a failure gets the test's subscriber
    before the publisher's next attempt, so the subscriber sees everything the publisher flushes.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.failed = asyncio.Event()

    def __call__(self, attempt: int) -> float:
        self.failed.set()
        return self.delay


def make_publisher(port: int, *, queue_max: int = 100, backoff: Any = None) -> MqttPublisher:
    target = MqttTarget(host="127.0.0.1", port=port)
    return MqttPublisher(target, prefix=PREFIX, client_id=f"pub-{uuid.uuid4().hex[:8]}", queue_max=queue_max,
                         backoff=backoff)



def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def status_of(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    body: dict[str, Any] = json.loads(message.payload)
    assert body["schema_version"] == 1
    assert body["version"] == flushwatch.__version__
    assert datetime.fromisoformat(body["ts"]).tzinfo is not None
    return body


async def test_online_status_is_retained_and_messages_flow(mosquitto: RunningServer) -> None:
    publisher = make_publisher(mosquitto.port)
    async with subscriber(mosquitto.port, f"{PREFIX}/#") as live:
        publisher.start()
        try:
            (online,) = await receive(live, 1)
            assert online.topic.value == STATUS and status_of(online)["status"] == "online"
            await publisher.publish("BTC/state", b'{"stage":3}', retain=True, kind="state")
            (state,) = await receive(live, 1)
            assert (state.topic.value, state.payload, state.qos) == (f"{PREFIX}/BTC/state", b'{"stage":3}', 1)
            assert publisher.connected
            assert sample("flushwatch_mqtt_connected") == 1
            async with subscriber(mosquitto.port, STATUS, f"{PREFIX}/BTC/state") as late:
                retained = await receive(late, 2)
            by_topic = {m.topic.value: m for m in retained}
            assert all(m.retain for m in retained)
            assert status_of(by_topic[STATUS])["status"] == "online"
            assert by_topic[f"{PREFIX}/BTC/state"].payload == b'{"stage":3}'
        finally:
            await publisher.close()


async def test_clean_close_publishes_offline_and_suppresses_the_will(mosquitto: RunningServer) -> None:
    publisher = make_publisher(mosquitto.port)
    published = sample("flushwatch_mqtt_published_messages_total", kind="status")
    async with subscriber(mosquitto.port, f"{PREFIX}/#") as live:
        publisher.start()
        (online,) = await receive(live, 1)
        assert status_of(online)["status"] == "online"
        await publisher.close()
        assert not publisher.connected and sample("flushwatch_mqtt_connected") == 0
        # The sentinel goes out after the close: a will fired by the disconnect would arrive before it.
        await live.publish(f"{PREFIX}/sentinel", b"end", qos=1)
        after_close = await receive(live, 2)
    assert [m.topic.value for m in after_close] == [STATUS, f"{PREFIX}/sentinel"]
    assert status_of(after_close[0])["status"] == "offline"
    assert sample("flushwatch_mqtt_published_messages_total", kind="status") - published == 2
    async with subscriber(mosquitto.port, STATUS) as late:
        (retained,) = await receive(late, 1)
    assert retained.retain and status_of(retained)["status"] == "offline"
    with pytest.raises(RuntimeError):
        await publisher.publish("BTC/state", b"{}", retain=True, kind="state")


CHILD = """
import asyncio, sys
from alerts.mqtt import MqttPublisher
from flushwatch.settings import MqttTarget

async def main():
    target = MqttTarget(host="127.0.0.1", port=int(sys.argv[1]))
    publisher = MqttPublisher(target, prefix=sys.argv[2], client_id="will-child", queue_max=10)
    publisher.start()
    while not publisher.connected:
        await asyncio.sleep(0.01)
    print("connected", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_last_will_announces_offline_when_the_process_is_killed(mosquitto: RunningServer) -> None:
    async with subscriber(mosquitto.port, STATUS) as live:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(mosquitto.port), PREFIX, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert await asyncio.wait_for(child.stdout.readline(), 20) == b"connected\n"
            (online,) = await receive(live, 1)
            assert status_of(online)["status"] == "online"
            child.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
            (will,) = await receive(live, 1)
            assert status_of(will)["status"] == "offline"
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    async with subscriber(mosquitto.port, STATUS) as late:
        (retained,) = await receive(late, 1)
    assert retained.retain and status_of(retained)["status"] == "offline"


async def test_broker_restart_delivers_queued_messages_once_in_order(mosquitto: RunningServer) -> None:
    backoff = RecordingBackoff(1.5)
    publisher = make_publisher(mosquitto.port, backoff=backoff)
    published = sample("flushwatch_mqtt_published_messages_total", kind="event")
    publisher.start()
    restarted: RunningServer | None = None
    try:
        async with subscriber(mosquitto.port, f"{PREFIX}/+/events") as before:
            for i in range(2):
                await publisher.publish("BTC/events", f"e{i}".encode(), retain=False, kind="event")
            assert [m.payload for m in await receive(before, 2)] == [b"e0", b"e1"]
        mosquitto.stop()
        await asyncio.wait_for(backoff.failed.wait(), 10)
        assert not publisher.connected
        for i in range(2, 7):
            await publisher.publish("BTC/events", f"e{i}".encode(), retain=False, kind="event")
        assert sample("flushwatch_mqtt_queued_messages") == 5
        restarted = start_mosquitto(port=mosquitto.port)
        async with subscriber(restarted.port, f"{PREFIX}/+/events") as after:
            queued = await receive(after, 5)
            await publisher.publish("BTC/events", b"e7", retain=False, kind="event")
            queued += await receive(after, 1)
        assert [m.payload for m in queued] == [f"e{i}".encode() for i in range(2, 8)]
    finally:
        await publisher.close()
        if restarted is not None:
            restarted.stop()
    assert sample("flushwatch_mqtt_queued_messages") == 0
    assert sample("flushwatch_mqtt_published_messages_total", kind="event") - published == 8


async def test_a_message_in_flight_when_the_broker_dies_is_sent_again(mosquitto: RunningServer) -> None:
    backoff = RecordingBackoff(1.5)
    target = MqttTarget(host="127.0.0.1", port=mosquitto.port)
    # a publish timeout far beyond the test's waits: the loss must be noticed from the socket, not the timeout
    publisher = MqttPublisher(target, prefix=PREFIX, client_id="pub-inflight", queue_max=10, backoff=backoff,
                              publish_timeout=120)
    restarted: RunningServer | None = None
    try:
        async with subscriber(mosquitto.port, STATUS) as live:
            publisher.start()
            await receive(live, 1)  # online: the session is up
        mosquitto.proc.send_signal(signal.SIGSTOP)  # the broker reads nothing more and acknowledges nothing
        await publisher.publish("BTC/events", b"in-flight", retain=False, kind="event")
        mosquitto.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(backoff.failed.wait(), 10)
        restarted = start_mosquitto(port=mosquitto.port)
        async with subscriber(restarted.port, f"{PREFIX}/+/events") as after:
            delivered = await receive(after, 1)
            await publisher.publish("BTC/events", b"next", retain=False, kind="event")
            delivered += await receive(after, 1)
        assert [m.payload for m in delivered] == [b"in-flight", b"next"]
    finally:
        await publisher.close()
        if restarted is not None:
            restarted.stop()


async def test_outbox_bound_drops_oldest_and_coalesces_retained_state() -> None:
    port = free_port()  # no broker yet: everything waits in the outbox
    backoff = RecordingBackoff(1.5)
    publisher = make_publisher(port, queue_max=10, backoff=backoff)
    dropped = sample("flushwatch_mqtt_dropped_messages_total")
    publisher.start()
    broker: RunningServer | None = None
    try:
        await asyncio.wait_for(backoff.failed.wait(), 10)
        for i in range(12):
            await publisher.publish("BTC/events", f"e{i}".encode(), retain=False, kind="event")
        await publisher.publish("BTC/state", b"btc-old", retain=True, kind="state")
        await publisher.publish("BTC/events", b"e12", retain=False, kind="event")
        await publisher.publish("BTC/state", b"btc-new", retain=True, kind="state")  # supersedes btc-old
        await publisher.publish("ETH/state", b"eth", retain=True, kind="state")
        assert sample("flushwatch_mqtt_queued_messages") == 10
        assert sample("flushwatch_mqtt_dropped_messages_total") - dropped == 5  # e0..e4
        broker = start_mosquitto(port=port)
        async with subscriber(port, f"{PREFIX}/#") as live:
            delivered = await receive(live, 11)
        assert delivered[0].topic.value == STATUS and status_of(delivered[0])["status"] == "online"
        assert [(m.topic.value.removeprefix(PREFIX + "/"), m.payload) for m in delivered[1:]] == [
            *[("BTC/events", f"e{i}".encode()) for i in range(5, 13)],
            ("BTC/state", b"btc-new"),
            ("ETH/state", b"eth"),
        ]
        async with subscriber(port, f"{PREFIX}/BTC/state") as late:
            (retained,) = await receive(late, 1)
        assert retained.retain and retained.payload == b"btc-new"
    finally:
        await publisher.close()
        if broker is not None:
            broker.stop()


async def test_publish_rejects_wildcard_topics(mosquitto: RunningServer) -> None:
    publisher = make_publisher(mosquitto.port)
    for bad in ("", "BTC/+", "#"):
        with pytest.raises(ValueError):
            await publisher.publish(bad, b"{}", retain=False, kind="event")
    await publisher.close()


