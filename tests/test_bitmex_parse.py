"""The BitMEX parser against real messages (the tardis fixtures in ../shared/data) and mangled copies of
them: normalised values, table state across partial and deltas, rejects, and that nothing raises."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from typing import Any

import msgspec
import pytest
from fuzzing import check_result, json_values
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.bitmex import SPEC
from collectors.bitmex.instruments import INSTRUMENTS_PATH, parse_instruments
from collectors.bitmex.parse import BitmexParser
from collectors.bitmex.schemas import iso_to_ns, timespan_hours
from collectors.bitmex.spec import ARGS_PER_SUBSCRIBE, subscribe_messages, topics
from collectors.instruments import Instrument
from collectors.parsing import ParseResult
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.bitmex import BitmexProtocol, iso_ms, sample_frames
from tests.conftest import tardis_messages

MS = 1_000_000
XBTUSD = Instrument("bitmex", "XBTUSD", "BTC", "inverse", 1.0, 8.0)
XBTUSDT = Instrument("bitmex", "XBTUSDT", "BTC", "linear", 1e-6, 8.0)
ETHM19 = Instrument("bitmex", "ETHM19", "ETH", "linear", 1.0, 0.0, perpetual=False)
ETHUSD = Instrument("bitmex", "ETHUSD", "ETH", "linear", 1.0, 8.0)


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.fixture(scope="module")
def fx() -> list[dict[str, Any]]:
    """The 18 real BitMEX messages, in file order (2019-06 to 2022-02)."""
    messages = tardis_messages("bitmex.ndjson")
    assert [(m["table"], m["action"]) for m in messages][:3] == [
        ("trade", "insert"), ("instrument", "update"), ("orderBookL2", "update")]
    return messages


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def parser(*instruments: Instrument) -> BitmexParser:
    return BitmexParser(list(instruments or (XBTUSD,)))


def run(p: BitmexParser, message: dict[str, Any] | str | bytes, ts_recv: int = 7) -> ParseResult:
    data = message if isinstance(message, str | bytes) else frame(message)
    return p.parse(data, ts_recv)


def reasons(result: ParseResult) -> list[str]:
    return [r.reason for r in result.rejects]


# --- trade --------------------------------------------------------------------------------------------


def test_a_real_trade_is_normalised_to_coins_and_the_taker_side(fx: list[dict[str, Any]]) -> None:
    result = run(parser(), fx[0])
    [trade] = result.events
    assert isinstance(trade, Trade) and not result.rejects
    assert (trade.venue, trade.symbol, trade.asset, trade.ts_event, trade.ts_recv) == (
        "bitmex", "XBTUSD", "BTC", ms("2019-06-01T00:00:19.163+00:00") * MS, 7)
    assert (trade.price, trade.side) == (8544.5, "sell")
    assert trade.size == pytest.approx(0.11703, rel=1e-4)  # BitMEX's own homeNotional
    assert trade.notional_usd == pytest.approx(1000.0)  # 1000 contracts of 1 USD = foreignNotional


def test_a_linear_trade_is_contracts_times_the_contract_size(fx: list[dict[str, Any]]) -> None:
    message = copy.deepcopy(fx[0])
    message["data"][0] |= {"symbol": "XBTUSDT", "size": 2000, "price": 60000.5}
    [trade] = run(parser(XBTUSDT), message).events
    assert isinstance(trade, Trade)
    assert (trade.size, trade.notional_usd) == (pytest.approx(0.002), pytest.approx(0.002 * 60000.5))


def test_trades_are_deduped_by_time_and_match_id(fx: list[dict[str, Any]]) -> None:
    p = parser()
    assert len(run(p, fx[0]).events) == 1
    assert reasons(run(p, fx[0])) == ["duplicate"]
    same_time = copy.deepcopy(fx[0])
    same_time["data"][0]["trdMatchID"] = "00000000-0000-0000-0000-000000000001"  # another fill of the order
    assert len(run(p, same_time).events) == 1
    older = copy.deepcopy(fx[0])
    older["data"][0] |= {"trdMatchID": "00000000-0000-0000-0000-000000000002",
                         "timestamp": "2019-06-01T00:00:19.162Z"}
    assert reasons(run(p, older)) == ["stale"]
    partial = {"table": "trade", "action": "partial", "keys": [], "filter": {"symbol": "XBTUSD"},
               "data": fx[0]["data"] + same_time["data"]}
    result = run(p, partial)  # the image a resubscribe brings: nothing new in it
    assert (result.events, reasons(result)) == ([], ["duplicate", "duplicate"])


# --- instrument ---------------------------------------------------------------------------------------


def test_a_real_instrument_image_gives_open_interest_of_one_side(fx: list[dict[str, Any]]) -> None:
    p = parser(ETHM19)
    result = run(p, fx[3])  # ETHM19 and LTCM19, dated futures quoted in XBT
    [oi] = result.events
    assert reasons(result) == ["unknown_symbol"]  # LTCM19
    assert isinstance(oi, OpenInterest)
    assert (oi.symbol, oi.asset, oi.ts_event) == ("ETHM19", "ETH", ms("2019-05-31T23:59:30+00:00") * MS)
    assert oi.oi_base == 150499.0  # contracts of 1 ETH; no FundingMark: fundingRate is null
    later = run(p, fx[4])  # prices only: nothing to report, nothing wrong
    assert (later.events, later.rejects) == ([], [])


def test_instrument_updates_before_the_image_are_out_of_sync(fx: list[dict[str, Any]]) -> None:
    p = parser(XBTUSD, ETHUSD)
    assert reasons(run(p, fx[1])) == ["out_of_sync"]
    assert reasons(run(p, fx[10])) == ["out_of_sync"]  # ETHUSD openInterest
    assert reasons(run(parser(), fx[10])) == ["unknown_symbol"]


def perpetual_image(fx: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """The real ETHM19 image turned into an XBTUSD perpetual's."""
    row = fx[3]["data"][0] | {
        "symbol": "XBTUSD", "rootSymbol": "XBT", "typ": "FFWCSX", "quoteCurrency": "USD", "isInverse": True,
        "multiplier": -100000000, "underlyingToSettleMultiplier": -100000000, "fundingRate": 0.0001,
        "fundingInterval": "2000-01-01T08:00:00.000Z", "fundingTimestamp": "2019-06-01T04:00:00.000Z",
        "indicativeFundingRate": 0.00012, "markPrice": 8550.25, "indicativeSettlePrice": 8549.0,
        "openInterest": 100_000_000, "timestamp": "2019-06-01T00:00:05.000Z"} | changes
    return {**fx[3], "filter": {"symbol": "XBTUSD"}, "data": [row]}


