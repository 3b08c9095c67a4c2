"""The detector's thresholds as one float64 array, so numba kernels take them as a plain argument.

``pack(settings)`` copies the ``DetectorSettings`` fields named in ``FIELDS`` in that order; kernels read
them through the integer constants below (numba folds module-level ints into the compiled code). Integer
settings (minutes, sample counts) travel as exact floats. The Redis-loop settings (``eval_interval_s``,
``read_count``, ``block_ms``) are not the kernels' business.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from flushwatch.settings import DetectorSettings

FIELDS: Final[tuple[str, ...]] = (
    "liq_fast_tau_s",
    "liq_baseline_lag_min",
    "liq_baseline_window_min",
    "liq_baseline_min_minutes",
    "liq_floor_usd_min",
    "liq_trigger_ratio",
    "trigger_hold_s",
    "cascade_ratio",
    "cascade_liq_share",
    "cascade_oi_drop",
    "exhaust_ratio",
    "exhaust_hold_s",
    "oi_purge",
    "funding_neutral_8h",
    "flushed_hold_s",
    "episode_timeout_s",
    "shock_z1",
    "shock_z5",
    "shock_min_move",
    "shock_imbalance",
    "shock_timeout_s",
    "flow_tau_s",
    "vol_halflife_s",
    "vol_floor_1m",
    "price_fallback_s",
    "overheat_hot",
    "overheat_exit",
    "funding_warm_8h",
    "funding_hot_8h",
    "funding_max_8h",
    "funding_pct_min_samples",
    "premium_hot_bps",
    "oi_build_full",
    "weight_funding",
    "weight_premium",
    "weight_oi_build",
)

# One constant per entry of FIELDS, same order; the unpacking fails at import if the two ever diverge.
(
    LIQ_FAST_TAU_S,
    LIQ_BASELINE_LAG_MIN,
    LIQ_BASELINE_WINDOW_MIN,
    LIQ_BASELINE_MIN_MINUTES,
    LIQ_FLOOR_USD_MIN,
    LIQ_TRIGGER_RATIO,
    TRIGGER_HOLD_S,
    CASCADE_RATIO,
    CASCADE_LIQ_SHARE,
    CASCADE_OI_DROP,
    EXHAUST_RATIO,
    EXHAUST_HOLD_S,
    OI_PURGE,
    FUNDING_NEUTRAL_8H,
    FLUSHED_HOLD_S,
    EPISODE_TIMEOUT_S,
    SHOCK_Z1,
    SHOCK_Z5,
    SHOCK_MIN_MOVE,
    SHOCK_IMBALANCE,
    SHOCK_TIMEOUT_S,
    FLOW_TAU_S,
    VOL_HALFLIFE_S,
    VOL_FLOOR_1M,
    PRICE_FALLBACK_S,
    OVERHEAT_HOT,
    OVERHEAT_EXIT,
    FUNDING_WARM_8H,
    FUNDING_HOT_8H,
    FUNDING_MAX_8H,
    FUNDING_PCT_MIN_SAMPLES,
    PREMIUM_HOT_BPS,
    OI_BUILD_FULL,
    WEIGHT_FUNDING,
    WEIGHT_PREMIUM,
    WEIGHT_OI_BUILD,
) = range(len(FIELDS))


def pack(settings: DetectorSettings) -> np.ndarray:
    """The kernels' parameter vector: ``out[LIQ_FAST_TAU_S] == settings.liq_fast_tau_s`` and so on."""
    return np.array([float(getattr(settings, name)) for name in FIELDS], dtype=np.float64)
