"""Bybit v5 linear: connection spec, the pure parser and instrument metadata, on real recorded messages."""

from __future__ import annotations

import copy
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import shared_data, tardis_messages
from fuzzing import ANY_BYTES, ANY_TEXT, FUZZ, SUSPECTS, check_result, frame, json_values, mangle
from hypothesis import given
from hypothesis import strategies as st

from collectors.bybit import SPEC
from collectors.bybit.instruments import BybitApiError, parse_instruments
from collectors.bybit.parse import DEPTH_INTERVAL_NS, RECENT_TRADE_IDS, BybitParser
from collectors.bybit.spec import (
    HEARTBEAT,
    MAX_ARGS_CHARS,
    MAX_TOPICS_PER_CONNECTION,
    SUBSCRIBE_CHUNK,
    args_chars,
    subscribe_messages,
    topics,
)
from collectors.instruments import Instrument
from collectors.parsing import ParseResult
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.venue_server import record_lines, recorded_frames

NS = 1_000_000  # ns per ms
SECOND = 10**9


def inst(symbol: str, asset: str, hours: float = 8.0) -> Instrument:
    return Instrument("bybit", symbol, asset, "linear", 1.0, hours)


INSTRUMENTS = [inst("BTCUSDT", "BTC"), inst("ETHUSDT", "ETH"), inst("SOLUSDT", "SOL"), inst("DOGEUSDT", "DOGE"),
               inst("LTCUSDT", "LTC"), inst("BTCPERP", "BTC"), inst("PIPPINUSDT", "PIPPIN", 4.0)]


def parser(instruments: list[Instrument] = INSTRUMENTS, **kwargs: Any) -> BybitParser:
    return BybitParser(instruments, **kwargs)


def only_event(result: ParseResult) -> Any:
    assert result.rejects == [] and result.acks == [] and result.replies == [], result
    assert len(result.events) == 1, result
    return result.events[0]


def only_reject(result: ParseResult) -> tuple[str, str]:
    assert result.events == [] and result.acks == [], result
    assert len(result.rejects) == 1, result
    return result.rejects[0].reason, result.rejects[0].detail


def by_topic(messages: list[dict[str, Any]], topic: str, kind: str | None = None) -> list[dict[str, Any]]:
    found = [m for m in messages if m.get("topic") == topic and (kind is None or m.get("type") == kind)]
    assert found, f"no {topic} {kind or ''} message"
    return found


@pytest.fixture(scope="module")
def tardis() -> list[dict[str, Any]]:
    return tardis_messages("bybit.ndjson")


def linear_connection(path: Path) -> str:
    """The recording's connection id of ``/v5/public/linear`` (it also holds a spot connection)."""
    for raw in record_lines(path):
        record = json.loads(raw) if raw.strip() else {}
        if record.get("t") == "connect" and record.get("addr", "").endswith("/v5/public/linear"):
            return str(record["conn"])
    raise AssertionError("no linear connection in the recording")


def recorded_linear() -> list[dict[str, Any]]:
    path = shared_data("cryptofeed_recordings", "BYBIT.jsonl.zst")
    conn = linear_connection(path)
    return [json.loads(text) for _, text in recorded_frames(path, keep=lambda c: c == conn)]


@pytest.fixture(scope="module")
def session() -> list[dict[str, Any]]:
    return recorded_linear()


def recorded_http(url_part: str) -> bytes:
    path = shared_data("cryptofeed_recordings", "BYBIT.jsonl.zst")
    for raw in record_lines(path):
        record = json.loads(raw) if raw.strip() else {}
        if record.get("t") == "http" and url_part in record.get("url", ""):
            return str(record["data"]).encode()
    raise AssertionError(f"no HTTP record for {url_part}")


# ------------------------------------------------------------------------------------------------- spec


def test_topics_keep_an_instruments_four_together() -> None:
    assert topics(INSTRUMENTS[:2]) == [
        "tickers.BTCUSDT", "publicTrade.BTCUSDT", "allLiquidation.BTCUSDT", "orderbook.50.BTCUSDT",
        "tickers.ETHUSDT", "publicTrade.ETHUSDT", "allLiquidation.ETHUSDT", "orderbook.50.ETHUSDT",
    ]
    assert MAX_TOPICS_PER_CONNECTION % 4 == 0


def test_subscribe_messages_are_chunked_with_counting_string_ids() -> None:
    names = topics([inst(f"S{i}USDT", f"S{i}") for i in range(25)])  # 100 topics
    messages = [json.loads(m) for m in subscribe_messages(names, first_id=7)]
    assert [m["req_id"] for m in messages] == ["7", "8", "9"]
    assert {m["op"] for m in messages} == {"subscribe"}
    assert [len(m["args"]) for m in messages] == [SUBSCRIBE_CHUNK, SUBSCRIBE_CHUNK, 100 - 2 * SUBSCRIBE_CHUNK]
    assert [t for m in messages for t in m["args"]] == names