def test_the_image_gives_mark_index_funding_and_open_interest(fx: list[dict[str, Any]]) -> None:
    result = run(parser(), perpetual_image(fx))
    [mark, oi] = result.events
    assert isinstance(mark, FundingMark) and isinstance(oi, OpenInterest) and not result.rejects
    t = ms("2019-06-01T00:00:05+00:00") * MS
    assert (mark.ts_event, mark.mark_price, mark.index_price, mark.funding_rate) == (t, 8550.25, 8549.0, 0.0001)
    assert (mark.funding_interval_h, mark.funding_8h) == (8.0, pytest.approx(0.0001))
    assert mark.funding_annual == pytest.approx(0.0001 * 3 * 365)
    assert mark.next_funding_ts == ms("2019-06-01T04:00:00+00:00") * MS
    assert mark.premium_bps == pytest.approx((8550.25 / 8549.0 - 1) * 1e4)
    assert (oi.ts_event, oi.oi_usd) == (t, pytest.approx(1e8))  # contracts of 1 USD
    assert oi.oi_base == pytest.approx(1e8 / 8550.25)


def test_updates_merge_into_the_image(fx: list[dict[str, Any]]) -> None:
    p = parser()
    run(p, perpetual_image(fx))
    update = {"table": "instrument", "action": "update",
              "data": [{"symbol": "XBTUSD", "markPrice": 8551.0, "timestamp": "2019-06-01T00:00:06.000Z"}]}
    [mark] = run(p, update).events
    assert isinstance(mark, FundingMark)
    assert (mark.mark_price, mark.index_price, mark.funding_rate) == (8551.0, 8549.0, 0.0001)  # rest unchanged
    oi_only = copy.deepcopy(fx[10])  # real: {"symbol":"ETHUSD","openInterest":58922153}, no timestamp
    oi_only["data"][0]["symbol"] = "XBTUSD"
    [oi] = run(p, oi_only).events
    assert isinstance(oi, OpenInterest)
    assert (oi.ts_event, oi.oi_usd, oi.oi_base) == (
        ms("2019-06-01T00:00:06+00:00") * MS, 58922153.0, pytest.approx(58922153 / 8551.0))
    assert reasons(run(p, oi_only)) == ["duplicate"]
    ticks = run(p, fx[1])  # real: lastTickDirection only
    assert (ticks.events, ticks.rejects) == ([], [])


