"""A scripted, seedable market that speaks Binance: the flush (and its mirror, the squeeze).

A script is data: per asset, a sequence of ``Segment`` s (phases) giving the levels reached at each
phase's end (price, open interest, funding, premium, book depth, spread) and the activity during it
(trade rate, taker mix, liquidation cadence and size). ``Scenario`` turns it into a per-second plan once
(NumPy), then renders any second's frames on demand from a generator seeded by ``(seed, asset, second)``:
the same seed gives the same frames, and rendering costs nothing until a second is due.

Time: scenario seconds ``s`` run ``speed`` times faster than the wall clock from the start,
``t_event = t0 + (wall - wall0) * speed`` with ``t0`` the wall time at start unless given. Frame
timestamps (``E``, ``T``) and the REST ``time`` use that clock.

Rules kept from the real venue:

* ``<sym>@forceOrder`` and ``!forceOrder@arr`` push at most ONE liquidation per symbol per 1000 ms window:
  the latest order of the window, at the window's end. The scenario reports exactly what the cap lets
  through, so the "true" liquidation volume is, as on Binance, unobservable.
* ``<sym>@depth20@100ms`` is a 20-level partial book sent as a ``depthUpdate`` every 100 ms.
* ``<sym>@markPrice@1s`` carries the funding estimate ``r`` per 8 h and the next funding time ``T``.

Payload shapes, verbatim from real frames (tardis fixtures; cryptofeed recording for ``a``)::

    {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,
     "l":23961322,"T":1626992741421,"m":false}
    {"e":"markPriceUpdate","E":1609830121004,"s":"BTCBUSD_210129","p":"31799.27730000","P":"31235.82439517",
     "i":"31307.03400000","r":"0.00000000","T":0}
    {"e":"forceOrder","E":1584059031426,"o":{"s":"BTCUSDT","S":"BUY","o":"LIMIT","f":"IOC","q":"0.014",
     "p":"4793.91","ap":"4706.04","X":"FILLED","l":"0.015","z":"0.014","T":1584059031421}}
    {"e":"depthUpdate","E":1573948821952,"T":1573948821948,"s":"BTCUSDT","U":687687944,"u":687687946,
     "pu":687687946,"b":[["8493.78","0.162"]],"a":[["4096.00000000","2.42541900"]]}
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

import numpy as np

from flushwatch.events import PositionSide
from flushwatch.fake.binance import Frame
from flushwatch.fake.pacing import paced
from flushwatch.signals import stage_name

TimedFrame = tuple[int, str, str]
"""``(E ms, stream, payload)``."""

LiqSide = Literal["long", "short", "any"]

FUNDING_INTERVAL_MS: Final = 8 * 3600 * 1000
_TRADE_LATENCY_MS: Final = 2  # E - T of an aggTrade
_DEPTH_LATENCY_MS: Final = 4  # E - T of a depthUpdate (4 ms in the tardis fixture)
_BOOK_LEVELS: Final = 20
_DEPTH_PER_S: Final = 10


@dataclass(frozen=True)
class Segment:
    """One phase of one asset. Level fields are reached at ``end_s``, moving from the previous phase's
    levels linearly, or front-loaded (exponential approach) when ``tau_s`` is set."""

    name: str
    end_s: int
    stage: int
    """The detector stage this phase should reach before it ends (``flushwatch.signals.STAGE_NAMES``)."""
    price: float
    """Price level relative to the asset's initial price."""
    oi: float
    """Open interest relative to the initial open interest."""
    funding: float
    """Funding rate per 8 h."""
    premium_bps: float
    """Mark over index."""
    trades_per_s: float
    buy_share: float
    """Share of trades whose taker bought; the taker imbalance is ``2 * buy_share - 1``."""
    liq_every_s: float
    """Mean interval between reported liquidations; 1 = every second, the venue's cap."""
    liq_usd: tuple[float, float]
    liq_side: LiqSide
    overheated: bool = False
    depth: float = 1.0
    """Book sizes relative to normal."""
    spread: float = 1.0
    """Spread (and level spacing) relative to normal."""
    tau_s: float | None = None
    noise_bps: float = 2.0
    """Standard deviation of 1-s returns."""
    trade_size: float = 1.0
    """Mean trade notional relative to the asset's normal."""


