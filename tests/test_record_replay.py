"""``flushwatch record`` and ``flushwatch replay`` with real parts: the fake Binance playing the scripted flush,
the real collector with the recorder as its tap, real redis-server and mosquitto for the replays."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis
import zstandard
from conftest import shared_data, subscriber
from harness import assert_flush_story
from prometheus_client import REGISTRY

from collectors.binance.parse import BinanceParser
from flushwatch.events import Event, OpenInterest, Trade
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.fake.venue_server import record_lines
from flushwatch.recordings import FORMAT, ReplayError
from flushwatch.replay import Replay, ReplayOptions, ReplayReport
from flushwatch.servers import RunningServer
from flushwatch.settings import BinanceSettings, MqttTarget, load_settings
from flushwatch.streams import decode_events, events_key
from flushwatch.waiting import until

if TYPE_CHECKING:
    from flushwatch.recorder import Recorder

# flushwatch.recorder is imported where it is used: importing it adds its drop counter to the default
# registry, which tests/test_prometheus_config.py compares with docs/metrics.md (not listing it yet).

SPEED = 80.0
"""Scenario seconds per wall second while recording (as tests/test_end_to_end.py): the flush takes 20 s."""
ROTATE_BYTES = 1 << 20
_encode = msgspec.json.Encoder().encode


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in record_lines(path)]


def recorded_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("flushwatch-*.jsonl.zst"))


@dataclass
class Recorded:
    files: list[Path]
    scenario: Scenario
    events: list[Event]
    """What the live collector queued while the recorder listened."""
    sent: dict[str, list[str | bytes]]
    """What the fake exchange sent, by the collector's connection name."""
    counts: Counter[str] = field(default_factory=Counter)


async def _record_flush(out: Path) -> Recorded:
    from flushwatch.recorder import RecordSession

    scenario = Scenario("flush", seed=3, speed=SPEED)
    async with FakeBinance(keep_sent=400_000) as fake:
        fake.register(scenario)
        settings = load_settings(metrics_port=0, binance=BinanceSettings(
            symbols=scenario.symbols, market_url=fake.market_url, public_url=fake.public_url,
            rest_url=fake.rest_url, oi_poll_interval_s=10.0 / SPEED, stale_after_s=10.0))
        events: list[Event] = []
        session = RecordSession(settings, out, rotate_bytes=ROTATE_BYTES, on_events=events.extend)
        stop = asyncio.Event()
        running = asyncio.create_task(session.run(stop))
        await until(lambda: len(fake.open_connections) == 2, within=30)
        await fake.attach(scenario)

        def delivered() -> bool:
            sent = sum(len(c.sent) for c in fake.connections)
            return session.recorder.counts["recv"] >= sent and not any(c.backlog for c in fake.open_connections)

        await until(delivered, within=60)
        stop.set()
        await running
        assert len(fake.connections) == 2, "no reconnect: one connection per route"
        sent = {f"{c.route}-0": [s.data for s in c.sent] for c in fake.connections}
    return Recorded(session.recorder.files, scenario, events, sent, session.recorder.counts)