def test_a_full_connection_stays_under_the_args_limit() -> None:
    """The longest symbol Bybit listed (2026-08-09, 800 linear contracts), 100 times over."""
    listed = parse_instruments(recorded_http("category=linear"))
    longest = max(listed, key=lambda i: len(i.symbol))
    assert len(listed) == 800 and longest.symbol == "1000000BABYDOGEUSDT"
    full = topics([longest] * (MAX_TOPICS_PER_CONNECTION // 4))
    assert args_chars(full) <= MAX_ARGS_CHARS
    # ...with room for symbols up to the budgeted 30 characters.
    assert args_chars(topics([inst("X" * 30, "X")] * (MAX_TOPICS_PER_CONNECTION // 4))) <= MAX_ARGS_CHARS


def test_spec_and_heartbeat() -> None:
    assert (SPEC.name, SPEC.coverage) == ("bybit", "complete")
    assert SPEC.ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert SPEC.rest_url == "https://api.bybit.com"
    assert SPEC.heartbeat is HEARTBEAT and HEARTBEAT.interval_s == 20.0
    first, second = json.loads(HEARTBEAT.message()), json.loads(HEARTBEAT.message())
    assert first["op"] == second["op"] == "ping" and first["req_id"] != second["req_id"]
    assert isinstance(SPEC.parser(INSTRUMENTS, 1 << 20), BybitParser)


# ----------------------------------------------------------------------------------------------- trades


def test_trade_taker_side_size_in_base(tardis: list[dict[str, Any]]) -> None:
    raw = by_topic(tardis, "publicTrade.LTCUSDT")[0]
    trade = only_event(parser().parse(frame(raw), 123))
    assert trade == Trade("bybit", "LTCUSDT", "LTC", 1680688979983 * NS, 123, 94.53, 0.4, "buy")


def test_recorded_trades_in_order(session: list[dict[str, Any]]) -> None:
    sell = by_topic(session, "publicTrade.BTCUSDT")[0]
    assert only_event(parser().parse(frame(sell), 5)) == Trade(
        "bybit", "BTCUSDT", "BTC", 1786310819680 * NS, 5, 65114.20, 0.004, "sell")
    several = next(m for m in by_topic(session, "publicTrade.ETHUSDT") if len(m["data"]) >= 4)
    result = parser().parse(frame(several), 6)
    assert result.rejects == []
    trades = [t for t in result.events if isinstance(t, Trade)]
    assert [(t.price, t.size, t.side) for t in trades] == [
        (float(d["p"]), float(d["v"]), "buy" if d["S"] == "Buy" else "sell") for d in several["data"]]


def test_trade_duplicates_and_stale(session: list[dict[str, Any]]) -> None:
    raw = by_topic(session, "publicTrade.BTCUSDT")[0]
    p = parser()
    only_event(p.parse(frame(raw), 1))
    assert only_reject(p.parse(frame(raw), 2))[0] == "duplicate"  # the same message on a new connection
    same_ms = copy.deepcopy(raw)
    same_ms["data"][0]["i"] = "another-trade-in-the-same-millisecond"
    assert only_event(p.parse(frame(same_ms), 3)).ts_event == raw["data"][0]["T"] * NS
    older = copy.deepcopy(raw)
    older["data"][0].update(T=raw["data"][0]["T"] - 1, i="late")
    assert only_reject(p.parse(frame(older), 4))[0] == "stale"


def test_trade_ids_are_remembered_within_a_bound(session: list[dict[str, Any]]) -> None:
    raw = by_topic(session, "publicTrade.BTCUSDT")[0]
    p = parser()
    for n in range(RECENT_TRADE_IDS + 1):
        message = copy.deepcopy(raw)
        message["data"][0]["i"] = f"id-{n}"
        only_event(p.parse(frame(message), n))
    again = copy.deepcopy(raw)
    again["data"][0]["i"] = f"id-{RECENT_TRADE_IDS}"
    assert only_reject(p.parse(frame(again), 0))[0] == "duplicate"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"p": "NaN"}, "bad_value"), ({"v": "0"}, "bad_value"), ({"v": "-1"}, "bad_value"), ({"p": "inf"}, "bad_value"),
     ({"T": 0}, "bad_value"), ({"T": 10**13}, "bad_value"), ({"S": "buy"}, "malformed"),
     ({"s": "ETHUSDT"}, "malformed"), ({"p": 94.53}, "malformed"), ({"i": None}, "malformed")],
)
def test_trade_rejects(tardis: list[dict[str, Any]], change: dict[str, Any], reason: str) -> None:
    raw = copy.deepcopy(by_topic(tardis, "publicTrade.LTCUSDT")[0])
    raw["data"][0].update(change)
    assert only_reject(parser().parse(frame(raw), 1))[0] == reason


def test_one_bad_trade_does_not_cost_the_others(tardis: list[dict[str, Any]]) -> None:
    raw = copy.deepcopy(by_topic(tardis, "publicTrade.BTCUSD")[0])
    raw["data"][1]["v"] = "NaN"
    result = parser([inst("BTCUSD", "BTC")]).parse(frame(raw), 1)
    assert [t.size for t in result.events if isinstance(t, Trade)] == [5823.0, 5593.0]
    assert [r.reason for r in result.rejects] == ["bad_value"]


# --------------------------------------------------------------------------------------- liquidations


def test_liquidation_sell_is_a_short_liquidated(tardis: list[dict[str, Any]]) -> None:
    raw = by_topic(tardis, "allLiquidation.PIPPINUSDT")[0]
    liq = only_event(parser().parse(frame(raw), 9))
    assert liq == Liquidation("bybit", "PIPPINUSDT", "PIPPIN", 1740480207110 * NS, 9, 0.02456, 2846.0, "short")


def test_a_long_liquidated(tardis: list[dict[str, Any]]) -> None:
    """Bybit's ``S`` is the liquidated position's side: ``Buy`` = a long was liquidated (Binance's ``SELL``)."""
    raw = copy.deepcopy(by_topic(tardis, "allLiquidation.PIPPINUSDT")[0])
    raw["data"][0]["S"] = "Buy"
    raw["data"].append({"T": 1740480207300, "s": "PIPPINUSDT", "S": "Sell", "v": "100", "p": "0.02501"})
    result = parser().parse(frame(raw), 9)
    assert result.rejects == []
    liquidations = [e for e in result.events if isinstance(e, Liquidation)]
    assert [(e.side, e.size, e.price) for e in liquidations] == [("long", 2846.0, 0.02456), ("short", 100.0, 0.02501)]
    assert liquidations[0].notional_usd == pytest.approx(2846 * 0.02456)


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"p": "0"}, "bad_value"), ({"v": "NaN"}, "bad_value"), ({"T": -5}, "bad_value"), ({"S": "Long"}, "malformed"),
     ({"s": "BTCUSDT"}, "malformed"), ({"v": 2846}, "malformed")],
)
def test_liquidation_rejects(tardis: list[dict[str, Any]], change: dict[str, Any], reason: str) -> None:
    raw = copy.deepcopy(by_topic(tardis, "allLiquidation.PIPPINUSDT")[0])
    raw["data"][0].update(change)
    assert only_reject(parser().parse(frame(raw), 1))[0] == reason