@dataclass(frozen=True)
class AssetScript:
    symbol: str
    price: float
    oi: float
    funding: float
    premium_bps: float
    tick: float
    price_decimals: int
    qty_decimals: int
    trade_usd: float
    """Mean notional of one aggregated trade in normal times."""
    level_usd: float
    """Mean notional resting on one book level in normal times."""
    side: PositionSide
    """The crowded side this script puts at risk (``long`` in a flush)."""
    segments: tuple[Segment, ...]

    @property
    def asset(self) -> str:
        return self.symbol.removesuffix("USDT")


def _flush(symbol: str, *, price: float, oi: float, tick: float, price_decimals: int, qty_decimals: int,
           trade_usd: float, level_usd: float, trades_per_s: float, funding: tuple[float, float, float],
           shift_s: int, shock: float, crash: float, cascade_s: int, liq_usd: tuple[float, float],
           oi_build: float, oi_purge: float, depth_left: float, spread_mult: float) -> AssetScript:
    """A long flush: build-up (0-480 s, shifted by ``shift_s``), a 60-s shock, a cascade of
    ``cascade_s`` with a liquidation every second, then a recovery of half the drop until 1600 s.
    ``funding`` is (start, end of build-up, recovery) per 8 h; ``shock`` and ``crash`` are price moves."""
    top = 1.005
    trough = top * (1 + shock) * (1 + crash)
    oi_top, oi_bottom = 1 + oi_build, (1 + oi_build) * (1 - oi_purge)
    start_funding, peak_funding, end_funding = funding
    shock_end = 540 + shift_s
    cascade_end = shock_end + cascade_s
    rare = (2_000.0, 5_000.0)
    # Segment(name, end_s, stage, price, oi, funding, premium_bps, trades_per_s, buy_share, liq_every_s,
    #         liq_usd, liq_side, ...)
    return AssetScript(symbol, price, oi, start_funding, 8.0, tick, price_decimals, qty_decimals, trade_usd,
                       level_usd, "long", (
        Segment("build_up", 480 + shift_s, 0, top, oi_top, peak_funding, 8.0, trades_per_s, 0.53, 20.0, rare,
                "any", overheated=True),
        Segment("shock", shock_end, 1, top * (1 + shock), oi_top, peak_funding * 0.85, -4.0, 3 * trades_per_s,
                0.2, 20.0, rare, "any", depth=0.7, spread=2.0, noise_bps=4.0, trade_size=1.2),
        Segment("cascade", cascade_end, 4, trough, oi_bottom, 0.0002, -15.0, 5 * trades_per_s, 0.2, 1.0, liq_usd,
                "long", depth=depth_left, spread=spread_mult, tau_s=cascade_s / 4, noise_bps=6.0, trade_size=1.5),
        Segment("recovery", 1600, 7, trough + 0.5 * (top - trough), oi_bottom, end_funding, 0.0,
                1.5 * trades_per_s, 0.52, 20.0, rare, "any", tau_s=60.0, noise_bps=3.0),
    ))


BTC_FLUSH: Final = _flush(
    "BTCUSDT", price=100_000.0, oi=80_000.0, tick=0.1, price_decimals=1, qty_decimals=3, trade_usd=15_000.0,
    level_usd=150_000.0, trades_per_s=20.0, funding=(0.0003, 0.0008, -0.0001), shift_s=0, shock=-0.02,
    crash=-0.06, cascade_s=180, liq_usd=(200_000.0, 1_000_000.0), oi_build=0.10, oi_purge=0.15, depth_left=0.2,
    spread_mult=5.0)
