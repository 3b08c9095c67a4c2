"""Every venue parser against sequences of mangled real frames, with one set of invariants for all six.

Each ``tests/test_<venue>_parse.py`` already fuzzes its parser with random bytes, random text and one
change (a value replaced or deleted, a frame truncated) to a real frame, checked by ``fuzzing.check_result``.
What this file adds:

* the mutations those leave out: bit flips in the encoded frame, duplicated object keys (either value
  first), type swaps, numbers JSON cannot carry (bare ``NaN``/``Infinity``, ``1e999``, integers past 2**64,
  400-digit decimals), negated sizes and prices, nesting thousands deep, strings of 100k characters, and
  unicode look-alikes (full-width digits, zero-width and bidi marks, homoglyph symbols, lone surrogates);
* sequences: one parser takes up to eight frames, real and mangled mixed, so a mangled frame meets the state
  real frames built (books, marks, clocks, sequence numbers) and a later real frame meets what it left;
* invariants ``check_result`` does not hold: the event names this venue and a watched symbol, its side is
  one the contract knows, its venue time is after the first bitcoin block and not ahead of the local clock
  by more than a day, its notional does not overflow, a funding interval is in (0, 24] hours; a frame that
  is not JSON is never silent; and the parse never raises.

Seeds are the real frames the venue files already mangle (their ``real_frames``), so the two stay in step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import pytest
import test_binance_parse as binance
import test_bitmex_parse as bitmex
import test_bybit_parse as bybit
import test_deribit_parse as deribit
import test_hyperliquid_parse as hyperliquid
import test_okx_parse as okx
from conftest import tardis_messages
from fuzzing import FUZZ, check_result, paths
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.base import FrameSink
from collectors.parsing import ParseResult
from collectors.queue import EventQueue
from collectors.rejects import REASONS
from collectors.venue import VenueParser
from flushwatch.events import FundingMark, Liquidation, Trade
from flushwatch.telemetry import FEED_REJECTED

SEQUENCES: Final = hsettings(FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.too_slow,
                                                          HealthCheck.data_too_large])
"""Sequences of frames of up to 100 kB draw a lot: on a loaded machine (or under coverage) that is not a bug."""
GENESIS_NS: Final = 1_231_006_505 * 10**9
"""The first bitcoin block (2009-01-03): no crypto derivative venue's clock can be earlier."""
AHEAD_NS: Final = 86_400 * 10**9
"""How far a venue time may run ahead of the local clock before it is nonsense rather than skew."""


@dataclass(frozen=True)
class Venue:
    name: str
    parser: Callable[[], VenueParser]
    """A new parser, already fed the frames that let state-dependent paths run (a book, a mark, a clock)."""
    seeds: Callable[[], list[Any]]
    symbols: frozenset[str]
    positive: tuple[str, ...] = ("index_price",)


def _binance() -> VenueParser:
    return binance.BinanceParser(["BTCUSDT", "ETHUSDT"])


def _bitmex_seeds() -> list[Any]:
    fx = tardis_messages("bitmex.ndjson")
    return [*fx, bitmex.perpetual_image(fx), bitmex.book_image(bitmex.TWO_SIDED)]


def _bitmex() -> VenueParser:
    p = bitmex.BitmexParser([bitmex.XBTUSD, bitmex.ETHM19, bitmex.ETHUSD], 1 << 20)
    for message in (bitmex.perpetual_image(tardis_messages("bitmex.ndjson")), bitmex.book_image(bitmex.TWO_SIDED)):
        p.parse(_json(message), 1)
    return p


def _bybit_seeds() -> list[Any]:
    bybit.primed()  # fills bybit.REAL_FRAMES once
    return bybit.REAL_FRAMES


def _deribit() -> VenueParser:
    p = deribit.parser()
    p.parse(_json(deribit.on_channel(tardis_messages("deribit.ndjson"), "book.ETH-PERPETUAL")[0]), 1)
    return p


def _hyperliquid() -> VenueParser:
    p = hyperliquid.parser()
    hyperliquid.clocked(p)
    return p