@pytest.fixture(scope="module")
def flush(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The scripted flush recorded once through the real collector (about 20 s), shared by the tests here."""
    return asyncio.run(_record_flush(tmp_path_factory.mktemp("flush")))


@pytest.mark.slow
def test_the_recording_holds_every_frame_verbatim_with_its_receive_time(flush: Recorded) -> None:
    assert len(flush.files) >= 3, "rotation by size made several parts"
    assert all(re.fullmatch(r"flushwatch-\d{8}T\d{6}Z-\d+\.jsonl\.zst", p.name) for p in flush.files)
    records: list[dict[str, Any]] = []
    for part, path in enumerate(flush.files):
        content = lines(path)
        header, end = content[0], content[-1]
        assert header["t"] == "header" and header["format"] == FORMAT and header["part"] == part
        assert header["session"] == lines(flush.files[0])[0]["session"]
        binance = header["venues"]["binance"]
        assert [i["symbol"] for i in binance["instruments"]] == flush.scenario.symbols
        assert {"market-0", "public-0"} == binance["connections"].keys()  # REST bodies are "http" records
        assert "btcusdt@aggTrade" in binance["connections"]["market-0"]["topics"]
        assert end["t"] == "end" and end["dropped"] == 0 and end["frames"] == len(content) - 2
        assert end["reason"] == ("stop" if part == len(flush.files) - 1 else "rotate")
        records += content[1:-1]
    # Verbatim: each connection's received frames are exactly what the exchange sent it, in order.
    for conn, sent in flush.sent.items():
        assert [r["data"] for r in records if r["t"] == "recv" and r["conn"] == conn] == sent
    assert Counter(r["t"] for r in records) == flush.counts
    # With its receive time: the same parser fed the recorded frames at the recorded times gives exactly
    # the events the live collector queued (ts_recv included), open interest from the recorded REST bodies.
    parser = BinanceParser(flush.scenario.symbols)
    again: list[Event] = []
    for r in records:
        if r["t"] == "recv":
            again += parser.parse(r["data"].encode(), r["ts"]).events
        elif r["t"] == "http":
            assert r["url"].startswith("/fapi/v1/openInterest?symbol=")
            again += parser.open_interest(r["data"].encode(), r["ts"]).events
    assert sorted(map(_encode, again)) == sorted(map(_encode, flush.events))
    assert sum(isinstance(e, OpenInterest) for e in again) > 100


def stored_events(url: str) -> list[Event]:
    """The events a replay wrote to the Redis stream, in stream order."""
    entries: Any = redis.Redis.from_url(url).xrange(events_key(0))
    return [e for _, fields in entries for e in decode_events(fields)]


class _Line(msgspec.Struct):
    type: str
    kind: str = ""
    payload: msgspec.Raw = msgspec.Raw()


def published_events(path: Path) -> list[bytes]:
    """The event payloads a replay wrote to ``--signals-out``, as bytes exactly as published."""
    decoded = [msgspec.json.decode(raw, type=_Line) for raw in path.read_bytes().splitlines()]
    return [bytes(line.payload) for line in decoded if line.type == "publish" and line.kind == "event"]


def check_flush_story(payloads: list[bytes], scenario: Scenario) -> None:
    events = [json.loads(p) for p in payloads]
    assert_flush_story(events, scenario)
    # the recorded REST open interest was replayed: the purge is seen
    assert next(e for e in events if e["asset"] == "BTC" and e["stage"] == 7)["evidence"]["oi_chg_episode_long"] < 0


async def _messages(client: Any, into: list[bytes]) -> None:
    async for message in client.messages:
        into.append(message.payload)


@pytest.mark.slow
async def test_two_replays_publish_the_same_bytes_and_tell_the_scripted_story(
    flush: Recorded, tmp_path: Path, redis_server: RunningServer, mosquitto: RunningServer
) -> None:
    settings = load_settings()
    parts = list(flush.files)
    random.Random(1).shuffle(parts)  # the parts replay as one recording in their own order, however given
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    received: list[bytes] = []
    async with subscriber(mosquitto.port, "replay-test/v1/+/events") as client:
        listener = asyncio.create_task(_messages(client, received))
        report = await Replay(parts, settings, ReplayOptions(
            redis_url=redis_server.url, mqtt=MqttTarget(host="127.0.0.1", port=mosquitto.port),
            mqtt_prefix="replay-test/v1", signals_out=first)).run()
        await until(lambda: len(received) >= report.published["event"], within=10)
        listener.cancel()
    again = await Replay(flush.files, settings, ReplayOptions(private_mqtt=False, signals_out=second)).run()

    assert first.read_bytes() == second.read_bytes()  # stage changes and payloads, byte for byte
    assert report.stage_changes == again.stage_changes >= 5
    payloads = published_events(first)
    assert received == payloads  # what the broker got is what the log says was published
    check_flush_story(payloads, flush.scenario)
    # Several files, one recording: every event the live collector queued came out of the replay, with
    # the recorded receive time, and nothing else.
    assert report.skipped == Counter({"send": flush.counts["send"]}) and not report.problems
    assert sorted(map(_encode, stored_events(redis_server.url))) == sorted(map(_encode, flush.events))


async def _cryptofeed(path: Path, redis_url: str) -> tuple[ReplayReport, list[Event], list[dict[str, Any]]]:
    report = await Replay([path], load_settings(), ReplayOptions(redis_url=redis_url, private_mqtt=False)).run()
    return report, stored_events(redis_url), lines(path)


async def test_a_cryptofeed_binance_recording_replays_with_its_receive_times(redis_server: RunningServer) -> None:
    report, events, records = await _cryptofeed(
        shared_data("cryptofeed_recordings", "BINANCE_FUTURES.jsonl.zst"), redis_server.url)
    trades = {(json.loads(r["data"])["data"]["a"], round(r["ts"] * 1e6) * 1000) for r in records
              if r["t"] == "recv" and "@aggTrade" in r["data"]}
    assert trades and all(isinstance(e, Trade) for e in events)
    # Trade ids ride in ts_event's milliseconds only, so match on (event time, receive time) per trade.
    assert {e.ts_recv for e in events} == {ts for _, ts in trades} and len(events) == len(trades)
    assert report.frames == sum(r["t"] == "recv" for r in records)
    # Diff depth, bookTicker and klines are not flushwatch's channels: counted, not fatal.
    assert report.rejects["binance:unknown_type"] == report.frames - len(trades)
    assert report.skipped["http_not_instruments"] == 4  # the depth snapshots; exchangeInfo gave the symbols


async def test_a_cryptofeed_bybit_recording_replays_its_linear_connection(redis_server: RunningServer) -> None:
    pytest.importorskip("collectors.bybit.parse")
    report, events, records = await _cryptofeed(shared_data("cryptofeed_recordings", "BYBIT.jsonl.zst"),
                                                redis_server.url)
    spot = {r["conn"] for r in records if r["t"] == "connect" and r["addr"].endswith("/spot")}
    linear_ts = {round(r["ts"] * 1e6) * 1000 for r in records if r["t"] == "recv" and r["conn"] not in spot}
    assert events and {e.ts_recv for e in events} <= linear_ts
    assert {e.venue for e in events} == {"bybit"} and {e.asset for e in events} >= {"BTC", "ETH"}
    assert report.skipped["other_endpoint"] == sum(r["t"] == "recv" and r["conn"] in spot for r in records)
    assert report.frames == sum(r["t"] == "recv" and r["conn"] not in spot for r in records)


async def synthetic_recording(out: Path, *, span_s: float, step_s: float = 0.05, pause_every: int = 0,
                              **recorder: Any) -> Recorder:
    """BTCUSDT trades every ``step_s`` of recorded time over ``span_s``, written by a real ``Recorder``
    (in one zstd block, or one per ``pause_every`` frames)."""
    from flushwatch.recorder import Recorder

    describe = {"binance": {"instruments": [{"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC",
                                             "kind": "linear", "contract_size": 1.0, "funding_interval_h": 8.0}],
                            "connections": {"market-0": {"url": "ws://x/stream", "topics": ["btcusdt@aggTrade"]}}}}
    rec = Recorder(out, lambda: describe, **recorder)
    stop = asyncio.Event()
    writer = asyncio.create_task(rec.run(stop))
    t0 = 1_760_000_000_000
    for i in range(round(span_s / step_s) + 1):
        t_ms = t0 + round(i * step_s * 1000)
        data = {"e": "aggTrade", "E": t_ms, "a": i + 1, "s": "BTCUSDT", "p": "100.0", "q": "1.0", "f": i + 1,
                "l": i + 1, "T": t_ms, "m": False}
        rec("recv", "binance", "market-0", t_ms * 1_000_000 + 3_000_000,
            _encode({"stream": "btcusdt@aggTrade", "data": data}))
        if pause_every and i % pause_every == pause_every - 1:
            await until(lambda: not rec._pending)  # written: the next frames go to a new zstd block
    stop.set()
    await writer
    return rec


async def _replay_seconds(paths: list[Path], speed: float | None) -> ReplayReport:
    return await Replay(paths, load_settings(), ReplayOptions(speed=speed, private_mqtt=False)).run()


async def test_speed_paces_the_replay_by_recorded_receive_time(tmp_path: Path) -> None:
    files = (await synthetic_recording(tmp_path, span_s=3.0)).files
    fast = await _replay_seconds(files, None)
    paced = await _replay_seconds(files, 2.0)
    assert fast.events == paced.events == 61
    assert fast.seconds < 1.0  # as fast as possible is far from the paced figure, so the bound below can fail
    assert 1.4 <= paced.seconds <= 3.0, paced.seconds  # 3 s of recording at ×2: about 1.5 s


async def test_a_replay_never_writes_into_streams_a_live_flushwatch_reads(
    tmp_path: Path, redis_server: RunningServer
) -> None:
    files = (await synthetic_recording(tmp_path, span_s=1.0)).files
    live = redis.Redis.from_url(redis_server.url)
    live.xadd(events_key(0), {"v": "1"})
    live.xgroup_create(events_key(0), "detector", id="0")
    live.xreadgroup("detector", "detector-0", {events_key(0): ">"})  # a consumer that is reading right now
    with pytest.raises(ReplayError, match="being read by a running flushwatch"):
        await Replay(files, load_settings(), ReplayOptions(redis_url=redis_server.url, private_mqtt=False)).run()
    assert live.xlen(events_key(0)) == 1  # untouched
    live.xgroup_delconsumer(events_key(0), "detector", "detector-0")  # nobody reads: the keys are the replay's
    report = await Replay(files, load_settings(), ReplayOptions(redis_url=redis_server.url, private_mqtt=False)).run()
    assert len(stored_events(redis_server.url)) == report.events == 21


def flushwatch_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flushwatch", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


async def test_damaged_recordings_are_counted_and_the_replay_carries_on(tmp_path: Path) -> None:
    [good] = (await synthetic_recording(tmp_path / "good", span_s=2.0, pause_every=5, flush_interval_s=0.01)).files
    raw = zstandard.ZstdDecompressor().stream_reader(good.read_bytes()).read().splitlines(keepends=True)
    corrupt = tmp_path / "corrupt.jsonl.zst"
    corrupt.write_bytes(zstandard.ZstdCompressor().compress(b"".join([*raw[:10], b'{"t":"recv","ts":\n', *raw[10:]])))
    report = await _replay_seconds([corrupt], None)
    assert report.events == 41 and report.skipped["corrupt_line"] == 1
    assert any("line 11 is not a record" in p for p in report.problems)

    truncated = tmp_path / "truncated.jsonl.zst"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    result = flushwatch_cmd("replay", str(truncated), "--no-mqtt")
    assert result.returncode == 0, result.stderr
    frames = int(re.search(r"replayed ([\d,]+) frames", result.stdout)[1].replace(",", ""))  # type: ignore[index]
    assert 0 < frames < 41
    assert "problem:" in result.stdout and "no end record" in result.stdout

    junk = tmp_path / "notes.txt"
    junk.write_text("not a recording\n")
    refused = flushwatch_cmd("replay", str(junk), "--no-mqtt")
    assert refused.returncode == 2 and "not a recording" in refused.stderr


async def test_a_writer_that_falls_behind_drops_counts_and_never_blocks(tmp_path: Path) -> None:
    before = REGISTRY.get_sample_value("flushwatch_recorder_dropped_frames_total", {"venue": "binance"}) or 0.0
    rec = await synthetic_recording(tmp_path, span_s=10.0, max_pending_bytes=20_000)  # ~100 of 201 frames fit
    dropped = REGISTRY.get_sample_value("flushwatch_recorder_dropped_frames_total", {"venue": "binance"})
    assert rec.dropped > 50 and dropped == before + rec.dropped
    [path] = rec.files
    assert lines(path)[-1]["dropped"] == rec.dropped and rec.counts["recv"] + rec.dropped == 201
    report = await _replay_seconds([path], None)
    assert report.events == rec.counts["recv"] and report.skipped["recorder_dropped"] == 1


async def test_the_record_command_writes_frames_and_rest_answers(fake: FakeBinance, tmp_path: Path) -> None:
    scenario = Scenario("flush", seed=1, speed=40.0)
    fake.register(scenario)
    env = {**os.environ, "FLUSHWATCH_METRICS_PORT": "0",
           "FLUSHWATCH_BINANCE__SYMBOLS": json.dumps(scenario.symbols),
           "FLUSHWATCH_BINANCE__MARKET_URL": fake.market_url, "FLUSHWATCH_BINANCE__PUBLIC_URL": fake.public_url,
           "FLUSHWATCH_BINANCE__REST_URL": fake.rest_url, "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": "0.5"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flushwatch", "record", "--out", str(tmp_path), "--duration", "6", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await until(lambda: len(fake.open_connections) == 2, within=60)
    fake.attach(scenario)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    [path] = recorded_files(tmp_path)
    assert str(path) in stdout.decode()
    records = lines(path)
    kinds = Counter(r["t"] for r in records)
    assert kinds["header"] == kinds["end"] == 1 and kinds["recv"] > 100 and kinds["http"] >= 1 and kinds["send"] == 2
    assert records[0]["venues"]["binance"]["connections"]["public-0"]["url"].startswith(fake.public_url)
