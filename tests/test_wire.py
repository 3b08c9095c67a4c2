"""``detector.wire.wire_columns`` against its reference, msgspec's typed decode + ``detector.batch.stream_columns``:
for every payload it either says None or gives the reference's columns bit for bit, and it says None whenever the
reference refuses the payload."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, Final

import msgspec
import numpy as np
import pytest
import test_bybit_recording
import test_fuzz_parsers
from conftest import shared_data
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.venues import parser_for
from detector.batch import stream_columns
from detector.wire import ASSET, VENUE, NameTable, WireColumns, wire_columns
from flushwatch.events import Depth, Event, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.recordings import Recordings
from flushwatch.streams import encode_batch

PROPERTY = settings(max_examples=300, deadline=None)
_decoder = msgspec.msgpack.Decoder(list[Event])
_encode = msgspec.msgpack.Encoder().encode
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def reference(payload: bytes) -> WireColumns | None:
    """What the detector computes today, or None where it raises."""
    try:
        events = _decoder.decode(payload)
        assets: dict[str, int] = {}
        venues: dict[str, int] = {}
        slots = [assets.setdefault(e.asset, len(assets)) for e in events]
        numbers = [venues.setdefault(e.venue, len(venues)) for e in events]
        with np.errstate(all="ignore"):  # inf * 0 is NaN here as in the kernel; the warning is not the point
            kind, slot, venue, ts, v0, v1, v2, _, recv = stream_columns(events, slots, numbers)
    # msgspec raises UnicodeDecodeError for bad UTF-8; OverflowError is stream_columns' for a time past int64
    except (msgspec.DecodeError, UnicodeDecodeError, OverflowError):
        return None
    return WireColumns(kind, slot, venue, ts, recv, v0, v1, v2, list(assets), list(venues))


def assert_same(got: WireColumns, want: WireColumns) -> None:
    for name, a, b in zip(WireColumns._fields, got, want, strict=True):
        if isinstance(b, list):
            assert a == b, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
        if a.dtype.kind == "f":
            assert np.array_equal(a.view(np.int64), b.view(np.int64)), name  # NaN payloads and -0.0 too


def check(payload: bytes) -> tuple[WireColumns | None, WireColumns | None]:
    """``(wire_columns, reference)`` of ``payload``, after checking the contract between them."""
    got, want = wire_columns(payload), reference(payload)
    if got is not None:
        assert want is not None, "read a payload the reference refuses"
        assert_same(got, want)
    return got, want


# ----------------------------------------------------------------------------------------------- strategies

def _bits(raw: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", raw))[0])


NAN_PAYLOADS: Final = st.integers(0, 2**52 - 1).flatmap(
    lambda m: st.sampled_from([0x7FF0 << 48, 0xFFF0 << 48]).map(lambda e: _bits(e | m | 1)))
"""NaNs of every payload and sign, signalling ones included (mantissa never 0: that would be infinity)."""
FLOATS: Final = st.one_of(
    st.floats(), NAN_PAYLOADS, st.integers(0, 2**64 - 1).map(_bits),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]),
    st.integers(INT64_MIN, INT64_MAX))  # msgspec writes an int held in a float field as an int
INTS: Final = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, INT64_MAX, -1, -32, -33, -128, -129,
                     -32768, -32769, -(2**31), -(2**31) - 1, INT64_MIN]))
LONG_NAMES: Final = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.sampled_from([255, 256, 70_000]))
NAMES: Final = st.one_of(st.text(max_size=8), LONG_NAMES,
                         st.sampled_from(["", "BTC", "binance", "ß", "币安", "🚀", "\x00", "a\x00b"]))


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 12) -> list[Event]:
    """Events of all five kinds over a few shared venue and asset names."""
    pool = draw(st.lists(NAMES, min_size=1, max_size=4))
    names = st.sampled_from(pool)
    common = {"venue": names, "symbol": NAMES, "asset": names, "ts_event": INTS, "ts_recv": INTS}
    bands = st.tuples(FLOATS, FLOATS, FLOATS)
    kinds = st.one_of(
        st.builds(Trade, **common, price=FLOATS, size=FLOATS, side=st.sampled_from(["buy", "sell"])),
        st.builds(Liquidation, **common, price=FLOATS, size=FLOATS, side=st.sampled_from(["long", "short"])),
        st.builds(FundingMark, **common, mark_price=FLOATS, index_price=FLOATS, funding_rate=FLOATS,
                  funding_interval_h=FLOATS, funding_8h=FLOATS, funding_annual=FLOATS, next_funding_ts=INTS),
        st.builds(OpenInterest, **common, oi_base=FLOATS, oi_usd=FLOATS),
        st.builds(Depth, **common, mid=FLOATS, spread_bps=FLOATS, bid_usd=bands, ask_usd=bands,
                  reach_bps=FLOATS))
    return draw(st.lists(kinds, max_size=max_size))


def read_fast(events: list[Event]) -> bool:
    """Whether the fast path must read ``events``: all but two NaNs multiplied or added, whose result's payload
    depends on the order of the operands (numpy's and the kernel's may differ, so the kernel leaves them)."""
    for e in events:
        if isinstance(e, Trade | Liquidation) and math.isnan(e.price) and math.isnan(e.size):
            return False
        if isinstance(e, Depth) and math.isnan(e.bid_usd[1]) and math.isnan(e.ask_usd[1]):
            return False
    return True


def loose(node: Any, draw: Callable[[st.SearchStrategy[Any]], Any], unread: list[bool]) -> bytes:
    """MessagePack of ``node`` with each value in an encoding drawn from all MessagePack has for it (msgspec
    writes the shortest). Marks ``unread`` when one is a form the fast path leaves to msgspec (float32)."""
    if isinstance(node, list | tuple):
        n = len(node)
        heads = [bytes([0x90 | n]) if n < 16 else b"", b"\xdc" + struct.pack(">H", n), b"\xdd" + struct.pack(">I", n)]
        return draw(st.sampled_from([h for h in heads if h])) + b"".join(loose(item, draw, unread) for item in node)
    if isinstance(node, str):
        raw = node.encode()
        n = len(raw)
        heads = [bytes([0xA0 | n]) if n < 32 else b"", b"\xd9" + bytes([n]) if n < 256 else b"",
                 b"\xda" + struct.pack(">H", n) if n < 65536 else b"", b"\xdb" + struct.pack(">I", n)]
        return draw(st.sampled_from([h for h in heads if h])) + raw
    if isinstance(node, int):
        forms = [(0, 0, 127, ""), (0, -32, -1, ""), (0xCC, 0, 255, ">B"), (0xCD, 0, 65535, ">H"),
                 (0xCE, 0, 2**32 - 1, ">I"), (0xCF, 0, 2**64 - 1, ">Q"), (0xD0, -128, 127, ">b"),
                 (0xD1, -32768, 32767, ">h"), (0xD2, -(2**31), 2**31 - 1, ">i"), (0xD3, INT64_MIN, INT64_MAX, ">q")]
        code, _, _, fmt = draw(st.sampled_from([f for f in forms if f[1] <= node <= f[2]]))
        return struct.pack(">B", node & 0xFF) if not fmt else bytes([code]) + struct.pack(fmt, node)
    if (abs(node) <= 3.4e38 or not math.isfinite(node)) and draw(st.booleans()):  # else too large for float32
        unread[0] = True
        return b"\xca" + struct.pack(">f", node)
    return b"\xcb" + struct.pack(">d", node)


# --------------------------------------------------------------------------------------------------- tests

@PROPERTY
@given(event_lists())
def test_encoded_events_read_as_the_reference(events: list[Event]) -> None:
    got, want = check(_encode(events))
    assert want is not None
    if read_fast(events):
        assert got is not None


@PROPERTY
@given(event_lists(max_size=2), st.data())
def test_every_encoding_msgpack_allows(events: list[Event], data: st.DataObject) -> None:
    """Headers, strings and integers in every width they can take are read; float32 is left to msgspec."""
    unread = [False]
    got, want = check(loose(msgspec.to_builtins(events), data.draw, unread))
    assert want is not None
    if read_fast(events) and not unread[0]:
        assert got is not None


SMALL: Final[list[Event]] = [
    Trade("binance", "BTCUSDT", "BTC", 1, 2, 100.5, 0.25, "buy"),
    Liquidation("okx", "ETH-USDT-SWAP", "ETH", 3, 4, 2000.0, 1.5, "long"),
    FundingMark("binance", "BTCUSDT", "BTC", 5, 6, 100.0, 99.9, 1e-4, 8.0, 1e-4, 0.1095, 7),
    OpenInterest("bybit", "SOLUSDT", "SOL", 8, 9, 1e6, 1.5e8),
    Depth("bybit", "SOLUSDT", "SOL", 10, 11, 150.0, 0.6, (1e5, 2e5, 3e5), (1e5, 2.5e5, 4e5), 200.0),
]


def test_small_payload_is_read() -> None:
    got, want = check(_encode(SMALL))
    assert got is not None and want is not None
    assert got.asset_names == ["BTC", "ETH", "SOL"] and got.venue_names == ["binance", "okx", "bybit"]


def test_many_names() -> None:
    """Enough distinct names that hash slots are shared and probed."""
    rng = np.random.default_rng(5)
    events: list[Event] = [Trade(f"v{v}", "X", f"A{a}", 1, 2, 1.0, 2.0, "sell")
                           for v, a in zip(rng.integers(0, 40, 3000).tolist(), rng.integers(0, 1500, 3000).tolist(),
                                           strict=True)]
    got, want = check(_encode(events))
    assert got is not None and want is not None and len(got.asset_names) > 1000


def test_every_truncation_is_refused() -> None:
    payload = _encode(SMALL)
    for end in range(len(payload)):
        assert check(payload[:end]) == (None, None), end


def test_two_nans_are_left_to_msgspec() -> None:
    """Which NaN a product or sum of two NaNs keeps depends on operand order: numpy's multiply keeps one or the
    other by position in the array (vector body or scalar tail), Python's add the second. So no fast answer."""
    a, b = _bits(0x7FF0_0000_0000_0001), _bits(0xFFF8_0000_0000_0002)
    trade = Trade("binance", "BTCUSDT", "BTC", 1, 2, a, b, "buy")
    book = Depth("bybit", "SOLUSDT", "SOL", 10, 11, 150.0, 0.6, (1.0, a, 3.0), (4.0, b, 6.0), 200.0)
    for events in ([trade] * 17, [book]):
        got, want = check(_encode(events))
        assert got is None and want is not None