# -------------------------------------------------------------------------------------------- tickers


def test_ticker_snapshot_funding_and_single_side_open_interest(session: list[dict[str, Any]]) -> None:
    raw = by_topic(session, "tickers.BTCUSDT", "snapshot")[0]
    result = parser([inst("BTCUSDT", "BTC", hours=4.0)]).parse(frame(raw), 77)  # the ticker's own interval wins
    assert result.rejects == []
    mark, oi = result.events
    assert isinstance(mark, FundingMark) and isinstance(oi, OpenInterest)
    assert (mark.ts_event, mark.ts_recv) == (1786310817583 * NS, 77)
    assert (mark.mark_price, mark.index_price, mark.funding_rate) == (65117.44, 65137.76, 0.0001)
    assert mark.funding_interval_h == 8.0 and mark.funding_8h == pytest.approx(0.0001)
    assert mark.funding_annual == pytest.approx(0.0001 * 1095)
    assert mark.next_funding_ts == 1786320000000 * NS
    assert mark.premium_bps == pytest.approx((65117.44 / 65137.76 - 1) * 1e4)
    # One side: singleOpenInterest, which is half of the two-sided openInterest in this recording.
    assert (oi.oi_base, oi.oi_usd) == (29945.866, 1949998132.50)
    assert oi.oi_base == pytest.approx(59891.732 / 2)
    assert oi.ts_event == 1786310817583 * NS


@pytest.mark.parametrize("field", ["markPrice", "fundingRate", "singleOpenInterest", "nextFundingTime"])
def test_ticker_numbers_too_big_for_a_float_are_refused_not_raised(session: list[dict[str, Any]], field: str) -> None:
    """A JSON integer beyond any float (the fuzzer found float(10**400) raising OverflowError) is a bad value."""
    raw = json.loads(json.dumps(by_topic(session, "tickers.BTCUSDT", "snapshot")[0]))
    raw["data"][field] = 10**400
    result = parser().parse(json.dumps(raw).encode(), 1)
    assert result.rejects and {r.reason for r in result.rejects} <= {"bad_value", "malformed"}, result
    assert not any(getattr(e, "funding_rate", 0.0) > 1 or getattr(e, "oi_base", 0.0) > 1e300 for e in result.events)


