"""``flushwatch demo``: the fake exchange plays a scripted flush into ``flushwatch run``; watch it live.

Everything is real except the exchange: the collector connects to a local websocket server speaking
Binance's protocol, events go through Redis, the numba detector and the alert role, and MQTT messages go
to a broker (a private one unless ``FLUSHWATCH_MQTT_URL`` names another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from collectors.binance.spec import connection_plans
from flushwatch.daemon import Daemon
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import free_port
from flushwatch.settings import BinanceSettings, Settings, load_settings
from flushwatch.signals import AssetState, Signal, StageChange
from flushwatch.simulator.model import SimConfig
from flushwatch.simulator.simulation import SimulatedBinance, Simulation

log = logging.getLogger(__name__)

STAGE_STYLE = {0: "green", 1: "yellow", 2: "yellow", 3: "dark_orange", 4: "red", 5: "red", 6: "bold red", 7: "cyan"}


def _usd(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:,.1f}{unit}"
    return f"{x:,.0f}"


def _pct(x: float, digits: int = 2) -> str:
    return f"{x * 100:+.{digits}f}%" if math.isfinite(x) else "-"


def _getter(features: dict[str, float]) -> Callable[[str], float]:
    return lambda key: features.get(key, math.nan)


@dataclass
class DemoView:
    """What the terminal shows: the newest state per asset and the latest stage changes."""

    scenario: Scenario | SimulatedBinance
    states: dict[str, AssetState] = field(default_factory=dict)
    changes: deque[StageChange] = field(default_factory=lambda: deque(maxlen=12))
    history: list[StageChange] = field(default_factory=list)

    def update(self, signals: list[Signal]) -> None:
        for signal in signals:
            if isinstance(signal, AssetState):
                self.states[signal.asset] = signal
            else:
                self.changes.append(signal)
                self.history.append(signal)

    def change_line(self, change: StageChange) -> Text:
        t = self.scenario.offset_s(change.ts)
        text = Text(f"t+{t:6.0f}s  {change.asset:<5} {change.side:<5} ")
        text.append(_move(change), style=STAGE_STYLE.get(change.stage, ""))
        if change.conditions:
            text.append(f"   ({'; '.join(change.conditions)})", style="dim")
        return text

    def render(self) -> Group:
        table = Table(expand=True)
        for column in ("asset", "price", "5m", "stage", "side", "overheat L/S", "liq/min L", "liq × base",
                       "OI Δ1h", "funding 8h", "premium"):
            table.add_column(column, justify="left" if column in ("asset", "stage", "side") else "right")
        for asset in sorted(self.states):
            state = self.states[asset]
            side = state.long if (state.long.stage, state.long.overheat_score) >= (
                state.short.stage, state.short.overheat_score) else state.short
            get = _getter(state.features)
            table.add_row(
                asset,
                f"{get('price'):,.2f}",
                _pct(get("r5m")),
                Text(f"{side.stage} {side.stage_name}", style=STAGE_STYLE.get(side.stage, "")),
                side.side,
                f"{state.long.overheat_score:.0f} / {state.short.overheat_score:.0f}",
                _usd(get("liq_rate_long")),
                f"{get('liq_ratio_long'):.1f}" if math.isfinite(get("liq_ratio_long")) else "-",
                _pct(get("oi_chg_1h"), 1),
                _pct(get("funding_8h"), 3),
                f"{get('premium_bps'):+.1f} bp" if math.isfinite(get("premium_bps")) else "-",
            )
        now = self.scenario.now_s()
        header = Text(f"scenario t+{now:5.0f}s of {self.scenario.duration_s:.0f}s  (×{self.scenario.speed:g})")
        log_lines = [self.change_line(c) for c in self.changes] or [Text("no stage change yet", style="dim")]
        return Group(header, table, Panel(Group(*log_lines), title="stage changes"))


async def run_demo(
    *,
    config: Path | None = None,
    duration: float | None = None,
    speed: float = 40.0,
    seed: int = 0,
    script: str = "flush",
    console: Console | None = None,
) -> list[StageChange]:
    """Play the scenario through the whole pipeline; returns the stage changes it produced. ``script`` is a
    scripted market (``flush``, ``squeeze``) or ``simulated`` / ``simulated-squeeze``: the agent-based
    simulator, whose flush is not scripted but emerges from leveraged positions, a book and a risk engine."""
    console = console or Console()
    async with FakeBinance() as fake:
        scenario = _market(script, seed, speed)
        base = load_settings(config)
        binance = BinanceSettings(
            symbols=scenario.symbols,
            market_url=fake.market_url,
            public_url=fake.public_url,
            rest_url=fake.rest_url,
            oi_poll_interval_s=max(0.05, 10.0 / speed),
            stale_after_s=10.0,
        )
        settings = _with(base, binance=binance, metrics_port=_free_or_any(base.metrics_host, base.metrics_port))
        fake.register(scenario)
        view = DemoView(scenario)
        daemon = Daemon(settings, on_signals=view.update)
        runner = asyncio.create_task(daemon.run())
        await _wait_ready(daemon, fake, connection_streams(binance), runner)
        console.print(_intro(daemon, settings))
        fake.attach(scenario)
        play = duration if duration is not None else scenario.duration_s / speed + 3.0
        printed = 0
        if console.is_terminal:
            with Live(view.render(), console=console, refresh_per_second=4) as live:
                await _play(play, runner, lambda: live.update(view.render()))
        else:
            def print_new() -> None:
                nonlocal printed
                for change in view.history[printed:]:
                    console.print(view.change_line(change))
                printed = len(view.history)

            await _play(play, runner, print_new)
        daemon.stop.set()
        await runner
        console.print(_summary(view))
        return view.history


def _market(script: str, seed: int, speed: float) -> Scenario | SimulatedBinance:
    if script.startswith("simulated"):
        config = SimConfig(seed=seed, side="short" if script.endswith("squeeze") else "long")
        return SimulatedBinance(Simulation(config, venues=("binance",)), speed=speed)
    return Scenario(script, seed=seed, speed=speed)


def _free_or_any(host: str, port: int) -> int:
    """The configured metrics port, or any free one when it is taken (a demo should not fail on that)."""
    if port == 0:
        return 0
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            log.warning("metrics port %d is taken; the demo serves metrics on a free port", port)
            return free_port()
    return port


def _with(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update=changes)


def connection_streams(settings: BinanceSettings) -> set[str]:
    return {stream for plan in connection_plans(settings) for stream in plan.streams}


async def _wait_ready(daemon: Daemon, fake: FakeBinance, streams: set[str], runner: asyncio.Task[None]) -> None:
    """Until the pipeline runs and the collector has subscribed every stream it plans to."""
    async with asyncio.timeout(120):
        while not (daemon.ready.is_set() and streams <= _subscribed(fake)):
            if runner.done():
                runner.result()
                raise RuntimeError("flushwatch stopped before the demo could start")
            await asyncio.sleep(0.05)


def _subscribed(fake: FakeBinance) -> set[str]:
    return {stream for connection in fake.open_connections for stream in connection.streams}


async def _play(seconds: float, runner: asyncio.Task[None], refresh: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and not runner.done():
        refresh()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(runner), timeout=min(0.25, max(0.0, end - loop.time())))
    refresh()


def _intro(daemon: Daemon, settings: Settings) -> Text:
    mqtt = f"mqtt://{daemon.mqtt.host}:{daemon.mqtt.port}" if daemon.mqtt else "off"
    metrics = f"http://{settings.metrics_host}:{daemon.metrics_port}/metrics" if daemon.metrics_port else "off"
    return Text.assemble(
        ("flushwatch demo", "bold"),
        f" — fake Binance plays a leverage flush\n  Redis {daemon.redis_url}   MQTT {mqtt} "
        f"(topics {settings.mqtt_prefix}/#)   metrics {metrics}",
    )


def _move(change: StageChange) -> str:
    if change.stage != change.stage_from:
        return f"{change.stage_from} → {change.stage} {change.stage_name}"
    if change.stage and change.paused:
        return f"{change.stage} {change.stage_name}: pause, fuel remains"
    return f"{change.stage} {change.stage_name}" + (": resumes" if change.stage else "")


def _summary(view: DemoView) -> Table:
    table = Table(title="stage changes of this run")
    for column in ("scenario time", "asset", "side", "change", "ground truth"):
        table.add_column(column)
    for change in view.history:
        t = view.scenario.offset_s(change.ts)
        phase = view.scenario.phase_at(change.asset, max(t, 0.0))
        table.add_row(f"t+{t:.0f}s", change.asset, change.side,
                      Text(_move(change), style=STAGE_STYLE.get(change.stage, "")),
                      phase.name)
    return table