def test_a_repeated_image_adds_nothing_and_an_older_update_is_stale(fx: list[dict[str, Any]]) -> None:
    p = parser()
    run(p, perpetual_image(fx))
    assert reasons(run(p, perpetual_image(fx))) == ["duplicate", "duplicate"]
    old = {"table": "instrument", "action": "update",
           "data": [{"symbol": "XBTUSD", "markPrice": 8000.0, "timestamp": "2019-06-01T00:00:01.000Z"}]}
    assert reasons(run(p, old)) == ["stale"]


@pytest.mark.parametrize(("interval", "hours"), [("2000-01-01T08:00:00.000Z", 8.0),
                                                 ("2000-01-01T04:00:00.000Z", 4.0),
                                                 ("2000-01-01T01:00:00.000Z", 1.0)])
def test_funding_is_restated_per_8h_from_the_venue_interval(fx: list[dict[str, Any]], interval: str,
                                                             hours: float) -> None:
    [mark, _] = run(parser(), perpetual_image(fx, fundingInterval=interval)).events
    assert isinstance(mark, FundingMark)
    assert (mark.funding_interval_h, mark.funding_8h) == (hours, pytest.approx(0.0001 * 8 / hours))


@pytest.mark.parametrize(("field", "value"), [("markPrice", -1.0), ("markPrice", 0), ("openInterest", -5),
                                              ("indicativeSettlePrice", 0.0), ("fundingInterval", "8h"),
                                              ("timestamp", "2019-06-01 00:00:05"), ("fundingTimestamp", "x")])
def test_bad_instrument_values_are_rejected_and_leave_no_state(fx: list[dict[str, Any]], field: str,
                                                              value: Any) -> None:
    p = parser()
    assert reasons(run(p, perpetual_image(fx, **{field: value}))) == ["bad_value"]
    assert reasons(run(p, fx[1])) == ["out_of_sync"]  # the bad image did not count as one


# --- order book ---------------------------------------------------------------------------------------


def test_a_real_2019_book_keeps_levels_by_id(fx: list[dict[str, Any]]) -> None:
    p = parser()
    assert reasons(run(p, fx[2])) == ["out_of_sync"]  # a delta before the image
    run(p, fx[0])  # a trade: the venue time these old book rows lack
    image = run(p, fx[6])  # XBTUSD: three asks, no bid; EOSM19 not watched
    assert (image.events, reasons(image)) == ([], ["unknown_symbol"])
    assert run(p, fx[7]).rejects == []  # id 8799141400 now 91227, the update names no price
    bid = {"table": "orderBookL2", "action": "insert",
           "data": [{"symbol": "XBTUSD", "id": 8799141450, "side": "Buy", "size": 1000, "price": 8585.5}]}
    [depth] = run(p, bid).events
    assert isinstance(depth, Depth)
    mid = (8585.5 + 8586) / 2
    assert (depth.ts_event, depth.mid) == (ms("2019-06-01T00:00:19.163+00:00") * MS, mid)
    assert depth.spread_bps == pytest.approx(0.5 / mid * 1e4)
    assert depth.bid_usd == pytest.approx((1000.0,) * 3)  # inverse: contracts are USD
    assert depth.ask_usd == pytest.approx((91227.0,) * 3)  # the updated size at the stored price
    assert depth.reach_bps == pytest.approx((mid - 8585.5) / mid * 1e4)
    [after] = run(p, fx[8]).events  # the delete: best ask now 9780.5
    assert isinstance(after, Depth)
    assert after.mid == (8585.5 + 9780.5) / 2


