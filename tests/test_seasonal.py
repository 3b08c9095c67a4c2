"""Hour-of-week baselines: the kernel against its reference, and what the estimate converges to."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import reference as R
from detector.seasonal import (
    _FLOWS,
    N_SERIES,
    S_DEPTH,
    S_LIQ_LONG,
    SEASON_MIN_STEP,
    allocate_season,
    hour_of_week,
    season_add,
    season_value,
)

T0 = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC


def test_hour_of_week_starts_on_monday_utc() -> None:
    assert hour_of_week(int(T0 // 3600)) == 0
    assert hour_of_week(int((T0 + 7 * 86400 - 3600) // 3600)) == 167


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40 * 86400), st.integers(0, N_SERIES - 1),
                          st.one_of(st.floats(0, 1e7), st.sampled_from([0.0, 1e9]))), max_size=120))
def test_kernel_matches_reference(rows) -> None:
    rows = [(T0 + t, k, v) for t, k, v in rows]
    st_ = allocate_season(1)
    for t, k, v in rows:
        season_add(*st_, 0, t, k, v)
    expected = R.season_reference(rows, _FLOWS, N_SERIES, SEASON_MIN_STEP)
    held = {(k, b): (math.expm1(st_.median[0, k, b]), int(st_.count[0, k, b]))
            for k in range(N_SERIES) for b in range(168) if st_.count[0, k, b]}
    assert held.keys() == expected.keys()
    for key, (value, n) in expected.items():
        assert held[key][1] == n
        assert math.isclose(held[key][0], value, rel_tol=1e-9, abs_tol=1e-9), key


def test_estimate_converges_to_each_hours_median_and_weekends_stay_apart() -> None:
    rng = np.random.default_rng(3)
    st_ = allocate_season(1)
    for week in range(12):
        for hour in range(168):
            weekend = hour >= 120
            t = T0 + (week * 168 + hour) * 3600
            usual = 5e6 if weekend else 2e7
            for minute in range(60):
                season_add(*st_, 0, t + 60 * minute, S_DEPTH, usual * rng.lognormal(0, 0.3))
                season_add(*st_, 0, t + 60 * minute, S_LIQ_LONG, 1e4 * rng.lognormal(0, 1.0) if not weekend else 0.0)
    monday, sunday = T0 + 10 * 3600 + 12 * 7 * 86400, T0 + 150 * 3600 + 12 * 7 * 86400
    # an hourly mean of lognormal(0, 0.3) samples sits near exp(0.045) times the usual level
    assert 0.9 < season_value(st_.median, st_.count, 0, monday, S_DEPTH, 2) / 2e7 < 1.2
    assert 0.9 < season_value(st_.median, st_.count, 0, sunday, S_DEPTH, 2) / 5e6 < 1.2
    assert season_value(st_.median, st_.count, 0, sunday, S_LIQ_LONG, 2) == 0.0  # weekends had no liquidations here
    assert season_value(st_.median, st_.count, 0, monday, S_LIQ_LONG, 2) > 1e4
    empty = allocate_season(1)
    assert math.isnan(season_value(empty.median, empty.count, 0, monday, S_DEPTH, 2))  # nothing known yet
