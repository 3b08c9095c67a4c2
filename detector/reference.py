"""Plain-Python twins of the numba kernels, written from the specification rather than from the kernels.

They keep whole histories (lists, dicts) and recompute from them, where the kernels keep constant-size
state and update it incrementally; the property tests feed both the same random input. Slow on purpose:
used by tests only.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE
from detector.state import (
    DEPTH_BUCKET_S,
    DEPTH_RING,
    FEATURE_NAMES,
    MIN_RING,
    RECENT_RING,
    REJECT_REASONS,
    SEC_RING,
    TOTAL_NAMES,
    TRIGGERED,
)
from flushwatch.settings import DetectorSettings

# --- 1. decayed sums ---------------------------------------------------------------------------------


def decay_value(events: Sequence[tuple[float, float]], t: float, tau: float) -> float:
    """Sum of ``x * exp(-(T - t_eff) / tau)`` over ``(time, x)`` events in arrival order, where an event's
    effective time is the newest time seen so far (a late event counts as arriving "now") and ``T`` is the
    later of ``t`` and the newest time (no decay backwards)."""
    newest = -math.inf
    effective = []
    for time, x in events:
        newest = max(newest, time)
        effective.append((newest, x))
    at = max(t, newest)
    return sum(x * math.exp(-(at - eff) / tau) for eff, x in effective)


# --- rings as dicts ------------------------------------------------------------------------------------


@dataclass
class Buckets:
    """Last value per time bucket, every bucket kept; reads forward-fill and honour ``capacity``."""

    width: float
    capacity: int
    values: dict[int, float] = field(default_factory=dict)

    def bucket(self, t: float) -> int:
        return math.floor(t / self.width)

    def put(self, t: float, v: float) -> None:
        b = self.bucket(t)
        if self.values and b < max(self.values):
            return  # older than the newest bucket: history is not rewritten
        self.values[b] = v

    @property
    def first(self) -> int:
        return min(self.values)

    @property
    def newest(self) -> int:
        return max(self.values)

    def oldest(self) -> int:
        return max(self.first, self.newest - self.capacity + 1)

    def value(self, b: int) -> float:
        if not self.values or b < self.oldest():
            return math.nan
        keys = sorted(self.values)
        return self.values[keys[bisect.bisect_right(keys, b) - 1]]

    def valid(self) -> list[float]:
        """The values of every bucket the ring still holds, oldest first, forward-filled."""
        if not self.values:
            return []
        out = []
        current = self.value(self.oldest())
        for b in range(self.oldest(), self.newest + 1):
            current = self.values.get(b, current)
            out.append(current)
        return out

    def log_change(self, b_now: int, window: int, oldest_fallback: bool) -> float:
        if not self.values:
            return math.nan
        b_then = b_now - window
        if b_then < self.oldest():
            if not oldest_fallback or b_now - self.oldest() < 1:
                return math.nan
            b_then = self.oldest()
        now_v, then_v = self.value(b_now), self.value(b_then)
        return math.log(now_v / then_v) if now_v > 0 and then_v > 0 else math.nan


# --- 3. per-minute liquidation sums ----------------------------------------------------------------------


@dataclass
class MinuteSums:
    """The ``(minute, usd)`` liquidations admitted to one side's baseline, in arrival order. The ring that
    stands for it spans the ``capacity`` minutes up to the newest one: a liquidation older than that span
    when it arrives is refused, and a minute that falls out of the span no longer counts."""

    capacity: int
    entries: list[tuple[int, float]] = field(default_factory=list)

    def newest(self) -> float:
        return max((m for m, _ in self.entries), default=-math.inf)

    def add(self, minute: int, usd: float) -> None:
        if minute > self.newest() - self.capacity:
            self.entries.append((minute, usd))

    def total(self, minute: int) -> float:
        """USD liquidated in ``minute``; 0 outside the span (before it: forgotten, after it: none yet)."""
        if not self.newest() - self.capacity < minute <= self.newest():
            return 0.0
        return sum(usd for m, usd in self.entries if m == minute)

    def mean(self, lo: int, hi: int) -> float:
        """Mean USD per minute over minutes ``lo..hi``, every minute in the range counted."""
        return statistics.fmean(self.total(m) for m in range(lo, hi + 1))


# --- 2. per-second price, volatility ---------------------------------------------------------------------


def price_seconds() -> Buckets:
    return Buckets(1.0, SEC_RING)


def return_variance(seconds: Buckets, halflife_s: float) -> float:
    """Bias-corrected EWMA of squared log returns of every completed second (all but the newest), each
    measured against the forward-filled second before it."""
    if not seconds.values:
        return 0.0
    alpha = 1.0 - 0.5 ** (1.0 / halflife_s)
    keys = sorted(seconds.values)
    num = den = 0.0
    prev = seconds.values[keys[0]]
    for b in range(keys[0] + 1, keys[-1]):
        cur = seconds.values.get(b, prev)
        r = math.log(cur / prev)
        num = (1 - alpha) * num + alpha * r * r
        den = (1 - alpha) * den + alpha
        prev = cur
    return num / den if den > 0 else 0.0


# --- 4. percentile rank ------------------------------------------------------------------------------------


def mid_rank(values: Sequence[float], x: float) -> tuple[float, int]:
    if not values or math.isnan(x):
        return math.nan, 0
    below = sum(v < x for v in values)
    equal = sum(v == x for v in values)
    return (below + 0.5 * equal) / len(values), len(values)


# --- 5. depth ------------------------------------------------------------------------------------------------


def depth_buckets() -> Buckets:
    return Buckets(DEPTH_BUCKET_S, DEPTH_RING)


def completed_median(buckets: Buckets) -> float:
    """Median of the held buckets before the newest one."""
    done = buckets.valid()[:-1]
    return float(np.median(done)) if done else math.nan


# --- overheating --------------------------------------------------------------------------------------------


def overheat_score(
    crowd: float,
    funding: float,
    pct: float,
    n_pct: int,
    premium_bps: float,
    oi_chg_24h: float,
    price_chg_24h: float,
    fuel_to_depth: float,
    depth_ratio: float,
    s: DetectorSettings,
) -> float:
    def clip(x: float) -> float:
        return 0.0 if math.isnan(x) else min(max(x, 0.0), 1.0)

    on_side = crowd * funding
    knots = [s.funding_neutral_8h, s.funding_warm_8h, s.funding_hot_8h, s.funding_max_8h]
    anchor = 0.0 if math.isnan(on_side) else float(np.interp(on_side, knots, [0, 0.5, 0.8, 1]))
    pct_score = 0.0
    if n_pct >= s.funding_pct_min_samples and on_side > 0:
        pct_score = clip(((pct if crowd > 0 else 1 - pct) - 0.5) / 0.45)
    s_f = max(anchor, pct_score)
    s_p = clip(crowd * premium_bps / s.premium_hot_bps)
    credited = funding >= 0 if crowd > 0 else funding < 0
    s_o = clip((oi_chg_24h - abs(price_chg_24h)) / s.oi_build_full) if credited else 0.0
    parts = [(s.weight_funding, s_f), (s.weight_premium, s_p), (s.weight_oi_build, s_o)]
    if not math.isnan(fuel_to_depth):
        parts.append((s.weight_fuel, clip(fuel_to_depth / s.fuel_depth_hot)))
    if not math.isnan(depth_ratio):
        parts.append((s.weight_liquidity, clip((1 - depth_ratio) / (1 - s.air_depth_ratio))))
    total = sum(w for w, _ in parts)
    if total <= 0:
        return 0.0
    return 100 * sum(w * x for w, x in parts) / total


def rising_minutes(sums: MinuteSums, minute: int) -> float:
    """Consecutive rises of the per-minute sums, walking back from the last completed minute."""
    rises = 0
    for m in range(minute - 1, minute - RECENT_RING + 1, -1):
        if not sums.total(m) > sums.total(m - 1):
            break
        rises += 1
    return float(rises)


# --- 6. a whole slot --------------------------------------------------------------------------------------


@dataclass
class RefSlot:
    events: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {k: [] for k in ("liq_fast_0", "liq_fast_1", "buy", "sell")}
    )
    liq_minutes: tuple[MinuteSums, MinuteSums] = field(
        default_factory=lambda: (MinuteSums(MIN_RING), MinuteSums(MIN_RING))
    )
    recent: tuple[MinuteSums, MinuteSums] = field(
        default_factory=lambda: (MinuteSums(RECENT_RING), MinuteSums(RECENT_RING))
    )
    t_first: float = math.inf
    liq_base_held: list[float] = field(default_factory=lambda: [math.nan, math.nan])
    price: float = math.nan
    price_t: float = -math.inf
    trade_t: float = -math.inf
    mark: float = math.nan
    index: float = math.nan
    funding: float = math.nan
    mark_t: float = -math.inf
    oi: float = math.nan
    oi_t: float = -math.inf
    depth: float = math.nan
    spread: float = math.nan
    depth_t: float = -math.inf
    seconds: Buckets = field(default_factory=price_seconds)
    px_min: Buckets = field(default_factory=lambda: Buckets(60.0, MIN_RING))
    oi_min: Buckets = field(default_factory=lambda: Buckets(60.0, MIN_RING))
    fund_min: Buckets = field(default_factory=lambda: Buckets(60.0, MIN_RING))
    depth_10s: Buckets = field(default_factory=depth_buckets)
    spread_10s: Buckets = field(default_factory=depth_buckets)
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTAL_NAMES, 0.0))

    def set_price(self, t: float, price: float) -> None:
        if t >= self.price_t:
            self.price, self.price_t = price, t
            self.seconds.put(t, price)
            self.px_min.put(t, price)


def _ok(x: float, low: float, strict: bool) -> bool:
    return math.isfinite(x) and (x > low if strict else x >= low)


def reference_apply(
    slots: list[RefSlot],
    rows: Sequence[tuple[int, int, float, float, float, float]],
    stage: np.ndarray,
    s: DetectorSettings,
) -> np.ndarray:
    """Feed ``(kind, slot, t, v0, v1, v2)`` rows; returns the rejected count per reason. ``stage[slot, side]``
    is the stage at the time (liquidations of a side at stage >= 3 skip its baseline)."""
    rejects = dict.fromkeys(REJECT_REASONS, 0)
    for kind, i, t, a, b, c in rows:
        if not 0 <= i < len(slots):
            rejects["bad_slot"] += 1
            continue
        if not _ok(t, 0.0, True):
            rejects["bad_time"] += 1
            continue
        slot = slots[i]
        if kind not in (TRADE, LIQ, FUNDING, OI, DEPTH):
            rejects["bad_kind"] += 1
            continue
        if kind in (TRADE, LIQ):
            valid = _ok(a, 0.0, True) and _ok(b, 0.0, False) and c in (1.0, -1.0)
        elif kind == FUNDING:
            valid = _ok(a, 0.0, True) and _ok(b, 0.0, True) and math.isfinite(c)
        elif kind == OI:
            valid = _ok(a, 0.0, False) and _ok(b, 0.0, False)
        else:
            valid = _ok(a, 0.0, True) and _ok(b, 0.0, False) and _ok(c, 0.0, False)
        if not valid:
            rejects["bad_value"] += 1
            continue
        if kind == TRADE:
            side_name = "buy" if c > 0 else "sell"
            slot.events[side_name].append((t, b))
            slot.totals["taker_buy_usd" if c > 0 else "taker_sell_usd"] += b
            slot.totals["trades"] += 1
            slot.trade_t = max(slot.trade_t, t)
            slot.set_price(t, a)
        elif kind == LIQ:
            side = 0 if c > 0 else 1
            slot.events[f"liq_fast_{side}"].append((t, b))
            if stage[i, side] < TRIGGERED:
                slot.liq_minutes[side].add(math.floor(t / 60), b)
            slot.recent[side].add(math.floor(t / 60), b)
            slot.totals["liq_long_usd" if side == 0 else "liq_short_usd"] += b
            slot.totals["liquidations"] += 1
        elif kind == FUNDING:
            slot.totals["funding_marks"] += 1
            if t >= slot.mark_t:
                slot.mark, slot.index, slot.funding, slot.mark_t = a, b, c, t
                slot.fund_min.put(t, c)
            if t - slot.trade_t > s.price_fallback_s:
                slot.set_price(t, a)
        elif kind == OI:
            slot.totals["open_interest"] += 1
            if t >= slot.oi_t:
                slot.oi, slot.oi_t = a, t
                slot.oi_min.put(t, a)
        else:
            slot.totals["depth"] += 1
            if t >= slot.depth_t:
                slot.depth, slot.spread, slot.depth_t = b, c, t
                slot.depth_10s.put(t, b)
                slot.spread_10s.put(t, c)
        slot.t_first = min(slot.t_first, t)
    return np.array([rejects[r] for r in REJECT_REASONS], dtype=np.int64)


EPISODE_FEATURES = frozenset({"oi_chg_episode_long", "oi_chg_episode_short", "retrace_long", "retrace_short",
                              "episode_peak_stage_long", "episode_peak_stage_short", "episode_peak_after_s_long",
                              "episode_peak_after_s_short"})
"""Set by the stage step, not by ``compute_features``: outside the reference's reach."""


