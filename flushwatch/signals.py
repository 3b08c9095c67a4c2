"""What the detector tells the alert role, carried on the signals stream.

These are internal wire types (msgspec, MessagePack). The public, versioned payloads that leave the
process -- MQTT JSON, and the values behind ``/metrics`` -- are built from them in ``alerts``.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
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

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "price",
    "r1m",
    "r5m",
    "sigma1m",
    "sigma5m",
    "z1",
    "z5",
    "liq_rate_long",
    "liq_rate_short",
    "liq_base_long",
    "liq_base_short",
    "liq_ratio_long",
    "liq_ratio_short",
    "imbalance",
    "liq_share_long",
    "liq_share_short",
    "oi_usd",
    "oi_chg_5m",
    "oi_chg_1h",
    "oi_chg_24h",
    "price_chg_1h",
    "price_chg_24h",
    "funding_8h",
    "funding_pct",
    "premium_bps",
    "depth1_usd",
    "depth_ratio",
    "spread_bps",
    "overheat_long",
    "overheat_short",
    "oi_chg_episode_long",
    "oi_chg_episode_short",
    "episode_peak_stage_long",
    "episode_peak_stage_short",
    "episode_peak_after_s_long",
    "episode_peak_after_s_short",
    "spread_ratio",
    "liq_to_depth_long",
    "liq_to_depth_short",
    "impact_bps_per_musd",
    "impact_ratio",
    "liq_accel_long",
    "liq_accel_short",
    "retrace_long",
    "retrace_short",
    "tradfi_closed",
    "assets_active",
    "flow_ratio_long",
    "flow_ratio_short",
    "liq_observed",
    # filled by the engine from the Hawkes and fuel-map states before each evaluation
    "branching_long",
    "branching_short",
    "branching_prev_long",
    "branching_prev_short",
    "branching_moment_long",
    "branching_moment_short",
    "fuel_below_1pct_usd",
    "fuel_below_2pct_usd",
    "fuel_below_5pct_usd",
    "fuel_below_10pct_usd",
    "fuel_above_1pct_usd",
    "fuel_above_2pct_usd",
    "fuel_above_5pct_usd",
    "fuel_above_10pct_usd",
    "sweeps_long",
    "sweeps_short",
    "fuel_calibration_long",
    "fuel_calibration_short",
    "liq_season_long",
    "liq_season_short",
    "depth_season",
    "spread_season",
    # computed from the columns above
    "fuel_to_depth_long",
    "fuel_to_depth_short",
    "depth_ratio_season",
)
"""The features of ``AssetState.features``, in the order of its packed values."""

_FEATURES: Final = struct.Struct(f"<{len(FEATURE_NAMES)}d")
_TOTALS: Final = struct.Struct(f"<{len(TOTAL_KEYS)}d")
LAYOUT: Final = zlib.crc32(" ".join((*FEATURE_NAMES, "|", *TOTAL_KEYS)).encode())
"""Names the order of the packed values: a snapshot packed by a detector of another layout is refused."""


def packed(values: Mapping[str, float], names: tuple[str, ...]) -> bytes:
    """``values`` in the order of ``names`` (``FEATURE_NAMES`` or ``TOTAL_KEYS``) as an ``AssetState`` packs
    them: float64 little-endian, NaN for a name ``values`` lacks."""
    unknown = values.keys() - set(names)
    if unknown:
        raise KeyError(f"not in the layout: {sorted(unknown)}")
    return struct.pack(f"<{len(names)}d", *(values.get(name, math.nan) for name in names))


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
    """A snapshot of one asset, sent at most once a second per asset and on every stage change.

    The feature and total values travel packed (float64 little-endian, in the order of ``FEATURE_NAMES`` and
    ``TOTAL_KEYS``): a detector sends hundreds of snapshots a second, and a dict of 75 named floats cost it
    more than the rest of the snapshot. ``features`` and ``totals`` name them."""

    asset: str
    ts: int
    """Event time (ns) of the detector clock when the snapshot was taken."""
    ts_recv: int
    """Local receive time (ns) of the newest event that went into it: the basis of latency figures."""
    long: SideState
    short: SideState
    feature_values: bytes
    """Current feature values (``packed``): price, returns, volatility, liquidation rates, funding, OI
    changes, depth."""
    total_values: bytes
    """Cumulative counters since start (``packed`` by ``TOTAL_KEYS``)."""
    venues: dict[str, VenueView] = {}
    """The venues behind the asset's market view."""
    layout: int = LAYOUT

    def __post_init__(self) -> None:
        # Runs on decode too: a snapshot of another layout (a detector of another version) is refused there.
        if self.layout != LAYOUT or len(self.feature_values) != _FEATURES.size \
                or len(self.total_values) != _TOTALS.size:
            raise ValueError(f"packed as layout {self.layout} with {len(self.feature_values)} + "
                             f"{len(self.total_values)} bytes; this version reads layout {LAYOUT} with "
                             f"{_FEATURES.size} + {_TOTALS.size}")

    @property
    def features(self) -> dict[str, float]:
        """Feature values by name (NaN where not known yet); made on each access."""
        return dict(zip(FEATURE_NAMES, _FEATURES.unpack(self.feature_values), strict=True))

    @property
    def totals(self) -> dict[str, float]:
        """Totals by ``TOTAL_KEYS``; made on each access."""
        return dict(zip(TOTAL_KEYS, _TOTALS.unpack(self.total_values), strict=True))


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
