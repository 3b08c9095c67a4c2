"""Reconnect and retry policies, as plain functions so a caller can inject its own."""

from __future__ import annotations

import random
from collections.abc import Callable

Backoff = Callable[[int], float]
"""Delay in seconds before retry number ``attempt`` (1 for the first retry)."""


def jittered_exponential(initial: float, cap: float, factor: float = 2.0, rng: random.Random | None = None) -> Backoff:
    """Capped exponential backoff with "equal jitter": half the step is fixed, half random.

    The fixed half keeps a storm of clients from hammering a venue that has just come back; the random
    half spreads their reconnects out.
    """
    draw = (rng or random.Random()).random

    def delay(attempt: int) -> float:
        # The exponent is capped: a feed that keeps failing for days must not overflow the float.
        step = min(cap, initial * factor ** min(max(0, attempt - 1), 64))
        return step / 2 + draw() * step / 2

    return delay