ETH_FLUSH: Final = _flush(
    "ETHUSDT", price=3_500.0, oi=1_500_000.0, tick=0.01, price_decimals=2, qty_decimals=3, trade_usd=8_000.0,
    level_usd=60_000.0, trades_per_s=15.0, funding=(0.0002, 0.0006, -0.00005), shift_s=30, shock=-0.015,
    crash=-0.04, cascade_s=60, liq_usd=(50_000.0, 200_000.0), oi_build=0.08, oi_purge=0.08, depth_left=0.3,
    spread_mult=3.0)
SOL_OVERHEATED: Final = AssetScript(  # calm price, crowded longs: funding and premium high, OI building
    "SOLUSDT", 150.0, 9_000_000.0, 0.0009, 12.0, 0.01, 2, 0, 3_000.0, 20_000.0, "long", (
        Segment("overheated", 1600, 0, 1.0, 1.12, 0.0009, 12.0, 10.0, 0.55, 30.0, (1_000.0, 4_000.0), "any",
                overheated=True),
    ))


def mirror(script: AssetScript) -> AssetScript:
    """The same story with the other side crowded: price moves inverted, funding and premium negated,
    taker mix and liquidated side swapped (a long flush becomes a short squeeze)."""
    flip: dict[LiqSide, LiqSide] = {"long": "short", "short": "long", "any": "any"}
    return replace(
        script,
        funding=-script.funding,
        premium_bps=-script.premium_bps,
        side="short" if script.side == "long" else "long",
        segments=tuple(
            replace(s, price=1.0 / s.price, funding=-s.funding, premium_bps=-s.premium_bps,
                    buy_share=1.0 - s.buy_share, liq_side=flip[s.liq_side])
            for s in script.segments
        ),
    )


SCRIPTS: Final[dict[str, tuple[AssetScript, ...]]] = {
    "flush": (BTC_FLUSH, ETH_FLUSH, SOL_OVERHEATED),
    "squeeze": (mirror(BTC_FLUSH), mirror(ETH_FLUSH), SOL_OVERHEATED),
}


@dataclass(frozen=True)
class Phase:
    """Ground truth: what the detector should say about ``asset`` between ``start_s`` and ``end_s``."""

    asset: str
    name: str
    start_s: float
    end_s: float
    stage: int
    side: PositionSide
    overheated: bool

    @property
    def stage_name(self) -> str:
        return stage_name(self.stage, self.overheated)


@dataclass(frozen=True)
class Plan:
    """The per-second plan of one asset. Level arrays hold ``duration + 1`` values, at each whole second;
    rate arrays hold ``duration`` values, one per second."""

    price: np.ndarray
    """Mark price (the trade price path)."""
    index: np.ndarray
    funding: np.ndarray
    oi: np.ndarray
    depth: np.ndarray
    spread: np.ndarray
    trades: np.ndarray
    buy_share: np.ndarray
    trade_size: np.ndarray
    liq_usd: np.ndarray
    """Notional of the one liquidation reported for the second, 0 if none."""
    liq_long: np.ndarray
    """True when that liquidation closed a long (``S=SELL``)."""
    liq_offset_ms: np.ndarray
    trade_base: np.ndarray
    """First aggregate-trade id of each second."""
    fill_base: np.ndarray
    """First fill id of each second; ``fills`` holds how many fills the second's trades aggregate."""
    fills: np.ndarray


def _shape(x: np.ndarray, length: float, tau_s: float | None) -> np.ndarray:
    if tau_s is None:
        return x
    return (1.0 - np.exp(-x * length / tau_s)) / (1.0 - math.exp(-length / tau_s))


