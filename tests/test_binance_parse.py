"""Binance USDⓈ-M: connection spec and the pure parser, on real recorded frames."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from typing import Any

import pytest
import zstandard
from conftest import shared_data, tardis_messages
from fuzzing import ANY_BYTES, ANY_TEXT, FUZZ, SUSPECTS, check_result, frame, json_values, mangle
from hypothesis import given
from hypothesis import strategies as st

from collectors.binance.parse import BinanceParser, ParseResult
from collectors.binance.spec import (
    MAX_STREAMS_PER_CONNECTION,
    SUBSCRIBE_CHUNK,
    ConnectionPlan,
    asset_of,
    connection_plans,
    subscribe_messages,
)
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.settings import BinanceSettings

NS = 1_000_000  # ns per ms

# ---------------------------------------------------------------------------------------------- helpers


def by_stream(messages: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    found = [m for m in messages if m.get("stream") == stream]
    assert found, f"no {stream} message in the fixture"
    return found


def only_event(result: ParseResult) -> Any:
    assert result.rejects == [] and result.acks == [], result
    assert len(result.events) == 1, result
    return result.events[0]


def only_reject(result: ParseResult) -> tuple[str, str]:
    assert result.events == [] and result.acks == [], result
    assert len(result.rejects) == 1, result
    return result.rejects[0].reason, result.rejects[0].detail


@pytest.fixture(scope="module")
def tardis() -> list[dict[str, Any]]:
    return tardis_messages("binance-futures.ndjson")


def recorded_session() -> list[dict[str, Any]]:
    path = shared_data("cryptofeed_recordings", "BINANCE_FUTURES.jsonl.zst")
    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("symbol", "asset"),
    [
        ("BTCUSDT", "BTC"),
        ("1000PEPEUSDT", "1000PEPE"),
        ("ETHUSDC", "ETH"),
        ("BTCBUSD_210129", "BTC"),
        ("BTCUSD_PERP", "BTC"),
        ("solusdt", "SOL"),
        ("USDT", "USDT"),  # nothing left to strip: the symbol itself
    ],
)
def test_asset_of_strips_quote_and_delivery_suffix(symbol: str, asset: str) -> None:
    assert asset_of(symbol) == asset


def test_connection_plans_split_market_and_public_urls() -> None:
    plans = connection_plans(BinanceSettings(symbols=["BTCUSDT", "ETHUSDT"]))
    assert plans == [
        ConnectionPlan(
            "market-0",
            "wss://fstream.binance.com/market/stream",
            ("!forceOrder@arr", "btcusdt@aggTrade", "btcusdt@markPrice@1s", "ethusdt@aggTrade", "ethusdt@markPrice@1s"),
        ),
        ConnectionPlan(
            "public-0",
            "wss://fstream.binance.com/public/stream",
            ("btcusdt@depth20@100ms", "ethusdt@depth20@100ms"),
        ),
    ]


def test_connection_plans_chunk_per_symbol_liquidations() -> None:
    settings = BinanceSettings(
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], liquidation_stream="per_symbol", streams_per_connection=4
    )
    plans = connection_plans(settings)
    assert [p.name for p in plans] == ["market-0", "market-1", "market-2", "public-0"]
    assert [p.streams for p in plans[:3]] == [
        ("btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder", "ethusdt@aggTrade"),
        ("ethusdt@markPrice@1s", "ethusdt@forceOrder", "solusdt@aggTrade", "solusdt@markPrice@1s"),
        ("solusdt@forceOrder",),
    ]
    assert plans[3].streams == ("btcusdt@depth20@100ms", "ethusdt@depth20@100ms", "solusdt@depth20@100ms")
    assert all("!forceOrder@arr" not in p.streams for p in plans)


def test_subscribe_messages_are_chunked_with_counting_ids() -> None:
    streams = [f"s{i}usdt@aggTrade" for i in range(2 * SUBSCRIBE_CHUNK + 7)]
    messages = [json.loads(m) for m in subscribe_messages(streams, first_id=7)]
    assert [m["id"] for m in messages] == [7, 8, 9]
    assert [m["method"] for m in messages] == ["SUBSCRIBE"] * 3
    assert [len(m["params"]) for m in messages] == [SUBSCRIBE_CHUNK, SUBSCRIBE_CHUNK, 7]
    assert [s for m in messages for s in m["params"]] == streams
    assert SUBSCRIBE_CHUNK <= MAX_STREAMS_PER_CONNECTION


# --------------------------------------------------------------------------------- tardis fixtures


def test_agg_trade_side_from_maker_flag(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@aggTrade")[0]
    parser = BinanceParser(["BTCUSDT"])
    trade = only_event(parser.parse(frame(raw), ts_recv=123))
    assert trade == Trade("binance", "BTCUSDT", "BTC", 1568693103463 * NS, 123, 10223.74, 0.236, "buy")
    # The same print with the buyer as maker: the taker sold.
    flipped = copy.deepcopy(raw)
    flipped["data"]["m"] = True
    flipped["data"]["l"] += 1
    assert only_event(parser.parse(frame(flipped), 124)).side == "sell"


def test_mark_price_three_second_stream_without_index(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@markPrice")[0]
    mark = only_event(BinanceParser(["BTCUSDT"]).parse(frame(raw), 5))
    assert isinstance(mark, FundingMark)
    assert (mark.symbol, mark.asset, mark.ts_event, mark.ts_recv) == ("BTCUSDT", "BTC", 1569888003001 * NS, 5)
    assert mark.mark_price == 8291.34697815
    assert mark.index_price == 0.0  # not in the 2019 message: unknown, so no premium
    assert mark.premium_bps == 0.0
    assert mark.funding_rate == 0.0001
    assert mark.funding_interval_h == 8.0
    assert mark.funding_8h == pytest.approx(0.0001)
    assert mark.funding_annual == pytest.approx(0.0001 * 1095)
    assert mark.next_funding_ts == 1569916800000 * NS


def test_mark_price_one_second_stream(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@markPrice@1s")[0]
    mark = only_event(BinanceParser(["BTCUSDT"]).parse(frame(raw), 5))
    assert mark.ts_event == 1597536008000 * NS
    assert (mark.mark_price, mark.index_price, mark.funding_rate) == (11857.56, 11851.86949091, 0.0001564)
    assert mark.funding_8h == pytest.approx(0.0001564)
    assert mark.funding_annual == pytest.approx(0.0001564 * 1095)
    assert mark.next_funding_ts == 1597564800000 * NS
    assert mark.premium_bps == pytest.approx((11857.56 / 11851.86949091 - 1) * 1e4)


def test_funding_interval_per_symbol(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@markPrice@1s")[0]
    parser = BinanceParser(["BTCUSDT"], funding_interval_h={"btcusdt": 4})
    mark = only_event(parser.parse(frame(raw), 5))
    assert mark.funding_interval_h == 4.0
    assert mark.funding_8h == pytest.approx(0.0001564 * 2)
    assert mark.funding_annual == pytest.approx(0.0001564 * 2190)
    parser.set_funding_interval("BTCUSDT", 1)
    later = copy.deepcopy(raw)
    later["data"]["E"] += 1000
    assert only_event(parser.parse(frame(later), 6)).funding_annual == pytest.approx(0.0001564 * 8760)
    with pytest.raises(ValueError, match="positive"):
        parser.set_funding_interval("BTCUSDT", 0)


def test_delivery_contract_mark_price(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcbusd_210129@markPrice@1s")[0]
    parser = BinanceParser(["BTCBUSD_210129"])
    mark = only_event(parser.parse(frame(raw), 5))
    assert (mark.asset, mark.mark_price, mark.index_price) == ("BTC", 31799.2773, 31307.034)
    assert (mark.funding_rate, mark.next_funding_ts) == (0.0, 0)
    no_funding = copy.deepcopy(raw)
    no_funding["data"]["r"] = ""
    no_funding["data"]["E"] += 1000
    reason, detail = only_reject(parser.parse(frame(no_funding), 6))
    assert reason == "unknown_type" and "BTCBUSD_210129" in detail
    assert only_reject(BinanceParser(["BTCUSDT"]).parse(frame(raw), 5)) == ("unknown_symbol", "BTCBUSD_210129")


def test_force_order_covid_crash_short_liquidated(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@forceOrder")[0]
    liq = only_event(BinanceParser(["BTCUSDT"]).parse(frame(raw), 9))
    # o.S = BUY: the risk engine bought to close a SHORT; filled z at the average price ap.
    assert liq == Liquidation("binance", "BTCUSDT", "BTC", 1584059031421 * NS, 9, 4706.04, 0.014, "short")
    assert liq.notional_usd == pytest.approx(4706.04 * 0.014)


def test_force_order_sell_and_unfilled_fallbacks(tardis: list[dict[str, Any]]) -> None:
    raw = by_stream(tardis, "btcusdt@forceOrder")[0]
    unfilled = copy.deepcopy(raw)
    unfilled["data"]["o"].update(S="SELL", ap="0", z="0")
    liq = only_event(BinanceParser(["BTCUSDT"]).parse(frame(unfilled), 9))
    assert (liq.side, liq.price, liq.size) == ("long", 4793.91, 0.014)  # order price p, order quantity q


def test_all_market_liquidations_filtered_to_watchlist(tardis: list[dict[str, Any]]) -> None:
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@forceOrder")[0])
    raw["stream"] = "!forceOrder@arr"
    assert only_event(BinanceParser(["BTCUSDT"]).parse(frame(raw), 1)).size == 0.014
    assert only_reject(BinanceParser(["ETHUSDT"]).parse(frame(raw), 1)) == ("unknown_symbol", "BTCUSDT")


@pytest.mark.parametrize(
    "stream",
    [
        "btcusdt@ticker",
        "btcusdt@trade",
        "ethusdt@trade",
        "btcusdt@depth@100ms",
        "btcusdt@depthSnapshot",
        "btcusdt@openInterest",
        "btcusdt@bookTicker",
    ],
)
def test_unsubscribed_channels_are_unknown_type(tardis: list[dict[str, Any]], stream: str) -> None:
    parser = BinanceParser(["BTCUSDT", "ETHUSDT"])
    for raw in by_stream(tardis, stream):
        assert only_reject(parser.parse(frame(raw), 1)) == ("unknown_type", stream)


def test_every_fixture_message_is_accounted_for(tardis: list[dict[str, Any]]) -> None:
    parser = BinanceParser(["BTCUSDT", "ETHUSDT"])
    kinds = defaultdict(list)
    for raw in tardis:
        result = parser.parse(frame(raw), 1)
        assert len(result.events) + len(result.rejects) == 1, raw
        for event in result.events:
            kinds[type(event).__name__].append(raw["stream"])
        for reject in result.rejects:
            kinds[reject.reason].append(raw["stream"])
    assert kinds["Trade"] == ["btcusdt@aggTrade"]
    assert kinds["FundingMark"] == ["btcusdt@markPrice", "btcusdt@markPrice@1s"]
    assert kinds["Liquidation"] == ["btcusdt@forceOrder"]
    assert kinds["unknown_symbol"] == ["btcbusd_210129@markPrice@1s"]
    assert len(kinds["unknown_type"]) == len(tardis) - 5


# --------------------------------------------------------------------------------------- open interest


def test_open_interest_valued_at_last_mark_and_held_until_one(tardis: list[dict[str, Any]]) -> None:
    recorded = by_stream(tardis, "btcusdt@openInterest")[0]["data"]  # tardis' copy of the REST body
    body = frame({"openInterest": recorded["openInterest"], "symbol": "BTCUSDT", "time": 1597536007500})
    parser = BinanceParser(["BTCUSDT"])
    assert parser.open_interest(body, ts_recv=11) == ParseResult([], [], [])  # no mark price yet: held
    mark_frame = frame(by_stream(tardis, "btcusdt@markPrice@1s")[0])
    result = parser.parse(mark_frame, ts_recv=12)
    assert result.rejects == [] and len(result.events) == 2
    assert isinstance(result.events[0], FundingMark)
    assert result.events[1] == OpenInterest(
        "binance", "BTCUSDT", "BTC", 1597536007500 * NS, 11, 26286.181, 26286.181 * 11857.56
    )
    # Held only once; later polls are valued at once.
    later = frame({"openInterest": "26300.5", "symbol": "BTCUSDT", "time": 1597536017500})
    oi = only_event(parser.open_interest(later, 13))
    assert (oi.ts_event, oi.oi_base, oi.oi_usd) == (1597536017500 * NS, 26300.5, 26300.5 * 11857.56)
    assert only_reject(parser.open_interest(later, 14))[0] == "duplicate"


def test_open_interest_holds_only_the_newest_sample(tardis: list[dict[str, Any]]) -> None:
    parser = BinanceParser(["BTCUSDT"])
    for n, oi in enumerate(["100.5", "101.5"]):
        body = frame({"openInterest": oi, "symbol": "BTCUSDT", "time": 1597536000000 + n})
        assert parser.open_interest(body, n) == ParseResult([], [], [])
    events = parser.parse(frame(by_stream(tardis, "btcusdt@markPrice@1s")[0]), 9).events
    assert [(e.oi_base, e.ts_recv) for e in events if isinstance(e, OpenInterest)] == [(101.5, 1)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"symbol":"BTCUSDT","openInterest":"26286.181"}', "malformed"),  # tardis' copy has no "time"
        (b'{"openInterest":"1","symbol":"DOGEUSDT","time":1589437530011}', "unknown_symbol"),
        (b'{"openInterest":"NaN","symbol":"BTCUSDT","time":1589437530011}', "bad_value"),
        (b'{"openInterest":"0","symbol":"BTCUSDT","time":1589437530011}', "bad_value"),
        (b'{"openInterest":"5","symbol":"BTCUSDT","time":-1}', "bad_value"),
        (b'{"code":-1121,"msg":"Invalid symbol."}', "malformed"),
        (b"<html>502</html>", "malformed"),
    ],
)
def test_open_interest_rejects(body: bytes, reason: str) -> None:
    assert only_reject(BinanceParser(["BTCUSDT"]).open_interest(body, 1))[0] == reason


# ------------------------------------------------------------------------------------------------ depth


def depth20(tardis: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A depth20 frame in the shape of the recorded diff-book message (same event type and fields)."""
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@depth@100ms")[0])
    raw["stream"] = "btcusdt@depth20@100ms"
    raw["data"].update(changes)
    return raw