def _ratio(x: float, y: float) -> float:
    return x / y if y > 0 else math.nan


def reference_features(
    slot: RefSlot, now: float, s: DetectorSettings, stage: Sequence[int] = (0, 0), tradfi_closed: float = 0.0,
    assets_active: float = 0.0,
) -> dict[str, float]:
    """Every feature a fresh slot's first evaluation computes, except the episode columns, as of ``now``. The
    engine-filled columns are NaN (no Hawkes or fuel state), so is the impact ratio (no baseline yet)."""
    out: dict[str, float] = {"price": slot.price}
    sec = math.floor(now)
    r1 = slot.seconds.log_change(sec, 60, False)
    r5 = slot.seconds.log_change(sec, 300, False)
    var = return_variance(slot.seconds, s.vol_halflife_s)
    sig1 = max(math.sqrt(60 * var), s.vol_floor_1m)
    sig5 = max(math.sqrt(300 * var), s.vol_floor_1m * math.sqrt(5))
    out |= {"r1m": r1, "r5m": r5, "sigma1m": sig1, "sigma5m": sig5, "z1": r1 / sig1, "z5": r5 / sig5}
    # the baseline's minutes: the window ending lag minutes before now's, none before the first event's
    minute = math.floor(now / 60)
    hi = minute - s.liq_baseline_lag_min
    lo = hi - s.liq_baseline_window_min + 1
    if math.isfinite(slot.t_first):  # from the first whole minute on
        lo = max(lo, math.floor(slot.t_first / 60) + 1)
    buy = decay_value(slot.events["buy"], now, s.flow_tau_s)
    sell = decay_value(slot.events["sell"], now, s.flow_tau_s)
    for side, name in enumerate(("long", "short")):
        fast = decay_value(slot.events[f"liq_fast_{side}"], now, s.liq_fast_tau_s)
        rate = fast / s.liq_fast_tau_s * 60
        if stage[side] >= 3 and not math.isnan(slot.liq_base_held[side]):
            base = slot.liq_base_held[side]
        elif hi - lo + 1 >= s.liq_baseline_min_minutes:
            oi_floor = s.liq_floor_oi_frac_min * slot.oi if not math.isnan(slot.oi) else 0.0
            base = max(slot.liq_minutes[side].mean(lo, hi), s.liq_floor_usd_min, oi_floor)
        else:
            base = math.nan
        slot.liq_base_held[side] = base
        against = sell if side == 0 else buy
        out |= {
            f"liq_rate_{name}": rate,
            f"liq_base_{name}": base,
            f"liq_ratio_{name}": rate / base,
            f"liq_share_{name}": fast / against if against > 0 else math.nan,
        }
    out["imbalance"] = (buy - sell) / (buy + sell) if buy + sell > 0 else 0.0
    out["oi_usd"] = slot.oi
    for name, series, window in (
        ("oi_chg_5m", slot.oi_min, 5),
        ("oi_chg_1h", slot.oi_min, 60),
        ("oi_chg_24h", slot.oi_min, 1440),
        ("price_chg_1h", slot.px_min, 60),
        ("price_chg_24h", slot.px_min, 1440),
    ):
        out[name] = series.log_change(minute, window, True)
    pct, n_pct = mid_rank(slot.fund_min.valid(), slot.funding)
    out |= {
        "funding_8h": slot.funding,
        "funding_pct": pct,
        "premium_bps": (slot.mark / slot.index - 1) * 1e4,
        "depth1_usd": slot.depth,
        "spread_bps": slot.spread,
    }
    out["depth_ratio"] = _ratio(slot.depth, completed_median(slot.depth_10s))
    out["spread_ratio"] = _ratio(slot.spread, completed_median(slot.spread_10s))
    out["depth_ratio_season"] = math.nan
    external = FEATURE_NAMES[FEATURE_NAMES.index("branching_long"):FEATURE_NAMES.index("fuel_to_depth_long")]
    out |= dict.fromkeys(external, math.nan)
    net = abs(buy - sell) / 1e6
    out["impact_bps_per_musd"] = abs(r1) * 1e4 / net if net > 0 and not math.isnan(r1) else math.nan
    out["impact_ratio"] = math.nan
    out |= {"tradfi_closed": tradfi_closed, "assets_active": assets_active, "flow_ratio_long": math.nan,
            "flow_ratio_short": math.nan, "liq_observed": 1.0 if slot.totals["liquidations"] > 0 else 0.0}
    for side, name in enumerate(("long", "short")):
        out[f"liq_to_depth_{name}"] = _ratio(out[f"liq_rate_{name}"], slot.depth)
        out[f"liq_accel_{name}"] = rising_minutes(slot.recent[side], minute)
        out[f"fuel_to_depth_{name}"] = math.nan
    for crowd, name in ((1.0, "long"), (-1.0, "short")):
        out[f"overheat_{name}"] = overheat_score(
            crowd, slot.funding, pct, n_pct, out["premium_bps"], out["oi_chg_24h"], out["price_chg_24h"],
            out[f"fuel_to_depth_{name}"], out["depth_ratio"], s,
        )
    assert set(out) == set(FEATURE_NAMES) - EPISODE_FEATURES
    return out


