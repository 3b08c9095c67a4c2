"""A simulated cascade served at a steady frame rate, for load runs of the whole pipeline.

The yardstick is the cascade's own peak: ``peak_rate`` counts the simulator's Binance and Bybit frames per
second of push time and takes the busiest second. ``SteadyCascade`` then pushes the run's frames, from its
first second on (Bybit's book and ticker start with a snapshot), at a fixed multiple of that: frame ``i`` of
both venues together is due ``i / rate`` seconds after the start, whatever its simulated spacing. The rate is
what a load run controls; the detector runs on the event times the frames carry, so what it concludes does
not depend on the rate, only on the frames and their order.

``binance`` serves ``FakeBinance`` (frames, and the open interest of the simulated second reached so far for
its REST endpoint), ``bybit`` serves a ``FakeVenue`` with the Bybit protocol; both share one clock.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Final, TypeVar

from flushwatch.fake.pacing import paced
from flushwatch.simulator.frames import Frame
from flushwatch.simulator.model import BINANCE
from flushwatch.simulator.simulation import Simulation

T = TypeVar("T")
_BATCH_INTERVAL_S: Final = 0.005


def peak_rate(simulation: Simulation) -> tuple[int, int]:
    """``(frames, second)``: the busiest simulated second of the run, both venues, by push time."""
    t0_ms = simulation.config.t0_ms
    per_second = collections.Counter((ts - t0_ms) // 1000 for ts, *_ in simulation.frames())
    second, frames = per_second.most_common(1)[0]
    return frames, second


class SteadyCascade:
    """The first ``seconds * rate`` frames of ``simulation``, pushed at ``rate`` frames/s once ``start`` is
    called (or the first venue asks for its batches)."""

    def __init__(self, simulation: Simulation, rate: float, seconds: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        if not rate > 0 or not seconds > 0:
            raise ValueError("rate and seconds must be positive")
        self.simulation = simulation
        self.rate = rate
        self._clock = clock
        self._wall0: float | None = None
        wanted = round(rate * seconds)
        frames: list[Frame] = []
        for frame in simulation.frames():
            if len(frames) == wanted:
                break
            frames.append(frame)
        self.frames = frames
        """``(ts ms, venue, topic, payload)`` in push order: everything this load will push."""
        self.binance = _BinanceLoad(self)
        self.bybit = _BybitLoad(self)

    def start(self) -> None:
        if self._wall0 is None:
            self._wall0 = self._clock()

    @property
    def duration_s(self) -> float:
        """Wall seconds the whole load takes at ``rate``."""
        return len(self.frames) / self.rate

    @property
    def simulated_s(self) -> float:
        """Simulated seconds the load covers."""
        return (self.frames[-1][0] - self.simulation.config.t0_ms) / 1000.0 if self.frames else 0.0

    def due(self) -> int:
        """How many frames are due by now (all of them once the load has played)."""
        if self._wall0 is None:
            return 0
        return min(len(self.frames), int((self._clock() - self._wall0) * self.rate) + 1)

    def simulated_now_s(self) -> float:
        """The simulated second of the newest frame due."""
        n = self.due()
        return 0.0 if n == 0 else (self.frames[n - 1][0] - self.simulation.config.t0_ms) / 1000.0

    def count(self, venue: str, topics: set[str] | None = None) -> int:
        """Frames of ``venue`` in the load (of ``topics`` only, when given)."""
        return sum(1 for _, v, topic, _ in self.frames if v == venue and (topics is None or topic in topics))

    async def batches_of(self, venue: str, item: Callable[[Frame], T]) -> AsyncIterator[list[T]]:
        self.start()
        assert self._wall0 is not None
        # ``paced`` schedules on (ms - t0_ms) / 1000 / speed: index i at 1000/rate "ms" per frame is due i / rate s.
        mine = ((i, item(frame)) for i, frame in enumerate(self.frames) if frame[1] == venue)
        async for batch in paced(mine, wall0=self._wall0, t0_ms=0, speed=self.rate / 1000.0, clock=self._clock,
                                 batch_interval_s=_BATCH_INTERVAL_S):
            yield batch


class _BinanceLoad:
    def __init__(self, load: SteadyCascade) -> None:
        self._load = load

    def batches(self) -> AsyncIterator[list[tuple[str, str]]]:
        return self._load.batches_of("binance", lambda frame: (frame[2], frame[3]))

    def open_interest(self, symbol: str) -> tuple[str, int] | None:
        simulation = self._load.simulation
        config = simulation.config
        if symbol != config.symbol:
            return None
        now = self._load.simulated_now_s()
        k = min(int(now), len(simulation.run.mid) - 1)
        return f"{float(simulation.run.oi[k, BINANCE]):.{config.qty_decimals}f}", config.t0_ms + int(now * 1000)


class _BybitLoad:
    def __init__(self, load: SteadyCascade) -> None:
        self._load = load

    def batches(self) -> AsyncIterator[list[str]]:
        return self._load.batches_of("bybit", lambda frame: frame[3])

