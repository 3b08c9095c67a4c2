"""The stage machine and the overheating score on scripted markets.

A small simulator builds real ``flushwatch.events`` objects second by second (4 trades, a mark/funding
update, a depth sample, an OI poll every 10 s, liquidations), feeds them through ``BatchBuilder`` and
``apply_batch`` and evaluates once per second, recording every change with its evidence.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pytest

from detector.batch import BatchBuilder
from detector.kernels import apply_batch
from detector.params import pack
from detector.stages import evaluate
from detector.state import (
    C_AIR_POCKET,
    C_BRANCHING,
    C_CASCADE_FLOW,
    C_CASCADE_RATIO,
    C_EXHAUST_TIMEOUT,
    C_EXHAUSTED,
    C_FLUSHED_HOLD,
    C_FUNDING_RESET,
    C_OI_PURGED,
    C_OVERHEAT_EXIT,
    C_OVERHEATED,
    C_PAUSED,
    C_PROXY,
    C_RETRACED,
    C_SHOCK_FLOW,
    C_SHOCK_MOVE,
    C_SHOCK_TIMEOUT,
    C_SHOCK_Z,
    C_SNOWBALL_SPREAD,
    C_THIN_BOOK,
    C_TRIGGER_HELD,
    CHANGED_OVERHEAT,
    CHANGED_PAUSE,
    CHANGED_STAGE,
    CONDITIONS,
    F_BRANCHING_LONG,
    F_BRANCHING_PREV_LONG,
    LONG,
    SHORT,
    SIDE_NAMES,
    T_LIQ_LONG_USD,
    TRIGGERED,
    DetectorState,
    allocate,
    describe,
    evidence,
    thresholds,
)
from flushwatch.events import Depth, Liquidation, OpenInterest, PositionSide, TakerSide, Trade, funding_mark
from flushwatch.settings import DetectorSettings
from flushwatch.signals import stage_name

T0 = 1_700_000_000.0
ID = {"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC"}
SETTINGS = DetectorSettings()
TH = thresholds(SETTINGS)


def _ns(t: float) -> int:
    return round(t * 1e9)


@dataclass
class Change:
    t: float
    side: str
    stage_from: int
    stage: int
    changed: int
    bits: int
    evidence: dict[str, float]


@dataclass
class Sim:
    """One asset, one slot. Market knobs are attributes; ``run`` advances whole seconds."""

    state: DetectorState = field(default_factory=lambda: allocate(1))
    p: np.ndarray = field(default_factory=lambda: pack(SETTINGS))
    mask: np.ndarray = field(default_factory=lambda: np.ones(1, np.bool_))
    t: float = T0
    log_price: float = math.log(50_000.0)
    oi: float = 1e9
    funding: float = 0.0001
    premium_bps: float = 1.0
    liq_spread: float = 0.3  # a liquidation at rate r is r * uniform(1 - spread, 1 + spread) USD
    depth_scale: float = 1.0  # the book's depth relative to its usual 1e7/2.5e7/5e7 USD per side
    spread_bps: float = 0.5
    tradfi_closed: float = 0.0
    background_liquidations: bool = True  # False: a venue without a liquidation feed
    external: dict[int, float] = field(default_factory=dict)  # engine-filled features (Hawkes, fuel map)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    changes: list[Change] = field(default_factory=list)
    ratios: dict[float, tuple[float, float]] = field(default_factory=dict)  # t -> liq_ratio long, short

    @property
    def price(self) -> float:
        return math.exp(self.log_price)

    def stages(self) -> tuple[int, int]:
        return int(self.state.stage[0, LONG]), int(self.state.stage[0, SHORT])

    def run(
        self,
        seconds: int,
        *,
        drift: float = 0.0,
        buy: float = 20_000.0,
        sell: float = 20_000.0,
        liq_long: float | None = None,
        liq_short: float | None = None,
        oi_drift: float = 0.0,
        until: Callable[[Sim], bool] | None = None,
    ) -> int:
        """Advance up to ``seconds`` (stop early once ``until(self)`` is true); returns seconds run.
        ``drift`` and ``oi_drift`` are log changes per second, ``buy``/``sell`` taker USD per second,
        ``liq_*`` liquidated USD per second (None: a calm background of occasional small ones)."""
        for k in range(seconds):
            self._second(drift, buy, sell, liq_long, liq_short, oi_drift)
            if until is not None and until(self):
                return k + 1
        return seconds

    def _second(
        self, drift: float, buy: float, sell: float, liq_long: float | None, liq_short: float | None, oi_drift: float
    ) -> None:
        rng, t, b = self.rng, self.t, BatchBuilder()
        for k in range(4):
            self.log_price += drift / 4 + rng.gauss(0.0, 1e-5)
            side: TakerSide = "buy" if k % 2 == 0 else "sell"
            usd = (buy if side == "buy" else sell) / 2 * rng.uniform(0.5, 1.5)
            b.add(
                Trade(
                    **ID, ts_event=_ns(t + 0.1 + 0.2 * k), ts_recv=0, price=self.price, size=usd / self.price, side=side
                ),
                0,
            )
        liq_sides: tuple[tuple[PositionSide, float | None], ...] = (("long", liq_long), ("short", liq_short))
        for position, rate in liq_sides:
            if rate is None:
                usd = rng.uniform(5e3, 40e3) if rng.random() < 0.05 and self.background_liquidations else 0.0
            else:
                usd = rate * rng.uniform(1.0 - self.liq_spread, 1.0 + self.liq_spread)
            if usd > 0:
                b.add(
                    Liquidation(
                        **ID, ts_event=_ns(t + 0.5), ts_recv=0, price=self.price, size=usd / self.price, side=position
                    ),
                    0,
                )
        self.oi *= math.exp(oi_drift)
        if round(t) % 10 == 0:
            b.add(
                OpenInterest(**ID, ts_event=_ns(t + 0.05), ts_recv=0, oi_base=self.oi / self.price, oi_usd=self.oi), 0
            )
        b.add(
            funding_mark(
                **ID,
                ts_event=_ns(t + 0.9),
                ts_recv=0,
                mark_price=self.price * (1 + self.premium_bps / 1e4),
                index_price=self.price,
                funding_rate=self.funding,
                funding_interval_h=8.0,
                next_funding_ts=0,
            ),
            0,
        )
        b.add(
            Depth(
                **ID,
                ts_event=_ns(t + 0.95),
                ts_recv=0,
                mid=self.price,
                spread_bps=self.spread_bps,
                bid_usd=tuple(x * self.depth_scale for x in (1e7, 2.5e7, 5e7)),
                ask_usd=tuple(x * self.depth_scale for x in (1e7, 2.5e7, 5e7)),
                reach_bps=150.0,
            ),
            0,
        )
        rejects = apply_batch(self.state, *b.columns(), self.p)
        assert rejects.sum() == 0
        self.t = t + 1.0
        for column, value in self.external.items():
            self.state.features[0, column] = value
        n_changed = evaluate(self.state, self.t, self.mask, self.p, self.tradfi_closed)
        ev = evidence(self.state, 0)
        self.ratios[self.t] = (ev["liq_ratio_long"], ev["liq_ratio_short"])
        if n_changed:
            for s in (LONG, SHORT):
                if self.state.changed[0, s]:
                    self.changes.append(
                        Change(
                            self.t,
                            SIDE_NAMES[s],
                            int(self.state.stage_from[0, s]),
                            int(self.state.stage[0, s]),
                            int(self.state.changed[0, s]),
                            int(self.state.cond_bits[0, s]),
                            evidence(self.state, 0),
                        )
                    )

    def stage_changes(self, side: str) -> list[Change]:
        return [c for c in self.changes if c.side == side and c.changed & CHANGED_STAGE]

    def held_since(self, t: float, side: int, holds: Callable[[float], bool]) -> float:
        """The start of the run of evaluations, ending at ``t``, where ``holds(liq_ratio)`` was true."""
        start = t
        while start - 1.0 in self.ratios and holds(self.ratios[start - 1.0][side]):
            start -= 1.0
        return start


@cache
def _warm() -> Sim:
    sim = Sim()
    sim.run(3600)
    return sim


def warm() -> Sim:
    """A private copy of one calm hour (simulated once per session)."""
    sim = copy.deepcopy(_warm())
    sim.changes.clear()
    sim.ratios.clear()
    return sim


def in_stage(side: int, stage: int) -> Callable[[Sim], bool]:
    return lambda sim: bool(sim.state.stage[0, side] == stage)


# --- calm ----------------------------------------------------------------------------------------------


def test_a_calm_hour_stays_calm() -> None:
    sim = _warm()
    assert sim.changes == []
    assert sim.stages() == (0, 0) and sim.state.overheated[0].tolist() == [0, 0]
    ev = evidence(sim.state, 0)
    # the baseline came from the calm background (~5 % of seconds, 5-40 kUSD): ~67 kUSD/min per side
    assert 40_000 < ev["liq_base_long"] < 100_000 and 40_000 < ev["liq_base_short"] < 100_000
    assert ev["liq_ratio_long"] < TH["exhaust_ratio"] * 2 and abs(ev["imbalance"]) < 0.5
    assert ev["sigma1m"] == TH["vol_floor_1m"]  # calm tape: the volatility floor applies
    assert ev["depth_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert ev["overheat_long"] < 10 and ev["overheat_short"] == 0.0


# --- the long flush ---------------------------------------------------------------------------------------

SHOCK_DRIFT = math.log(0.994) / 60  # -0.6 % in a minute


def test_shock_then_liquidations_then_cascade_then_flush_then_calm() -> None:
    sim = warm()
    sim.funding = 0.0003  # above neutral: a purge alone is one recovery sign of the two a flush needs
    # 1. shock: price down 0.6 %/min on heavy taker selling, liquidations still calm
    n = sim.run(90, drift=SHOCK_DRIFT, sell=100_000, until=in_stage(LONG, 1))
    assert n < 90 and sim.stages() == (1, 0)
    shock = sim.stage_changes("long")[-1]
    assert (shock.stage_from, shock.stage) == (0, 1)
    assert shock.bits & (C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW) == C_SHOCK_Z | C_SHOCK_MOVE | C_SHOCK_FLOW
    assert shock.evidence["z1"] <= -TH["shock_z1"] or shock.evidence["z5"] <= -TH["shock_z5"]
    assert shock.evidence["imbalance"] <= -TH["shock_imbalance"]
    assert max(-shock.evidence["r1m"], -shock.evidence["r5m"]) >= TH["shock_min_move"]
    assert shock.evidence["liq_ratio_long"] < TH["liq_trigger_ratio"]
    assert describe(shock.bits) == [
        "z1 <= -shock_z1 or z5 <= -shock_z5 (against the side)",
        "|r1m| or |r5m| >= shock_min_move (against the side)",
        "taker imbalance <= -shock_imbalance (against the side)",
    ]
    episode = sim.state.episode_start[0, LONG]
    assert episode == shock.t and sim.state.oi_at_start[0, LONG] == pytest.approx(sim.oi)

    # 2. long liquidations ~30 kUSD/s: the fast rate passes 6x, holds 10 s (3), then passes 10x (4)
    n = sim.run(120, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=30_000, until=in_stage(LONG, 4))
    assert n < 120
    ups = [(c.stage_from, c.stage) for c in sim.stage_changes("long")]
    assert ups == [(0, 1), (1, 3), (3, 4)]
    trig, casc = sim.stage_changes("long")[1:]
    assert trig.bits & C_TRIGGER_HELD and not trig.bits & (C_CASCADE_RATIO | C_CASCADE_FLOW)
    assert TH["liq_trigger_ratio"] <= trig.evidence["liq_ratio_long"] < TH["cascade_ratio"]
    assert "liq_ratio >= liq_trigger_ratio for trigger_hold_s" in describe(trig.bits)
    trigger_line = SETTINGS.liq_trigger_ratio
    assert trig.t - sim.held_since(trig.t, LONG, lambda r: r >= trigger_line) == SETTINGS.trigger_hold_s
    assert casc.bits & C_CASCADE_RATIO and casc.evidence["liq_ratio_long"] >= TH["cascade_ratio"]
    assert casc.t - trig.t >= 1 and sim.state.episode_start[0, LONG] == episode  # same episode
    admitted = sim.state.liq_min[0, LONG].sum()  # the calm hour's, and ~0.7 MUSD in stages 0-1 since

    # 3. liquidations stop while OI unwinds 10 % in 2 minutes: exhausted for 60 s with OI purged, but funding is
    # still hot -- one recovery sign of the two needed: a pause, fuel remains
    sim.run(120, oi_drift=math.log(0.9) / 120)
    n = sim.run(600, until=lambda sim: bool(sim.state.paused[0, LONG]))
    assert n < 600 and sim.stages() == (4, 0)
    pause = sim.changes[-1]
    assert pause.changed == CHANGED_PAUSE and pause.bits & C_PAUSED and pause.bits & C_OI_PURGED
    assert not pause.bits & C_FUNDING_RESET
    # 4. funding back to neutral: the second sign -> flushed
    sim.funding = 0.00005
    n = sim.run(5, until=in_stage(LONG, 7))
    assert n == 1
    flushed = sim.stage_changes("long")[-1]
    assert (flushed.stage_from, flushed.stage) == (4, 7)
    assert flushed.bits & C_EXHAUSTED and flushed.bits & C_OI_PURGED and flushed.bits & C_FUNDING_RESET
    assert flushed.evidence["liq_ratio_long"] < TH["exhaust_ratio"] and not sim.state.paused[0, LONG]
    exhaust_line = SETTINGS.exhaust_ratio
    assert flushed.t - sim.held_since(flushed.t, LONG, lambda r: r < exhaust_line) > SETTINGS.exhaust_hold_s
    assert flushed.evidence["oi_chg_episode_long"] <= TH["oi_purge_log_chg"]
    assert flushed.evidence["funding_8h"] <= TH["funding_neutral_8h"]
    # the episode's own liquidations (~0.7 MUSD in stages 3-7) did not feed the baseline minutes, and the whole
    # episode was measured against the baseline it started from
    episode_usd = sim.state.totals[0, T_LIQ_LONG_USD] - admitted
    assert episode_usd > 5e5 and sim.state.liq_min[0, LONG].sum() == admitted
    assert flushed.evidence["liq_base_long"] == trig.evidence["liq_base_long"]

    # 5. calm: back to 0 after flushed_hold_s
    sim.run(int(SETTINGS.flushed_hold_s) + 5)
    done = sim.stage_changes("long")[-1]
    assert (done.stage_from, done.stage) == (7, 0) and done.bits & C_FLUSHED_HOLD
    assert done.t - flushed.t == SETTINGS.flushed_hold_s
    assert sim.state.peak_stage[0, LONG] == 7 and sim.state.episode_start[0, LONG] == episode
    # the closing change says what the episode was: its peak stage, and how long after the start it came
    assert done.evidence["episode_peak_stage_long"] == 7
    assert done.evidence["episode_peak_after_s_long"] == flushed.t - episode
    assert flushed.evidence["episode_peak_stage_long"] == 7 and casc.evidence["episode_peak_stage_long"] == 4
    assert sim.stage_changes("short") == [] and sim.stages() == (0, 0)


def test_short_squeeze_mirrors_the_flush_on_the_short_side() -> None:
    sim = warm()
    sim.funding = -0.0003  # shorts pay, far from neutral
    n = sim.run(90, drift=-SHOCK_DRIFT, buy=100_000, until=in_stage(SHORT, 1))
    assert n < 90
    sim.run(120, drift=-SHOCK_DRIFT / 3, buy=60_000, liq_short=30_000, until=in_stage(SHORT, 4))
    # liquidations stop, OI stays: exhausted, but neither purged nor reset -> still a cascade
    sim.run(400)
    assert sim.stages() == (0, 4) and sim.ratios[sim.t][SHORT] < TH["exhaust_ratio"]
    sim.funding = -0.00005  # funding back above -neutral: one sign, a pause
    sim.run(5)
    assert sim.stages() == (0, 4) and sim.state.paused[0, SHORT] == 1
    # price gives back 38 % of the squeeze: the second sign, the flush is done
    n = sim.run(600, drift=SHOCK_DRIFT / 3, until=in_stage(SHORT, 7))
    assert n < 600
    sim.run(int(SETTINGS.flushed_hold_s) + 5)
    changes = sim.stage_changes("short")
    assert [(c.stage_from, c.stage) for c in changes] == [(0, 1), (1, 3), (3, 4), (4, 7), (7, 0)]
    shock, trig, _, flushed, _ = changes
    assert shock.evidence["z1"] >= TH["shock_z1"] or shock.evidence["z5"] >= TH["shock_z5"]
    assert shock.evidence["imbalance"] >= TH["shock_imbalance"] and shock.evidence["r1m"] > 0
    assert trig.evidence["liq_ratio_short"] >= TH["liq_trigger_ratio"]
    assert flushed.bits & C_FUNDING_RESET and flushed.bits & C_RETRACED and not flushed.bits & C_OI_PURGED
    assert flushed.evidence["funding_8h"] >= -TH["funding_neutral_8h"]
    assert flushed.evidence["retrace_short"] >= TH["flush_retrace"]
    assert sim.stage_changes("long") == [] and sim.stages() == (0, 0)


# --- a burst on a short history ------------------------------------------------------------------------------


def test_a_burst_right_after_a_fresh_start_is_not_judged() -> None:
    """Until the baseline covers liq_baseline_min_minutes lagged minutes, intensity is unknown: a restart must
    not read an ordinary tape as a burst (the price of it: a burst in those minutes goes unjudged)."""
    sim = Sim()
    sim.run(180)
    sim.liq_spread = 2 / 3
    sim.run(60, liq_long=600_000)
    assert sim.stages() == (0, 0) and math.isnan(evidence(sim.state, 0)["liq_ratio_long"])


def test_a_burst_after_a_short_calm_triggers_and_never_lifts_its_own_baseline() -> None:
    sim = Sim()
    sim.run(660)  # a partial first minute, 5 lagged minutes, and the 5-minute lag itself
    assert sim.changes == []
    calm_base = evidence(sim.state, 0)["liq_base_long"]
    assert calm_base >= SETTINGS.liq_floor_usd_min
    # one long liquidation of 200 kUSD-1 MUSD a second (an average since the first event would take the burst
    # in with it and never let it reach the trigger)
    sim.liq_spread = 2 / 3
    n = sim.run(20, liq_long=600_000, until=lambda sim: sim.state.stage[0, LONG] >= TRIGGERED)
    assert n <= 20 and sim.state.stage[0, LONG] >= TRIGGERED
    (trig,) = sim.stage_changes("long")
    assert trig.evidence["liq_base_long"] == pytest.approx(calm_base) and trig.bits & C_TRIGGER_HELD
    admitted = sim.state.liq_min[0, LONG].sum()  # the calm minutes and the burst's first ~11 s

    # ten more minutes of it, twice the lag: nothing more enters the baseline minutes, and the episode keeps
    # the baseline it started from, so the ratio stays far above the cascade line
    for _ in range(600):
        sim.run(1, liq_long=600_000)
        assert sim.state.stage[0, LONG] >= TRIGGERED and sim.ratios[sim.t][LONG] >= TH["cascade_ratio"]
    assert sim.state.liq_min[0, LONG].sum() == admitted
    assert evidence(sim.state, 0)["liq_base_long"] == trig.evidence["liq_base_long"]
    assert sim.stage_changes("short") == []


# --- downgrades and timeouts ---------------------------------------------------------------------------------


def test_a_drop_on_balanced_flow_is_not_a_shock() -> None:
    sim = warm()
    sim.run(90, drift=SHOCK_DRIFT)  # the same -0.6 %/min, buyers and sellers matched
    ev = evidence(sim.state, 0)
    assert ev["z1"] <= -TH["shock_z1"] and abs(ev["imbalance"]) < TH["shock_imbalance"]
    assert sim.changes == [] and sim.stages() == (0, 0)


def test_a_shock_without_liquidations_times_out() -> None:
    sim = warm()
    sim.run(90, drift=SHOCK_DRIFT, sell=100_000, until=in_stage(LONG, 1))
    sim.run(int(SETTINGS.shock_timeout_s) + 120)
    shock, back = sim.stage_changes("long")
    assert (back.stage_from, back.stage) == (1, 0) and back.bits & C_SHOCK_TIMEOUT
    # the shock condition held for a while after entry; the timeout counts from its last occurrence
    assert SETTINGS.shock_timeout_s <= back.t - shock.t < SETTINGS.shock_timeout_s + 90


def test_exhaustion_without_purge_ends_the_episode_after_the_timeout() -> None:
    sim = warm()
    sim.funding = 0.0003
    sim.run(60, liq_long=30_000, until=in_stage(LONG, 3))
    assert sim.stages() == (3, 0)  # straight from calm: the trigger held without a shock
    sim.run(int(SETTINGS.episode_timeout_s) + 400)  # OI flat, funding still hot
    changes = [(c.stage_from, c.stage) for c in sim.stage_changes("long")]
    assert changes[-1] == (changes[-2][1], 0) and 7 not in [c[1] for c in changes]
    end = sim.stage_changes("long")[-1]
    assert end.bits & C_EXHAUST_TIMEOUT and not end.bits & C_OI_PURGED


def test_a_violent_burst_goes_from_calm_straight_to_cascade() -> None:
    sim = warm()
    sim.run(30, liq_long=200_000, until=in_stage(LONG, 4))
    (jump,) = sim.stage_changes("long")
    assert (jump.stage_from, jump.stage) == (0, 4) and jump.bits & C_TRIGGER_HELD and jump.bits & C_CASCADE_RATIO
    assert sim.state.episode_start[0, LONG] == jump.t and sim.state.peak_stage[0, LONG] == 4


def test_cascade_by_forced_selling_share_and_oi_drop() -> None:
    sim = warm()
    sim.funding = 0.0003
    # 11 kUSD/s against a ~70 kUSD/min baseline: triggered, then 6.5-8.5x, below the cascade ratio
    sim.run(200, liq_long=11_000, sell=30_000, until=in_stage(LONG, 3))
    assert sim.stages() == (3, 0)
    n = sim.run(
        300,
        liq_long=11_000,
        sell=30_000,
        drift=math.log(0.998) / 60,
        oi_drift=math.log(0.99) / 120,
        until=in_stage(LONG, 4),
    )
    assert n < 300
    casc = sim.stage_changes("long")[-1]
    assert casc.bits & C_CASCADE_FLOW and not casc.bits & C_CASCADE_RATIO
    assert casc.evidence["liq_share_long"] >= TH["cascade_liq_share"]
    assert casc.evidence["oi_chg_5m"] <= -TH["cascade_oi_drop"] and casc.evidence["r5m"] < 0


def test_second_leg_returns_from_flushed_to_triggered() -> None:
    sim = warm()
    sim.run(60, liq_long=30_000, until=in_stage(LONG, 3))
    # funding at neutral and OI unwinding: exhaustion flushes, once the calm background stops lifting the ratio
    # over exhaust_ratio now and then (~5.5 minutes here)
    sim.run(600, oi_drift=math.log(0.9) / 600, until=in_stage(LONG, 7))
    assert sim.stages()[0] == 7 and sim.stage_changes("long")[-1].bits & C_FUNDING_RESET
    sim.run(60, liq_long=30_000, until=in_stage(LONG, 3))
    leg = sim.stage_changes("long")[-1]
    assert (leg.stage_from, leg.stage) == (7, 3) and leg.bits & C_TRIGGER_HELD


def test_a_ratio_between_exhaust_and_trigger_does_not_flap() -> None:
    sim = warm()
    sim.run(60, liq_long=30_000, until=in_stage(LONG, 3))
    entered = len(sim.changes)
    ratios = []
    for _ in range(40):  # 20 minutes hovering around 4x the baseline, now above, now below the midpoint
        for level in (3_000, 6_000):
            sim.run(15, liq_long=level)
            ratios.append(evidence(sim.state, 0)["liq_ratio_long"])
    assert TH["exhaust_ratio"] < min(ratios[4:]) and max(ratios) < TH["cascade_ratio"]
    assert min(ratios) < TH["liq_trigger_ratio"] < max(ratios)  # it does cross the trigger line
    assert sim.changes[entered:] == [] and sim.stages() == (3, 0)


# --- overheating ---------------------------------------------------------------------------------------------


def test_overheat_score_rises_with_funding_premium_and_oi_build_with_hysteresis() -> None:
    sim = warm()
    calm_score = evidence(sim.state, 0)["overheat_long"]
    # one hour: funding 0.01 % -> 0.08 %/8h, premium 1 -> 12 bps, OI +20 % at a flat price
    for minute in range(60):
        sim.funding = 0.0001 + 0.0007 * (minute + 1) / 60
        sim.premium_bps = 1.0 + 11.0 * (minute + 1) / 60
        sim.run(60, oi_drift=math.log(1.2) / 3600)
    hot = [c for c in sim.changes if c.changed & CHANGED_OVERHEAT]
    assert len(hot) == 1 and hot[0].side == "long" and hot[0].bits & C_OVERHEATED
    assert hot[0].evidence["overheat_long"] >= TH["overheat_hot"] > calm_score
    ev = evidence(sim.state, 0)
    # every scored component full, except liquidity: the book sits at its own median (no fuel map in this sim)
    scored = SETTINGS.weight_funding + SETTINGS.weight_premium + SETTINGS.weight_oi_build
    assert ev["depth_ratio"] == pytest.approx(1.0, abs=0.05)
    assert ev["overheat_long"] == pytest.approx(100.0 * scored / (scored + SETTINGS.weight_liquidity), rel=0.01)
    assert ev["funding_pct"] > 0.95 and ev["oi_chg_24h"] == pytest.approx(math.log(1.2), rel=0.02)
    assert ev["overheat_short"] == 0.0
    assert stage_name(int(sim.state.stage[0, LONG]), bool(sim.state.overheated[0, LONG])) == "overheated"

    # cooling to the band between exit and hot: the flag holds
    sim.funding, sim.premium_bps = 0.00035, 0.0
    sim.run(600)
    score = evidence(sim.state, 0)["overheat_long"]
    assert TH["overheat_exit"] <= score < TH["overheat_hot"]
    assert sim.state.overheated[0, LONG] == 1 and len([c for c in sim.changes if c.changed]) == 1

    # below the exit level: the flag clears, once
    sim.funding = 0.0001
    sim.run(120)
    cold = [c for c in sim.changes if c.changed & CHANGED_OVERHEAT][1:]
    assert len(cold) == 1 and cold[0].bits & C_OVERHEAT_EXIT
    assert cold[0].evidence["overheat_long"] < TH["overheat_exit"]
    assert sim.state.overheated[0].tolist() == [0, 0] and sim.stages() == (0, 0)


# --- stages 2, 5 and 6 -------------------------------------------------------------------------------------


def test_air_pocket_needs_two_signs_against_the_side_and_is_judged_sooner_while_tradfi_is_closed() -> None:
    def pocket(depth: float, spread: float, closed: float, drift: float = SHOCK_DRIFT / 6) -> Sim:
        sim = warm()
        sim.run(120, drift=drift)  # a slow slide on balanced flow: no shock
        sim.depth_scale, sim.spread_bps, sim.tradfi_closed = depth, spread, closed
        sim.run(60, drift=drift, until=in_stage(LONG, 2))
        return sim

    sim = pocket(0.2, 2.0, 0.0)
    changes = sim.stage_changes("long")
    assert [(c.stage_from, c.stage) for c in changes] == [(0, 2)] and sim.stages() == (2, 0)
    assert describe(changes[0].bits) == [CONDITIONS[k] for k in range(len(CONDITIONS)) if C_AIR_POCKET >> k & 1]
    assert changes[0].evidence["depth_ratio"] < TH["air_depth_ratio"]
    assert changes[0].evidence["spread_ratio"] >= TH["air_spread_ratio"]
    assert pocket(0.2, 0.5, 0.0).stages() == (0, 0)  # one sign is not a pocket
    assert pocket(0.2, 2.0, 0.0, drift=-SHOCK_DRIFT / 6).stages() == (0, 2)  # the side the price moves against
    # 40 % of the usual depth: thin enough only while traditional markets are closed
    assert pocket(0.4, 2.0, 0.0).stages() == (0, 0)
    closed = pocket(0.4, 2.0, 1.0)
    assert closed.stages() == (2, 0) and closed.stage_changes("long")[0].evidence["tradfi_closed"] == 1.0
    # liquidations then trigger stage 3 in the same episode; the book coming back does not undo the pocket
    episode = sim.state.episode_start[0, LONG]
    sim.run(60, liq_long=30_000, until=in_stage(LONG, 3))
    assert sim.stages()[0] == 3 and sim.state.episode_start[0, LONG] == episode


def cascade(sim: Sim, liq: float = 30_000) -> None:
    sim.run(120, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=liq, until=in_stage(LONG, 4))
    assert sim.stages()[0] == 4


def test_thin_book_when_liquidations_per_minute_outgrow_the_depth() -> None:
    sim = warm()
    cascade(sim)
    sim.run(30, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=30_000)
    assert sim.stages()[0] == 4  # ~1.8 MUSD/min against 20 MUSD within 1 %: the book absorbs it
    sim.depth_scale = 0.05
    n = sim.run(30, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=30_000, until=in_stage(LONG, 5))
    assert n < 30
    thin = sim.stage_changes("long")[-1]
    assert (thin.stage_from, thin.stage) == (4, 5) and thin.bits & C_THIN_BOOK
    assert thin.evidence["liq_to_depth_long"] >= TH["thin_book_ratio"]
    assert not thin.bits & (C_BRANCHING | C_SNOWBALL_SPREAD)


def test_snowball_needs_a_high_rising_branching_ratio_and_a_spreading_burst() -> None:
    def run(branching: float, previous: float) -> Sim:
        sim = warm()
        cascade(sim, liq=20_000)
        sim.run(180, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=20_000)  # a steady burst: not accelerating
        sim.external = {F_BRANCHING_LONG: branching, F_BRANCHING_PREV_LONG: previous}
        for minute in range(4):  # every minute liquidates more than the one before
            sim.run(60, drift=SHOCK_DRIFT / 3, sell=60_000, liq_long=30_000 * 1.5**minute, until=in_stage(LONG, 6))
        return sim

    snow = run(0.9, 0.85)
    change = snow.stage_changes("long")[-1]
    assert change.stage == 6 and change.bits & C_BRANCHING and change.bits & C_SNOWBALL_SPREAD
    assert change.evidence["branching_long"] >= TH["snowball_branching"] and change.evidence["liq_accel_long"] >= 2
    assert run(0.9, 0.95).stages()[0] < 6  # falling
    assert run(0.6, 0.5).stages()[0] < 6  # too low
    # exhaustion needs the branching ratio down as well
    snow.run(300)
    assert snow.stages()[0] == 6 and not snow.state.paused[0, LONG]
    snow.external = {F_BRANCHING_LONG: 0.3, F_BRANCHING_PREV_LONG: 0.9}
    snow.run(5)
    assert snow.state.paused[0, LONG] == 1


def test_without_a_liquidation_feed_taker_flow_against_the_side_stands_in() -> None:
    sim = Sim(background_liquidations=False)
    sim.run(3600)
    assert sim.changes == []
    # a crash on a wall of market sells (40x the usual selling): shock, then the proxy triggers and escalates
    sim.run(300, drift=SHOCK_DRIFT, sell=800_000, until=lambda sim: sim.stages()[0] >= 4)
    ups = sim.stage_changes("long")
    assert [c.stage for c in ups][:1] == [1] and sim.stages()[0] >= 4, [(c.stage_from, c.stage) for c in ups]
    triggered = next(c for c in ups if c.stage >= 3)
    assert triggered.bits & C_PROXY and triggered.evidence["liq_observed"] == 0.0
    assert triggered.evidence["flow_ratio_long"] * TH["liq_trigger_ratio"] / TH["proxy_trigger_ratio"] >= 6
    assert sim.stages()[1] == 0  # the buyers' side is not squeezed by selling
    # a buying spree with price rising is not a flush of the longs
    spree = Sim(background_liquidations=False)
    spree.run(3600)
    spree.run(300, drift=-SHOCK_DRIFT, buy=800_000)
    assert spree.stages()[0] == 0 and spree.stages()[1] >= 3
