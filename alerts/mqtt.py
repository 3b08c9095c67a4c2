"""MQTT publication behind a small ``AlertSink`` protocol (aiomqtt 2.x; the v3 API changes stay in this file).

``MqttPublisher.publish`` never waits for the broker: it puts the message in a bounded outbox and returns.
One task owns the connection and drains the outbox oldest first, at QoS 1, removing a message only after its
PUBACK, so a message is delivered at least once and in order across reconnects (payloads carry an
idempotency key for the rare duplicate after a lost PUBACK).

While the broker is unreachable the outbox keeps

* the newest retained message per topic only -- a state snapshot supersedes the previous one, so the outbox
  holds at most one state per asset however long the outage;
* every other message up to ``queue_max`` in all; beyond it the oldest message is dropped and counted in
  ``flushwatch_mqtt_dropped_messages_total``.

Each connection attempt uses a fresh ``aiomqtt.Client``: paho keeps its own copy of unacknowledged QoS 1
messages and would resend them on reconnect, next to ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol

import aiomqtt

from alerts.models import STATUS_TOPIC, StatusPayload
from flushwatch.backoff import Backoff, jittered_exponential
from flushwatch.settings import MqttTarget
from flushwatch.telemetry import MQTT_CONNECTED, MQTT_DROPPED, MQTT_PUBLISHED, MQTT_QUEUED, RateLimitedLog

log = logging.getLogger(__name__)

class AlertSink(Protocol):
    async def publish(self, topic_suffix: str, payload: bytes, *, retain: bool, kind: str) -> None:
        """Accept a message for delivery to ``<prefix>/<topic_suffix>``; returns once it is queued."""
        ...


@dataclass(frozen=True, slots=True)
class _Message:
    topic_suffix: str
    payload: bytes
    retain: bool
    kind: str


class _Outbox:
    """Messages waiting for the broker, oldest first, bounded, with retained messages coalesced per topic."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: OrderedDict[int, _Message] = OrderedDict()
        self._retained: dict[str, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: _Message) -> int:
        """Append ``message``; returns how many messages were dropped to keep the bound."""
        if message.retain:
            superseded = self._retained.pop(message.topic_suffix, None)
            if superseded is not None:
                # Appended anew rather than replaced in place: a state stays behind the events before it.
                self._items.pop(superseded, None)
        seq = next(self._seq)
        self._items[seq] = message
        if message.retain:
            self._retained[message.topic_suffix] = seq
        dropped = 0
        while len(self._items) > self._limit:
            self._forget(*self._items.popitem(last=False))
            dropped += 1
        return dropped

    def head(self) -> tuple[int, _Message] | None:
        return next(iter(self._items.items()), None)

    def done(self, seq: int) -> None:
        """Remove a delivered message, unless it was superseded or dropped while in flight."""
        message = self._items.pop(seq, None)
        if message is not None:
            self._forget(seq, message)

    def _forget(self, seq: int, message: _Message) -> None:
        if message.retain and self._retained.get(message.topic_suffix) == seq:
            del self._retained[message.topic_suffix]