HAND_BOOK = {
    # mid 100.00, spread 10 bps; bands ±0.5 % = [99.5, 100.5], ±1 % = [99, 101], ±2 % = [98, 102]
    "b": [
        ["99.95", "2"],
        ["99.60", "1"],
        ["99.10", "3"],
        ["98.50", "0"],
        ["98.20", "10"],
        ["97.00", "5"],
        ["96.00", "0"],
    ],
    "a": [["100.05", "1"], ["100.40", "2"], ["100.90", "1"], ["101.50", "4"], ["103.50", "1"]],
}


def test_depth20_bands_by_hand(tardis: list[dict[str, Any]]) -> None:
    depth = only_event(BinanceParser(["BTCUSDT"]).parse(frame(depth20(tardis, **HAND_BOOK)), 3))
    assert isinstance(depth, Depth)
    assert (depth.symbol, depth.ts_event, depth.ts_recv) == ("BTCUSDT", 1573948821948 * NS, 3)  # T, not E
    assert depth.mid == pytest.approx(100.0)
    assert depth.spread_bps == pytest.approx(10.0)
    # bids: 99.95*2 + 99.60 = 299.5 | + 99.10*3 = 596.8 | + 98.20*10 = 1578.8 (98.50 x 0 dropped)
    assert depth.bid_usd == pytest.approx((299.5, 596.8, 1578.8))
    # asks: 100.05 + 100.40*2 = 300.85 | + 100.90 = 401.75 | + 101.50*4 = 807.75
    assert depth.ask_usd == pytest.approx((300.85, 401.75, 807.75))
    # thinner side: bids reach 97.00 (96.00 x 0 dropped) = 300 bps; asks 103.50 = 350 bps
    assert depth.reach_bps == pytest.approx(300.0)


