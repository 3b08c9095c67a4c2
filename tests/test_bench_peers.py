"""The side-by-side harness compares like with like: both sides get the same frames / events and make the same
number of things out of them where the data says they must (one trade object per recorded trade). Correctness
of the comparison, not timing: the figures come from ``python -m bench --peers``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data

from bench.detector import synthetic_events
from detector.engine import Detector
from flushwatch.events import Trade
from flushwatch.settings import load_settings


@pytest.mark.parametrize(("venue", "file", "channel", "trades"), [
    ("binance", "BINANCE_FUTURES.jsonl.zst", "aggTrade", 91),
    ("bybit", "BYBIT.jsonl.zst", "publicTrade", None),
])
def test_flushwatch_and_cryptofeed_normalise_the_same_trades(venue: str, file: str, channel: str,
                                                             trades: int | None) -> None:
    pytest.importorskip("cryptofeed", reason="the bench extra is not installed")
    from bench.peers.cryptofeed_decode import Cryptofeed, compare, load_session

    session = load_session(venue, shared_data("cryptofeed_recordings", file))
    frames = session.channels[channel]
    # Bybit batches trades: count them in the raw frames, independently of either parser.
    expected = trades or sum(len(json.loads(f)["data"]) for f, _, _ in frames)
    result = compare(session, Cryptofeed(session), channel, runs=2, min_frames=2 * len(frames))
    assert result.passes == 2 and len(result.fw_s) == len(result.cf_s) == 2
    assert result.fw_events == result.cf_objects == 2 * expected


def test_channels_flushwatch_does_not_read_are_left_out_of_both_sides() -> None:
    pytest.importorskip("cryptofeed", reason="the bench extra is not installed")
    from bench.peers.cryptofeed_decode import load_session

    session = load_session("binance", shared_data("cryptofeed_recordings", "BINANCE_FUTURES.jsonl.zst"))
    assert set(session.channels) == {"aggTrade"}
    assert set(session.not_read) == {"depth@100ms", "bookTicker", "kline_1m"}
    okx = load_session("okx", shared_data("cryptofeed_recordings", "OKX.jsonl.zst"))
    kept = {json.loads(f)["arg"]["instId"] for f, _, _ in okx.channels["trades"]}
    assert kept <= {i.symbol for i in okx.instruments} and "BTC-USDT" not in kept
    assert okx.not_watched["trades"] > 0  # the spot trades: dropped from both sides, not timed


def test_wickra_radar_and_the_detector_take_the_same_events() -> None:
    radar_module = pytest.importorskip("wickra_radar", reason="the bench extra is not installed")
    from bench.peers.wickra import SPEC, streaming_commands, wickra_events

    events = [e for e in synthetic_events(6_000, np.random.default_rng(5)) if not isinstance(e, Trade)]
    mapped = wickra_events(events)
    windows, fed = streaming_commands(mapped)
    assert fed == len(mapped) == len(events)
    radar = radar_module.Radar(json.dumps(SPEC))
    for window in windows:
        for command in window:
            assert json.loads(radar.command(command)) == {"ok": True}, command
    report = json.loads(radar.command('{"cmd":"alerts"}'))
    assert report["scanned"] == len({e.symbol for e in events})
    detector = Detector(load_settings(), capacity=1_500)
    detector.process(events)
    assert detector.events == len(events)