def _okx() -> VenueParser:
    p = okx.parser()
    messages = okx.real_frames()
    p.parse(_json(okx.channel(messages, "mark-price", "WNCG-USDT-SWAP")), 1)
    p.parse(_json(okx.channel(messages, "index-tickers", "WNCG-USDT")), 1)
    return p


VENUES: Final = {v.name: v for v in (
    # Binance's 3-second mark stream carries no index: 0 there means unknown, as on BitMEX below.
    Venue("binance", _binance, binance.real_frames, frozenset({"BTCUSDT", "ETHUSDT"}), ()),
    Venue("bybit", bybit.primed, _bybit_seeds, frozenset(i.symbol for i in bybit.INSTRUMENTS)),
    Venue("okx", _okx, okx.real_frames, frozenset(i.symbol for i in okx.WATCHED)),
    Venue("hyperliquid", _hyperliquid, hyperliquid.real_frames, frozenset(hyperliquid.COINS)),
    Venue("deribit", _deribit, deribit.real_frames, frozenset(i.symbol for i in deribit.WATCHED),
          ("index_price", "oi_base", "oi_usd")),
    Venue("bitmex", _bitmex, _bitmex_seeds, frozenset({"XBTUSD", "ETHM19", "ETHUSD"}), ()),  # 0: no index known
)}


@dataclass(frozen=True)
class Seeded:
    venue: Venue
    seeds: list[Any] = field(repr=False)


@pytest.fixture(params=sorted(VENUES))
def seeded(request: pytest.FixtureRequest) -> Seeded:
    """A venue and its seed messages (loading them skips the test when ../shared/data is absent)."""
    spec = VENUES[request.param]
    return Seeded(spec, spec.seeds())


# ------------------------------------------------------------------------------------ encoding and mutation


class Token(str):
    """Written into the frame as it is: what ``json.dumps`` would refuse or rewrite (``NaN``, ``1e999``, a
    lone surrogate escape, an integer past 2**64, a deep bracket tower)."""


class Doubled(dict[str, Any]):
    """An object that carries ``key`` twice: ``other`` before its own value (``last``) or after it."""

    def __init__(self, items: dict[str, Any], key: str, other: Any, last: bool) -> None:
        super().__init__(items)
        self.key, self.other, self.last = key, other, last


def _json(node: Any) -> bytes:
    return _text(node).encode("utf-8", "surrogatepass")


def _text(node: Any) -> str:
    if isinstance(node, Token):
        return str(node)
    if isinstance(node, dict):
        items = [(k, _text(v)) for k, v in node.items()]
        if isinstance(node, Doubled):
            twin = (node.key, _text(node.other))
            if node.last:
                items.append(twin)
            else:
                items.insert(0, twin)
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{v}" for k, v in items) + "}"
    if isinstance(node, list | tuple):
        return "[" + ",".join(_text(v) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False, allow_nan=False)


NONFINITE: Final = (Token("NaN"), Token("Infinity"), Token("-Infinity"), Token("1e999"), Token("-1e999"), "NaN",
                    "nan", "Infinity", "-inf", "1e999", "inf")
HUGE: Final = (1e308, -1e308, 2**64, -(2**63) - 1, 10**30, 4_102_444_800_000, "7258118400000", 7_258_118_400_000_000,
               "2200-01-01T00:00:00.000Z", Token("1" + "0" * 400), "1" + "0" * 400, "1e308",
               "9" * 30, Token("0." + "0" * 400 + "1"), "5e-324", 2**63 - 1)
UNICODE: Final = ("１２３４５", "٣٤٥", "1\u200b2", "\u202e123", "100\u0000", "ВТСUSDT", "BTCUSDТ", "🚀", "e\u0301",
                  "\ufeff1", Token('"\\ud800"'), Token('"1\\udfff"'), "Buy\u200d", "ｂｕｙ")


