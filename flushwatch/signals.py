"""What the detector tells the alert role, carried on the signals stream.

These are internal wire types (msgspec, MessagePack). The public, versioned payloads that leave the
process -- MQTT JSON, and the values behind ``/metrics`` -- are built from them in ``alerts``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from flushwatch.events import PositionSide

STAGE_NAMES: Final[dict[int, str]] = {
    0: "calm",
    1: "shock",
    2: "air_pocket",
    3: "liquidations_triggered",
    4: "cascade",
    5: "thin_book_impact",
    6: "snowball",
    7: "flushed",
}
"""Stages numbered as in the framework (``detector.stages`` says what each one means); stage 0 is reported as
``overheated`` when the overheating score is in its hot band."""

OVERHEATED_NAME: Final = "overheated"

EVENT_COUNT_KEYS: Final = ("trades", "liquidations", "funding_marks", "open_interest", "depth")
"""Keys of ``AssetState.totals`` counting the events of each kind the detector processed."""
TOTAL_KEYS: Final = ("liq_long_usd", "liq_short_usd", "taker_buy_usd", "taker_sell_usd", *EVENT_COUNT_KEYS)
"""Every key of ``AssetState.totals``: liquidated notional by position side, traded notional by taker side,
event counts by kind; all cumulative since the detector started."""


def stage_name(stage: int, overheated: bool) -> str:
    if stage == 0 and overheated:
        return OVERHEATED_NAME
    return STAGE_NAMES[stage]


class SideState(msgspec.Struct, frozen=True, gc=False):
    """One side of one asset: ``side`` is the crowded side that is at risk (longs in a down-flush)."""

    side: PositionSide
    stage: int
    stage_name: str
    overheat_score: float
    episode_id: str
    paused: bool = False
    """The episode's liquidations are exhausted but it lacks the recovery signs of a flush: fuel remains."""


class VenueView(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One venue's part of an asset's market. ``None`` where the venue has not reported the value yet."""

    coverage: str
    """Its liquidation feed: ``complete``, ``sampled`` (a lower bound) or ``none``."""
    oi_usd: float | None
    funding_8h: float | None
    premium_bps: float | None
    depth_1pct_usd: float | None
    liq_long_usd: float
    """Cumulative liquidated notional since start, by position side."""
    liq_short_usd: float
    ts_event: int
    """Venue time (ns) of its newest open interest, funding, depth or liquidation event."""


class AssetState(msgspec.Struct, frozen=True, gc=False, tag="state"):
    """A snapshot of one asset, sent at most once a second per asset and on every stage change."""

    asset: str
    ts: int
    """Event time (ns) of the detector clock when the snapshot was taken."""
    ts_recv: int
    """Local receive time (ns) of the newest event that went into it: the basis of latency figures."""
    long: SideState
    short: SideState
    features: dict[str, float]
    """Current feature values: price, returns, volatility, liquidation rates, funding, OI changes, depth."""
    totals: dict[str, float]
    """Cumulative counters since start, keyed by ``TOTAL_KEYS``."""
    venues: dict[str, VenueView] = {}
    """The venues behind the asset's market view."""


class StageChange(msgspec.Struct, frozen=True, gc=False, tag="change"):
    """A transition of one side of one asset, with the evidence that caused it."""

    asset: str
    side: PositionSide
    ts: int
    ts_recv: int
    stage_from: int
    stage: int
    stage_name: str
    overheat_score: float
    episode_id: str
    evidence: dict[str, float]
    """Feature values at the moment of the change."""
    thresholds: dict[str, float]
    """The thresholds those features were compared with."""
    conditions: list[str]
    """Which conditions held, in words (``liq_rate >= 6 x baseline``)."""
    paused: bool = False
    """After the change the episode is paused: exhausted without the recovery signs of a flush, fuel remains
    (a change with ``stage == stage_from`` and this flag set is the pause itself)."""


Signal = AssetState | StageChange
