"""The detector against wickra-radar (Rust core, Python binding), fed the same events for 1,500 instruments.

Input: the detector bench's synthetic market (``bench.detector.synthetic_events``: 1,500 instruments, 20,000
events per second of event time). wickra-radar has no trade event (its kinds: ``derivatives``, ``orderbook``,
``liquidation``), so the compared stream is that market WITHOUT its trades, one wickra event per flushwatch
event: Depth -> orderbook (best bid/ask from mid and spread, bid/ask volume = the widest band's notional),
Liquidation -> liquidation (a long liquidated is a forced sell), FundingMark and OpenInterest -> derivatives
(each carrying the other's latest value, as wickra keeps them in one event).

* flushwatch, as a detector shard runs: the events encoded as stream entries of 512 (MessagePack, what the
  collectors write to Redis) before the clock starts, as wickra's JSON is; per entry, the columns read from
  the bytes (``Detector.entry_columns``) and ``Detector.process_columns`` -- state, baselines, Hawkes, fuel map
  AND the full stage evaluation at every 1-s event-time boundary (signals built). Reported too: the same
  events handed over as Python objects (``Detector.process``, what a replay does).
* wickra-radar, streaming: per 1-s window of event time, one ``feed_batch`` per instrument with its events,
  then ``alerts`` (the report over every instrument) at the boundary -- the same evaluation cadence. Commands
  are JSON encoded before the clock starts (its API takes JSON; encoding is reported apart).
* wickra-radar, batch: one ``scan`` over the whole stream (one report at the end, no per-second evaluation).

``vs_wickra_radar.detector_ratio`` = flushwatch events/s (stream entries) ÷ wickra streaming events/s; the
ratios against ``scan`` and of flushwatch fed objects are reported too. Median of interleaved runs.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import msgspec
import numpy as np

from bench.common import emit, note, started_like_the_service
from bench.detector import INSTRUMENTS, synthetic_events
from detector.engine import Detector
from flushwatch.events import Depth, Event, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.settings import Settings, load_settings
from flushwatch.streams import encode_batch, entry_payload

SPEC = {"signals": [{"kind": "oi_delta", "params": [2.0, 0.1], "weight": 1.0},
                    {"kind": "funding_flip", "params": [0.0005], "weight": 2.0},
                    {"kind": "book_imbalance", "params": [1.0], "weight": 1.0},
                    {"kind": "liq_cluster", "params": [5.0, 30.0], "weight": 1.5},
                    {"kind": "oi_price_divergence", "params": [2.0, 0.1], "weight": 3.0}],
        "threshold": 0.2}
"""Every signal wickra-radar has, with its README's composite parameters."""

_encode = msgspec.json.encode