def _negated(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return -value
    if isinstance(value, str):
        return value[1:] if value.startswith("-") else "-" + value
    return value


def _retyped(data: st.DataObject, value: Any) -> Any:
    options: list[Any] = [None, True, [value], {"v": value}, str(value), 0, 1.5, ""]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = len(value)
        options.append(number if math.isfinite(number) else Token(value))
    return data.draw(st.sampled_from(options))


def _nested(data: st.DataObject, value: Any) -> Any:
    depth = data.draw(st.sampled_from([2, 64, 1_000, 50_000]))
    if data.draw(st.booleans()):
        return Token("[" * depth + _text(value) + "]" * depth)
    return Token('{"a":' * depth + _text(value) + "}" * depth)


def _long(data: st.DataObject, value: Any) -> Any:
    n = data.draw(st.sampled_from([300, 5_000, 100_000]))
    base = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else "x"
    return data.draw(st.sampled_from([base * (n // max(1, len(base))), "9" * n, "1." + "0" * n + "1", "x" * n]))


VALUE_MUTATIONS: Final = ("delete", "retype", "huge", "nonfinite", "negate", "nest", "long", "unicode", "double")
FRAME_MUTATIONS: Final = ("truncate", "flip")


def mutate(data: st.DataObject, message: Any) -> bytes:
    """``message`` (not changed) encoded with one to three drawn mutations: inside the JSON value, or of the
    encoded frame."""
    message = msgspec.json.decode(msgspec.json.encode(message))  # a private deep copy
    for _ in range(data.draw(st.integers(1, 3))):
        places = paths(message)
        action = data.draw(st.sampled_from(VALUE_MUTATIONS + FRAME_MUTATIONS if places else FRAME_MUTATIONS))
        if action in FRAME_MUTATIONS:
            return _framed(data, action, _json(message))
        path = data.draw(st.sampled_from(places))
        parent = message
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "double" and isinstance(parent, dict):
            # rebuild the enclosing object with the key twice (msgspec keeps the last, other decoders the first)
            doubled = Doubled(parent, key, data.draw(st.sampled_from([*NONFINITE, *HUGE, None, "x"])),
                              data.draw(st.booleans()))
            if len(path) == 1:
                message = doubled
            else:
                holder = message
                for k in path[:-2]:
                    holder = holder[k]
                holder[path[-2]] = doubled
        else:
            parent[key] = _changed(data, action, parent[key])
    return _json(message)


def _changed(data: st.DataObject, action: str, value: Any) -> Any:
    if action == "retype":
        return _retyped(data, value)
    if action == "huge":
        return data.draw(st.sampled_from(HUGE))
    if action == "nonfinite":
        return data.draw(st.sampled_from(NONFINITE))
    if action == "negate":
        return _negated(value)
    if action == "nest":
        return _nested(data, value)
    if action == "long":
        return _long(data, value)
    return data.draw(st.sampled_from(UNICODE))  # "unicode", and "double" on a list element


def _framed(data: st.DataObject, action: str, encoded: bytes) -> bytes:
    if action == "truncate" or not encoded:
        return encoded[: data.draw(st.integers(0, max(0, len(encoded) - 1)))]
    flipped = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        flipped[data.draw(st.integers(0, len(flipped) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(flipped)


# ------------------------------------------------------------------------------------------- invariants


def sane(venue: Venue, frame: bytes, result: ParseResult, ts_recv: int) -> None:
    check_result(result, positive=venue.positive)
    for event in result.events:
        assert event.venue == venue.name and event.symbol in venue.symbols and event.asset, event
        assert GENESIS_NS <= event.ts_event <= ts_recv + AHEAD_NS, event
        if isinstance(event, Trade):
            assert event.side in ("buy", "sell") and math.isfinite(event.notional_usd), event
        elif isinstance(event, Liquidation):
            assert event.side in ("long", "short") and math.isfinite(event.notional_usd), event
        elif isinstance(event, FundingMark):
            assert 0 < event.funding_interval_h <= 24 and event.next_funding_ts >= 0, event
    try:
        # Judged leniently (json takes NaN and 1e999) on the text: websockets closes a connection whose text
        # frame is not UTF-8 (1007), and a parser need not validate a field it does not read.
        json.loads(frame.decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # not JSON to the decoder the parsers use: never silent
        assert result.rejects or frame.strip() in (b"pong", b"ping"), (frame[:200], result)


@SEQUENCES
@given(st.data())
def test_mangled_sequences_never_raise_and_never_make_nonsense(seeded: Seeded, data: st.DataObject) -> None:
    spec, seeds = seeded.venue, seeded.seeds
    parser = spec.parser()
    now = time.time_ns()
    for step in range(data.draw(st.integers(1, 8))):
        seed = data.draw(st.sampled_from(seeds))
        frame = _json(seed) if data.draw(st.integers(0, 3)) == 0 else mutate(data, seed)
        ts_recv = now + step * 1_000_000
        sane(spec, frame, parser.parse(frame, ts_recv), ts_recv)


@hsettings(SEQUENCES, max_examples=60)
@given(st.data())
def test_every_reject_is_counted_in_the_metric(seeded: Seeded, data: st.DataObject) -> None:
    """Through the collector's own sink: each reject reason a parser returns adds exactly one to
    ``flushwatch_feed_rejected_messages_total{venue,reason}``, and every event reaches the queue."""
    spec, seeds = seeded.venue, seeded.seeds
    parser = spec.parser()
    queue = EventQueue(1 << 20)
    sink = FrameSink(spec.name, parser.parse, queue, watched=spec.symbols)
    frames = [mutate(data, data.draw(st.sampled_from(seeds))) for _ in range(data.draw(st.integers(1, 5)))]
    # The sink's own parser and a twin fed the same frames must agree, so the twin tells what was returned.
    twin = spec.parser()
    before = {r: FEED_REJECTED.labels(spec.name, r)._value.get() for r in REASONS}
    expected: dict[str, int] = {}
    events = 0
    for frame in frames:
        result = twin.parse(frame, 5)
        for reject in result.rejects:
            expected[reject.reason] = expected.get(reject.reason, 0) + 1
        events += len(result.events)
        sink(frame, 5)
    after = {r: FEED_REJECTED.labels(spec.name, r)._value.get() - before[r] for r in REASONS}
    assert {r: int(n) for r, n in after.items() if n} == expected
    assert len(queue) == events


FUTURE_MS: Final = 7_258_118_400_000
"""2200-01-01: a venue time that fits int64 nanoseconds yet is nonsense."""
TRADES: Final = {
    # venue: (the real trade message, the names of its time fields)
    "binance": (lambda m: m.get("stream") == "btcusdt@aggTrade", {"T", "E"}),
    "bybit": (lambda m: m.get("topic") in {f"publicTrade.{i.symbol}" for i in bybit.INSTRUMENTS}, {"T", "ts"}),
    "okx": (lambda m: m.get("arg", {}).get("channel") == "trades" and m["arg"].get("instId") == "BTC-USDT-SWAP",
            {"ts"}),
    "hyperliquid": (lambda m: m.get("channel") == "trades" and m["data"][0]["coin"] == "FXS", {"time"}),
    "deribit": (lambda m: m.get("params", {}).get("channel", "").startswith("trades.BTC-PERPETUAL"), {"timestamp"}),
    "bitmex": (lambda m: m.get("table") == "trade", {"timestamp"}),
}


def _dated(node: Any, names: set[str], ms: int) -> Any:
    """``node`` with every field in ``names`` moved to ``ms``, written the way the field already is."""
    if isinstance(node, list):
        return [_dated(v, names, ms) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in names and isinstance(value, str) and value.endswith("Z"):
            out[key] = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"
        elif key in names:
            out[key] = str(ms) if isinstance(value, str) else ms
        else:
            out[key] = _dated(value, names, ms)
    return out


def test_a_far_future_venue_time_is_refused_and_does_not_blind_the_feed(seeded: Seeded) -> None:
    """A trade stamped 2200 would advance the symbol's sequencer past every real trade to come (and the
    detector's event-time grid past every real event): it is a counted ``bad_value``, and the real trade
    after it is kept. Found by the sequence fuzz above once far-future times were among its numbers."""
    spec = seeded.venue
    is_trade, names = TRADES[spec.name]
    real = next(m for m in seeded.seeds if is_trade(m))
    parser = spec.parser()
    now = time.time_ns()
    future = parser.parse(_json(_dated(real, names, FUTURE_MS)), now)
    assert future.events == [] and {r.reason for r in future.rejects} == {"bad_value"}, future
    assert [type(e) for e in parser.parse(_json(real), now).events if isinstance(e, Trade)], real
