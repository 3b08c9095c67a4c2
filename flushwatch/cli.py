"""The ``flushwatch`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from flushwatch import __version__
from flushwatch.settings import Settings, SettingsError, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Real-time leverage-flush monitor.")
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (also FLUSHWATCH_CONFIG).")
]
err = Console(stderr=True)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as exc:
        err.print(f"flushwatch: invalid settings: {exc}")
        raise typer.Exit(2) from None


def _logging(level: str, console: Console | None = None) -> None:
    if sys.stderr.isatty() or console is not None:
        handler: logging.Handler = RichHandler(console=console or err, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run collectors, detector and alerts in one process until SIGTERM or Ctrl-C."""
    from flushwatch.daemon import Daemon

    settings = _settings(config)
    _logging(settings.log_level)
    asyncio.run(Daemon(settings).run())


@app.command()
def demo(
    config: ConfigOption = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to play; default: the whole flush.")] = None,
    speed: Annotated[float, typer.Option(help="Scenario seconds per wall-clock second.")] = 40.0,
    seed: Annotated[int, typer.Option(help="Seed of the scripted market.")] = 0,
    script: Annotated[str, typer.Option(help="flush (a long flush) or squeeze (the short-squeeze mirror).")] = "flush",
) -> None:
    """Play a scripted leverage flush on a local fake exchange through the whole pipeline."""
    from flushwatch.demo import run_demo

    _settings(config)  # fail early and clearly on bad settings
    console = Console()
    _logging("WARNING", console)
    asyncio.run(run_demo(config=config, duration=duration, speed=speed, seed=seed, script=script, console=console))


@app.command("fake-exchange")
def fake_exchange(
    port: Annotated[int, typer.Option(help="Port (0 = a free one).")] = 0,
    script: Annotated[str, typer.Option(help="Scenario to play: flush or squeeze.")] = "flush",
    speed: Annotated[float, typer.Option(help="Scenario seconds per wall-clock second.")] = 40.0,
    seed: Annotated[int, typer.Option()] = 0,
    replay: Annotated[Path | None, typer.Option(help="Replay recorded frames instead of a scenario.")] = None,
) -> None:
    """Serve a local Binance-protocol exchange (websocket + open-interest REST) until Ctrl-C."""
    from flushwatch.fake.recording import Recording
    from flushwatch.fake.scenario import Scenario
    from flushwatch.fake.server import FakeBinance

    _logging("INFO")

    async def serve() -> None:
        async with FakeBinance(port=port) as fake:
            source = Recording(replay, speed=speed) if replay else Scenario(script, seed=seed, speed=speed)
            fake.attach(source)
            print(f"FLUSHWATCH_BINANCE__MARKET_URL={fake.market_url}")
            print(f"FLUSHWATCH_BINANCE__PUBLIC_URL={fake.public_url}")
            print(f"FLUSHWATCH_BINANCE__REST_URL={fake.rest_url}")
            if isinstance(source, Scenario):
                print(f"FLUSHWATCH_BINANCE__SYMBOLS='{json.dumps(source.symbols)}'")
            print("# export these and run `flushwatch run` against this exchange", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@app.command()
def subscribe(
    config: ConfigOption = None,
    asset: Annotated[str | None, typer.Option(help="Only this asset (BTC, case-insensitive); default: all.")] = None,
    min_stage: Annotated[
        int, typer.Option(min=0, max=7, help="Only stage changes that reach at least this stage (0-7).")
    ] = 0,
) -> None:
    """Print alerts from the MQTT broker of the settings, one line each, until Ctrl-C."""
    from alerts.subscribe import run_subscriber

    settings = _settings(config)
    target = settings.mqtt
    if target is None:
        err.print("flushwatch: no MQTT broker configured: set mqtt_url (FLUSHWATCH_MQTT_URL)")
        raise typer.Exit(2)
    _logging("WARNING")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_subscriber(target, settings.mqtt_prefix, asset, min_stage, Console(highlight=False), None))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)