def _plan(script: AssetScript, duration: int, rng: np.random.Generator) -> Plan:
    n = duration
    levels = {k: np.empty(n + 1) for k in ("price", "oi", "funding", "premium", "depth", "spread")}
    rates = {k: np.empty(n) for k in ("trades", "buy", "size", "noise", "liq_every", "liq_lo", "liq_hi",
                                      "liq_side")}
    prev = {"price": 1.0, "oi": 1.0, "funding": script.funding, "premium": script.premium_bps, "depth": 1.0,
            "spread": 1.0}
    start = 0
    for seg in script.segments:
        end = min(seg.end_s, n)
        b = np.arange(start, end + 1)
        f = _shape((b - start) / max(seg.end_s - start, 1), seg.end_s - start, seg.tau_s)
        target = {"price": seg.price, "oi": seg.oi, "funding": seg.funding, "premium": seg.premium_bps,
                  "depth": seg.depth, "spread": seg.spread}
        for key, arr in levels.items():
            if key == "price":  # prices move in log space
                arr[b] = np.exp(math.log(prev[key]) + (math.log(target[key]) - math.log(prev[key])) * f)
            else:
                arr[b] = prev[key] + (target[key] - prev[key]) * f
        prev = target
        k = slice(start, end)
        side_code = {"long": 1.0, "short": 0.0, "any": -1.0}[seg.liq_side]
        for key, value in (("trades", seg.trades_per_s), ("buy", seg.buy_share), ("size", seg.trade_size),
                           ("noise", seg.noise_bps), ("liq_every", seg.liq_every_s), ("liq_lo", seg.liq_usd[0]),
                           ("liq_hi", seg.liq_usd[1]), ("liq_side", side_code)):
            rates[key][k] = value
        start = end
    if start < n:
        raise ValueError(f"{script.symbol}: segments end at {start} s, before the scenario's {n} s")

    # Mean-reverting noise around the scripted path: 1-s returns have the scripted sd, yet the path stays
    # within a few tenths of a percent of the script (AR(1), phi 0.98: stationary sd is ~5x the step sd).
    phi = 0.98
    steps = rng.standard_normal(n) * rates["noise"] * 1e-4 * math.sqrt((1 + phi) / 2)
    eps = np.zeros(n + 1)
    for i in range(n):
        eps[i + 1] = phi * eps[i] + steps[i]
    price = script.price * levels["price"] * np.exp(eps)
    index = price / (1.0 + levels["premium"] * 1e-4)
    oi = script.oi * levels["oi"] * (1.0 + 1e-4 * rng.standard_normal(n + 1))

    trades = rng.poisson(rates["trades"])
    fills = trades + rng.poisson(trades * 1.5)
    has_liq = rng.random(n) < 1.0 / rates["liq_every"]
    liq_usd = np.where(has_liq, rng.uniform(rates["liq_lo"], rates["liq_hi"]), 0.0)
    random_long = rng.random(n) < 0.5
    liq_long = np.where(rates["liq_side"] < 0, random_long, rates["liq_side"] > 0)
    return Plan(
        price=price, index=index, funding=levels["funding"], oi=oi, depth=levels["depth"],
        spread=levels["spread"], trades=trades, buy_share=rates["buy"], trade_size=rates["size"],
        liq_usd=liq_usd, liq_long=liq_long, liq_offset_ms=rng.integers(0, 1000, n),
        trade_base=1 + np.concatenate(([0], np.cumsum(trades)[:-1])),
        fill_base=1 + np.concatenate(([0], np.cumsum(fills)[:-1])), fills=fills,
    )