def test_a_real_2022_book_with_a_level_changing_sides(fx: list[dict[str, Any]]) -> None:
    p = parser(XBTUSD, Instrument("bitmex", "XBTZ21", "BTC", "inverse", 1.0, 0.0, perpetual=False))
    empty = run(p, fx[14])  # XBTZ21: an empty image, named by its filter only
    assert (empty.events, empty.rejects) == ([], [])
    assert run(p, fx[15]).events == []  # three asks: one-sided, nothing to report
    [depth] = run(p, fx[16]).events  # id 8791115350 comes back as a bid
    assert isinstance(depth, Depth)
    assert (depth.ts_event, depth.mid) == (ms("2022-02-14T08:06:54.742+00:00") * MS, (42362 + 658900) / 2)
    gone = run(p, fx[17])  # both asks deleted: one-sided again
    assert (gone.events, gone.rejects) == ([], [])


def book_image(levels: list[tuple[int, str, int, float]], symbol: str = "XBTUSD") -> dict[str, Any]:
    return {"table": "orderBookL2_25", "action": "partial", "keys": ["symbol", "id", "side"],
            "filter": {"symbol": symbol},
            "data": [{"symbol": symbol, "id": i, "side": side, "size": size, "price": price,
                      "timestamp": "2022-02-14T07:59:54.829Z"} for i, side, size, price in levels]}


TWO_SIDED = [(1, "Buy", 5000, 42000.0), (2, "Buy", 100, 41900.0), (3, "Sell", 7000, 42000.5),
             (4, "Sell", 200, 42100.0)]


def test_a_broken_book_asks_for_a_fresh_image_once() -> None:
    p = parser()
    [depth] = run(p, book_image(TWO_SIDED)).events
    assert isinstance(depth, Depth) and depth.bid_usd[0] == pytest.approx(5000 + 100)
    unknown = {"table": "orderBookL2_25", "action": "update",
               "data": [{"symbol": "XBTUSD", "id": 99, "side": "Buy", "size": 1}]}
    broken = run(p, unknown)
    assert reasons(broken) == ["out_of_sync"]
    assert [json.loads(r) for r in broken.replies] == [{"op": "unsubscribe", "args": ["orderBookL2_25:XBTUSD"]},
                                                       {"op": "subscribe", "args": ["orderBookL2_25:XBTUSD"]}]
    again = run(p, unknown)
    assert (reasons(again), again.replies) == (["out_of_sync"], [])
    assert len(run(p, book_image(TWO_SIDED)).events) == 1  # the fresh image resyncs


@pytest.mark.parametrize("row", [{"id": 1, "side": "Buy", "size": 0}, {"id": 1, "side": "Buy", "size": -3},
                                 {"id": 9, "side": "Sell", "size": 1, "price": -1.0},
                                 {"id": 9, "side": "Sell", "size": 1, "price": 41000.0}])  # the last crosses
def test_bad_or_crossing_levels_are_rejected(row: dict[str, Any]) -> None:
    p = parser()
    run(p, book_image(TWO_SIDED))
    action = "update" if "price" not in row else "insert"
    result = run(p, {"table": "orderBookL2_25", "action": action, "data": [{"symbol": "XBTUSD", **row}]})
    assert (result.events, reasons(result), len(result.replies)) == ([], ["bad_value"], 2)


# --- liquidation --------------------------------------------------------------------------------------


def test_a_real_liquidation_waits_for_venue_time_and_counts_once(fx: list[dict[str, Any]]) -> None:
    p = parser()
    held = run(p, fx[11], ts_recv=3)  # no venue time seen yet: held, not stamped with the local clock
    assert (held.events, held.rejects) == ([], [])
    liq, trade = run(p, fx[0]).events  # released first: it happened before
    assert isinstance(liq, Liquidation) and isinstance(trade, Trade)
    assert (liq.symbol, liq.ts_event, liq.ts_recv) == ("XBTUSD", trade.ts_event, 3)
    assert (liq.side, liq.price) == ("short", 10106.0)  # a Buy order closes a short
    assert (liq.size, liq.notional_usd) == (pytest.approx(9214 / 10106), pytest.approx(9214.0))
    filled = run(p, fx[12])
    assert (filled.events, filled.rejects) == ([], [])
    assert reasons(run(p, fx[11])) == ["duplicate"]


