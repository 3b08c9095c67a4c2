"""Sums of float runs where the adding itself is the cost.

One running sum waits on the latency of each addition before the next can start, and numba keeps that order
(no reassociation without fastmath). Four interleaved partial sums keep four additions in flight; the result
differs from the sequential sum only in rounding."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def interleaved_sum(values, lo, hi):
    """``values[lo:hi].sum()`` (1-D), in four interleaved partial sums; 0.0 for an empty range."""
    s0 = s1 = s2 = s3 = 0.0
    whole = lo + max(hi - lo, 0) // 4 * 4
    for j in range(lo, whole, 4):
        s0 += values[j]
        s1 += values[j + 1]
        s2 += values[j + 2]
        s3 += values[j + 3]
    for j in range(whole, hi):
        s0 += values[j]
    return (s0 + s1) + (s2 + s3)
