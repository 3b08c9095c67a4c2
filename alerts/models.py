"""The public, versioned payloads the alert role publishes on MQTT (JSON).

Topics, under the configured prefix (``flushwatch/v1`` by default):

* ``<prefix>/<asset>/state``  -- :class:`StatePayload`, retained, QoS 1: the newest snapshot of an asset.
* ``<prefix>/<asset>/events`` -- :class:`EventPayload`, not retained, QoS 1: one message per published stage
  change. Delivery is at least once; drop duplicates by ``idempotency_key``.
* ``<prefix>/status``         -- :class:`StatusPayload`, retained: ``online`` on connect, ``offline`` on a
  clean close or, via the MQTT last will, when the process dies.

A new field may be added within a ``schema_version``; renaming or removing one bumps it. Timestamps are the
detector's event time: ``ts_ns`` (integer ns since the epoch) and ``ts`` (the same instant, ISO-8601 UTC).
Non-finite feature values are left out rather than sent as ``NaN``, which is not JSON.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

import flushwatch
from flushwatch.events import PositionSide
from flushwatch.signals import AssetState, SideState, StageChange, VenueView

SCHEMA_VERSION: Final = 1
STATUS_TOPIC: Final = "status"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ASSET_PATTERN: Final = r"^[^/+#\s\x00]+$"
"""An asset becomes one MQTT topic level, so it may not hold a separator or a wildcard."""


def state_topic(asset: str) -> str:
    return f"{asset}/state"


def events_topic(asset: str) -> str:
    return f"{asset}/events"


def iso_utc(ts_ns: int) -> str:
    """``2024-10-01T00:00:00.123456Z`` (always six decimals) for an instant in ns since the epoch;
    ``ValueError`` if out of range."""
    try:
        moment = _EPOCH + timedelta(microseconds=ts_ns // 1000)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    except OverflowError as exc:
        raise ValueError(f"timestamp {ts_ns} ns is out of range") from exc


def idempotency_key(
    asset: str, side: str, episode_id: str | None, stage_from: int, stage: int, ts_ns: int
) -> str:
    """The first 32 hex digits of SHA-256 over ``asset|side|episode_id|stage_from|stage|ts_ns`` (an absent
    episode is the empty string): a subscriber can recompute it, and a redelivered change keeps it."""
    raw = f"{asset}|{side}|{episode_id or ''}|{stage_from}|{stage}|{ts_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    """Finite values only, keys sorted so the same input always encodes to the same bytes."""
    return {k: float(v) for k, v in sorted(values.items()) if math.isfinite(v)}


def _score(score: float) -> float:
    # Two decimals are all a 0..100 score means, and rounding absorbs float noise such as
    # 100.00000000000001 that would otherwise fail the range check; NaN and real overshoots still fail it.
    return round(score, 2)


def _episode(episode_id: str) -> str | None:
    # The detector sends "" outside an episode; JSON subscribers test for null more naturally.
    return episode_id or None


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def encode(self) -> bytes:
        """The stable JSON encoding: fields in declaration order, dictionaries sorted by key."""
        return self.model_dump_json().encode()


class SidePayload(_Payload):
    stage: int = Field(ge=0, le=7)
    stage_name: str
    overheat_score: float = Field(ge=0, le=100)
    """Overheating of this side's positions, 0 (neutral) to 100 (extreme)."""
    episode_id: str | None
    paused: bool
    """Liquidations exhausted without the recovery signs of a flush (OI purged, funding reset, depth back,
    price retraced): a pause, fuel remains."""

    @classmethod
    def from_signal(cls, side: SideState) -> SidePayload:
        return cls(
            stage=side.stage,
            stage_name=side.stage_name,
            overheat_score=_score(side.overheat_score),
            episode_id=_episode(side.episode_id),
            paused=side.paused,
        )


class VenuePayload(_Payload):
    """One venue's part of the asset's market; ``null`` where the venue has not reported the value yet."""

    coverage: str
    """Its public liquidation feed: ``complete``, ``sampled`` (a lower bound) or ``none``."""
    oi_usd: float | None
    funding_8h: float | None
    premium_bps: float | None
    depth_1pct_usd: float | None
    liq_long_usd: float = Field(ge=0)
    """Liquidated notional since the detector started, by position side."""
    liq_short_usd: float = Field(ge=0)
    ts_ns: int = Field(ge=0)
    """Venue time of its newest open interest, funding, depth or liquidation event."""

    @classmethod
    def from_signal(cls, view: VenueView) -> VenuePayload:
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return cls(coverage=view.coverage, oi_usd=finite(view.oi_usd), funding_8h=finite(view.funding_8h),
                   premium_bps=finite(view.premium_bps), depth_1pct_usd=finite(view.depth_1pct_usd),
                   liq_long_usd=view.liq_long_usd, liq_short_usd=view.liq_short_usd, ts_ns=view.ts_event)