def wickra_events(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    """``(symbol, wickra event)`` for each event it can take, in order; trades are left out."""
    oi: dict[str, float] = {}
    funding: dict[str, tuple[float, float]] = {}
    out: list[tuple[str, dict[str, Any]]] = []
    for e in events:
        ts = e.ts_event // 1_000_000
        if isinstance(e, Depth):
            half = e.mid * e.spread_bps / 2e4
            out.append((e.symbol, {"kind": "orderbook", "ts": ts, "bid_volume": e.bid_usd[-1],
                                   "ask_volume": e.ask_usd[-1], "best_bid": e.mid - half, "best_ask": e.mid + half}))
        elif isinstance(e, Liquidation):
            out.append((e.symbol, {"kind": "liquidation", "ts": ts, "side": "sell" if e.side == "long" else "buy",
                                   "qty": e.size, "price": e.price}))
        elif isinstance(e, FundingMark):
            funding[e.symbol] = (e.funding_rate, e.mark_price)
            out.append((e.symbol, {"kind": "derivatives", "ts": ts, "open_interest": oi.get(e.symbol, 0.0),
                                   "funding_rate": e.funding_rate, "mark_price": e.mark_price}))
        elif isinstance(e, OpenInterest):
            oi[e.symbol] = e.oi_base
            rate, mark = funding.get(e.symbol, (0.0, e.oi_usd / e.oi_base))
            out.append((e.symbol, {"kind": "derivatives", "ts": ts, "open_interest": e.oi_base,
                                   "funding_rate": rate, "mark_price": mark}))
    return out


def streaming_commands(mapped: list[tuple[str, dict[str, Any]]]) -> tuple[list[list[str]], int]:
    """Per 1-s window of event time, the ``feed_batch`` commands (one per instrument); and the events in them."""
    windows: list[list[str]] = []
    window: dict[str, list[dict[str, Any]]] = defaultdict(list)
    boundary = mapped[0][1]["ts"] // 1000 * 1000 + 1000
    fed = 0

    def close() -> None:
        nonlocal fed
        windows.append([_encode({"cmd": "feed_batch", "symbol": s, "events": evs}).decode()
                        for s, evs in window.items()])
        fed += sum(len(evs) for evs in window.values())
        window.clear()

    for symbol, event in mapped:
        while event["ts"] >= boundary:
            close()
            boundary += 1000
        window[symbol].append(event)
    close()
    return windows, fed


def _wickra_streaming_s(radar_cls: Any, windows: list[list[str]]) -> tuple[float, float, int]:
    """Seconds in all, seconds of them in ``alerts``, and the instruments the last report scanned."""
    radar = radar_cls(_encode(SPEC).decode())
    command = radar.command
    alerts = '{"cmd":"alerts"}'
    report_s = 0.0
    began = time.perf_counter()
    for window in windows:
        for cmd in window:
            command(cmd)
        before = time.perf_counter()
        report = command(alerts)
        report_s += time.perf_counter() - before
    seconds = time.perf_counter() - began
    return seconds, report_s, msgspec.json.decode(report)["scanned"]


def _wickra_scan_s(radar_cls: Any, scan: str) -> float:
    radar = radar_cls(_encode(SPEC).decode())
    began = time.perf_counter()
    radar.command(scan)
    return time.perf_counter() - began


def _flushwatch_s(settings: Settings, payloads: list[bytes]) -> tuple[float, int]:
    detector = Detector(settings, capacity=INSTRUMENTS)
    began = time.perf_counter()
    for payload in payloads:
        detector.process_columns(detector.entry_columns(payload))
    return time.perf_counter() - began, detector.events


def _flushwatch_objects_s(settings: Settings, events: list[Event]) -> tuple[float, int]:
    detector = Detector(settings, capacity=INSTRUMENTS)
    began = time.perf_counter()
    for start in range(0, len(events), 512):
        detector.process(events[start : start + 512])
    return time.perf_counter() - began, detector.events


def _payloads(events: list[Event]) -> list[bytes]:
    """The events as the stream entries a shard reads: batches of 512 (``collectors.writer``'s default)."""
    return [entry_payload(encode_batch(events[start : start + 512])) for start in range(0, len(events), 512)]


def run(quick: bool) -> None:
    try:
        from wickra_radar import Radar
    except ImportError:
        note("wickra-radar is not installed (pip install -e '.[bench]'): no side-by-side detector figures")
        return
    settings = load_settings()
    runs = 5 if quick else 7
    n = 300_000 if quick else 1_500_000
    market = synthetic_events(n, np.random.default_rng(11))
    events: list[Event] = [e for e in market if not isinstance(e, Trade)]
    began = time.perf_counter()
    mapped = wickra_events(events)
    windows, fed = streaming_commands(mapped)
    encode_s = time.perf_counter() - began
    by_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for symbol, event in mapped:
        by_symbol[symbol].append(event)
    scan = _encode({"cmd": "scan", "events": by_symbol}).decode()
    assert fed == len(mapped) == len(events), (fed, len(mapped), len(events))
    payloads = _payloads(events)
    ours, objects, stream, batch, reports = [], [], [], [], []
    started_like_the_service(settings)
    _flushwatch_s(settings, payloads[:40])  # warm-up: the first detector's memory is fresh
    for run_ in range(runs):
        sides = [0, 1, 2, 3] if run_ % 2 == 0 else [3, 2, 1, 0]
        for side in sides:
            if side == 0:
                seconds, counted = _flushwatch_s(settings, payloads)
                assert counted == len(events), (counted, len(events))
                ours.append(seconds)
            elif side == 3:
                seconds, counted = _flushwatch_objects_s(settings, events)
                assert counted == len(events), (counted, len(events))
                objects.append(seconds)
            elif side == 1:
                seconds, report_s, scanned = _wickra_streaming_s(Radar, windows)
                assert scanned == INSTRUMENTS, scanned
                stream.append(seconds)
                reports.append(report_s / len(windows))
            else:
                batch.append(_wickra_scan_s(Radar, scan))
    k = len(events)

    def rate(seconds: list[float]) -> float:
        return k / statistics.median(seconds)

    def spread(seconds: list[float]) -> list[int]:
        return [round(k / max(seconds)), round(k / min(seconds))]

    full_s, _ = _flushwatch_s(settings, _payloads(market))
    emit("detector.flushwatch.no_trades.events_per_s", rate(ours), "events/s", spread=spread(ours), events=k,
         instruments=INSTRUMENTS, runs=runs,
         note="stream entries (MessagePack) read to columns, kernels + stage evaluation every event-second")
    emit("detector.flushwatch.no_trades.objects.events_per_s", rate(objects), "events/s", spread=spread(objects),
         events=k, runs=runs, note="the same events as Python objects (Detector.process, as a replay feeds them)")
    emit("detector.flushwatch.with_trades.events_per_s", n / full_s, "events/s", events=n,
         note="the same market with its trades (70 % of events), one run; not comparable with wickra-radar")
    emit("detector.wickra_radar.streaming.events_per_s", rate(stream), "events/s", spread=spread(stream),
         events=k, runs=runs, json_encode_s=round(encode_s, 3), evaluations=len(windows),
         alerts_ms_per_evaluation=round(statistics.median(reports) * 1e3, 3),
         note="feed_batch per instrument per event-second + alerts at each boundary; JSON pre-encoded")
    emit("detector.wickra_radar.scan.events_per_s", rate(batch), "events/s", spread=spread(batch), events=k,
         runs=runs, note="one scan over the whole stream, one report at the end")
    emit("vs_wickra_radar.detector_ratio", rate(ours) / rate(stream), "x", target=1.0,
         ratio_vs_scan=round(rate(ours) / rate(batch), 3), ratio_from_objects=round(rate(objects) / rate(stream), 3),
         instruments=INSTRUMENTS, note="same events, each side reading its own encoding inside the clock (no trades: "
         "wickra-radar has no trade event), same 1-s evaluation cadence")
