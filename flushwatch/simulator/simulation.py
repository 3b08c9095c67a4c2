"""A simulated run with its frames, labels and summary, and the sources that serve it on the fake venues.

``SimulatedBinance`` is a ``FrameSource`` for ``FakeBinance`` (frames, and open interest for the REST
endpoint) and ``SimulatedBybit`` one for ``FakeVenue`` with the Bybit protocol. Like ``Scenario`` they play
the run in real time, ``speed`` simulated seconds per wall second, with frame times re-based on the wall
clock at the start: ``t_event = t0 + (wall - wall0) * speed``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cached_property
from typing import Final, Generic, NamedTuple, TypeVar

import numpy as np

from flushwatch.fake.pacing import paced
from flushwatch.signals import stage_name
from flushwatch.simulator.frames import OPEN_INTEREST_PATH, BinanceFrames, Frame, render
from flushwatch.simulator.labels import Label, labels, stages
from flushwatch.simulator.model import BINANCE, VENUES, Run, SimConfig, simulate

OI_POLL_S: Final = 10
"""How often the recorded Binance open interest is polled (the poller's default)."""
RestAnswer = tuple[int, str, str, str]
"""``(receive time ms, venue, path and query, body)``."""


class Simulation:
    """``config`` run once; frames are rendered on demand (the same every time: nothing is drawn then)."""

    def __init__(self, config: SimConfig, venues: tuple[str, ...] = VENUES) -> None:
        unknown = set(venues) - set(VENUES)
        if unknown:
            raise ValueError(f"venues {sorted(unknown)} are not simulated; known: {', '.join(VENUES)}")
        self.config = config
        self.venues = venues
        self.run: Run = simulate(config)

    @cached_property
    def labels(self) -> list[Label]:
        return labels(self.run)

    @cached_property
    def stages(self) -> np.ndarray:
        return stages(self.run)

    def seconds(self, t0_ms: int | None = None) -> Iterator[list[Frame]]:
        """Each simulated second's frames, in push order."""
        return render(self.run, self.config.t0_ms if t0_ms is None else t0_ms, self.venues)

    def frames(self, t0_ms: int | None = None) -> Iterator[Frame]:
        """``(ts_ms, venue, stream or topic, payload)`` of the whole run, in push order."""
        return itertools.chain.from_iterable(self.seconds(t0_ms))

    def rest(self, t0_ms: int | None = None) -> list[RestAnswer]:
        """Binance open-interest answers every ``OI_POLL_S`` seconds (empty without Binance)."""
        if "binance" not in self.venues:
            return []
        venue = BinanceFrames(self.run, self.config.t0_ms if t0_ms is None else t0_ms)
        url = f"{OPEN_INTEREST_PATH}?symbol={self.config.symbol}"
        return [(venue.t0_ms + k * 1000 + 999, "binance", url, venue.open_interest_body(k))
                for k in range(OI_POLL_S - 1, len(self.run.mid), OI_POLL_S)]

    # --- summary ---------------------------------------------------------------------------------

    @property
    def liquidated_usd(self) -> dict[str, float]:
        """True liquidated USD per position side (every venue)."""
        return {"long": float(self.run.forced_usd[:, 0].sum()), "short": float(self.run.forced_usd[:, 1].sum())}

    @property
    def oi_before(self) -> float:
        """Open interest (base units, every venue) at its peak before the shock (the whole run without one)."""
        oi = self.run.oi.sum(axis=1)
        return float(oi[:self.run.shock_s].max() if self.run.shock_s > 0 else oi.max())

    @property
    def oi_after(self) -> float:
        return float(self.run.oi[-1].sum())

    @property
    def min_price(self) -> float:
        return float(self.run.mid.min())

    @property
    def max_price(self) -> float:
        return float(self.run.mid.max())


F = TypeVar("F")


class _Paced(Generic[F]):
    """Plays one venue's frames of a simulation at ``speed`` x real time from the first ``batches`` call."""

    venue: str

    def __init__(self, simulation: Simulation, *, speed: float = 40.0, clock: Callable[[], float] = time.time,
                 batch_interval_s: float = 0.005) -> None:
        if not speed > 0:
            raise ValueError("speed must be a positive number")
        self.simulation = simulation
        self.speed = speed
        self.batch_interval_s = batch_interval_s
        self._clock = clock
        self._wall0: float | None = None

    def start(self) -> None:
        self._wall0 = self._clock()

    @property
    def t0_ms(self) -> int:
        return round((self._wall0 if self._wall0 is not None else self._clock()) * 1000)

    def now_s(self) -> float:
        return 0.0 if self._wall0 is None else max(0.0, (self._clock() - self._wall0) * self.speed)

    def _item(self, frame: Frame) -> F:
        raise NotImplementedError

    async def batches(self) -> AsyncIterator[list[F]]:
        if self._wall0 is None:
            self.start()
        assert self._wall0 is not None
        t0_ms = self.t0_ms
        frames = itertools.chain.from_iterable(render(self.simulation.run, t0_ms, (self.venue,)))
        async for batch in paced(((frame[0], self._item(frame)) for frame in frames), wall0=self._wall0, t0_ms=t0_ms,
                                 speed=self.speed, clock=self._clock, batch_interval_s=self.batch_interval_s):
            yield batch


class TruePhase(NamedTuple):
    """The simulator's ground truth at a moment, shaped like a scripted ``Phase`` (``name``, ``stage``)."""

    name: str
    stage: int


class SimulatedBinance(_Paced[tuple[str, str]]):
    """The run's Binance frames and open interest, for ``FakeBinance.attach``; also what ``flushwatch demo``
    shows (``symbols``, ``duration_s``, ``offset_s``, the true stage as ``phase_at``)."""

    venue = "binance"

    @property
    def symbols(self) -> list[str]:
        return [self.simulation.config.symbol]

    @property
    def duration_s(self) -> float:
        return float(len(self.simulation.run.mid))

    def offset_s(self, ts_event_ns: int) -> float:
        return ts_event_ns / 1e9 - self.t0_ms / 1000.0

    def phase_at(self, asset: str, t: float) -> TruePhase:
        """The true stage of the simulated (crowded) side ``t`` simulated seconds in."""
        stage = int(self.simulation.stages[min(max(int(t), 0), len(self.simulation.stages) - 1)])
        return TruePhase(f"{self.simulation.config.side} {stage_name(stage, False)}", stage)

    def _item(self, frame: Frame) -> tuple[str, str]:
        return frame[2], frame[3]

    def open_interest(self, symbol: str) -> tuple[str, int] | None:
        config, run = self.simulation.config, self.simulation.run
        if symbol != config.symbol:
            return None
        now = self.now_s()
        k = min(int(now), len(run.mid) - 1)
        return f"{float(run.oi[k, BINANCE]):.{config.qty_decimals}f}", self.t0_ms + int(now * 1000)


class SimulatedBybit(_Paced[str]):
    """The run's Bybit frames, for ``FakeVenue(BybitProtocol(...)).attach``."""

    venue = "bybit"

    def _item(self, frame: Frame) -> str:
        return frame[3]
