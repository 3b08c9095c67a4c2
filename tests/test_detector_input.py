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


def market(entries: int, seed: int) -> list[list[Event]]:
    """Entries of trades over a growing set of assets and venues: each brings new names among known ones."""
    rng = np.random.default_rng(seed)
    return [[Trade(venue=f"venue{int(v)}", symbol="X", asset=f"A{int(a)}", ts_event=k * 64 + i, ts_recv=i,
                   price=1.0 + i, size=2.0, side="buy")
             for i, (a, v) in enumerate(zip(rng.integers(0, 12 * (k + 1), 64), rng.integers(0, k // 2 + 1, 64),
                                            strict=True))]
            for k in range(entries)]


def assert_same_columns(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        assert np.array_equal(a.view(np.int64) if a.dtype == np.float64 else a,
                              b.view(np.int64) if b.dtype == np.float64 else b)


def test_entries_number_names_as_objects_do() -> None:
    """The wire path's table of names against objects numbered by ``columns_of``: names of earlier entries, new
    ones among them, names numbered first through objects (``process``), and a detector restored from an older
    checkpoint, whose names numbered since must be forgotten."""
    entries = market(40, 3)[:26] + market(40, 4)[26:]  # after the restore, names come in another order
    by_entry, by_objects = Detector(load_settings()), Detector(load_settings())
    saved = b""
    for k, events in enumerate(entries):
        want = by_objects.columns_of(events)
        if k % 7 == 3:  # these names are numbered without the wire path; later entries meet them on it
            got = by_entry.columns_of(events)
        else:
            got = by_entry.entry_columns(entry_payload(encode_batch(events)))
            assert wire_columns(entry_payload(encode_batch(events))) is not None
        assert_same_columns(got, want)
        if k == 12:
            saved = by_entry.checkpoint()
        if k == 25:  # back to entry 12: the names met since get other numbers the second time
            by_entry.restore(saved)
            by_objects.restore(saved)
    assert by_entry.assets == by_objects.assets and by_entry.venues == by_objects.venues
    assert len(by_entry.assets) > 300 and len(by_entry.venues) > 10


def test_a_restored_detector_reads_entries_as_one_that_never_stopped() -> None:
    entries = [entry_payload(encode_batch(events)) for events in market(20, 5)]
    whole, first = Detector(load_settings()), Detector(load_settings())
    for payload in entries[:10]:
        first.process_columns(first.entry_columns(payload))
    restored = Detector(load_settings())
    restored.entry_columns(entries[15])  # names it must forget
    restored.restore(first.checkpoint())
    for k, payload in enumerate(entries):
        want = whole.entry_columns(payload)
        whole.process_columns(want)
        if k >= 10:
            got = restored.entry_columns(payload)
            assert_same_columns(got, want)
            restored.process_columns(got)