def test_depth_order_and_fallback_time(tardis: list[dict[str, Any]]) -> None:
    parser = BinanceParser(["BTCUSDT"])
    first = depth20(tardis, **HAND_BOOK)
    assert only_event(parser.parse(frame(first), 1)).mid == pytest.approx(100.0)
    assert only_reject(parser.parse(frame(first), 2))[0] == "duplicate"
    older = depth20(tardis, **HAND_BOOK, u=first["data"]["u"] - 1)
    assert only_reject(parser.parse(frame(older), 3))[0] == "stale"
    newer = depth20(tardis, **HAND_BOOK, u=first["data"]["u"] + 1)
    del newer["data"]["T"]
    assert only_event(parser.parse(frame(newer), 4)).ts_event == 1573948821952 * NS  # E


def test_depth_recorded_levels_are_crossed(tardis: list[dict[str, Any]]) -> None:
    # The recorded diff message has bid 8493.78 above ask 4096.00: as a top-20 book that is crossed.
    reason, detail = only_reject(BinanceParser(["BTCUSDT"]).parse(frame(depth20(tardis)), 1))
    assert reason == "bad_value" and "crossed" in detail


@pytest.mark.parametrize(
    ("bids", "asks"),
    [
        ([["99.95", "NaN"]], [["100.05", "1"]]),
        ([["-99.95", "1"]], [["100.05", "1"]]),
        ([["99.95", "1"]], [["inf", "1"]]),
        ([["99.95", "0"]], [["100.05", "1"]]),  # only a zero level: one-sided
        ([], [["100.05", "1"]]),
    ],
)
def test_depth_bad_levels(tardis: list[dict[str, Any]], bids: list[Any], asks: list[Any]) -> None:
    result = BinanceParser(["BTCUSDT"]).parse(frame(depth20(tardis, b=bids, a=asks)), 1)
    assert only_reject(result)[0] == "bad_value"


