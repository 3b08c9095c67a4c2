"""Bar profiles: detector settings for bar data, chosen from the bar interval.

The detector's windows are seconds and minutes (a 60-s liquidation intensity, a baseline of hours of
minutes, holds of seconds). Minute bars run with the live settings. Hourly bars carry one value per hour, so
their profile stretches the time settings about 60-fold (a minute becomes an hour), within what the detector's
fixed rings allow: the baseline is the lagged 23 hours the 24-h per-minute ring holds. Settings given with
``--settings KEY=VALUE`` (or a TOML file, or the environment) override the profile.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

from flushwatch.settings import DetectorSettings, Settings, load_settings

BAR_PROFILES: Final[dict[int, dict[str, Any]]] = {
    60: {},
    3600: {
        "eval_interval_s": 60.0,
        "state_interval_s": 900.0,
        "liq_fast_tau_s": 3600.0,  # the rate is the hour's liquidations per minute
        "flow_tau_s": 3600.0,
        "liq_baseline_lag_min": 60,  # the hour being measured is not part of its baseline
        "liq_baseline_window_min": 1380,  # the rest of the 24-h ring
        "liq_baseline_min_minutes": 360,
        # hourly liquidations are heavy-tailed (median 0.1 M, P99 23 M on BTC): an hour is a burst only when it
        # also liquidates 6 x 0.072 % of open interest, calibrated on the CoinGlass BTC series (docs/detection.md)
        "liq_floor_oi_frac_min": 1.2e-5,
        "trigger_hold_s": 600.0,
        "exhaust_hold_s": 3600.0,
        "episode_timeout_s": 108_000.0,
        "flushed_hold_s": 18_000.0,
        "shock_timeout_s": 36_000.0,
        "air_hold_s": 600.0,
        "overheat_dwell_s": 18_000.0,
        "price_fallback_s": 3600.0,
        "vol_halflife_s": 216_000.0,
        "impact_tau_s": 216_000.0,
        # the 5-min OI change of an hourly path interpolated within the hour: the hourly drop times 5/60
        "cascade_oi_drop": 0.0005,
    },
}
"""Overrides of ``DetectorSettings`` per bar interval in seconds; ``profile_for`` picks the nearest."""


def profile_for(interval_s: float) -> int:
    """The key of ``BAR_PROFILES`` nearest to ``interval_s`` on a log scale."""
    return min(BAR_PROFILES, key=lambda key: abs(math.log(max(interval_s, 1e-3) / key)))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``DetectorSettings`` (``detector.`` prefix optional); values are JSON when they
    parse as JSON, text otherwise. Raises ``ValueError`` naming an unknown key or a pair without ``=``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().removeprefix("detector.")
        if not sep or key not in DetectorSettings.model_fields:
            raise ValueError(f"--settings {pair!r}: expected KEY=VALUE with KEY a detector setting")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def backtest_settings(interval_s: float | None, overrides: dict[str, Any], config: Path | None = None) -> Settings:
    """Settings for a backtest: the bar profile of ``interval_s`` (none for recordings) under ``overrides``."""
    profile = BAR_PROFILES[profile_for(interval_s)] if interval_s is not None else {}
    return load_settings(config, detector={**profile, **overrides})