def test_ticker_without_single_side_figure_is_halved(tardis: list[dict[str, Any]]) -> None:
    """The 2023 message has only openInterest, which Bybit documents as both sides."""
    raw = by_topic(tardis, "tickers.BTCUSDT", "snapshot")[0]
    mark, oi = parser([inst("BTCUSDT", "BTC", hours=4.0)]).parse(frame(raw), 1).events
    assert isinstance(mark, FundingMark) and isinstance(oi, OpenInterest)
    assert mark.funding_interval_h == 4.0  # no fundingIntervalHour in 2023: the instrument's
    assert mark.funding_8h == pytest.approx(0.0002)
    assert oi.oi_base == pytest.approx(52774.528 / 2)
    assert oi.oi_usd == pytest.approx(52774.528 / 2 * 28552.81)


def test_ticker_deltas_merge_and_emit_what_changed(session: list[dict[str, Any]]) -> None:
    p = parser()
    snapshot = by_topic(session, "tickers.ETHUSDT", "snapshot")[0]
    assert len(p.parse(frame(snapshot), 1).events) == 2
    reference = dict(snapshot["data"])
    seen: Counter[str] = Counter()
    for delta in by_topic(session, "tickers.ETHUSDT", "delta"):
        before = dict(reference)
        reference.update(delta["data"])
        result = p.parse(frame(delta), 2)
        assert result.rejects == [] and p.ticker("ETHUSDT") == reference
        kinds = [type(e).__name__ for e in result.events]
        funding_moved = any(before.get(f) != reference.get(f)
                            for f in ("markPrice", "indexPrice", "fundingRate", "nextFundingTime"))
        assert ("FundingMark" in kinds) == funding_moved, delta
        assert ("OpenInterest" in kinds) == (before["singleOpenInterest"] != reference["singleOpenInterest"])
        for event in result.events:
            seen[type(event).__name__] += 1
            assert event.ts_event == delta["ts"] * NS
            if isinstance(event, FundingMark):
                assert event.mark_price == float(reference["markPrice"])
                assert event.funding_rate == float(reference["fundingRate"])
            if isinstance(event, OpenInterest):
                assert event.oi_base == float(delta["data"]["singleOpenInterest"])
                assert event.oi_usd == float(delta["data"]["singleOpenInterestValue"])
    assert seen["FundingMark"] > 0 and seen["OpenInterest"] > 0
    with pytest.raises(TypeError):
        p.ticker("ETHUSDT")["markPrice"] = "1"  # type: ignore[index]


def test_ticker_delta_with_unchanged_fields_emits_nothing(session: list[dict[str, Any]]) -> None:
    p = parser()
    p.parse(frame(by_topic(session, "tickers.BTCUSDT", "snapshot")[0]), 1)
    quiet = by_topic(session, "tickers.BTCUSDT", "delta")[0]
    assert set(quiet["data"]) == {"symbol", "bid1Price", "bid1Size", "ask1Price", "ask1Size"}
    assert p.parse(frame(quiet), 2) == ParseResult()


def test_ticker_delta_before_snapshot_asks_for_one(session: list[dict[str, Any]]) -> None:
    p = parser()
    delta = by_topic(session, "tickers.ETHUSDT", "delta")[0]
    result = p.parse(frame(delta), 1)
    assert [r.reason for r in result.rejects] == ["out_of_sync"] and result.events == []
    assert [json.loads(r) for r in result.replies] == [
        {"req_id": "resync-1", "op": "unsubscribe", "args": ["tickers.ETHUSDT"]},
        {"req_id": "resync-1", "op": "subscribe", "args": ["tickers.ETHUSDT"]},
    ]
    later = by_topic(session, "tickers.ETHUSDT", "delta")[1]
    assert only_reject(p.parse(frame(later), 2))[0] == "out_of_sync"  # asked once only
    assert len(p.parse(frame(by_topic(session, "tickers.ETHUSDT", "snapshot")[0]), 3).events) == 2


