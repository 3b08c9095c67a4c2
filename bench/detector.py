"""The detector: kernels alone over columnar batches, and the whole role reading from Redis."""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np

from bench.common import Stopwatch, emit, started_like_the_service
from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE
from detector.engine import Detector
from detector.shard import DetectorEngine
from flushwatch.events import Depth, Event, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.redis_client import connect_redis
from flushwatch.servers import private_redis
from flushwatch.settings import Settings, load_settings
from flushwatch.streams import encode_batch, events_key

INSTRUMENTS = 1_500
EVENTS_PER_S = 20_000
"""Event-time rate of the synthetic market: what decides how many evaluations fall between events."""
BATCH = 4_096
T0 = 1_760_000_000.0
MIX = ((TRADE, 0.70), (DEPTH, 0.15), (FUNDING, 0.10), (LIQ, 0.04), (OI, 0.01))


def synthetic_columns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` valid events over ``INSTRUMENTS`` slots in time order, as the batch builder would make them."""
    kinds = np.array([k for k, _ in MIX], np.int8)
    kind = rng.choice(kinds, size=n, p=[p for _, p in MIX]).astype(np.int8)
    slot = rng.integers(0, INSTRUMENTS, n).astype(np.int32)
    t = T0 + np.sort(rng.uniform(0, n / EVENTS_PER_S, n))
    price = 100.0 * np.exp(rng.normal(0, 0.001, n))
    v0 = price
    v1 = np.where(kind == FUNDING, price * (1 - 1e-4), rng.uniform(1e3, 1e5, n))
    v1 = np.where(kind == OI, v1 / price, v1)
    v0 = np.where(kind == OI, rng.uniform(1e8, 1e9, n), v0)
    v2 = np.where((kind == TRADE) | (kind == LIQ), rng.choice([-1.0, 1.0], n), 0.0)
    v2 = np.where(kind == FUNDING, rng.normal(1e-4, 1e-4, n), v2)
    v2 = np.where(kind == DEPTH, rng.uniform(0.5, 5.0, n), v2)
    return kind, slot, t, v0, v1, v2, np.zeros(n)


def kernels(quick: bool) -> None:
    """The detector's kernels as ``Detector.ingest`` and ``Detector.step`` run them: state, hour-of-week
    baselines, Hawkes arrivals and refits, fuel map, features and the stage machine. Median of passes, each on
    a fresh detector."""
    settings = load_settings()
    n = 500_000 if quick else 2_000_000
    cols = synthetic_columns(n, np.random.default_rng(7))
    warm = Detector(settings, capacity=INSTRUMENTS)
    warm.ingest(*(c[:10] for c in cols))  # compile or load from cache
    warm.step(T0 + 1)
    passes = [_kernels_pass(settings, cols) for _ in range(3 if quick else 5)]
    apply_s = statistics.median(p[0] for p in passes)
    eval_s = statistics.median(p[1] for p in passes)
    evals = passes[0][2]
    emit("detector.kernels.events_per_s", n / apply_s, "events/s", instruments=INSTRUMENTS, events=n,
         spread=[round(n / max(p[0] for p in passes)), round(n / min(p[0] for p in passes))], passes=len(passes))
    emit("detector.kernels.eval_us_per_instrument", eval_s / max(1, evals) / INSTRUMENTS * 1e6, "us",
         evaluations=evals, note="Hawkes refits due, fuel-map query, features, stage machine")
    emit("detector.kernels.with_eval.events_per_s", n / (apply_s + eval_s), "events/s",
         instruments=INSTRUMENTS, event_rate=EVENTS_PER_S, eval_interval_s=1.0)


def _kernels_pass(settings: Settings, cols: tuple[np.ndarray, ...]) -> tuple[float, float, int]:
    """Seconds applying the batches, seconds evaluating, evaluations."""
    detector = Detector(settings, capacity=INSTRUMENTS)
    apply_s = eval_s = 0.0
    evals = 0
    next_eval = T0 + 1.0
    t = cols[2]
    n = len(t)
    for start in range(0, n, BATCH):
        chunk = tuple(c[start : start + BATCH] for c in cols)
        began = time.perf_counter()
        detector.ingest(*chunk)
        apply_s += time.perf_counter() - began
        while t[min(start + BATCH, n) - 1] >= next_eval:
            began = time.perf_counter()
            detector.step(next_eval)
            eval_s += time.perf_counter() - began
            evals += 1
            next_eval += 1.0
    return apply_s, eval_s, evals


def synthetic_events(n: int, rng: np.random.Generator) -> list[Event]:
    """The same market as ``synthetic_columns``, as the events a collector writes."""
    kind, slot, t, v0, v1, v2, _ = synthetic_columns(n, rng)
    out: list[Event] = []
    for k, i, ts, a, b, c in zip(kind.tolist(), slot.tolist(), t.tolist(), v0.tolist(), v1.tolist(), v2.tolist(),
                                 strict=True):
        common = {"venue": "binance", "symbol": f"A{i}USDT", "asset": f"A{i}", "ts_event": int(ts * 1e9),
                  "ts_recv": int(ts * 1e9)}
        if k == TRADE:
            out.append(Trade(**common, price=a, size=b / a, side="buy" if c > 0 else "sell"))  # type: ignore[arg-type]
        elif k == LIQ:
            out.append(Liquidation(**common, price=a, size=b / a, side="long" if c > 0 else "short"))  # type: ignore[arg-type]
        elif k == FUNDING:
            out.append(FundingMark(**common, mark_price=a, index_price=b, funding_rate=c,  # type: ignore[arg-type]
                                   funding_interval_h=8.0, funding_8h=c, funding_annual=c * 1095,
                                   next_funding_ts=0))
        elif k == OI:
            out.append(OpenInterest(**common, oi_base=b, oi_usd=a))  # type: ignore[arg-type]
        else:
            out.append(Depth(**common, mid=a, spread_bps=c, bid_usd=(b / 4, b / 2, b),  # type: ignore[arg-type]
                             ask_usd=(b / 4, b / 2, b), reach_bps=200.0))
    return out


async def _from_redis(url: str, settings: Settings, events: list[Event]) -> float:
    redis = connect_redis(url)
    await redis.flushall()
    pipe = redis.pipeline(transaction=False)
    for start in range(0, len(events), 512):
        pipe.xadd(events_key(0), encode_batch(events[start : start + 512]))
    await pipe.execute()
    engine = DetectorEngine(redis, settings, shard=0, consumer="bench", capacity=INSTRUMENTS, persist=False)
    stop = asyncio.Event()
    stop.set()  # drain what is there, then return
    with Stopwatch() as watch:
        await engine.run(stop)
    await redis.aclose()
    assert engine.detector.events == len(events), engine.detector.events
    return len(events) / watch.seconds


def from_redis(quick: bool) -> None:
    settings = load_settings()
    n = 200_000 if quick else 1_000_000
    events = synthetic_events(n, np.random.default_rng(11))
    started_like_the_service(settings)
    with private_redis() as server:
        # A service allocates its state once and runs for days: the first pass, which meets fresh memory, is
        # start-up and is reported apart.
        first = asyncio.run(_from_redis(server.url, settings, events))
        rates = [asyncio.run(_from_redis(server.url, settings, events)) for _ in range(3 if quick else 5)]
    emit("detector.redis.events_per_s", statistics.median(rates), "events/s", instruments=INSTRUMENTS, events=n,
         event_rate=EVENTS_PER_S, spread=[round(min(rates)), round(max(rates))], first_pass=round(first),
         note="decode, batch, kernels, evaluation each event-second, signals, acks")


def checkpoint(quick: bool) -> None:
    """What a shard's checkpoint costs with 1,500 busy instruments: bytes stored in Redis, time to make them
    (the event loop waits for it) and to restore them at a start."""
    settings = load_settings()
    detector = Detector(settings, capacity=INSTRUMENTS)
    detector.process(synthetic_events(200_000 if quick else 600_000, np.random.default_rng(5)))
    made, restored = [], []
    for _ in range(3 if quick else 7):
        with Stopwatch() as watch:
            blob = detector.checkpoint()
        made.append(watch.seconds)
        with Stopwatch() as watch:
            Detector(settings).restore(blob)
        restored.append(watch.seconds)
    raw = sum(a.nbytes for part in (detector.state, detector.extras) for a in _arrays(part))
    emit("detector.checkpoint.bytes", len(blob), "bytes", instruments=len(detector.assets), raw_bytes=raw)
    emit("detector.checkpoint.make_ms", float(np.median(made)) * 1e3, "ms", instruments=len(detector.assets),
         note="in a thread: the shard's loop waits for it, the process's other tasks do not")
    emit("detector.checkpoint.restore_ms", float(np.median(restored)) * 1e3, "ms", instruments=len(detector.assets))


def _arrays(part: tuple[object, ...]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for item in part:
        out += [item] if isinstance(item, np.ndarray) else _arrays(item)  # type: ignore[arg-type]
    return out


def run(quick: bool) -> None:
    kernels(quick)
    from_redis(quick)
    checkpoint(quick)