def test_a_sell_liquidation_order_is_a_long_liquidated(fx: list[dict[str, Any]]) -> None:
    p = parser()
    run(p, fx[0])
    message = copy.deepcopy(fx[11])
    message["data"][0] |= {"side": "Sell", "price": 8500.0, "leavesQty": 17000}
    [liq] = run(p, message).events
    assert isinstance(liq, Liquidation)
    assert (liq.side, liq.size, liq.notional_usd) == ("long", pytest.approx(2.0), pytest.approx(17000.0))


def test_liquidation_updates_and_images_never_count_again(fx: list[dict[str, Any]]) -> None:
    p = parser()
    run(p, fx[0])
    assert len(run(p, fx[11]).events) == 1
    order = fx[11]["data"][0]["orderID"]
    row: dict[str, Any] = {"orderID": order, "symbol": "XBTUSD", "leavesQty": 4000}
    partly: dict[str, Any] = {"table": "liquidation", "action": "update", "data": [row]}
    assert run(p, partly) == ParseResult()
    image = {"table": "liquidation", "action": "partial", "keys": ["orderID"], "filter": {"symbol": "XBTUSD"},
             "data": [{**fx[11]["data"][0], "leavesQty": 4000}]}
    assert reasons(run(p, image)) == ["duplicate"]
    stranger = {**partly, "data": [{**row, "orderID": "not-seen"}]}
    assert reasons(run(p, stranger)) == ["out_of_sync"]
    assert reasons(run(p, {**fx[12], "data": [{"orderID": "not-seen", "symbol": "XBTUSD"}]})) == ["out_of_sync"]


# --- control frames, rejects --------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "acks", "expected"), [
    ('{"info":"Welcome to the BitMEX Realtime API.","version":"2.0.0","timestamp":"2026-01-26T08:17:40.000Z",'
     '"docs":"https://www.bitmex.com/app/wsAPI","heartbeatEnabled":false,"limit":{}}', [], []),
    ('{"success":true,"subscribe":"trade:XBTUSD","request":{"op":"subscribe","args":["trade:XBTUSD"]}}',
     ["trade:XBTUSD"], []),
    ('{"success":true,"unsubscribe":"trade:XBTUSD","request":{"op":"unsubscribe","args":["trade:XBTUSD"]}}',
     [], []),
    ('{"status":400,"error":"Unknown table: tradeBin5dm","meta":{},"request":{"op":"subscribe",'
     '"args":["tradeBin1m","tradeBin5dm"]}}', [], ["venue_error"]),
    ('{"success":false,"error":"nope"}', [], ["venue_error"]),
    ("pong", [], []),
    (b"pong", [], []),
    ('{"hello":1}', [], ["malformed"]),
    ("not json", [], ["malformed"]),
    ('[1,2]', [], ["malformed"]),
    ('{"table":"trade","action":"insert","data":[{"symbol":"XBTUSD"}]}', [], ["malformed"]),
    ('{"table":"trade","action":"update","data":[]}', [], ["malformed"]),
])
def test_control_frames(message: str | bytes, acks: list[str], expected: list[str]) -> None:
    result = run(parser(), message)
    assert (result.events, result.acks, reasons(result)) == ([], acks, expected)


def test_unknown_tables_and_oversized_frames(fx: list[dict[str, Any]]) -> None:
    assert reasons(run(parser(), fx[5])) == ["unknown_type"]  # quote
    assert reasons(BitmexParser([XBTUSD], 64).parse(frame(fx[0]), 1)) == ["oversized"]


@pytest.mark.parametrize("change", [{"price": -8544.5}, {"price": 0}, {"size": 0}, {"side": "Short"},
                                    {"timestamp": "2019-06-01T00:00:19Z+"}, {"timestamp": "yesterday"}])
def test_bad_trade_values(fx: list[dict[str, Any]], change: dict[str, Any]) -> None:
    message = copy.deepcopy(fx[0])
    message["data"][0] |= change
    result = run(parser(), message)
    assert (result.events, reasons(result)) == ([], ["bad_value"])