@pytest.mark.parametrize("stream", ["btcusdt@depth5", "btcusdt@depth10@500ms", "btcusdt@depth20@100ms"])
def test_partial_depth_stream_names(tardis: list[dict[str, Any]], stream: str) -> None:
    raw = depth20(tardis, **HAND_BOOK)
    raw["stream"] = stream
    assert isinstance(only_event(BinanceParser(["BTCUSDT"]).parse(frame(raw), 1)), Depth)


# --------------------------------------------------------------------------- order, acks, bad input


def test_agg_trade_duplicates_and_stale(tardis: list[dict[str, Any]]) -> None:
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@aggTrade")[0])
    raw["data"]["a"] = 500
    parser = BinanceParser(["BTCUSDT"])
    assert only_event(parser.parse(frame(raw), 1)).price == 10223.74
    assert only_reject(parser.parse(frame(raw), 2)) == ("duplicate", "BTCUSDT aggTrade id 500 after 500")
    raw["data"]["a"] = 499
    assert only_reject(parser.parse(frame(raw), 3)) == ("stale", "BTCUSDT aggTrade id 499 after 500")
    raw["data"]["a"] = 501
    assert only_event(parser.parse(frame(raw), 4)).ts_recv == 4
    # Order is kept per symbol.
    eth = copy.deepcopy(raw)
    eth["data"].update(s="ETHUSDT", a=1)
    assert BinanceParser(["BTCUSDT", "ETHUSDT"]).parse(frame(eth), 5).events[0].asset == "ETH"