class MqttPublisher:
    """An ``AlertSink`` that publishes to one broker; ``start()`` inside the running loop, ``close()`` at the end.

    ``client_id`` must be unique per running instance: the broker disconnects a client when another connects
    with the same identifier, and two instances would push each other off in turn.
    """

    def __init__(
        self,
        target: MqttTarget,
        *,
        prefix: str,
        client_id: str,
        queue_max: int,
        backoff: Backoff | None = None,
        keepalive: int = 30,
        publish_timeout: float = 10.0,
    ) -> None:
        if queue_max < 1:
            raise ValueError("queue_max must be at least 1")
        self._target = target
        self._prefix = prefix.rstrip("/")
        self._client_id = client_id
        self._backoff = backoff or jittered_exponential(0.5, 30.0)
        self._keepalive = keepalive
        self._publish_timeout = publish_timeout
        self._outbox = _Outbox(queue_max)
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._drain_deadline = 0.0
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(log)

    @property
    def connected(self) -> bool:
        """True from the ``online`` status message until the connection is lost."""
        return self._connected

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-publisher")

    async def publish(self, topic_suffix: str, payload: bytes, *, retain: bool, kind: str) -> None:
        if self._closing.is_set():
            raise RuntimeError("publish after close")
        if not topic_suffix or any(c in topic_suffix for c in "+#\0"):
            raise ValueError(f"not a topic name: {topic_suffix!r}")
        dropped = self._outbox.put(_Message(topic_suffix, payload, retain, kind))
        if dropped:
            MQTT_DROPPED.inc(dropped)
            self._warn.warning("dropped", "MQTT outbox full (%d): dropped the oldest message", len(self._outbox))
        MQTT_QUEUED.set(len(self._outbox))
        self._wakeup.set()

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most ``drain_timeout`` s while connected), publish ``offline``
        (retained) and disconnect cleanly, so the broker discards the last will."""
        if self._closing.is_set():
            return
        self._drain_deadline = asyncio.get_running_loop().time() + drain_timeout
        self._closing.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._outbox:
            log.warning("MQTT publisher closed with %d undelivered messages", len(self._outbox))

    def _topic(self, suffix: str) -> str:
        return f"{self._prefix}/{suffix}"

    def _client(self) -> aiomqtt.Client:
        target = self._target
        offline = StatusPayload.now("offline").encode()
        return aiomqtt.Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password.get_secret_value() if target.password else None,
            identifier=self._client_id,
            will=aiomqtt.Will(self._topic(STATUS_TOPIC), offline, qos=1, retain=True),
            keepalive=self._keepalive,
            timeout=self._publish_timeout,
            tls_context=target.tls_context(),
        )

    async def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                async with self._client() as client:
                    failures = 0
                    await self._session(client)
                return
            except aiomqtt.MqttError as exc:
                self._warn.warning("connection", "MQTT %s:%d unavailable: %s", self._target.host,
                                   self._target.port, exc)
            finally:
                self._connected = False
                MQTT_CONNECTED.set(0)
            delay = self._backoff(failures)
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed, so the message iterator only ever ends by raising on disconnection: it is
        # the public way to notice a lost connection, both while idle and while a PUBACK is awaited (aiomqtt
        # would otherwise wait out its timeout on a dead connection).
        lost = asyncio.ensure_future(anext(client.messages))
        try:
            await self._unless_lost(self._status(client, "online"), lost)
            self._connected = True
            MQTT_CONNECTED.set(1)
            await self._drain(client, lost)
            self._connected = False
            await self._unless_lost(self._status(client, "offline"), lost)
        finally:
            if lost.done() and not lost.cancelled():
                lost.exception()  # retrieved: the MqttError raised by _unless_lost says the same
            lost.cancel()

    async def _status(self, client: aiomqtt.Client, status: Literal["online", "offline"]) -> None:
        await client.publish(self._topic(STATUS_TOPIC), StatusPayload.now(status).encode(), qos=1, retain=True)
        MQTT_PUBLISHED.labels(kind="status").inc()

    async def _drain(self, client: aiomqtt.Client, lost: asyncio.Future[aiomqtt.Message]) -> None:
        """Publish the outbox oldest first until closing (and drained, or out of time)."""
        loop = asyncio.get_running_loop()
        while True:
            head = self._outbox.head()
            if self._closing.is_set() and (head is None or loop.time() >= self._drain_deadline):
                return
            if head is None:
                self._wakeup.clear()
                await self._unless_lost(self._wakeup.wait(), lost)
                continue
            seq, message = head
            await self._unless_lost(
                client.publish(self._topic(message.topic_suffix), message.payload, qos=1, retain=message.retain),
                lost,
            )
            self._outbox.done(seq)
            MQTT_QUEUED.set(len(self._outbox))
            MQTT_PUBLISHED.labels(kind=message.kind).inc()

    @staticmethod
    async def _unless_lost(step: Awaitable[object], lost: asyncio.Future[aiomqtt.Message]) -> None:
        """Await ``step``, or raise ``MqttError`` as soon as the connection is lost."""
        task = asyncio.ensure_future(step)
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            return
        task.cancel()
        raise aiomqtt.MqttError("connection lost") from lost.exception()