def test_bad_liquidation_values(fx: list[dict[str, Any]]) -> None:
    p = parser()
    run(p, fx[0])
    for change in ({"side": None}, {"price": 0}, {"leavesQty": -1}):
        message = copy.deepcopy(fx[11])
        message["data"][0] |= change
        assert reasons(run(p, message)) == ["bad_value"]


# --- timestamps, spec, instruments --------------------------------------------------------------------


def test_timestamps() -> None:
    assert iso_to_ns("2019-06-01T00:00:19.163Z") == 1559347219163 * MS
    assert iso_to_ns("2022-02-13T00:15:02.570000Z") == 1644711302570 * MS
    assert iso_to_ns("2022-02-13T00:15:02Z") == 1644711302 * 10**9
    for bad in ("", "2019-06-01", "2019-06-01T25:00:00.000Z", "2019-06-01T00:00:00.000", "2019-13-01T00:00:00Z",
                "2019-06-01T00:00:00.Z", "2019-06-01T0a:00:00Z", "1969-12-31T23:59:59.000Z"):
        assert iso_to_ns(bad) is None, bad
    assert timespan_hours("2000-01-01T08:00:00.000Z") == 8.0
    assert timespan_hours("2000-01-02T00:00:00.000Z") == 24.0


@given(st.integers(min_value=1, max_value=4_102_444_800_000))
def test_timestamps_match_the_standard_library(epoch_ms: int) -> None:
    assert iso_to_ns(iso_ms(epoch_ms)) == epoch_ms * MS


def test_topics_keep_a_contract_together_instrument_first() -> None:
    names = topics([XBTUSD, XBTUSDT])
    assert names[:4] == ["instrument:XBTUSD", "liquidation:XBTUSD", "trade:XBTUSD", "orderBookL2_25:XBTUSD"]
    assert SPEC.max_topics_per_connection % 4 == 0 and SPEC.coverage == "complete"
    many = [f"trade:S{i}" for i in range(25)]
    messages = [json.loads(m) for m in subscribe_messages(many, 1)]
    assert [len(m["args"]) for m in messages] == [ARGS_PER_SUBSCRIBE, ARGS_PER_SUBSCRIBE, 5]
    assert all(m["op"] == "subscribe" for m in messages)
    assert [a for m in messages for a in m["args"]] == many