def test_mark_price_duplicates_and_stale(tardis: list[dict[str, Any]]) -> None:
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@markPrice@1s")[0])
    parser = BinanceParser(["BTCUSDT"])
    only_event(parser.parse(frame(raw), 1))
    assert only_reject(parser.parse(frame(raw), 2))[0] == "duplicate"
    raw["data"]["E"] -= 1000
    assert only_reject(parser.parse(frame(raw), 3))[0] == "stale"


def test_rejected_message_does_not_advance_order(tardis: list[dict[str, Any]]) -> None:
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@aggTrade")[0])
    raw["data"].update(a=10, p="NaN")
    parser = BinanceParser(["BTCUSDT"])
    assert only_reject(parser.parse(frame(raw), 1))[0] == "bad_value"
    raw["data"]["p"] = "10000.5"
    assert only_event(parser.parse(frame(raw), 2)).price == 10000.5


def test_acks_and_venue_errors() -> None:
    parser = BinanceParser(["BTCUSDT"])
    assert parser.parse(b'{"result":null,"id":3}', 1) == ParseResult([], [], [3])
    assert parser.parse('{"result":["btcusdt@aggTrade"],"id":4}', 1) == ParseResult([], [], [4])
    error = b'{"error":{"code":2,"msg":"Invalid request: too many parameters"},"id":5}'
    assert only_reject(parser.parse(error, 1)) == ("venue_error", "code 2: Invalid request: too many parameters")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"p": "NaN"}, "bad_value"),
        ({"p": "inf"}, "bad_value"),
        ({"p": "0"}, "bad_value"),
        ({"q": "-0.236"}, "bad_value"),
        ({"q": "lots"}, "bad_value"),
        ({"T": 0}, "bad_value"),
        ({"T": 10**13}, "bad_value"),  # year 2286: would overflow int64 nanoseconds
        ({"s": "DOGEUSDT"}, "unknown_symbol"),
        ({"s": "btcusdt"}, "unknown_symbol"),
        ({"p": 10223.74}, "malformed"),  # a number where Binance sends a string
        ({"m": "false"}, "malformed"),
        ({"e": "trade"}, "malformed"),
    ],
)
def test_agg_trade_rejects(tardis: list[dict[str, Any]], data: dict[str, Any], reason: str) -> None:
    raw = copy.deepcopy(by_stream(tardis, "btcusdt@aggTrade")[0])
    raw["data"].update(data)
    assert only_reject(BinanceParser(["BTCUSDT"]).parse(frame(raw), 1))[0] == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "malformed"),
        (b"not json", "malformed"),
        (b"[1,2,3]", "malformed"),
        (b'{"stream":"btcusdt@aggTrade"}', "malformed"),  # no data
        (b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"', "malformed"),  # truncated
        (b'{"stream":"btcusdt@aggTrade","data":[]}', "malformed"),
        (b'{"stream":"btcusdt@aggTrade","data":' + b"[" * 100_000 + b"]}", "malformed"),
        (b'{"id":3}', "malformed"),  # neither result nor error
        (b'{"stream":"btcusdt@kline_1m","data":{}}', "unknown_type"),
        (b'{"stream":"!markPrice@arr@1s","data":[]}', "unknown_type"),
        (b'{"stream":"btcusdt@depth","data":{}}', "unknown_type"),
        (b"\xff\xfe\x00", "malformed"),
        ('{"stream":"\ud800@aggTrade","data":{}}', "malformed"),  # lone surrogate in a str frame
    ],
)
def test_bad_frames(text: bytes | str, reason: str) -> None:
    assert only_reject(BinanceParser(["BTCUSDT"]).parse(text, 1))[0] == reason