def test_ticker_cross_sequence_order(session: list[dict[str, Any]]) -> None:
    p = parser()
    p.parse(frame(by_topic(session, "tickers.ETHUSDT", "snapshot")[0]), 1)
    first, second = by_topic(session, "tickers.ETHUSDT", "delta")[:2]
    p.parse(frame(second), 2)
    assert only_reject(p.parse(frame(second), 3))[0] == "duplicate"
    assert only_reject(p.parse(frame(first), 4))[0] == "stale"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"markPrice": "NaN"}, "bad_value"), ({"indexPrice": "0"}, "bad_value"), ({"fundingRate": "x"}, "bad_value"),
     ({"fundingIntervalHour": "0"}, "bad_value"), ({"nextFundingTime": "soon"}, "bad_value"),
     ({"singleOpenInterest": "-3"}, "bad_value"), ({"singleOpenInterest": "inf"}, "bad_value"),
     ({"symbol": "ETHUSDT"}, "malformed"), ({"markPrice": [1]}, "malformed")],
)
def test_ticker_rejects(session: list[dict[str, Any]], change: dict[str, Any], reason: str) -> None:
    raw = copy.deepcopy(by_topic(session, "tickers.BTCUSDT", "snapshot")[0])
    raw["data"].update(change)
    assert reason in [r.reason for r in parser().parse(frame(raw), 1).rejects]


def test_dated_future_ticker_has_open_interest_and_no_funding(tardis: list[dict[str, Any]]) -> None:
    raw = by_topic(tardis, "tickers.BTCUSDU23", "snapshot")[0]  # fundingRate "" and nextFundingTime ""
    oi = only_event(parser([inst("BTCUSDU23", "BTC", hours=0.0)]).parse(frame(raw), 1))
    assert isinstance(oi, OpenInterest) and oi.oi_base == pytest.approx(4547176 / 2)


# ---------------------------------------------------------------------------------------------- books


def book_frame(kind: str, u: int, ts: int, bids: list[list[str]], asks: list[list[str]],
               symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {"topic": f"orderbook.50.{symbol}", "type": kind, "ts": ts,
            "data": {"s": symbol, "b": bids, "a": asks, "u": u, "seq": 1000 + u}, "cts": ts - 1}


HAND_BIDS = [["99.95", "2"], ["99.60", "1"], ["99.10", "3"], ["98.20", "10"], ["97.00", "5"]]
HAND_ASKS = [["100.05", "1"], ["100.40", "2"], ["100.90", "1"], ["101.50", "4"], ["103.50", "1"]]
T0 = 1_786_310_818_000


def test_book_snapshot_bands_by_hand() -> None:
    depth = only_event(parser().parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS)), 3))
    assert isinstance(depth, Depth)
    assert (depth.symbol, depth.asset, depth.ts_event, depth.ts_recv) == ("BTCUSDT", "BTC", (T0 - 1) * NS, 3)  # cts
    assert depth.mid == pytest.approx(100.0) and depth.spread_bps == pytest.approx(10.0)
    assert depth.bid_usd == pytest.approx((299.5, 596.8, 1578.8))
    assert depth.ask_usd == pytest.approx((300.85, 401.75, 807.75))
    assert depth.reach_bps == pytest.approx(300.0)


def test_book_deltas_fold_and_depth_is_reported_every_100_ms() -> None:
    p = parser()
    p.parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS)), 1)
    # 20 ms later: the best bid goes, a new level appears; folded in, not reported yet.
    assert p.parse(frame(book_frame("delta", 11, T0 + 20, [["99.95", "0"], ["99.80", "4"]], [])), 2) == ParseResult()
    step = DEPTH_INTERVAL_NS // NS
    depth = only_event(p.parse(frame(book_frame("delta", 12, T0 + step, [], [["100.05", "3"]])), 3))
    assert depth.mid == pytest.approx((99.80 + 100.05) / 2)
    assert depth.bid_usd[0] == pytest.approx(99.80 * 4 + 99.60)
    assert depth.ask_usd[0] == pytest.approx(100.05 * 3 + 100.40 * 2)


def test_tardis_book_snapshot_and_delta(tardis: list[dict[str, Any]]) -> None:
    snapshot, delta = by_topic(tardis, "orderbook.50.BTCPERP")
    p = parser()
    depth = only_event(p.parse(frame(snapshot), 1))
    assert depth.ts_event == 1680673821591 * NS  # no cts in 2023: ts
    assert depth.mid == pytest.approx(28555.25)
    assert depth.bid_usd == pytest.approx((28555.20 * 0.597,) * 3)
    assert depth.ask_usd == pytest.approx((28555.30 * 0.225,) * 3)
    late = copy.deepcopy(delta)
    late["ts"] = snapshot["ts"] + 100  # the recorded delta came 60 ms later; report this one
    depth = only_event(p.parse(frame(late), 2))
    assert depth.bid_usd[0] == pytest.approx(28555.20 * 0.677)
    assert depth.ask_usd[0] == pytest.approx(28555.30 * 0.029)