def instrument_rows(fx: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real instrument rows (ETHM19, LTCM19) and contracts of each kind built from them."""
    eth, ltc = fx[3]["data"]
    inverse = perpetual_image(fx)["data"][0] | {"markPrice": 100_000.0, "openInterest": 411_647_400,
                                                 "foreignNotional24h": 419_742_700}
    linear = eth | {"symbol": "XBTUSDT", "rootSymbol": "XBT", "typ": "FFWCSX", "quoteCurrency": "USDT",
                    "underlyingToPositionMultiplier": 1_000_000, "multiplier": 1, "quoteToSettleMultiplier": 1_000_000,
                    "fundingInterval": "2000-01-01T04:00:00.000Z", "markPrice": 100_000.0,
                    "openInterest": 2_000_000_000, "foreignNotional24h": 5e6, "state": "Open"}
    quanto = linear | {"symbol": "ETHUSD", "rootSymbol": "ETH", "quoteCurrency": "USD", "isQuanto": True,
                       "multiplier": 100}
    future = linear | {"symbol": "XBTUSDTZ26", "typ": "FFCCSX", "state": "Closed", "fundingInterval": None}
    spot = linear | {"symbol": "XBT_USDT", "typ": "IFXXXP"}
    return [eth, ltc, inverse, linear, quanto, future, spot]


def test_instruments_from_the_active_endpoint(fx: list[dict[str, Any]]) -> None:
    found = {i.symbol: i for i in parse_instruments(json.dumps(instrument_rows(fx)).encode())}
    assert sorted(found) == ["XBTUSD", "XBTUSDT", "XBTUSDTZ26"]  # XBT-quoted, quanto and spot skipped
    inverse, linear, future = found["XBTUSD"], found["XBTUSDT"], found["XBTUSDTZ26"]
    assert (inverse.asset, inverse.kind, inverse.contract_size, inverse.funding_interval_h) == (
        "BTC", "inverse", 1.0, 8.0)
    assert (inverse.oi_usd, inverse.volume_usd_24h) == (411_647_400.0, 419_742_700.0)
    assert (linear.kind, linear.contract_size, linear.funding_interval_h) == ("linear", 1e-6, 4.0)
    assert linear.oi_usd == pytest.approx(2_000_000_000 * 1e-6 * 100_000.0)
    assert (future.perpetual, future.active, future.funding_interval_h) == (False, False, 0.0)
    with pytest.raises(msgspec.DecodeError):
        parse_instruments(b'{"error":{"message":"Not Found"}}')


def test_the_fake_lists_what_it_was_given() -> None:
    given_ = [msgspec.structs.replace(XBTUSD, oi_usd=4e8, volume_usd_24h=1e9),
              msgspec.structs.replace(XBTUSDT, oi_usd=2e8, volume_usd_24h=3e7, funding_interval_h=4.0)]
    answer = BitmexProtocol(given_, mark_prices={"XBTUSDT": 100_000.0}).rest("GET", INSTRUMENTS_PATH, {}, b"")
    assert answer is not None and answer[0] == 200
    assert [(i.symbol, i.kind, i.contract_size, i.funding_interval_h, round(i.oi_usd), i.volume_usd_24h)
            for i in parse_instruments(answer[1])] == [
        ("XBTUSD", "inverse", 1.0, 8.0, 400_000_000, 1e9), ("XBTUSDT", "linear", 1e-6, 4.0, 200_000_000, 3e7)]


@pytest.mark.parametrize("kind", ["trade", "book"])
def test_benchmark_frames_are_valid_and_distinct(kind: str) -> None:
    instruments, frames = sample_frames(kind, 500)
    p = BitmexParser(instruments)
    results = [p.parse(f, 1) for f in frames]
    assert len(set(frames)) == 500 and sum(len(r.rejects) for r in results) == 0
    assert sum(len(r.events) for r in results) == 500


# --- nothing raises -----------------------------------------------------------------------------------

JUNK = json_values(["NaN", "Infinity", "1e999", "-0", "Buy", "Sell", "XBTUSD", "2019-06-01T00:00:19.163Z"],
                   text_size=30, width=4, key_size=12, max_leaves=12, allow_infinity=False)


def mangle(draw: Any, value: Any) -> Any:
    """``value`` with one random change somewhere inside: a field dropped, replaced, retyped or nested junk."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        action = draw(st.sampled_from(["drop", "replace", "recurse"]))
        if action == "drop":
            del out[key]
        elif action == "replace":
            out[key] = draw(JUNK)
        else:
            out[key] = mangle(draw, value[key])
        return out
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], mangle(draw, value[i]), *value[i + 1:]]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return draw(st.sampled_from([-value, 0, 10**30, 1e308, -1e308, str(value), None, [value]]))
    return draw(JUNK)


@st.composite
def frames_(draw: Any, messages: list[dict[str, Any]]) -> bytes:
    choice = draw(st.sampled_from(["bytes", "mangled", "truncated", "token", "real"]))
    if choice == "bytes":
        return bytes(draw(st.binary(max_size=200)))
    message = draw(st.sampled_from(messages))
    text = json.dumps(mangle(draw, message) if choice == "mangled" else message, allow_nan=False).encode()
    if choice == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    numbers = list(re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", text))
    if choice == "token" and numbers:  # a number swapped for what JSON cannot hold, or no number at all
        hit = draw(st.sampled_from(numbers))
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-1e999", b"1e999", b'"12"', b"18446744073709551616"]))
        return text[:hit.start()] + token + text[hit.end():]
    return text


def test_no_frame_raises(fx: list[dict[str, Any]]) -> None:
    messages = [*fx, perpetual_image(fx), book_image(TWO_SIDED)]
    parser_ = BitmexParser([XBTUSD, ETHM19, ETHUSD], 1 << 16)  # one parser: state carries across frames

    @hsettings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(frames_(messages), min_size=1, max_size=6))
    def check(sequence: list[bytes]) -> None:
        for data in sequence:
            result = parser_.parse(data, 1)
            check_result(result)
            assert all(event.symbol in ("XBTUSD", "ETHM19", "ETHUSD") for event in result.events)

    check()
