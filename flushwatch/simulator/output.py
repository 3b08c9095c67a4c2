"""A simulated run written as a ``flushwatch record`` recording, with its ground-truth labels beside it.

The recording is what ``flushwatch record`` would have written had the collectors watched the simulated
venues: one ``flushwatch-record/1`` file with Binance on ``market-0`` / ``public-0`` (combined-stream
frames) and Bybit on ``ws-0``, every frame received ``RECV_LATENCY_MS`` after it was pushed, and the
Binance open-interest polls as ``http`` records. Everything is stamped from the run's ``t0_ms``, so the same
config writes the same bytes. ``labels.json`` holds the config, the stage transitions and the summary.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import zstandard

from collectors.binance.spec import ALL_LIQUIDATIONS_STREAM
from collectors.bybit.spec import WS_URL, instrument_topics
from collectors.instruments import Instrument
from flushwatch import __version__
from flushwatch.fake.binance import route_of, wrap
from flushwatch.recordings import FORMAT
from flushwatch.settings import BinanceSettings
from flushwatch.signals import stage_name
from flushwatch.simulator.simulation import Simulation

RECV_LATENCY_MS: Final = 5
LABELS_FORMAT: Final = "flushwatch-sim-labels/1"
_NS: Final = 1_000_000


def _venues(simulation: Simulation) -> dict[str, Any]:
    config = simulation.config
    symbol, lower = config.symbol, config.symbol.lower()
    asset = symbol.removesuffix("USDT")
    out: dict[str, Any] = {}
    if "binance" in simulation.venues:
        urls = BinanceSettings.model_fields
        market = [f"{lower}@aggTrade", f"{lower}@markPrice@1s", f"{lower}@forceOrder", ALL_LIQUIDATIONS_STREAM]
        out["binance"] = {
            "instruments": [msgspec.to_builtins(Instrument("binance", symbol, asset, "linear", 1.0, 8.0))],
            "connections": {
                "market-0": {"url": f"{urls['market_url'].default}/stream", "topics": market},
                "public-0": {"url": f"{urls['public_url'].default}/stream", "topics": [f"{lower}@depth20@100ms"]},
            }}
    if "bybit" in simulation.venues:
        out["bybit"] = {
            "instruments": [msgspec.to_builtins(Instrument("bybit", symbol, asset, "linear", 1.0, 8.0))],
            "connections": {"ws-0": {"url": WS_URL, "topics": instrument_topics(symbol)}}}
    return out


def record_lines(simulation: Simulation) -> Iterator[bytes]:
    """The recording's lines: header, every frame and REST answer in receive order, end."""
    from flushwatch.recorder import encode_line  # registers the recorder's metric: only when writing

    config = simulation.config
    yield msgspec.json.encode({"t": "header", "format": FORMAT, "created": config.t0_ms * _NS,
                               "session": f"sim-{config.seed}", "part": 0, "venues": _venues(simulation),
                               "flushwatch": __version__})
    frames = ((ts, 0, venue, topic, payload) for ts, venue, topic, payload in simulation.frames())
    rest = ((ts, 1, venue, url, body) for ts, venue, url, body in simulation.rest())
    count, received = 0, config.t0_ms * _NS
    for ts, kind, venue, name, data in heapq.merge(frames, rest, key=lambda r: r[0]):
        received = (ts + RECV_LATENCY_MS) * _NS
        count += 1
        if kind == 1:
            yield encode_line("http", received, venue, "rest", data, url=name)
        elif venue == "binance":
            yield encode_line("recv", received, venue, f"{route_of(name)}-0", wrap(name, data))
        else:
            yield encode_line("recv", received, venue, "ws-0", data)
    yield msgspec.json.encode({"t": "end", "ts": received, "frames": count, "dropped": 0, "reason": "stop"})


def labels_document(simulation: Simulation, recording: str) -> dict[str, Any]:
    config = simulation.config
    return {
        "format": LABELS_FORMAT,
        "recording": recording,
        "config": dataclasses.asdict(config),
        "shock_ms": config.t0_ms + simulation.run.shock_s * 1000 if simulation.run.shock_s >= 0 else None,
        "labels": [{"t_ms": label.t_ms, "asset": label.asset, "side": label.side, "stage": label.stage,
                    "stage_name": stage_name(label.stage, False)} for label in simulation.labels],
        "summary": summary(simulation),
    }


def summary(simulation: Simulation) -> dict[str, float]:
    return {"liquidated_long_usd": simulation.liquidated_usd["long"],
            "liquidated_short_usd": simulation.liquidated_usd["short"],
            "oi_before": simulation.oi_before, "oi_after": simulation.oi_after,
            "min_price": simulation.min_price, "max_price": simulation.max_price}


def write(simulation: Simulation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``flushwatch-sim-<seed>-0.jsonl.zst`` and ``labels.json`` into ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recording = out_dir / f"flushwatch-sim-{simulation.config.seed}-0.jsonl.zst"
    with recording.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as writer:
        for line in record_lines(simulation):
            writer.write(line + b"\n")
    labels = out_dir / "labels.json"
    labels.write_text(json.dumps(labels_document(simulation, recording.name), indent=1) + "\n")
    return recording, labels