def reference_totals(slot: RefSlot) -> np.ndarray:
    return np.array([slot.totals[name] for name in TOTAL_NAMES])


# --- hour-of-week baselines -------------------------------------------------------------------------------


def season_reference(events: Sequence[tuple[float, int, float]], flows: Sequence[int], n_series: int,
                     min_step: float) -> dict[tuple[int, int], tuple[float, int]]:
    """``(series, hour of week) -> (estimated median, samples)`` from ``(time, series, value)`` events in
    arrival order: events of an hour earlier than one already started are dropped; each completed hour gives
    one value per series (flows: sum / 60, levels: mean of the samples), folded into its bucket's streaming
    median (first value taken as is, then a step of ``max(1/n, min_step)`` times the running deviation)."""
    hours: dict[int, list[tuple[int, float]]] = {}
    newest = -1
    for t, k, v in events:
        hour = math.floor(t / 3600)
        if hour < newest:
            continue
        newest = hour
        hours.setdefault(hour, []).append((k, v))
    state: dict[tuple[int, int], list[float]] = {}  # median, deviation, n
    for hour in sorted(hours)[:-1]:  # the newest hour is still open
        for k in range(n_series):
            values = [v for kk, v in hours[hour] if kk == k]
            if k in flows:
                value = sum(values) / 60
            elif values:
                value = sum(values) / len(values)
            else:
                continue
            x = math.log1p(max(value, 0.0))
            m, dev, n = state.setdefault((k, (hour + 72) % 168), [math.nan, 0.0, 0])
            if n == 0:
                m, dev = x, 0.0
            else:
                dev += (abs(x - m) - dev) / min(n + 1, 8)
                step = max(1 / (n + 1), min_step) * max(dev, 1e-3)
                m = min(m + step, x) if x > m else max(m - step, x) if x < m else m
            state[(k, (hour + 72) % 168)] = [m, dev, n + 1]
    return {key: (math.expm1(m), int(n)) for key, (m, _, n) in state.items()}
