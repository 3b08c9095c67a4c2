"""The agent-based market: leveraged positions, a limit order book, a risk engine, spot buyers.

One asset, 1-s steps. The book is resting USD per level on a log grid (``level_bps`` apart). Market makers
pull it toward a profile around mid, cancelling fast (``withdraw_s``) and refilling slowly (``refill_s``);
value traders rest bids below the fundamental value and asks above it, more the further away. Both scale
with the inverse square of short-term volatility once it exceeds ``calm_vol_bps``: a crash empties the book
(the air pocket). Each second's market orders (noise traders, leveraged traders opening and closing, the
exogenous shock, the risk engine, spot buyers) are netted and the net walks the book; where it stops is the
new price. Leveraged positions (entry, USD size, leverage from a capped lognormal) carry a liquidation price
with maintenance margin; once the price crosses it the risk engine force-closes the position with a market
order the next second, walking the book further: the cascade is not scripted. During the build-up the
crowd (longs, or shorts with ``side="short"``) adds high-leverage positions while the fundamental drifts
its way; premium follows the long/short imbalance of leveraged open interest and funding is the 8-h rate
Binance's formula gives for the premium's EWMA, published each second, never paid. Spot buyers (sellers in
a squeeze) step in once open interest is purged, the price is beyond the crowd's mean entry and forced
orders have quietened. Open interest counts every leveraged position: the counterparties are hedged makers,
never liquidated. All randomness is one ``PCG64(seed)`` stream, drawn in the same order for every config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from flushwatch.events import PositionSide
from flushwatch.simulator.book import relax, target, walk

PENDING, OPEN, CLOSED, LIQUIDATED = 0, 1, 2, 3
"""Position states."""
NOISE, SPOT, SHOCK, OPENING, CLOSING, FORCED = range(6)
"""Order kinds (``Run.kind``)."""
BINANCE, BYBIT = 0, 1
VENUES: Final = ("binance", "bybit")
INTEREST_8H: Final = 0.0001
FUNDING_CLAMP: Final = 0.0005
BOOK_LEVELS: Final = 50
"""Levels per side kept for every second (the deepest book a venue sends: Bybit's ``orderbook.50``)."""
_GRID_LN: Final = math.log(4.0)
"""The price grid spans /4 to x4 around the initial price."""


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    minutes: float = 120.0
    side: PositionSide = "long"
    """The crowded side: ``long`` is flushed by a sell shock, ``short`` squeezed by a buy shock."""
    symbol: str = "BTCUSDT"
    price: float = 100_000.0
    tick: float = 0.1
    price_decimals: int = 1
    qty_decimals: int = 3
    t0_ms: int = 1_760_000_000_000
    binance_share: float = 0.6
    """Share of positions, order flow and depth on Binance; the rest is on Bybit."""
    # --- book and makers
    level_bps: float = 2.0
    level_usd: float = 100_000.0
    """Normal resting USD on the level next to mid; it grows by one ``level_usd`` every ``slope_levels``."""
    slope_levels: float = 50.0
    max_profile: float = 2.0
    """Resting USD per level stops growing with distance at this multiple of ``level_usd``."""
    window_levels: int = 500
    refill_s: float = 5.0
    withdraw_s: float = 2.0
    calm_vol_bps: float = 30.0
    """Makers keep the full target while 1-s volatility (EWMA of squares over ``vol_s``) stays below this."""
    vol_s: float = 10.0
    min_depth: float = 0.2
    # --- background flow
    noise_trades_per_s: float = 20.0
    noise_trade_usd: float = 15_000.0
    value_usd_per_pct: float = 60_000.0
    """Value traders' resting USD per level for each 1 % a level lies beyond the fundamental."""
    # --- leveraged positions
    oi_usd: float = 400_000_000.0
    """Leveraged open interest of each side at the start."""
    position_usd: float = 200_000.0
    hold_s: float = 4 * 3600.0
    leverage: float = 2.0
    """Median leverage of the background positions; the build-up's is ``buildup_leverage``."""
    leverage_sigma: float = 0.4
    max_leverage: float = 50.0
    mmr: float = 0.005
    buildup_leverage: float = 16.0
    buildup_oi: float = 0.35
    """Crowd open interest added during the build-up, relative to the crowd's initial."""
    buildup_start: float = 0.1
    """Start of the build-up, as a share of the time to the shock."""
    rally: float = 0.015
    """How far the fundamental drifts the crowd's way during the build-up."""
    # --- shock
    shock_at: tuple[float, float] = (0.4, 0.5)
    """The shock comes at a seeded time within this share of the run."""
    shock_usd: float = 50_000_000.0
    """Mean size of the aggressive selling (buying in a squeeze); the seeded size is 0.8-1.2 times this.
    0: no shock."""
    shock_len_s: int = 20
    """The shock's market orders are spread evenly over this many seconds."""
    shock_value: float = 0.015
    """How far the news behind the shock moves the fundamental."""
    # --- premium, funding, spot buyers
    premium_bps: float = 100.0
    """Premium per unit of leveraged long/short imbalance ``(L - S) / (L + S)``."""
    funding_s: float = 300.0
    spot_usd_per_pct: float = 300_000.0
    """Spot buyers' flow per 1 % of price below the crowd's mean entry, once leverage is purged."""
    purge: float = 0.05
    """Open interest below its pre-shock peak by this share counts as purged for spot buyers."""
    quiet_usd: float = 200_000.0
    """Forced USD per second (EWMA) at which spot buyers' appetite halves."""

    @property
    def duration_s(self) -> int:
        return round(self.minutes * 60)

    @property
    def crowd(self) -> int:
        """+1 when longs are crowded, -1 for shorts."""
        return 1 if self.side == "long" else -1

    def level_price(self, levels: np.ndarray) -> np.ndarray:
        """Price of grid levels (0 = the initial price), on the tick grid."""
        return np.round(self.price * np.exp(levels * self.level_bps * 1e-4) / self.tick) * self.tick


@dataclass
class Positions:
    """Every leveraged position the run will ever hold, struct of arrays, ordered by ``open_s``."""

    side: np.ndarray  # +1 long, -1 short
    venue: np.ndarray
    usd: np.ndarray  # notional at entry
    leverage: np.ndarray
    open_s: np.ndarray  # -1: open before the start
    close_s: np.ndarray  # the second its holder closes it, unless liquidated first
    entry: np.ndarray
    size: np.ndarray  # base units
    liq: np.ndarray  # liquidation price
    state: np.ndarray
    exit_s: np.ndarray  # the second it closed or was liquidated; -1 while open

    def bankruptcy(self, index: np.ndarray) -> np.ndarray:
        """The price at which a position's margin is gone (what Bybit reports as the liquidation price)."""
        return self.entry[index] * (1.0 - self.side[index] / self.leverage[index])


@dataclass
class Run:
    """One simulated run: per-second state (arrays of ``duration_s``) and the order log."""

    config: SimConfig
    shock_s: int  # -1 without a shock
    positions: Positions
    mid: np.ndarray  # after each second
    boundary: np.ndarray  # grid level of the best bid after each second
    fundamental: np.ndarray
    premium: np.ndarray  # fraction
    funding: np.ndarray  # 8-h rate
    oi: np.ndarray  # (n, venue) base units, after each second
    oi_side: np.ndarray  # (n, 2): longs, shorts
    opened: np.ndarray  # base units per second
    closed: np.ndarray
    liquidated: np.ndarray
    forced_usd: np.ndarray  # (n, 2): longs, shorts liquidated in each second
    taker_usd: np.ndarray  # (n, 2): taker buys, taker sells
    spot_usd: np.ndarray
    depth1: np.ndarray  # (n, 2): bid, ask USD within 1 % of mid
    book: np.ndarray  # (n, 2, BOOK_LEVELS): bid levels down from the boundary, ask levels up from it
    # order log, by second then kind
    order_s: np.ndarray
    kind: np.ndarray
    usd: np.ndarray  # signed: + buy, - sell
    venue: np.ndarray
    position: np.ndarray  # the position of an opening, closing or forced order; -1 for others
    offset_ms: np.ndarray
    price: np.ndarray

    @property
    def index(self) -> np.ndarray:
        return self.mid / (1.0 + self.premium)


def _leverage(rng: np.random.Generator, n: int, median: float, config: SimConfig) -> np.ndarray:
    return np.minimum(1.0 + (median - 1.0) * rng.lognormal(0.0, config.leverage_sigma, n), config.max_leverage)


def _positions(config: SimConfig, shock_s: int, rng: np.random.Generator) -> Positions:
    n_s = config.duration_s
    per_side = round(config.oi_usd / config.position_usd)
    parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray | float]] = []
    for sign in (1, -1):
        # Open before the start: entries spread around the price, leverage such that none is under water.
        lev = _leverage(rng, per_side, config.leverage, config)
        entry = config.price * np.exp(rng.normal(0.0, 0.01, per_side))
        keep = sign * (config.price - entry * (1 - sign / lev) / (1 - sign * config.mmr)) > 0.005 * config.price
        parts.append((np.full(keep.sum(), -1), sign, lev[keep], entry[keep]))
        # A stationary background: as many open per second as close.
        count = rng.poisson(per_side / config.hold_s * n_s)
        parts.append((np.sort(rng.integers(0, n_s, count)), sign, _leverage(rng, count, config.leverage, config),
                      np.nan))
    build_end = shock_s if shock_s >= 0 else int(config.shock_at[0] * n_s)
    build_start = int(config.buildup_start * build_end)
    count = round(config.buildup_oi * config.oi_usd / config.position_usd)
    parts.append((np.sort(rng.integers(build_start, max(build_end, build_start + 1), count)), config.crowd,
                  _leverage(rng, count, config.buildup_leverage, config), np.nan))
    open_s = np.concatenate([p[0] for p in parts])
    n = len(open_s)
    order = np.argsort(open_s, kind="stable")
    side = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])[order].astype(np.int8)
    lev = np.concatenate([p[2] for p in parts])[order]
    entry = np.concatenate([np.broadcast_to(p[3], len(p[0])) for p in parts])[order]
    usd = config.position_usd * rng.lognormal(-0.5, 1.0, n)
    open_s = open_s[order]
    close_s = open_s + 1 + rng.exponential(config.hold_s, n).astype(np.int64)
    state = np.where(open_s < 0, OPEN, PENDING).astype(np.int8)
    size = usd / entry  # NaN until opened
    liq = entry * (1 - side / lev) / (1 - side * config.mmr)
    venue = np.where(rng.random(n) < config.binance_share, BINANCE, BYBIT).astype(np.int8)
    return Positions(side, venue, usd, lev, open_s, close_s, entry, size, liq, state, np.full(n, -1))