def test_oversized_frame_is_not_decoded(tardis: list[dict[str, Any]]) -> None:
    raw = frame(by_stream(tardis, "btcusdt@aggTrade")[0])
    parser = BinanceParser(["BTCUSDT"], max_frame_bytes=len(raw) - 1)
    assert only_reject(parser.parse(raw, 1)) == ("oversized", f"{len(raw)} > {len(raw) - 1} bytes")
    assert only_event(BinanceParser(["BTCUSDT"], max_frame_bytes=len(raw)).parse(raw, 1)).size == 0.236


# ---------------------------------------------------------------------------------- recorded session


def test_recorded_session_every_frame_accounted_for() -> None:
    records = recorded_session()
    header = records[0]
    symbols = [s.replace("-USDT-PERP", "USDT") for s in header["config"]["trades"]]
    parser = BinanceParser(symbols)
    recv = [r for r in records if r["t"] == "recv"]
    assert recv
    trades = 0
    for record in recv:
        raw = json.loads(record["data"])
        result = parser.parse(record["data"].encode(), ts_recv=round(record["ts"] * 1e9))
        if raw["stream"].endswith("@aggTrade"):
            data = raw["data"]
            trade = only_event(result)
            assert trade == Trade(
                "binance",
                data["s"],
                asset_of(data["s"]),
                data["T"] * NS,
                round(record["ts"] * 1e9),
                float(data["p"]),
                float(data["q"]),
                "sell" if data["m"] else "buy",
            )
            trades += 1
        else:  # diff depth, bookTicker, kline: not subscribed in production
            assert only_reject(result) == ("unknown_type", raw["stream"])
    assert trades == sum(1 for r in recv if "@aggTrade" in r["data"])


