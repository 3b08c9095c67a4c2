"""The ``flushwatch`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.console import Console

from flushwatch import __version__
from flushwatch.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from flushwatch.daemon import Roles

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
    from flushwatch.logs import configure_logging

    configure_logging(level, console)


config_app = typer.Typer(no_args_is_help=True, help="Show or check the effective configuration.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings (TOML file, environment and secret files merged) as JSON, secrets masked."""
    from flushwatch.settings import shown

    print(json.dumps(shown(_settings(config)), indent=2, sort_keys=True, default=str))


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Exit 0 when the settings are valid; otherwise name each bad setting and its reason, and exit 2."""
    settings = _settings(config)
    print(f"flushwatch: settings are valid ({len(settings.model_fields)} top-level settings)")


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run collectors, detector and alerts in one process until SIGTERM or Ctrl-C."""
    _run_roles(_settings(config), None)


@app.command()
def collect(
    venue: Annotated[list[str], typer.Option("--venue", help="A venue to collect (repeat for more); it must be "
                                                             "enabled in the settings.")],
    config: ConfigOption = None,
) -> None:
    """Run the collectors of these venues and the Redis writer, routing each asset to its shard's stream."""
    from flushwatch.daemon import Roles
    from flushwatch.universe import enabled_venues

    settings = _settings(config)
    enabled = enabled_venues(settings)
    for name in venue:
        if name not in enabled:
            err.print(f"flushwatch: venue {name!r} is not enabled (enabled: {', '.join(enabled) or 'none'}); set "
                      f"FLUSHWATCH_{name.upper()}__ENABLED=true")
            raise typer.Exit(2)
    _run_roles(settings, Roles(collect=True, venues=tuple(venue), shards=(), alert=False))


@app.command()
def detect(
    shard: Annotated[str, typer.Option("--shard", help="I/N: shard I of N (N must equal the shards setting); "
                                                       "auto: I from the pod ordinal ending $HOSTNAME.")] = "auto",
    config: ConfigOption = None,
) -> None:
    """Run one detector shard: its events stream in through the consumer group, its signals out, its state
    checkpointed to Redis."""
    from flushwatch.daemon import Roles

    settings = _settings(config)
    try:
        index = parse_shard(shard, settings.shards, os.environ.get("HOSTNAME", ""))
    except ValueError as exc:
        err.print(f"flushwatch: --shard {shard}: {exc}")
        raise typer.Exit(2) from None
    _run_roles(settings, Roles(collect=False, shards=(index,), alert=False))


@app.command()
def alert(config: ConfigOption = None) -> None:
    """Run the alert role: every shard's signals to the Prometheus exporter, the live page and MQTT."""
    from flushwatch.daemon import Roles

    _run_roles(_settings(config), Roles(collect=False, shards=(), alert=True))


@app.command()
def warmup(config: ConfigOption = None) -> None:
    """Compile every detector kernel into the numba cache (this version's directory in NUMBA_CACHE_DIR) and exit:
    an image built or a pod initialised this way starts without compiling."""
    import numba

    from flushwatch.daemon import warm_up_kernels

    seconds = warm_up_kernels(_settings(config))
    print(f"detector kernels ready in {seconds:.2f} s (cache: {numba.config.CACHE_DIR})")


def parse_shard(text: str, shards: int, hostname: str) -> int:
    """The shard index of ``--shard``: ``I/N`` with N equal to the ``shards`` setting (collectors route by it),
    or ``auto``, the ordinal a StatefulSet gives its pod (``flushwatch-detect-3`` -> 3)."""
    if text == "auto":
        ordinal = hostname.rsplit("-", 1)[-1]
        if not ordinal.isdigit():
            raise ValueError(f"HOSTNAME {hostname!r} does not end in a pod ordinal (-0, -1, ...)")
        index = int(ordinal)
    else:
        index_text, _, count_text = text.partition("/")
        if not (index_text.isdigit() and count_text.isdigit()):
            raise ValueError("expected I/N (e.g. 0/4) or auto")
        index, count = int(index_text), int(count_text)
        if count != shards:
            raise ValueError(f"N={count} but the shards setting (FLUSHWATCH_SHARDS) is {shards}: every process "
                             "must route with the same count")
    if index >= shards:
        raise ValueError(f"shard {index} does not exist: the shards setting (FLUSHWATCH_SHARDS) is {shards}")
    return index