def _raw(events: list[Event]) -> list[list[Any]]:
    return [list(e) for e in msgspec.to_builtins(events)]


def _set(raw: list[list[Any]], row: int, column: int, value: Any) -> bytes:
    raw[row][column] = value
    return _encode(raw)


CHANGES: Final[dict[str, Callable[[list[list[Any]]], bytes]]] = {
    "trailing bytes": lambda raw: _encode(raw) + b"\x00",
    "a field short": lambda raw: _encode([raw[0][:-1], *raw[1:]]),
    "a field over": lambda raw: _encode([[*raw[0], 1.0], *raw[1:]]),  # msgspec skips it; the fast path leaves it
    "side BUY": lambda raw: _set(raw, 0, 8, "BUY"),
    "trade side long": lambda raw: _set(raw, 0, 8, "long"),
    "tag T": lambda raw: _set(raw, 0, 0, "T"),
    "tag tt": lambda raw: _set(raw, 0, 0, "tt"),
    "tag as int": lambda raw: _set(raw, 0, 0, 116),
    "float time": lambda raw: _set(raw, 0, 4, 1.0),
    "time past int64": lambda raw: _set(raw, 0, 4, 2**63),
    "next funding past int64": lambda raw: _set(raw, 2, 12, 2**64 - 1),  # msgspec reads it; the fast path leaves it
    "float past int64": lambda raw: _set(raw, 0, 6, 2**64 - 1),
    "bool price": lambda raw: _set(raw, 0, 6, True),
    "nil price": lambda raw: _set(raw, 0, 6, None),
    "bytes venue": lambda raw: _set(raw, 0, 1, b"binance"),
    "two bands": lambda raw: _set(raw, 4, 8, [1.0, 2.0]),
    "a map": lambda raw: _encode({"t": raw[0]}),
    "an event not an array": lambda raw: _encode([raw[0][0], *raw[1:]]),
    "a count past the bytes": lambda raw: b"\xdd\xff\xff\xff\xff" + _encode(raw)[1:],
}