def test_recorded_book_merges_like_a_reference(session: list[dict[str, Any]]) -> None:
    """Every recorded BTC orderbook.200 message, against a plain dict merge of the same levels."""
    p = parser()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    reported = 0
    for raw in by_topic(session, "orderbook.200.BTCUSDT"):
        if raw["type"] == "snapshot":
            bids, asks = {}, {}
        for side, levels in ((bids, raw["data"]["b"]), (asks, raw["data"]["a"])):
            for price, size in levels:
                if float(size) == 0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = float(size)
        result = p.parse(frame(raw), 1)
        assert result.rejects == [] and result.replies == []
        for depth in result.events:
            assert isinstance(depth, Depth)
            reported += 1
            assert depth.mid == pytest.approx((max(bids) + min(asks)) / 2)
            assert depth.ts_event == raw.get("cts", raw["ts"]) * NS
    assert reported >= 10


def test_book_order_gaps_and_restart() -> None:
    p = parser()
    delta = book_frame("delta", 11, T0 + 200, [["99.80", "1"]], [])
    result = p.parse(frame(delta), 1)
    assert [r.reason for r in result.rejects] == ["out_of_sync"]
    assert [json.loads(r)["op"] for r in result.replies] == ["unsubscribe", "subscribe"]
    p.parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS)), 2)
    assert only_event(p.parse(frame(delta), 3)).mid == pytest.approx((99.95 + 100.05) / 2)
    assert only_reject(p.parse(frame(delta), 4))[0] == "duplicate"
    assert only_reject(p.parse(frame(book_frame("delta", 9, T0 + 300, [], [])), 5))[0] == "stale"
    gap = p.parse(frame(book_frame("delta", 13, T0 + 400, [], [])), 6 * SECOND)  # u=12 never came
    assert [r.reason for r in gap.rejects] == ["out_of_sync"] and len(gap.replies) == 2
    assert only_reject(p.parse(frame(book_frame("delta", 14, T0 + 500, [], [])), 7))[0] == "out_of_sync"
    # A service restart: a snapshot with u = 1, then deltas from 2.
    assert isinstance(only_event(p.parse(frame(book_frame("snapshot", 1, T0 + 600, HAND_BIDS, HAND_ASKS)), 8)), Depth)
    assert only_event(p.parse(frame(book_frame("delta", 2, T0 + 800, [], [["100.05", "7"]])), 9)).ask_usd[0] == (
        pytest.approx(100.05 * 7 + 100.40 * 2))


@pytest.mark.parametrize(
    ("bids", "asks", "reason"),
    [([["NaN", "1"]], [], "bad_value"), ([["99.90", "-1"]], [], "bad_value"), ([], [["inf", "1"]], "bad_value"),
     ([["100.10", "1"]], [], "out_of_sync")],  # a bid above the best ask: the local book is wrong
)
def test_book_bad_delta_desyncs_until_a_snapshot(bids: list[Any], asks: list[Any], reason: str) -> None:
    p = parser()
    p.parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS)), 1)
    result = p.parse(frame(book_frame("delta", 11, T0 + 200, bids, asks)), 2)
    assert [r.reason for r in result.rejects] == [reason] and len(result.replies) == 2
    assert only_reject(p.parse(frame(book_frame("delta", 12, T0 + 400, [], [])), 3))[0] == "out_of_sync"
    assert isinstance(only_event(p.parse(frame(book_frame("snapshot", 20, T0 + 500, HAND_BIDS, HAND_ASKS)), 4)), Depth)


def test_resync_requests_are_spaced_out() -> None:
    """A venue resending a snapshot the parser cannot use is not asked again in a loop."""
    p = parser()
    snapshot = frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS))
    crossing = frame(book_frame("delta", 11, T0 + 200, [["100.10", "1"]], []))
    asked = []
    for n, ts_recv in enumerate((SECOND, SECOND + 10**8, SECOND + 9 * 10**8, 2 * SECOND + 10**8)):
        p.parse(snapshot, ts_recv)
        result = p.parse(crossing, ts_recv)
        assert [r.reason for r in result.rejects] == ["out_of_sync"], n
        asked.append(len(result.replies) == 2)
    assert asked == [True, False, False, True]


def test_book_one_sided_is_a_bad_value_not_a_desync() -> None:
    p = parser()
    assert only_reject(p.parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, [])), 1))[0] == "bad_value"
    assert isinstance(only_event(p.parse(frame(book_frame("delta", 11, T0 + 200, [], [["100.05", "1"]])), 2)), Depth)


# ------------------------------------------------------------------------------- control and the rest