def _run_roles(settings: Settings, roles: Roles | None) -> None:
    """Run ``roles`` (every one when None) until SIGTERM or Ctrl-C."""
    from flushwatch.daemon import Daemon

    _logging(settings.log_level)
    try:
        asyncio.run(Daemon(settings, roles).run())
    except SettingsError as exc:
        err.print(f"flushwatch: invalid settings: {exc}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    config: ConfigOption = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to play; default: the whole flush.")] = None,
    speed: Annotated[float, typer.Option(help="Scenario seconds per wall-clock second.")] = 40.0,
    seed: Annotated[int, typer.Option(help="Seed of the scripted market.")] = 0,
    script: Annotated[str, typer.Option(
        help="flush (a scripted long flush), squeeze (its short-squeeze mirror), or simulated / simulated-squeeze "
        "(the agent-based simulator: 2 simulated hours whose cascade emerges; try --speed 80).")] = "flush",
) -> None:
    """Play a leverage flush on a local fake exchange through the whole pipeline."""
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
def record(
    out: Annotated[Path, typer.Option("--out", help="Directory for the recording files (created if missing).")],
    config: ConfigOption = None,
    rotate_mb: Annotated[float, typer.Option(min=0.001, help="Start a new file past this many MiB (compressed).")]
    = 256.0,
    rotate_minutes: Annotated[float, typer.Option(min=0.01, help="Start a new file after this many minutes.")] = 60.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds; default: SIGTERM or Ctrl-C.")]
    = None,
) -> None:
    """Record raw venue frames exactly as received, to rotating zstd JSON-lines files.

    Each frame with its receive time, venue and connection, REST open interest included; every file starts
    with a header naming the instruments and subscriptions, so `flushwatch replay` needs no network. Runs
    the collectors only: no Redis, no detector."""
    from alerts.exporter import MetricsServer
    from flushwatch.recorder import RecordSession

    settings = _settings(config)
    _logging(settings.log_level)

    async def main() -> None:
        stop = _stop_on_signals()
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)
        session = RecordSession(settings, out, rotate_bytes=int(rotate_mb * (1 << 20)), rotate_s=rotate_minutes * 60)
        metrics = None
        if settings.metrics_port:  # feed health and the recorder's drops
            try:
                metrics = MetricsServer(settings.metrics_host, settings.metrics_port)
                metrics.start()
            except OSError as exc:
                err.print(f"flushwatch: no metrics server on port {settings.metrics_port}: {exc}")
        try:
            await session.run(stop)
        finally:
            if metrics is not None:
                metrics.close()
        recorder = session.recorder
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(recorder.counts.items())) or "nothing"
        print(f"recorded {counts} ({recorder.dropped} dropped) in {len(recorder.files)} files:")
        for path in recorder.files:
            print(f"  {path}")

    asyncio.run(main())


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    return stop


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="flushwatch record files and/or cryptofeed recordings.")],
    config: ConfigOption = None,
    speed: Annotated[float | None, typer.Option(min=1e-6, help="Replay at N times the recorded pace; default: as "
                                                               "fast as Redis and the detector take it.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis for the replay's streams (its flushwatch keys are "
                                                       "cleared first); default: a private redis-server.")] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker to publish alerts to; default: a private mosquitto.")]
    = None,
    no_mqtt: Annotated[bool, typer.Option("--no-mqtt", help="Publish nothing over MQTT.")] = False,
    mqtt_prefix: Annotated[str, typer.Option(help="MQTT topic prefix, kept apart from live topics.")]
    = "flushwatch-replay/v1",
    signals_out: Annotated[Path | None, typer.Option(help="Write every stage change and every published payload "
                                                          "to this file, one JSON object per line.")] = None,
) -> None:
    """Feed recordings through the parsers, Redis, detector and alerts, deterministically.

    Frames keep their recorded receive times, so the same recording always gives the same stage changes and
    payloads, byte for byte. Reads `flushwatch record` files and cryptofeed recordings; what cannot be used is
    counted and reported, and the replay carries on."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from flushwatch.recordings import ReplayError, count_lines
    from flushwatch.replay import Replay, ReplayOptions
    from flushwatch.settings import parse_mqtt_url

    settings = _settings(config)
    _logging("WARNING")
    try:
        target = parse_mqtt_url(mqtt_url) if mqtt_url else None
        job = Replay(files, settings, ReplayOptions(speed=speed, redis_url=redis_url,
                                                    mqtt=None if no_mqtt else target, private_mqtt=not no_mqtt,
                                                    mqtt_prefix=mqtt_prefix, signals_out=signals_out))
    except (ValueError, ReplayError) as exc:
        err.print(f"flushwatch: {exc}")
        raise typer.Exit(2) from None
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[frames]:,} frames {task.fields[events]:,} events "
                          "{task.fields[changes]:,} stage changes"), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task("replay", total=count_lines(files) if err.is_terminal else None, frames=0, events=0,
                            changes=0)

        def show(r: Replay) -> None:
            bar.update(task, completed=r.recordings.lines, frames=r.report.frames, events=r.report.events,
                       changes=r.signals.stage_changes)

        async def main() -> None:
            await job.run(_stop_on_signals(), show)

        try:
            asyncio.run(main())
        except ReplayError as exc:
            err.print(f"flushwatch: {exc}")
            raise typer.Exit(2) from None
        show(job)
    report = job.report
    rate = report.frames / report.seconds if report.seconds else 0.0
    print(f"replayed {report.frames:,} frames -> {report.events:,} events in {report.seconds:.1f} s "
          f"({rate:,.0f} frames/s); {report.stage_changes} stage changes; published "
          + (", ".join(f"{n} {kind}" for kind, n in sorted(report.published.items())) or "nothing"))
    for title, counts in (("rejected by the parsers", report.rejects), ("skipped", report.skipped)):
        if counts:
            print(f"{title}: " + ", ".join(f"{reason} {n:,}" for reason, n in counts.most_common()))
    for problem in report.problems[:20]:
        print(f"problem: {problem}")
    if len(report.problems) > 20:
        print(f"... and {len(report.problems) - 20} more problems")
    if signals_out is not None:
        print(f"stage changes and payloads written to {signals_out}")


_PASS_THROUGH: Final = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _argparse_command(name: str, module: Any, ctx: typer.Context) -> None:
    """Run a subcommand whose options are an argparse parser (``module.add_arguments`` / ``module.run``)."""
    parser = argparse.ArgumentParser(prog=f"flushwatch {name}", description=module.__doc__)
    module.add_arguments(parser)
    raise typer.Exit(module.run(parser.parse_args(ctx.args)))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def backtest(ctx: typer.Context) -> None:
    """Run the detector over bars, a recording or a simulator run, and report episodes, false alarms and the
    two simple baselines (``flushwatch backtest --help`` for the options)."""
    from flushwatch.backtest import cli as backtest_cli

    _argparse_command("backtest", backtest_cli, ctx)


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Run the agent-based market simulator (leveraged traders, a book, a risk engine, a shock, spot buyers)
    and write its Binance and Bybit frames as a recording with ground-truth stage labels
    (``flushwatch simulate --help`` for the options)."""
    from flushwatch.simulator import cli as simulator_cli

    _argparse_command("simulate", simulator_cli, ctx)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)
