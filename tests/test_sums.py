"""interleaved_sum against the exact sum of the same run."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.sums import interleaved_sum

finite = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(deadline=None)  # the first call compiles
@given(st.lists(finite, max_size=64), st.data())
def test_a_run_sums_as_fsum_does_within_rounding(values: list[float], data: st.DataObject) -> None:
    row = np.array(values, dtype=np.float64)
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    exact = math.fsum(values[lo:hi])
    got = interleaved_sum(row, lo, hi)
    # non-negative terms: each of the n - 1 additions errs by at most half an ulp of a partial sum <= exact
    assert abs(got - exact) <= max(hi - lo - 1, 0) * 2.0**-53 * exact
    if hi - lo <= 1:
        assert got == exact  # nothing to round: the value itself, or 0.0


def test_an_empty_or_reversed_range_is_zero() -> None:
    row = np.arange(10.0)
    assert interleaved_sum(row, 4, 4) == 0.0 and interleaved_sum(row, 7, 3) == 0.0
    assert interleaved_sum(row, 0, 10) == 45.0 and interleaved_sum(row, 3, 10) == 42.0