def test_acks_pongs_and_venue_errors(session: list[dict[str, Any]]) -> None:
    p = parser()
    recorded_ack = next(m for m in session if m.get("op") == "subscribe")
    assert p.parse(frame(recorded_ack), 1) == ParseResult([], [], ["subscribe"])  # cryptofeed sent no req_id
    ack = b'{"success":true,"ret_msg":"","conn_id":"c1","req_id":"3","op":"subscribe"}'
    assert p.parse(ack, 1) == ParseResult([], [], [3])
    assert p.parse(b'{"success":true,"ret_msg":"","conn_id":"c1","req_id":"resync-2","op":"unsubscribe"}', 1) == (
        ParseResult([], [], ["resync-2"]))
    for odd in ("\u00b2", "9" * 5000):
        assert p.parse(encode_ack(odd), 1) == ParseResult([], [], [odd])
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"c1","req_id":"ping-1","op":"ping"}'
    assert p.parse(pong, 1) == ParseResult()
    refused = (b'{"success":false,"ret_msg":"error:handler not found,topic:dcp.future",'
               b'"conn_id":"d9jhogatbetvf6evjmc0-8eoj","req_id":"dcp.future","op":"subscribe"}')
    assert only_reject(p.parse(refused, 1)) == (
        "venue_error", "subscribe req_id='dcp.future': error:handler not found,topic:dcp.future")
    assert only_reject(p.parse(b'{"success":true,"op":"auth","conn_id":"c1"}', 1))[0] == "unknown_type"


def encode_ack(req_id: str) -> bytes:
    return frame({"success": True, "ret_msg": "", "conn_id": "c1", "req_id": req_id, "op": "subscribe"})


def test_unsubscribed_and_retired_topics(tardis: list[dict[str, Any]], session: list[dict[str, Any]]) -> None:
    p = parser()
    for raw in [*by_topic(session, "kline.1.BTCUSDT"), *by_topic(tardis, "liquidation.GALAUSDT"),
                *by_topic(tardis, "instrument_info.100ms.BTCUSDT")]:
        assert only_reject(p.parse(frame(raw), 1)) == ("unknown_type", raw["topic"])
    assert only_reject(p.parse(frame(by_topic(tardis, "publicTrade.BTCUSD")[0]), 1)) == ("unknown_symbol", "BTCUSD")
    assert only_reject(p.parse(frame(by_topic(tardis, "tickers.BTCUSD", "snapshot")[0]), 1))[0] == "unknown_symbol"


def test_every_recorded_linear_frame_is_accounted_for(session: list[dict[str, Any]]) -> None:
    p = parser()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for raw in session:
        result = p.parse(frame(raw), 1)
        topic = raw.get("topic", "ack").split(".")[0]
        kinds[topic].update(type(e).__name__ for e in result.events)
        kinds[topic].update(r.reason for r in result.rejects)
        if result.acks:
            kinds[topic]["acks"] += len(result.acks)
    assert set(kinds["kline"]) == {"unknown_type"}
    assert set(kinds["publicTrade"]) == {"Trade"}
    assert kinds["publicTrade"]["Trade"] == sum(len(m["data"]) for m in session if m.get("topic", "").startswith(
        "publicTrade"))
    assert set(kinds["tickers"]) == {"FundingMark", "OpenInterest"}
    assert kinds["tickers"]["OpenInterest"] == 4 + sum(1 for m in session if m.get("type") == "delta" and "singleOpen"
                                                       "Interest" in m["data"])
    assert set(kinds["orderbook"]) == {"Depth"}
    assert kinds["ack"]["acks"] == 17


@pytest.mark.parametrize(
    ("text", "reason"),
    [(b"", "malformed"), (b"not json", "malformed"), (b"[1,2,3]", "malformed"), (b'{"foo":1}', "malformed"),
     (b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1}', "malformed"),  # no data
     (b'{"topic":"publicTrade.BTCUSDT","data":{}}', "malformed"), (b'{"topic":"publicTrade.BTCUSDT","data":[]}',
                                                                   "malformed"),
     (b'{"topic":"publicTrade.BTCUSDT","data":[{"T":1', "malformed"), (b'{"topic":7}', "malformed"),
     (b'{"topic":"publicTrade.BTCUSDT","data":' + b"[" * 100_000 + b"]}", "malformed"),
     (b'{"topic":"orderbook.fifty.BTCUSDT","data":{}}', "unknown_type"), (b'{"topic":"x","data":{}}', "unknown_type"),
     ('{"topic":"orderbook.\u00b2.BTCUSDT","data":{}}', "unknown_type"),  # a digit to isdigit, not to int
     (b'{"topic":"orderbook.' + b"9" * 5000 + b'.BTCUSDT","data":{}}', "unknown_type"),
     (b'{"topic":"tickers.BTCUSDT","type":"partial","ts":1,"data":{"symbol":"BTCUSDT"}}', "malformed"),
     (b"\xff\xfe\x00", "malformed"), ('{"topic":"\ud800.x"}', "malformed")],
)
def test_bad_frames(text: bytes | str, reason: str) -> None:
    assert only_reject(parser().parse(text, 1))[0] == reason


