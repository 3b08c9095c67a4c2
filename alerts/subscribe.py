"""The reference subscriber: prints flushwatch alerts from MQTT, one line each (``flushwatch subscribe``).

It subscribes to ``<prefix>/+/events`` and ``<prefix>/status`` at QoS 1 and, for every message,

* validates the payload with the pydantic model (:class:`~alerts.models.EventPayload`,
  :class:`~alerts.models.StatusPayload`); a payload that does not validate is printed as ``invalid`` with
  the reason and never stops the subscriber. Unknown top-level fields are ignored (a field may be added
  within a ``schema_version``); a newer ``schema_version`` is reported as invalid;
* filters events by asset (``--asset``, case-insensitive) and by the stage the change reaches
  (``--min-stage``: ``stage >= min_stage``);
* drops duplicates by ``idempotency_key`` (delivery is at least once; a redelivered change keeps its key);
* prints time, asset, side, the stage change in colour, the overheating score and key evidence.

It reconnects with backoff after losing the broker; the duplicate filter survives reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import OrderedDict
from typing import Any, Final, TypeVar

import aiomqtt
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from alerts.models import SCHEMA_VERSION, STATUS_TOPIC, EventPayload, StatusPayload
from flushwatch.backoff import Backoff, jittered_exponential
from flushwatch.settings import MqttTarget

STAGE_STYLES: Final[dict[int, str]] = {
    0: "green",
    1: "yellow",
    2: "dark_orange",
    3: "dark_orange",
    4: "red",
    5: "red",
    6: "bold red",
    7: "bold magenta",
}
KEY_EVIDENCE: Final[tuple[str, ...]] = ("price", "r5m", "z1", "liq_ratio_{side}", "liq_share_{side}",
                                         "oi_chg_5m", "funding_8h")
"""Evidence shown on an alert line, in this order, when present (``{side}`` is the alert's side)."""
M = TypeVar("M", bound=BaseModel)

DEDUP_WINDOW: Final = 10_000
"""How many recent idempotency keys are remembered."""


class _Seen:
    """The most recent ``limit`` keys, oldest forgotten first."""

    def __init__(self, limit: int = DEDUP_WINDOW) -> None:
        self._limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True if ``key`` is new (and remembers it)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def parse(model: type[M], raw: bytes) -> M:
    """Validate ``raw`` JSON as ``model``, ignoring unknown top-level fields; ``ValueError`` if invalid."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"not a JSON object: {type(body).__name__}")
    version = body.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is newer than this subscriber ({SCHEMA_VERSION})")
    known = {k: v for k, v in body.items() if k in model.model_fields}
    try:
        return model.model_validate(known)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValueError(f"{where}: {first['msg']}{more}") from None


def _number(value: float) -> str:
    return f"{value:.6g}"


def format_event(event: EventPayload) -> Text:
    """One line: time, asset, side, ``from → to stage_name``, score, key evidence, conditions."""
    time_part = event.ts.replace("T", " ")[:23] if "T" in event.ts else event.ts
    up = event.stage > event.stage_from
    arrow_style = "red" if up else "green"
    line = Text()
    line.append(f"{time_part} ", style="dim")
    line.append(f"{event.asset:<6} ", style="bold")
    line.append(f"{event.side:<5} ", style="cyan" if event.side == "long" else "magenta")
    line.append(str(event.stage_from), style=STAGE_STYLES.get(event.stage_from, ""))
    line.append(" ↑ " if up else " ↓ " if event.stage < event.stage_from else " = ", style=arrow_style)
    line.append(f"{event.stage} {event.stage_name}", style=STAGE_STYLES.get(event.stage, ""))
    if event.paused:
        line.append("  PAUSE — fuel remains", style="bold yellow")
    line.append(f"  score {event.overheat_score:g}")
    shown = []
    for template in KEY_EVIDENCE:
        key = template.format(side=event.side)
        if key in event.evidence:
            shown.append(f"{key}={_number(event.evidence[key])}")
    if shown:
        line.append("  " + " ".join(shown), style="dim")
    if event.conditions:
        line.append("  [" + "; ".join(event.conditions) + "]", style="italic")
    return line


def format_status(status: StatusPayload) -> Text:
    line = Text()
    line.append(f"{status.ts.replace('T', ' ')[:23]} ", style="dim")
    line.append("publisher ")
    line.append(status.status, style="bold green" if status.status == "online" else "bold red")
    line.append(f" (flushwatch {status.version})", style="dim")
    return line


class AlertPrinter:
    """Validates, filters, de-duplicates and prints messages; pure, so the network part stays small."""

    def __init__(self, console: Console, prefix: str, *, asset: str | None = None, min_stage: int = 0) -> None:
        self.console = console
        self.prefix = prefix.rstrip("/")
        self.asset = asset.upper() if asset else None
        self.min_stage = min_stage
        self._seen = _Seen()
        self.shown = 0
        self.duplicates = 0
        self.filtered = 0
        self.invalid = 0

    @property
    def topics(self) -> list[str]:
        return [f"{self.prefix}/{STATUS_TOPIC}", f"{self.prefix}/+/events"]

    def handle(self, topic: str, payload: Any) -> None:
        """Print what one message means; never raises for anything a broker can deliver."""
        raw = _bytes(payload)
        if topic == f"{self.prefix}/{STATUS_TOPIC}":
            if not raw:
                return  # a cleared retained status
            try:
                status = parse(StatusPayload, raw)
            except ValueError as exc:
                self._invalid(topic, str(exc))
                return
            self.console.print(format_status(status))
            return
        rest = topic.removeprefix(f"{self.prefix}/")
        topic_asset, _, kind = rest.rpartition("/")
        if kind != "events" or not topic_asset:
            return
        if self.asset is not None and topic_asset.upper() != self.asset:
            self.filtered += 1
            return
        try:
            event = parse(EventPayload, raw)
        except ValueError as exc:
            self._invalid(topic, str(exc))
            return
        if event.asset != topic_asset:
            self._invalid(topic, f"payload asset {event.asset!r} does not match the topic")
            return
        if event.stage < self.min_stage:
            self.filtered += 1
            return
        if not self._seen.add(event.idempotency_key):
            self.duplicates += 1
            return
        self.shown += 1
        self.console.print(format_event(event))

    def _invalid(self, topic: str, reason: str) -> None:
        self.invalid += 1
        self.console.print(f"[bold yellow]invalid[/] {escape(topic)}: {escape(reason)}")


def _client(target: MqttTarget, identifier: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password.get_secret_value() if target.password else None,
        identifier=identifier,
        tls_context=target.tls_context(),
    )


async def run_subscriber(
    target: MqttTarget,
    prefix: str,
    asset: str | None,
    min_stage: int,
    console: Console,
    stop: asyncio.Event | None = None,
    *,
    ready: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> AlertPrinter:
    """Print alerts from ``target`` until ``stop`` is set (forever if None); returns the printer (counts).

    ``ready`` is set each time the subscriptions are in place (the broker acknowledged them).
    """
    printer = AlertPrinter(console, prefix, asset=asset, min_stage=min_stage)
    stop = stop or asyncio.Event()
    backoff = backoff or jittered_exponential(0.5, 30.0)
    identifier = f"flushwatch-sub-{uuid.uuid4().hex[:8]}"
    failures = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            try:
                async with _client(target, identifier) as client:
                    for topic in printer.topics:
                        await client.subscribe(topic, qos=1)
                    if failures:
                        console.print(f"[dim]reconnected to {escape(target.host)}:{target.port}[/]")
                    failures = 0
                    if ready is not None:
                        ready.set()
                    await _consume(client, printer, stopping)
                return printer
            except aiomqtt.MqttError as exc:
                delay = backoff(failures)
                failures += 1
                console.print(
                    f"[bold red]MQTT {escape(target.host)}:{target.port} unavailable[/]: {escape(str(exc))}; "
                    f"retrying in {delay:.1f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), delay)
        return printer
    finally:
        stopping.cancel()


async def _consume(client: aiomqtt.Client, printer: AlertPrinter, stopping: asyncio.Future[Any]) -> None:
    """Handle messages until ``stopping`` completes; ``MqttError`` when the connection is lost."""
    messages = aiter(client.messages)
    while True:
        following = asyncio.ensure_future(anext(messages))
        try:
            await asyncio.wait((following, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also on cancellation (Ctrl-C): never leave the read behind to fail unobserved.
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
        if following.cancelled():
            return
        printer.handle(following.result().topic.value, following.result().payload)