def test_changed_payloads() -> None:
    for name, change in CHANGES.items():
        assert check(change(_raw(SMALL)))[0] is None, name


def test_invalid_utf8_is_refused() -> None:
    payload = _encode(SMALL)
    for field in (b"\xa7BTCUSDT", b"\xa3BTC", b"\xa7binance"):  # the symbol (only checked), an asset, a venue
        at = payload.index(field) + 1
        for bad in (b"\xff", b"\xc0", b"\xed", b"\xf5"):  # never UTF-8, overlong, a surrogate's lead, past U+10FFFF
            assert check(payload[:at] + bad + payload[at + 1 :]) == (None, None), (field, bad)
    surrogate = payload.replace(b"\xa3BTC", b"\xa3\xed\xa0\x80")  # U+D800 as three bytes
    assert check(surrogate) == (None, None)


@PROPERTY
@given(event_lists(max_size=3), st.data())
def test_mutated_payloads(events: list[Event], data: st.DataObject) -> None:
    payload = bytearray(_encode(events))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, max(len(payload) - 1, 0)))
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "append"]))
        if action == "append" or not payload:
            payload += data.draw(st.binary(min_size=1, max_size=4))
        elif action == "flip":
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            payload[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del payload[at]
    check(bytes(payload))


@PROPERTY
@given(st.binary(max_size=64))
def test_random_bytes(payload: bytes) -> None:
    check(payload)


# ------------------------------------------------------------------------------------------------ recorded

RECORDINGS: Final = {"binance": "BINANCE_FUTURES.jsonl.zst", "bybit": "BYBIT.jsonl.zst"}
"""The cryptofeed recordings whose frames the parsers turn into events (OKX and Deribit name none watched)."""
T_RECV: Final = 1_754_000_000_000_000_000


def recorded_events() -> list[Event]:
    """The recorded frames through the venue parsers: the cryptofeed sessions as ``flushwatch replay`` reads
    them, and every venue's real frames (tardis fixtures) as ``test_fuzz_parsers`` feeds them."""
    events: list[Event] = []
    for venue, file in RECORDINGS.items():
        recordings = Recordings([shared_data("cryptofeed_recordings", file)])
        # The Bybit recording lists no instruments: the linear ones it was recorded with stand in.
        parser = parser_for(venue, recordings.instruments(venue) or test_bybit_recording.INSTRUMENTS, 1 << 24)
        events += [e for r in recordings if r.kind == "recv" for e in parser.parse(r.data, r.ts).events]
    for spec in test_fuzz_parsers.VENUES.values():
        parser = spec.parser()
        events += [e for seed in spec.seeds() for e in parser.parse(msgspec.json.encode(seed), T_RECV).events]
    return events


def test_recorded_events() -> None:
    events = recorded_events()
    assert {type(e) for e in events} == {Trade, Liquidation, FundingMark, OpenInterest, Depth}
    for start in range(0, len(events), 512):
        payload = encode_batch(events[start : start + 512])[b"b"]
        assert isinstance(payload, bytes)
        got, want = check(payload)
        assert got is not None and want is not None


# ---------------------------------------------------------------------------------------------- name table

def numbered_through(table: NameTable, numbers: tuple[dict[str, int], dict[str, int]], payload: bytes) -> None:
    """Read ``payload`` with ``table`` as a detector numbering names ``0, 1, ...`` by first appearance would
    (``numbers``, one dict for assets, one for venues), checking every name's number against the reference's
    names, then teach the table the new ones."""
    base = len(numbers[ASSET]), len(numbers[VENUE])
    got, want = wire_columns(payload, table, base), reference(payload)
    if got is None:
        return
    assert want is not None
    for t, column, new, names, want_column in ((ASSET, got.asset, got.asset_names, want.asset_names, want.asset),
                                                (VENUE, got.venue, got.venue_names, want.venue_names, want.venue)):
        assert new == [name for name in names if name not in numbers[t]]  # held ones are not decoded
        for name in new:
            numbers[t][name] = len(numbers[t])
        assert column.dtype == np.int32
        assert column.tolist() == [numbers[t][names[i]] for i in want_column.tolist()]
        table.learn(t, new, [numbers[t][name] for name in new])
    assert_same(got._replace(asset=want.asset, venue=want.venue, asset_names=want.asset_names,
                             venue_names=want.venue_names), want)


KEYS: Final = [(1 << 64) - 1, 0, 1]
"""Hash masks for the table: the real one, one that gives every name the same hash, one that gives two."""


ALIKE: Final = st.one_of(NAMES, st.text("AB\x00é", min_size=2, max_size=2))
"""Names, many of them of the same length: with a narrow hash mask, only their bytes tell them apart."""


@PROPERTY
@given(st.lists(ALIKE, min_size=1, max_size=8, unique=True), st.data(), st.sampled_from(KEYS))
def test_a_name_table_numbers_what_it_holds(pool: list[str], data: st.DataObject, key: int) -> None:
    """Entries of a stream over a few names: names of earlier entries come out numbered, new ones mixed in."""
    at = st.integers(0, len(pool) - 1)
    entries = data.draw(st.lists(st.lists(st.tuples(at, at), min_size=1, max_size=8), min_size=2, max_size=5))
    table, numbers = NameTable(key), ({}, {})
    for entry in entries:
        numbered_through(table, numbers, _encode([Trade(pool[v], "X", pool[a], 1, 2, 1.0, 2.0, "buy")
                                                  for v, a in entry]))


@pytest.mark.parametrize("key", KEYS)
def test_names_sharing_a_hash_are_told_apart_by_their_bytes(key: int) -> None:
    table, numbers = NameTable(key), ({}, {})
    btc = Trade("binance", "BTCUSDT", "BTC", 1, 2, 1.0, 2.0, "buy")
    eth = Trade("bitmexx", "ETHUSDT", "ETH", 1, 2, 1.0, 2.0, "buy")  # names of the same lengths as BTC's
    numbered_through(table, numbers, _encode([btc]))
    got = wire_columns(_encode([eth, btc, eth]), table, (1, 1))
    assert got is not None and got.asset_names == ["ETH"] and got.venue_names == ["bitmexx"]
    assert got.asset.tolist() == got.venue.tolist() == [1, 0, 1]
    numbered_through(table, numbers, _encode([eth, btc, eth]))
    got = wire_columns(_encode([btc, eth]), table, (2, 2))
    assert got is not None and got.asset_names == got.venue_names == []
    assert got.asset.tolist() == got.venue.tolist() == [0, 1]


@pytest.mark.parametrize("key", [(1 << 64) - 1, 0xF])
def test_a_name_table_grows(key: int) -> None:
    """Thousands of names over many entries: the table's arrays grow and its slots are rehashed, more than once."""
    rng = np.random.default_rng(7)
    events: list[Event] = [Trade(f"v{v}", "X", f"A{a}" * (1 + a % 3), 1, 2, 1.0, 2.0, "sell")
                           for v, a in zip(rng.integers(0, 40, 6000).tolist(),
                                           np.minimum(rng.integers(0, 3000, 6000), np.arange(6000) // 2).tolist(),
                                           strict=True)]
    table, numbers = NameTable(key), ({}, {})
    for start in range(0, len(events), 200):
        numbered_through(table, numbers, _encode(events[start : start + 200]))
    assert len(numbers[ASSET]) > 2000 and len(numbers[VENUE]) == 40
    assert table.held == [len(numbers[ASSET]), len(numbers[VENUE])]