def test_recorded_session_replayed_twice_is_all_duplicates() -> None:
    recv = [r["data"] for r in recorded_session() if r["t"] == "recv" and "@aggTrade" in r["data"]]
    parser = BinanceParser(["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"])
    first = [parser.parse(f, 1) for f in recv]
    assert all(len(r.events) == 1 for r in first)
    again = [parser.parse(f, 2) for f in recv]
    assert {r.rejects[0].reason for r in again} == {"duplicate", "stale"}
    assert all(r.events == [] for r in again)


# ------------------------------------------------------------------------------------------- fuzzing


def check(result: ParseResult) -> None:
    """Sane, and every input is accounted for: an event, a reject or an ack."""
    check_result(result)
    assert len(result.events) + len(result.rejects) + len(result.acks) >= 1


@FUZZ
@given(ANY_BYTES)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check(BinanceParser(["BTCUSDT"]).parse(data, 1))


@FUZZ
@given(ANY_TEXT)
def test_fuzz_arbitrary_text(data: str) -> None:
    check(BinanceParser(["BTCUSDT"]).parse(data, 1))


VALUES = json_values([*SUSPECTS, "BUY", "SELL", "aggTrade", "BTCUSDT"])


def real_frames() -> list[dict[str, Any]]:
    messages = tardis_messages("binance-futures.ndjson")
    depth = copy.deepcopy(by_stream(messages, "btcusdt@depth@100ms")[0])
    depth["stream"] = "btcusdt@depth20@100ms"
    depth["data"].update(HAND_BOOK)
    liquidations = copy.deepcopy(by_stream(messages, "btcusdt@forceOrder")[0])
    liquidations["stream"] = "!forceOrder@arr"
    return [*messages, depth, liquidations, {"result": None, "id": 1}]


@FUZZ
@given(st.data())
def test_fuzz_mangled_real_frames(data: st.DataObject) -> None:
    encoded = mangle(data, data.draw(st.sampled_from(real_frames())), VALUES)
    check(BinanceParser(["BTCUSDT", "ETHUSDT"]).parse(encoded, 1))
