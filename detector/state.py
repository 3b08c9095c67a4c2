"""The detector's memory: one struct of arrays, one row per slot (asset), mutated in place by the kernels.

Layout constants (channels, ring sizes, feature and total columns, condition bits) live here so the
kernels, the reference implementation and the engine read the same names. Everything a kernel touches is
a NumPy array; the Python helpers at the bottom turn rows into the dicts carried by ``StageChange``.

Conventions: times are event-time seconds (float64). "Never" is ``-inf`` for newest-time fields and
``+inf`` for ``t_first``, so min/max updates need no special case; unset values are NaN. A ring stores
one value per bucket (second, minute, 10 s) at ``ring[slot, bucket % capacity]``; ``*_last`` is the
absolute index of its newest bucket and ``*_first`` of its first one (-1 while empty). The liquidation
ring is a sum ring, per side (``liq_min[slot, side, minute % capacity]``): it adds rather than replaces, and
needs no ``_first``: a minute it was never given counts as zero, and the baseline starts at ``t_first``.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple, TypeVar

import numpy as np

from detector.params import FIELDS
from flushwatch.settings import DetectorSettings
from flushwatch.signals import FEATURE_NAMES, TOTAL_KEYS

# --- sides and stages -------------------------------------------------------------------------------
LONG: Final = 0
SHORT: Final = 1
SIDE_NAMES: Final = ("long", "short")

CALM: Final = 0
SHOCK: Final = 1
AIR_POCKET: Final = 2
TRIGGERED: Final = 3
CASCADE: Final = 4  # forced selling
THIN_BOOK: Final = 5
SNOWBALL: Final = 6
FLUSHED: Final = 7

# --- exponentially decayed accumulators (acc, acc_t columns) ------------------------------------------
CH_LIQ_FAST: Final = 0  # + side: fast liquidation USD, longs then shorts
CH_BUY: Final = 2  # taker-buy USD
CH_SELL: Final = 3  # taker-sell USD
N_CHANNELS: Final = 4

# --- time of the value currently held, per source (val_t columns) -------------------------------------
VT_PRICE, VT_TRADE, VT_MARK, VT_OI, VT_DEPTH = range(5)
N_VALUE_TIMES: Final = 5

# --- rings ----------------------------------------------------------------------------------------------
SEC_RING: Final = 900  # last price per second, 15 min
MIN_RING: Final = 1440  # last value (liquidations: the sum) per minute, 24 h
DEPTH_RING: Final = 360  # 1 %-depth (and spread) per 10 s, 1 h
DEPTH_BUCKET_S: Final = 10.0
RECENT_RING: Final = 5  # per-minute liquidation sums of every minute, episodes included: acceleration
SWEEP_WINDOW_S: Final = 600.0  # clusters swept this recently count towards a snowball

# --- hold-condition timers (cond_since[..., k]) -------------------------------------------------------
TM_TRIGGER: Final = 0  # since when liq_ratio >= liq_trigger_ratio
TM_EXHAUST: Final = 1  # since when liq_ratio < exhaust_ratio
TM_ACTIVE: Final = 2  # the last time the shock or air-pocket condition held (stage 1-2 timeout)
TM_AIR: Final = 3  # since when the air-pocket condition holds
N_TIMERS: Final = 4

# --- changed[slot, side] bits -------------------------------------------------------------------------
CHANGED_STAGE: Final = 1
CHANGED_OVERHEAT: Final = 2
CHANGED_PAUSE: Final = 4  # an exhausted episode without recovery signs paused, or went on

(
    F_PRICE,
    F_R1M,
    F_R5M,
    F_SIGMA1M,
    F_SIGMA5M,
    F_Z1,
    F_Z5,
    F_LIQ_RATE_LONG,
    F_LIQ_RATE_SHORT,
    F_LIQ_BASE_LONG,
    F_LIQ_BASE_SHORT,
    F_LIQ_RATIO_LONG,
    F_LIQ_RATIO_SHORT,
    F_IMBALANCE,
    F_LIQ_SHARE_LONG,
    F_LIQ_SHARE_SHORT,
    F_OI_USD,
    F_OI_CHG_5M,
    F_OI_CHG_1H,
    F_OI_CHG_24H,
    F_PRICE_CHG_1H,
    F_PRICE_CHG_24H,
    F_FUNDING_8H,
    F_FUNDING_PCT,
    F_PREMIUM_BPS,
    F_DEPTH1_USD,
    F_DEPTH_RATIO,
    F_SPREAD_BPS,
    F_OVERHEAT_LONG,
    F_OVERHEAT_SHORT,
    F_OI_CHG_EPISODE_LONG,
    F_OI_CHG_EPISODE_SHORT,
    F_EPISODE_PEAK_STAGE_LONG,
    F_EPISODE_PEAK_STAGE_SHORT,
    F_EPISODE_PEAK_AFTER_S_LONG,
    F_EPISODE_PEAK_AFTER_S_SHORT,
    F_SPREAD_RATIO,
    F_LIQ_TO_DEPTH_LONG,
    F_LIQ_TO_DEPTH_SHORT,
    F_IMPACT,
    F_IMPACT_RATIO,
    F_LIQ_ACCEL_LONG,
    F_LIQ_ACCEL_SHORT,
    F_RETRACE_LONG,
    F_RETRACE_SHORT,
    F_TRADFI_CLOSED,
    F_ASSETS_ACTIVE,
    F_FLOW_RATIO_LONG,
    F_FLOW_RATIO_SHORT,
    F_LIQ_OBSERVED,
    F_BRANCHING_LONG,
    F_BRANCHING_SHORT,
    F_BRANCHING_PREV_LONG,
    F_BRANCHING_PREV_SHORT,
    F_BRANCHING_MOMENT_LONG,
    F_BRANCHING_MOMENT_SHORT,
    F_FUEL_BELOW_1,
    F_FUEL_BELOW_2,
    F_FUEL_BELOW_5,
    F_FUEL_BELOW_10,
    F_FUEL_ABOVE_1,
    F_FUEL_ABOVE_2,
    F_FUEL_ABOVE_5,
    F_FUEL_ABOVE_10,
    F_SWEEPS_LONG,
    F_SWEEPS_SHORT,
    F_FUEL_CALIB_LONG,
    F_FUEL_CALIB_SHORT,
    F_LIQ_SEASON_LONG,
    F_LIQ_SEASON_SHORT,
    F_DEPTH_SEASON,
    F_SPREAD_SEASON,
    F_FUEL_TO_DEPTH_LONG,
    F_FUEL_TO_DEPTH_SHORT,
    F_DEPTH_RATIO_SEASON,
) = range(len(FEATURE_NAMES))
EXTERNAL_FEATURES: Final = (F_BRANCHING_LONG, F_SPREAD_SEASON + 1)
"""The half-open column range the engine fills from the Hawkes and fuel-map states; ``compute_features``
leaves it alone."""
N_FEATURES: Final = len(FEATURE_NAMES)

TOTAL_NAMES: Final = TOTAL_KEYS
(
    T_LIQ_LONG_USD,
    T_LIQ_SHORT_USD,
    T_BUY_USD,
    T_SELL_USD,
    T_TRADES,
    T_LIQUIDATIONS,
    T_FUNDING_MARKS,
    T_OPEN_INTEREST,
    T_DEPTH,
) = range(len(TOTAL_NAMES))
N_TOTALS: Final = len(TOTAL_NAMES)

REJECT_REASONS: Final[tuple[str, ...]] = ("bad_slot", "bad_kind", "bad_time", "bad_value")
"""Why ``apply_batch`` refused a row; the count per reason is its return value."""
R_BAD_SLOT, R_BAD_KIND, R_BAD_TIME, R_BAD_VALUE = range(len(REJECT_REASONS))
N_REJECT_REASONS: Final = len(REJECT_REASONS)

CONDITIONS: Final[tuple[str, ...]] = (
    "z1 <= -shock_z1 or z5 <= -shock_z5 (against the side)",
    "|r1m| or |r5m| >= shock_min_move (against the side)",
    "taker imbalance <= -shock_imbalance (against the side)",
    "liq_ratio >= liq_trigger_ratio",
    "liq_ratio >= liq_trigger_ratio for trigger_hold_s",
    "liq_ratio >= cascade_ratio",
    "liq_share >= cascade_liq_share and oi_chg_5m <= -cascade_oi_drop with price against the side over 5 m",
    "liq_ratio < exhaust_ratio for exhaust_hold_s",
    "liq_ratio < exhaust_ratio for episode_timeout_s in all since the last trigger",
    "open interest down >= oi_purge since the episode start",
    "funding_8h back to funding_neutral_8h (against the side)",
    "no new shock for shock_timeout_s",
    "flushed for flushed_hold_s",
    "overheat score >= overheat_hot",
    "overheat score < overheat_exit",
    "air pocket: 2 of depth_ratio < air_depth_ratio (air_depth_ratio_closed when TradFi is closed), "
    "spread_ratio >= air_spread_ratio, premium <= -air_premium_bps (against the side), for air_hold_s",
    "estimated liquidation cluster swept (>= sweep_trigger_share of OI) with liquidations arriving",
    "thin book: liq_to_depth >= thin_book_ratio, or impact_ratio >= thin_impact_ratio with depth_ratio < 0.5",
    "snowball: branching >= snowball_branching and not falling",
    "snowball: liquidations accelerating (3 rising minutes), >= 2 clusters swept in 10 min, "
    "or >= snowball_assets assets in stage 3+",
    "depth back: depth_ratio >= flush_depth_ratio",
    "retraced >= flush_retrace of the episode's move",
    "exhausted but fewer than flush_min_signs recovery signs: pause, fuel remains",
    "branching < flush_branching (or unknown)",
    "no liquidation ever seen: taker flow against the side stands in for liquidations (x proxy_trigger_ratio "
    "= the trigger)",
)
"""The words for each bit of ``cond_bits``; "against the side" means mirrored for the short side."""
(
    C_SHOCK_Z,
    C_SHOCK_MOVE,
    C_SHOCK_FLOW,
    C_TRIGGER_ON,
    C_TRIGGER_HELD,
    C_CASCADE_RATIO,
    C_CASCADE_FLOW,
    C_EXHAUSTED,
    C_EXHAUST_TIMEOUT,
    C_OI_PURGED,
    C_FUNDING_RESET,
    C_SHOCK_TIMEOUT,
    C_FLUSHED_HOLD,
    C_OVERHEATED,
    C_OVERHEAT_EXIT,
    C_AIR_POCKET,
    C_CLUSTER_SWEPT,
    C_THIN_BOOK,
    C_BRANCHING,
    C_SNOWBALL_SPREAD,
    C_DEPTH_BACK,
    C_RETRACED,
    C_PAUSED,
    C_BRANCHING_LOW,
    C_PROXY,
) = (1 << k for k in range(len(CONDITIONS)))


class DetectorState(NamedTuple):
    # clocks
    t_first: np.ndarray  # (n,) earliest event time seen (the liquidation baseline starts at its minute)
    t_last: np.ndarray  # (n,) newest event time seen
    # decayed accumulators and the time each was last brought forward
    acc: np.ndarray  # (n, N_CHANNELS)
    acc_t: np.ndarray  # (n, N_CHANNELS)
    val_t: np.ndarray  # (n, N_VALUE_TIMES) event time of the value held, per source
    # latest values
    price: np.ndarray
    mark: np.ndarray
    index_px: np.ndarray
    funding_8h: np.ndarray
    oi_usd: np.ndarray
    depth1: np.ndarray
    spread: np.ndarray
    # per-second price ring and the EWMA variance of its completed 1-s log returns
    px_sec: np.ndarray
    px_sec_last: np.ndarray
    px_sec_first: np.ndarray
    vol_var: np.ndarray  # EWMA of squared returns, started at 0
    vol_w: np.ndarray  # EWMA of 1: var / w is the bias-corrected variance
    # per-minute rings
    px_min: np.ndarray
    px_min_last: np.ndarray
    px_min_first: np.ndarray
    oi_min: np.ndarray
    oi_min_last: np.ndarray
    oi_min_first: np.ndarray
    fund_min: np.ndarray
    fund_min_last: np.ndarray
    fund_min_first: np.ndarray
    # per-minute liquidation USD per side, [slot, side, minute % MIN_RING]: the baseline's history
    liq_min: np.ndarray  # (n, 2, MIN_RING), 0 for a minute without liquidations
    liq_min_last: np.ndarray  # (n, 2) absolute index of the newest minute, -1 before the first
    liq_recent: np.ndarray  # (n, 2, RECENT_RING): the same sums, never paused by an episode
    liq_recent_last: np.ndarray
    # 10-s depth ring and the median of its completed buckets
    depth_ring: np.ndarray
    depth_last: np.ndarray
    depth_first: np.ndarray
    depth_med: np.ndarray
    spread_ring: np.ndarray  # the same 10-s buckets for the spread (bps) and its median
    spread_last: np.ndarray
    spread_first: np.ndarray
    spread_med: np.ndarray
    impact_base: np.ndarray  # (n,) slow time-weighted mean of impact_bps_per_musd, the thin-book baseline
    flow_base: np.ndarray  # (n, 2) slow mean of taker flow against each side per minute (the proxy's baseline)
    totals: np.ndarray  # (n, N_TOTALS)
    features: np.ndarray  # (n, N_FEATURES), filled by evaluate
    # stage machine, [slot, side]
    stage: np.ndarray
    stage_from: np.ndarray  # the stage before the latest change
    since: np.ndarray  # entry time of the current stage
    cond_since: np.ndarray  # (n, 2, N_TIMERS)
    quiet_s: np.ndarray  # seconds with liq_ratio < exhaust_ratio since liq_ratio last reached the trigger
    t_eval: np.ndarray  # (n,) time of the slot's previous evaluate
    episode_start: np.ndarray  # kept after the episode closes, so the closing change can name it
    oi_at_start: np.ndarray
    liq_base_held: np.ndarray  # the baseline a side's episode is measured against, fixed at stage 3
    peak_stage: np.ndarray  # highest stage of the current (or latest) episode
    peak_t: np.ndarray  # when it was first reached
    px_at_start: np.ndarray  # price when the episode began, and its most adverse price since: the retrace
    px_extreme: np.ndarray
    depth_low: np.ndarray  # lowest depth_ratio of the episode: depth can only "come back" if it went
    paused: np.ndarray  # 1 while an exhausted episode lacks the recovery signs of a flush (fuel remains)
    overheated: np.ndarray  # hysteresis flag of the overheat score
    overheat_since: np.ndarray  # when the flag last flipped: it holds at least overheat_dwell_s
    changed: np.ndarray  # CHANGED_* bits set by the latest evaluate
    cond_bits: np.ndarray  # C_* bits that held at the latest change


S = TypeVar("S", bound=tuple[np.ndarray, ...])


def with_rows_of(small: S, big: S) -> S:
    """``big`` (a freshly allocated state with more slots) holding every row of ``small``; raises
    ``ValueError`` when ``big`` has fewer slots (a state never shrinks)."""
    n, m = small[0].shape[0], big[0].shape[0]
    if m < n:
        raise ValueError(f"cannot shrink a {type(small).__name__} from {n} to {m} slots")
    for new, old in zip(big, small, strict=True):
        new[:n] = old
    return big


def _ring(n: int, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.full((n, capacity), np.nan), np.full(n, -1, np.int64), np.full(n, -1, np.int64)


def allocate(n_slots: int) -> DetectorState:
    """A fresh state for ``n_slots`` assets."""
    n = n_slots
    px_sec, px_sec_last, px_sec_first = _ring(n, SEC_RING)
    px_min, px_min_last, px_min_first = _ring(n, MIN_RING)
    oi_min, oi_min_last, oi_min_first = _ring(n, MIN_RING)
    fund_min, fund_min_last, fund_min_first = _ring(n, MIN_RING)
    depth_ring, depth_last, depth_first = _ring(n, DEPTH_RING)
    spread_ring, spread_last, spread_first = _ring(n, DEPTH_RING)
    return DetectorState(
        t_first=np.full(n, np.inf),
        t_last=np.full(n, -np.inf),
        acc=np.zeros((n, N_CHANNELS)),
        acc_t=np.full((n, N_CHANNELS), -np.inf),
        val_t=np.full((n, N_VALUE_TIMES), -np.inf),
        price=np.full(n, np.nan),
        mark=np.full(n, np.nan),
        index_px=np.full(n, np.nan),
        funding_8h=np.full(n, np.nan),
        oi_usd=np.full(n, np.nan),
        depth1=np.full(n, np.nan),
        spread=np.full(n, np.nan),
        px_sec=px_sec,
        px_sec_last=px_sec_last,
        px_sec_first=px_sec_first,
        vol_var=np.zeros(n),
        vol_w=np.zeros(n),
        px_min=px_min,
        px_min_last=px_min_last,
        px_min_first=px_min_first,
        oi_min=oi_min,
        oi_min_last=oi_min_last,
        oi_min_first=oi_min_first,
        fund_min=fund_min,
        fund_min_last=fund_min_last,
        fund_min_first=fund_min_first,
        liq_min=np.zeros((n, 2, MIN_RING)),
        liq_min_last=np.full((n, 2), -1, np.int64),
        liq_recent=np.zeros((n, 2, RECENT_RING)),
        liq_recent_last=np.full((n, 2), -1, np.int64),
        depth_ring=depth_ring,
        depth_last=depth_last,
        depth_first=depth_first,
        depth_med=np.full(n, np.nan),
        spread_ring=spread_ring,
        spread_last=spread_last,
        spread_first=spread_first,
        spread_med=np.full(n, np.nan),
        impact_base=np.full(n, np.nan),
        flow_base=np.full((n, 2), np.nan),
        totals=np.zeros((n, N_TOTALS)),
        features=np.full((n, N_FEATURES), np.nan),
        stage=np.zeros((n, 2), np.int8),
        stage_from=np.zeros((n, 2), np.int8),
        since=np.full((n, 2), np.nan),
        cond_since=np.full((n, 2, N_TIMERS), np.nan),
        quiet_s=np.zeros((n, 2)),
        t_eval=np.full(n, np.nan),
        episode_start=np.full((n, 2), np.nan),
        oi_at_start=np.full((n, 2), np.nan),
        liq_base_held=np.full((n, 2), np.nan),
        peak_stage=np.zeros((n, 2), np.int8),
        peak_t=np.full((n, 2), np.nan),
        px_at_start=np.full((n, 2), np.nan),
        px_extreme=np.full((n, 2), np.nan),
        depth_low=np.full((n, 2), np.nan),
        paused=np.zeros((n, 2), np.int8),
        overheated=np.zeros((n, 2), np.int8),
        overheat_since=np.full((n, 2), -np.inf),
        changed=np.zeros((n, 2), np.int8),
        cond_bits=np.zeros((n, 2), np.int64),
    )


def evidence(state: DetectorState, slot: int) -> dict[str, float]:
    """Every feature of ``slot`` as of the latest evaluate (NaN where not yet known)."""
    return dict(zip(FEATURE_NAMES, state.features[slot].tolist(), strict=True))


def thresholds(settings: DetectorSettings) -> dict[str, float]:
    """The parameters the features are compared with, plus the purge limit as a log change (the unit of
    ``oi_chg_episode_*``)."""
    out = {name: float(getattr(settings, name)) for name in FIELDS}
    out["oi_purge_log_chg"] = math.log1p(-settings.oi_purge) if settings.oi_purge < 1 else -math.inf
    return out


def describe(bits: int) -> list[str]:
    """The conditions set in a ``cond_bits`` value, in words."""
    return [text for k, text in enumerate(CONDITIONS) if bits >> k & 1]