class _Log:
    """The order log, one small array per second and kind, joined at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, t: int, kind: int, usd: np.ndarray, venue: np.ndarray, position: np.ndarray | None = None) -> None:
        keep = usd != 0.0
        if keep.any():
            pos = np.full(len(usd), -1) if position is None else position
            self.parts.append((np.full(keep.sum(), t), np.full(keep.sum(), kind, np.int8), usd[keep],
                               venue[keep].astype(np.int8), pos[keep]))

    def split(self, t: int, kind: int, usd: float, share: float) -> None:
        """A flow spread over both venues by their share."""
        self.add(t, kind, np.array([usd * share, usd * (1.0 - share)]), np.array([BINANCE, BYBIT]))

    def usd_since(self, mark: int) -> np.ndarray:
        return np.concatenate([p[2] for p in self.parts[mark:]] or [np.zeros(0)])

    def columns(self) -> list[np.ndarray]:
        return [np.concatenate([p[i] for p in self.parts]) for i in range(5)]


def simulate(config: SimConfig) -> Run:
    """Run the market for ``config.duration_s`` seconds."""
    rng = np.random.Generator(np.random.PCG64(config.seed))
    n, c, share = config.duration_s, config.crowd, config.binance_share
    # Drawn even without a shock, so a run without one differs from its twin only by the shock.
    shock_s = int(rng.uniform(*config.shock_at) * n)
    shock_usd = config.shock_usd * rng.uniform(0.8, 1.2)
    pos = _positions(config, shock_s, rng)
    if shock_usd <= 0.0:
        shock_s = -1
    counts = rng.poisson(config.noise_trades_per_s, n)
    noise_s = np.repeat(np.arange(n), counts)
    noise_usd = config.noise_trade_usd * rng.lognormal(-0.5, 1.0, len(noise_s)) * rng.choice([-1.0, 1.0], len(noise_s))
    noise_venue = np.where(rng.random(len(noise_s)) < share, BINANCE, BYBIT)
    noise_at = np.concatenate(([0], np.cumsum(counts)))

    step = config.level_bps * 1e-4
    half = math.ceil(_GRID_LN / step)
    depth = np.zeros(2 * half)
    b = half - 1  # best bid just below the initial price
    grid_mid = lambda level: config.price * math.exp((level - half + 0.5) * step)  # noqa: E731
    mid_prev = grid_mid(b)
    shock_time = shock_s if shock_s >= 0 else int(config.shock_at[0] * n)
    build_start = int(config.buildup_start * shock_time)
    ramp = np.clip((np.arange(n) - build_start) / max(shock_time - build_start, 1), 0.0, 1.0)
    fundamental = config.price * np.exp(c * config.rally * ramp - c * config.shock_value * (
        (np.arange(n) >= shock_s) & (shock_s >= 0)))

    fair = half + np.log(fundamental / config.price) / step
    lo, initial = target(b, config, 1.0, fair[0], half - 1)
    depth[lo:lo + len(initial)] = initial
    rec = {k: np.zeros(n) for k in ("mid", "premium", "funding", "spot", "opened", "closed", "liquidated")}
    rec2 = {k: np.zeros((n, 2)) for k in ("oi", "oi_side", "forced", "taker", "depth1")}
    book = np.zeros((n, 2, BOOK_LEVELS))
    boundary = np.zeros(n, np.int64)
    log = _Log()
    side_col = (1 - pos.side) // 2  # 0 long, 1 short
    live = pos.state == OPEN
    oi = np.zeros((2, 2))  # venue, side
    np.add.at(oi, (pos.venue[live], side_col[live]), pos.size[live])
    crowd_live = live & (pos.side == c)
    crowd_size, crowd_cost = pos.size[crowd_live].sum(), (pos.size * pos.entry)[crowd_live].sum()
    first = int(np.searchsorted(pos.open_s, 0))
    var, premium_ewma, forced_ewma = (0.3 * config.calm_vol_bps * 1e-4) ** 2, 0.0, 0.0
    oi_peak = oi.sum()
    flagged = np.zeros(0, np.int64)
    one_pct = round(100.0 / config.level_bps)

    def close(index: np.ndarray, state: int, t: int, kind: int) -> float:
        nonlocal crowd_size, crowd_cost
        pos.state[index], pos.exit_s[index] = state, t
        np.add.at(oi, (pos.venue[index], side_col[index]), -pos.size[index])
        mine = index[pos.side[index] == c]
        crowd_size -= pos.size[mine].sum()
        crowd_cost -= (pos.size * pos.entry)[mine].sum()
        log.add(t, kind, -pos.side[index] * pos.size[index] * mid_prev, pos.venue[index], index)
        return float(pos.size[index].sum())

    for t in range(n):
        mark = len(log.parts)
        last = int(np.searchsorted(pos.open_s, t, side="right"))
        new = np.arange(first, last)
        first = last
        pos.entry[new] = mid_prev
        pos.size[new] = pos.usd[new] / mid_prev
        pos.liq[new] = mid_prev * (1 - pos.side[new] / pos.leverage[new]) / (1 - pos.side[new] * config.mmr)
        pos.state[new] = OPEN
        np.add.at(oi, (pos.venue[new], side_col[new]), pos.size[new])
        mine = new[pos.side[new] == c]
        crowd_size += pos.size[mine].sum()
        crowd_cost += pos.size[mine].sum() * mid_prev
        log.add(t, OPENING, pos.side[new] * pos.usd[new], pos.venue[new], new)
        rec["opened"][t] = pos.size[new].sum()
        quitting = np.flatnonzero((pos.close_s == t) & (pos.state == OPEN))
        rec["closed"][t] = close(quitting, CLOSED, t, CLOSING)
        forced = flagged[pos.state[flagged] == OPEN]
        rec["liquidated"][t] = close(forced, LIQUIDATED, t, FORCED)
        for s in (0, 1):
            rec2["forced"][t, s] = (pos.size[forced] * mid_prev)[side_col[forced] == s].sum()
        forced_ewma += (rec2["forced"][t].sum() - forced_ewma) / 10.0
        a, z = noise_at[t], noise_at[t + 1]
        log.add(t, NOISE, noise_usd[a:z], noise_venue[a:z])
        if 0 <= t - shock_s < config.shock_len_s:
            log.split(t, SHOCK, -c * shock_usd / config.shock_len_s, share)
        purged = min(1.0, max(0.0, (oi_peak - oi.sum()) / (oi_peak * config.purge)))
        discount = max(0.0, c * math.log(crowd_cost / crowd_size / mid_prev)) if crowd_size > 0 else 0.0
        spot = c * config.spot_usd_per_pct * 100.0 * discount * purged / (1.0 + forced_ewma / config.quiet_usd)
        rec["spot"][t] = spot
        log.split(t, SPOT, spot, share)

        flows = log.usd_since(mark)
        rec2["taker"][t] = flows[flows > 0].sum(), -flows[flows < 0].sum()
        b = walk(depth, b, float(flows.sum()))
        if not config.window_levels <= b < len(depth) - config.window_levels:
            raise ValueError(f"second {t}: the price left the simulated grid (/4 to x4); the config is unstable")
        mid = grid_mid(b)
        var += (math.log(mid / mid_prev) ** 2 - var) / config.vol_s
        relax(depth, b, config, min(1.0, max(config.min_depth, (config.calm_vol_bps * 1e-4) ** 2 / var)), fair[t])
        mid_prev = mid

        long_oi, short_oi = oi[:, 0].sum(), oi[:, 1].sum()
        premium = config.premium_bps * 1e-4 * (long_oi - short_oi) / max(long_oi + short_oi, 1e-12)
        premium_ewma += (premium - premium_ewma) / config.funding_s
        if t < shock_time:
            oi_peak = max(oi_peak, oi.sum())
        flagged = np.flatnonzero((pos.state == OPEN) & (pos.side * (mid - pos.liq) <= 0.0))
        rec["mid"][t], rec["premium"][t] = mid, premium
        rec["funding"][t] = premium_ewma + min(FUNDING_CLAMP, max(-FUNDING_CLAMP, INTEREST_8H - premium_ewma))
        rec2["oi"][t], rec2["oi_side"][t] = oi.sum(axis=1), (long_oi, short_oi)
        rec2["depth1"][t] = depth[b - one_pct + 1:b + 1].sum(), depth[b + 1:b + one_pct + 1].sum()
        book[t, 0], book[t, 1] = depth[b:b - BOOK_LEVELS:-1], depth[b + 1:b + 1 + BOOK_LEVELS]
        boundary[t] = b - half

    order_s, kind, usd, venue, position = log.columns()
    offset = rng.integers(0, 998, len(order_s))
    mids = np.log(np.concatenate(([grid_mid(half - 1)], rec["mid"])))
    frac = offset / 1000.0
    price = np.exp(mids[order_s] + (mids[order_s + 1] - mids[order_s]) * frac + np.sign(usd) * step / 2)
    price = np.round(price / config.tick) * config.tick
    return Run(config, shock_s, pos, rec["mid"], boundary, fundamental, rec["premium"], rec["funding"], rec2["oi"],
               rec2["oi_side"], rec["opened"], rec["closed"], rec["liquidated"], rec2["forced"], rec2["taker"],
               rec["spot"], rec2["depth1"], book, order_s, kind, usd, venue, position, offset, price)