def test_oversized_frame_is_not_decoded(tardis: list[dict[str, Any]]) -> None:
    raw = frame(by_topic(tardis, "publicTrade.LTCUSDT")[0])
    assert only_reject(parser(max_frame_bytes=len(raw) - 1).parse(raw, 1))[0] == "oversized"
    assert only_event(parser(max_frame_bytes=len(raw)).parse(raw, 1)).size == 0.4


# ------------------------------------------------------------------------------------------ instruments


def test_recorded_instruments() -> None:
    listed = {i.symbol: i for i in parse_instruments(recorded_http("category=linear"))}
    assert listed["BTCUSDT"] == Instrument("bybit", "BTCUSDT", "BTC", "linear", 1.0, 8.0)
    assert listed["0GUSDT"].funding_interval_h == 4.0  # fundingInterval 240 minutes
    assert (listed["BTCPERP"].asset, listed["BTCPERP"].perpetual) == ("BTC", True)  # the USDC perpetual
    future = listed["BTCUSDT-14AUG26"]
    assert (future.perpetual, future.funding_interval_h, future.active) == (False, 0.0, True)
    assert sum(i.perpetual for i in listed.values()) == 760


def test_tickers_rank_by_one_side(session: list[dict[str, Any]]) -> None:
    snapshot = by_topic(session, "tickers.BTCUSDT", "snapshot")[0]["data"]
    legacy = {k: v for k, v in by_topic(session, "tickers.ETHUSDT", "snapshot")[0]["data"].items()
              if not k.startswith("single")}
    tickers = frame({"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [snapshot, legacy]}})
    listed = {i.symbol: i for i in parse_instruments([recorded_http("category=linear")], tickers)}
    assert listed["BTCUSDT"].oi_usd == 1949998132.50
    assert listed["BTCUSDT"].volume_usd_24h == 1142118412.9021
    assert listed["ETHUSDT"].oi_usd == pytest.approx(float(legacy["openInterestValue"]) / 2)
    assert listed["SOLUSDT"].oi_usd == 0.0


def test_instrument_bodies_of_the_wrong_shape() -> None:
    with pytest.raises(BybitApiError, match="10001"):
        parse_instruments(b'{"retCode":10001,"retMsg":"params error","result":{}}')
    with pytest.raises(msgspec.DecodeError):
        parse_instruments(b'{"retCode":0,"retMsg":"OK","result":{"list":[{"symbol":1}]}}')
    with pytest.raises(BybitApiError):
        parse_instruments(b'{"retCode":0,"retMsg":"OK","result":{"list":[]}}', b'{"retCode":10006,"retMsg":"slow"}')


# --------------------------------------------------------------------------------------------- fuzzing


@FUZZ
@given(ANY_BYTES)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_result(parser().parse(data, 1), positive=["index_price"])


@FUZZ
@given(ANY_TEXT)
def test_fuzz_arbitrary_text(data: str) -> None:
    check_result(parser().parse(data, 1), positive=["index_price"])


VALUES = json_values([*SUSPECTS, "Buy", "Sell", "snapshot", "delta", "BTCUSDT"])


def real_frames() -> list[dict[str, Any]]:
    tardis = tardis_messages("bybit.ndjson")
    session = recorded_linear()
    picked = [*tardis, book_frame("delta", 11, T0 + 200, [["99.80", "1"]], [["100.05", "0"]])]
    for topic in ("tickers.BTCUSDT", "publicTrade.ETHUSDT", "orderbook.200.BTCUSDT"):
        picked += by_topic(session, topic)[:3]
    picked.append(next(m for m in session if m.get("op") == "subscribe"))
    return picked


REAL_FRAMES: list[dict[str, Any]] = []


def primed() -> BybitParser:
    """A parser holding a ticker and a book, so mangled deltas reach the merge paths."""
    if not REAL_FRAMES:
        REAL_FRAMES.extend(real_frames())
    p = parser()
    p.parse(frame(next(m for m in REAL_FRAMES if m.get("topic") == "tickers.BTCUSDT")), 1)
    p.parse(frame(book_frame("snapshot", 10, T0, HAND_BIDS, HAND_ASKS)), 1)
    p.parse(frame(next(m for m in REAL_FRAMES if m.get("topic") == "orderbook.200.BTCUSDT")), 1)
    return p


def nested(value: Any) -> Any:
    return {"junk": [value, {"deeper": [None, [1.5e308]]}]}


@FUZZ
@given(st.data())
def test_fuzz_mangled_real_frames(data: st.DataObject) -> None:
    p = primed()
    encoded = mangle(data, data.draw(st.sampled_from(REAL_FRAMES)), VALUES, nest=nested)
    check_result(p.parse(encoded, 1), positive=["index_price"])
