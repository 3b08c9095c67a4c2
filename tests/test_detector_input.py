"""The detector's two doors: stream entries read straight to columns (what a shard does) and event objects
(what a replay does) must give the same signals, byte for byte, however the entries were cut."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.engine import Detector
from detector.wire import wire_columns
from flushwatch.events import Event, Trade
from flushwatch.settings import load_settings
from flushwatch.signals import Signal
from flushwatch.streams import encode_batch, entry_payload


def payloads(events: list[Event], size: int) -> list[bytes]:
    return [entry_payload(encode_batch(events[k : k + size])) for k in range(0, len(events), size)]


def encoded(signals: list[Signal]) -> bytes:
    return msgspec.msgpack.encode(signals)


@settings(max_examples=4, deadline=None)
@given(size=st.sampled_from([1, 37, 512, 5000]))
def test_entries_give_the_signals_of_objects(cascade: list[Event], uninterrupted: list[Signal], size: int) -> None:
    entries = payloads(cascade, size)
    assert all(wire_columns(p) is not None for p in entries)  # the columns path, not its fallback, is tested
    detector = Detector(load_settings())
    signals = [s for p in entries for s in detector.process_columns(detector.entry_columns(p))]
    assert encoded(signals) == encoded(uninterrupted)
    assert detector.events == len(cascade)


def test_an_entry_the_columns_path_does_not_read_goes_through_objects(cascade: list[Event]) -> None:
    # Integers in float fields: msgspec reads them as floats; whichever path takes them, the columns agree.
    odd = [Trade(venue="binance", symbol="BTCUSDT", asset="BTC", ts_event=cascade[0].ts_event + k, ts_recv=k,
                 price=60_000 + k, size=2, side="sell") for k in range(5)]  # type: ignore[arg-type]
    payload = entry_payload(encode_batch(odd))
    by_entry, by_objects = Detector(load_settings()), Detector(load_settings())
    for a, b in zip(by_entry.entry_columns(payload), by_objects.columns_of(msgspec.msgpack.decode(
            payload, type=list[Event])), strict=True):
        np.testing.assert_array_equal(a, b)


TIME_PAST_INT64 = msgspec.msgpack.encode([["t", "binance", "BTCUSDT", "BTC", 1 << 63, 0, 1.0, 1.0, "buy"]])
"""msgspec reads a uint64 time, no int64 column holds it."""


@pytest.mark.parametrize("payload", [b"", b"\x91\xa1x", b"not msgpack", b"\x90\x90", TIME_PAST_INT64])
def test_a_payload_that_is_not_a_batch_of_events_is_refused(payload: bytes) -> None:
    detector = Detector(load_settings())
    with pytest.raises(ValueError):
        detector.entry_columns(payload)
    assert detector.assets == [] and detector.events == 0