class SidesPayload(_Payload):
    long: SidePayload
    short: SidePayload


def _side_at_risk(state: AssetState) -> SideState:
    """The side with the higher stage, then the higher overheating score; longs on a full tie."""
    if (state.short.stage, state.short.overheat_score) > (state.long.stage, state.long.overheat_score):
        return state.short
    return state.long


class StatePayload(_Payload):
    """The newest snapshot of an asset; ``side`` and the fields after it describe the crowded side at risk.

    Example::

        {"schema_version":1,"asset":"BTC","side":"long","stage":3,"stage_name":"liquidations_triggered",
         "overheat_score":42.0,"ts":"2024-10-01T00:00:00.000000Z","ts_ns":1727740800000000000,"episode_id":"BTC-long-1",
         "sides":{"long":{...},"short":{...}},"features":{"funding_8h":0.0001,"price":63000.0,...}}
    """

    schema_version: int = SCHEMA_VERSION
    asset: str = Field(pattern=_ASSET_PATTERN)
    side: PositionSide
    stage: int = Field(ge=0, le=7)
    stage_name: str
    overheat_score: float = Field(ge=0, le=100)
    ts: str
    ts_ns: int = Field(ge=0)
    received_ns: int = Field(ge=0)
    """Local clock (ns) when the newest frame of the asset behind this snapshot arrived."""
    episode_id: str | None
    sides: SidesPayload
    features: dict[str, float]
    venues: dict[str, VenuePayload]
    """The venues behind the asset's market view, by venue name."""

    @classmethod
    def from_signal(cls, state: AssetState) -> StatePayload:
        """Raises ``ValueError`` (pydantic's ``ValidationError`` included) for a snapshot it cannot express."""
        risk = _side_at_risk(state)
        return cls(
            asset=state.asset,
            side=risk.side,
            stage=risk.stage,
            stage_name=risk.stage_name,
            overheat_score=_score(risk.overheat_score),
            ts=iso_utc(state.ts),
            ts_ns=state.ts,
            received_ns=state.ts_recv,
            episode_id=_episode(risk.episode_id),
            sides=SidesPayload(long=SidePayload.from_signal(state.long), short=SidePayload.from_signal(state.short)),
            features=_finite(state.features),
            venues={name: VenuePayload.from_signal(view) for name, view in sorted(state.venues.items())},
        )


class EventPayload(_Payload):
    """A stage change of one side of one asset, with the evidence, thresholds and conditions behind it."""

    schema_version: int = SCHEMA_VERSION
    asset: str = Field(pattern=_ASSET_PATTERN)
    side: PositionSide
    stage: int = Field(ge=0, le=7)
    stage_from: int = Field(ge=0, le=7)
    stage_name: str
    overheat_score: float = Field(ge=0, le=100)
    ts: str
    ts_ns: int = Field(ge=0)
    received_ns: int = Field(ge=0)
    """Local clock (ns) when the frame that triggered this evaluation arrived: ``publish time - received_ns``
    is the alert's end-to-end latency, which a subscriber can monitor."""
    episode_id: str | None
    evidence: dict[str, float]
    thresholds: dict[str, float]
    conditions: list[str]
    paused: bool
    """The episode is paused after this change: liquidations exhausted without the recovery signs of a flush,
    fuel remains. A pause (or its end) comes as an event with ``stage == stage_from``."""
    idempotency_key: str

    @classmethod
    def from_signal(cls, change: StageChange) -> EventPayload:
        """Raises ``ValueError`` (pydantic's ``ValidationError`` included) for a change it cannot express."""
        episode = _episode(change.episode_id)
        return cls(
            asset=change.asset,
            side=change.side,
            stage=change.stage,
            stage_from=change.stage_from,
            stage_name=change.stage_name,
            overheat_score=_score(change.overheat_score),
            ts=iso_utc(change.ts),
            ts_ns=change.ts,
            received_ns=change.ts_recv,
            episode_id=episode,
            evidence=_finite(change.evidence),
            thresholds=_finite(change.thresholds),
            conditions=list(change.conditions),
            paused=change.paused,
            idempotency_key=idempotency_key(
                change.asset, change.side, episode, change.stage_from, change.stage, change.ts
            ),
        )


class StatusPayload(_Payload):
    """Whether the alert role is connected. ``ts`` is local time; in the last will it is the time the
    connection was made, because the broker sends the will verbatim."""

    schema_version: int = SCHEMA_VERSION
    status: Literal["online", "offline"]
    ts: str
    version: str

    @classmethod
    def now(cls, status: Literal["online", "offline"]) -> StatusPayload:
        return cls(status=status, ts=iso_utc(time.time_ns()), version=flushwatch.__version__)