class _Asset:
    """One asset's script, plan and renderers; ``render`` builds the frames of one second.

    Payloads are filled into %-templates built once per asset: one C-level formatting call per frame
    instead of one per number keeps a second of a crash (hundreds of frames) cheap to render.
    """

    def __init__(self, script: AssetScript, index: int, duration: int, seed: int) -> None:
        self.script = script
        self.index = index
        self.seed = seed
        self.plan = _plan(script, duration, np.random.default_rng([seed, index, 0]))
        lower = script.symbol.lower()
        self.streams = (f"{lower}@aggTrade", f"{lower}@markPrice@1s", f"{lower}@depth20@100ms",
                        f"{lower}@forceOrder", "!forceOrder@arr")
        self._step = 10.0 ** -script.qty_decimals
        sym, px, qty = script.symbol, f"%.{script.price_decimals}f", f"%.{script.qty_decimals}f"
        self._px = px
        self._qty_fmt = qty
        self._trade = (f'{{"e":"aggTrade","E":%d,"a":%d,"s":"{sym}","p":"{px}","q":"{qty}","f":%d,"l":%d,'
                       f'"T":%d,"m":%s}}')
        self._mark = (f'{{"e":"markPriceUpdate","E":%d,"s":"{sym}","p":"%.8f","i":"%.8f","P":"%.8f",'
                      f'"r":"%.8f","T":%d}}')
        side = ",".join([f'["{px}","{qty}"]'] * _BOOK_LEVELS)
        self._book = (f'{{"e":"depthUpdate","E":%d,"T":%d,"s":"{sym}","U":%d,"u":%d,"pu":%d,'
                      f'"b":[{side}],"a":[{side}]}}')
        self._liq = (f'{{"e":"forceOrder","E":%d,"o":{{"s":"{sym}","S":"%s","o":"LIMIT","f":"IOC","q":"%s",'
                     f'"p":"{px}","ap":"{px}","X":"FILLED","l":"%s","z":"%s","T":%d}}}}')

    def render(self, k: int, t0_ms: int, out: list[tuple[int, int, str, str]]) -> None:
        rng = np.random.default_rng([self.seed, self.index, 1, k])
        base_ms = t0_ms + k * 1000
        self._trades(k, base_ms, rng, out)
        self._mark_price(k, base_ms, out)
        self._depth(k, base_ms, rng, out)
        self._liquidation(k, base_ms, out)

    def _price_at(self, k: int, frac: np.ndarray) -> np.ndarray:
        p = self.plan.price
        return np.exp(np.log(p[k]) + (np.log(p[k + 1]) - np.log(p[k])) * frac)

    def _trades(self, k: int, base_ms: int, rng: np.random.Generator, out: list[tuple[int, int, str, str]]) -> None:
        path, s = self.plan, self.script
        n = int(path.trades[k])
        if n == 0:
            return
        t = base_ms + np.sort(rng.integers(0, 1000 - _TRADE_LATENCY_MS, n))
        buys = rng.random(n) < path.buy_share[k]
        mid = self._price_at(k, (t - base_ms) / 1000.0) * np.exp(rng.normal(0.0, 0.3e-4, n))
        half_spread = 0.5 * max(1, round(path.spread[k])) * s.tick
        prices = np.round((mid + np.where(buys, half_spread, -half_spread)) / s.tick) * s.tick
        qty = np.maximum(s.trade_usd * path.trade_size[k] * rng.lognormal(-0.5, 1.0, n) / prices, self._step)
        per_trade = 1 + rng.multinomial(int(path.fills[k]) - n, np.full(n, 1.0 / n))
        last = int(path.fill_base[k]) + np.cumsum(per_trade) - 1
        first = last - per_trade + 1
        ids = int(path.trade_base[k]) + np.arange(n)
        template, stream = self._trade, self.streams[0]
        for row in zip((t + _TRADE_LATENCY_MS).tolist(), ids.tolist(), prices.tolist(), qty.tolist(),
                       first.tolist(), last.tolist(), t.tolist(), np.where(buys, "false", "true").tolist(),
                       strict=True):
            out.append((row[0], 0, stream, template % row))

    def _mark_price(self, k: int, base_ms: int, out: list[tuple[int, int, str, str]]) -> None:
        path = self.plan
        next_funding = (base_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        index = float(path.index[k])
        out.append((base_ms, 1, self.streams[1], self._mark % (
            base_ms, float(path.price[k]), index, index, float(path.funding[k]), next_funding)))

    def _depth(self, k: int, base_ms: int, rng: np.random.Generator, out: list[tuple[int, int, str, str]]) -> None:
        path, s = self.plan, self.script
        spread_ticks = max(1, round(path.spread[k]))
        mids = self._price_at(k, np.arange(_DEPTH_PER_S) / _DEPTH_PER_S) / s.tick
        best_bid = np.floor(mids - spread_ticks / 2)
        # Gaps between levels widen with the spread: a crash thins the book in price as well as in size.
        gaps = rng.integers(1, 4, (_DEPTH_PER_S, 2, _BOOK_LEVELS)) * spread_ticks
        gaps[:, :, 0] = 0
        ticks = np.cumsum(gaps, axis=2)
        prices = np.empty((_DEPTH_PER_S, 2, _BOOK_LEVELS))
        prices[:, 0] = (best_bid[:, None] - ticks[:, 0]) * s.tick
        prices[:, 1] = (best_bid[:, None] + spread_ticks + ticks[:, 1]) * s.tick
        usd = s.level_usd * path.depth[k] * rng.lognormal(-0.5, 1.0, (_DEPTH_PER_S, 2, _BOOK_LEVELS))
        levels = np.stack((prices, np.maximum(usd / prices, self._step)), axis=3)  # frame, side, level, (p, q)
        template, stream = self._book, self.streams[2]
        first_update = (k * _DEPTH_PER_S) * 100 + 10_000_000 * (self.index + 1)
        for j, numbers in enumerate(levels.reshape(_DEPTH_PER_S, -1).tolist()):
            t = base_ms + j * 100
            update = first_update + j * 100  # U, u, pu chain: each frame's pu is the previous frame's u
            out.append((t + _DEPTH_LATENCY_MS, 2, stream,
                        template % (t + _DEPTH_LATENCY_MS, t, update + 1, update + 100, update, *numbers)))

    def _liquidation(self, k: int, base_ms: int, out: list[tuple[int, int, str, str]]) -> None:
        path = self.plan
        usd = float(path.liq_usd[k])
        if usd <= 0.0:
            return
        t = base_ms + int(path.liq_offset_ms[k])
        e = base_ms + 1000  # the window's one order is pushed when the window closes
        price = float(self._price_at(k, np.array([(t - base_ms) / 1000.0]))[0])
        long = bool(path.liq_long[k])
        sign = -1.0 if long else 1.0  # a long is closed by a SELL below the market, a short by a BUY above
        qty = self._qty_fmt % max(usd / price, self._step)
        payload = self._liq % (e, "SELL" if long else "BUY", qty, price * (1 + sign * 0.015),
                               price * (1 + sign * 0.0003), qty, qty, t)
        out.append((e, 3, self.streams[3], payload))
        out.append((e, 3, self.streams[4], payload))


class Scenario:
    """A deterministic scripted market for several symbols. Attach it to ``FakeBinance`` to serve it.

    ``script`` names one of ``SCRIPTS`` (``flush``, ``squeeze``) or gives the asset scripts themselves.
    """

    def __init__(
        self,
        script: str | Sequence[AssetScript] = "flush",
        *,
        seed: int = 0,
        speed: float = 40.0,
        t0: float | None = None,
        clock: Callable[[], float] = time.time,
        batch_interval_s: float = 0.005,
    ) -> None:
        if speed <= 0 or not math.isfinite(speed):
            raise ValueError("speed must be a positive number")
        scripts = SCRIPTS[script] if isinstance(script, str) else tuple(script)
        self.duration_s = max(s.segments[-1].end_s for s in scripts)
        self.seed = seed
        self.speed = speed
        self.batch_interval_s = batch_interval_s
        self._clock = clock
        self._t0 = t0
        self._wall0: float | None = None
        self._assets = [_Asset(s, i, self.duration_s, seed) for i, s in enumerate(scripts)]
        self._by_symbol = {a.script.symbol: a for a in self._assets}
        self._by_asset = {a.script.asset: a for a in self._assets}

    # --- clock ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scenario clock now (``batches`` does it when not done before)."""
        self._wall0 = self._clock()
        if self._t0 is None:
            self._t0 = self._wall0

    @property
    def started(self) -> bool:
        return self._wall0 is not None

    @property
    def t0_ms(self) -> int:
        """Event time of scenario second 0, in ms. Before ``start`` without an explicit ``t0``: the wall
        clock now."""
        return round((self._t0 if self._t0 is not None else self._clock()) * 1000)

    def now_s(self) -> float:
        """Scenario seconds elapsed; 0 before the start."""
        if self._wall0 is None:
            return 0.0
        return max(0.0, (self._clock() - self._wall0) * self.speed)

    def offset_s(self, ts_event_ns: int) -> float:
        """Scenario seconds of an event timestamp (``ts_event`` of a normalised event)."""
        return ts_event_ns / 1e9 - self.t0_ms / 1000.0

    # --- contents -------------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._by_symbol)

    @property
    def streams(self) -> list[str]:
        """Every stream the scenario pushes."""
        return list(dict.fromkeys(s for a in self._assets for s in a.streams))

    def plan(self, symbol_or_asset: str) -> Plan:
        return self._asset(symbol_or_asset).plan

    def _asset(self, name: str) -> _Asset:
        found = self._by_symbol.get(name) or self._by_asset.get(name)
        if found is None:
            raise KeyError(f"no asset {name!r} in this scenario")
        return found

    @property
    def phases(self) -> list[Phase]:
        out = []
        for a in self._assets:
            start = 0
            for seg in a.script.segments:
                out.append(Phase(a.script.asset, seg.name, start, seg.end_s, seg.stage, a.script.side,
                                 seg.overheated))
                start = seg.end_s
        return out

    def phase_at(self, asset: str, t: float) -> Phase:
        """The phase of ``asset`` (``BTC`` or ``BTCUSDT``) at scenario second ``t``; past the end, the last."""
        if t < 0:
            raise ValueError("scenario time starts at 0")
        name = self._asset(asset).script.asset
        phases = [p for p in self.phases if p.asset == name]
        return next((p for p in phases if t < p.end_s), phases[-1])

    def oi_at(self, symbol: str, t: float) -> float:
        """Open interest (base units) at scenario second ``t``, as the REST endpoint reports it."""
        path = self._asset(symbol).plan
        return float(path.oi[min(max(int(t), 0), self.duration_s)])

    def open_interest(self, symbol: str) -> tuple[str, int] | None:
        asset = self._by_symbol.get(symbol)
        if asset is None:
            return None
        now = self.now_s()
        text = f"{self.oi_at(symbol, now):.{asset.script.qty_decimals}f}"
        return text, self.t0_ms + int(now * 1000)

    # --- frames ---------------------------------------------------------------------------------

    def frames_for_second(self, k: int) -> list[TimedFrame]:
        """Every frame of scenario second ``k`` (all assets), in push order."""
        if not 0 <= k < self.duration_s:
            raise IndexError(f"second {k} is outside the scenario (0..{self.duration_s - 1})")
        out: list[tuple[int, int, str, str]] = []
        t0_ms = self.t0_ms
        for asset in self._assets:
            asset.render(k, t0_ms, out)
        out.sort(key=lambda f: (f[0], f[1]))
        return [(e, stream, payload) for e, _, stream, payload in out]

    def frames(self, start_s: int = 0, end_s: int | None = None) -> Iterator[TimedFrame]:
        """Frames of seconds ``start_s`` to ``end_s`` (exclusive; default: the end), without pacing."""
        for k in range(start_s, self.duration_s if end_s is None else min(end_s, self.duration_s)):
            yield from self.frames_for_second(k)

    async def batches(self) -> AsyncIterator[list[Frame]]:
        """Frames paced by the scenario clock, grouped by ``batch_interval_s`` of wall time."""
        if self._wall0 is None:
            self.start()
        assert self._wall0 is not None
        items = ((e_ms, (stream, payload)) for k in range(int(self.now_s()), self.duration_s)
                 for e_ms, stream, payload in self.frames_for_second(k))
        async for batch in paced(items, wall0=self._wall0, t0_ms=self.t0_ms, speed=self.speed, clock=self._clock,
                                 batch_interval_s=self.batch_interval_s):
            yield batch
