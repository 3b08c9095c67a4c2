"""OKX v5 public: connection spec, instrument metadata and the pure parser, on real recorded frames."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import shared_data, tardis_messages
from fuzzing import ANY_BYTES, ANY_TEXT, FUZZ, SUSPECTS, check_result, frame, json_values, mangle_many
from hypothesis import given
from hypothesis import strategies as st

from collectors.instruments import ContractKind, Instrument
from collectors.okx import SPEC
from collectors.okx.instruments import parse_instruments
from collectors.okx.parse import OkxParser
from collectors.okx.spec import ARGS_PER_SUBSCRIBE, subscribe_messages, topics
from collectors.parsing import ParseResult
from flushwatch.events import FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.venue_server import record_lines

NS = 1_000_000  # ns per ms


def inst(symbol: str, asset: str, kind: ContractKind, size: float, perpetual: bool = True) -> Instrument:
    return Instrument("okx", symbol, asset, kind, size, 8.0 if perpetual else 0.0, perpetual=perpetual)


BTC_USDT = inst("BTC-USDT-SWAP", "BTC", "linear", 0.01)
BTC_USD = inst("BTC-USD-SWAP", "BTC", "inverse", 100.0)
WATCHED = [BTC_USDT, BTC_USD, inst("WNCG-USDT-SWAP", "WNCG", "linear", 1.0),
           inst("IOST-USDT-SWAP", "IOST", "linear", 1000.0), inst("UNI-USD-SWAP", "UNI", "inverse", 10.0),
           inst("XRP-USD-230929", "XRP", "inverse", 10.0, perpetual=False),
           inst("BTC-USD-220527", "BTC", "inverse", 100.0, perpetual=False),
           inst("FIL-USDT-220325", "FIL", "linear", 0.1, perpetual=False)]


def parser() -> OkxParser:
    return OkxParser(WATCHED, 1 << 20)


def fields(event: Any) -> tuple[Any, ...]:
    return msgspec.structs.astuple(event)


def only_event(result: ParseResult) -> Any:
    assert result.rejects == [] and result.acks == [] and len(result.events) == 1, result
    return result.events[0]


def only_reject(result: ParseResult) -> tuple[str, str]:
    assert result.events == [] and result.acks == [] and len(result.rejects) == 1, result
    return result.rejects[0].reason, result.rejects[0].detail


def nothing(result: ParseResult) -> None:
    assert result == ParseResult(), result


@pytest.fixture(scope="module")
def tardis() -> list[dict[str, Any]]:
    return tardis_messages("okex-swap.ndjson") + tardis_messages("okex-futures.ndjson")


def channel(messages: list[dict[str, Any]], name: str, key: str | None = None) -> dict[str, Any]:
    found = [m for m in messages if m.get("arg", {}).get("channel") == name and "event" not in m
             and key in (None, m["arg"].get("instId"))]
    assert found, f"no {name} {key or ''} message in the fixtures"
    return copy.deepcopy(found[0])


def recording() -> list[dict[str, Any]]:
    path = shared_data("cryptofeed_recordings", "OKX.jsonl.zst")
    return [json.loads(line) for line in record_lines(Path(path)) if line.strip()]


# ------------------------------------------------------------------------------------------------ spec


def test_topics_liquidations_once_and_one_index_per_underlying() -> None:
    names = topics([BTC_USDT, BTC_USD, inst("ETH-USDT-SWAP", "ETH", "linear", 0.1)])
    assert names[0] == "liquidation-orders:SWAP" and names.count("liquidation-orders:SWAP") == 1
    for symbol in ("BTC-USDT-SWAP", "BTC-USD-SWAP", "ETH-USDT-SWAP"):
        for ch in ("trades", "books5", "mark-price", "funding-rate", "open-interest"):
            assert f"{ch}:{symbol}" in names
    assert [n for n in names if n.startswith("index-tickers:")] == [
        "index-tickers:BTC-USDT", "index-tickers:BTC-USD", "index-tickers:ETH-USDT"]
    assert len(names) == 1 + 3 * 6


def test_subscribe_messages_batch_args_with_string_ids() -> None:
    names = topics([inst(f"C{i}-USDT-SWAP", f"C{i}", "linear", 1.0) for i in range(40)])  # 241 topics
    messages = [json.loads(m) for m in subscribe_messages(names, 7)]
    assert [m["id"] for m in messages] == ["7", "8", "9"]
    assert all(m["op"] == "subscribe" and len(m["args"]) <= ARGS_PER_SUBSCRIBE for m in messages)
    args = [a for m in messages for a in m["args"]]
    assert args[0] == {"channel": "liquidation-orders", "instType": "SWAP"}
    assert args[1] == {"channel": "trades", "instId": "C0-USDT-SWAP"}
    assert len(args) == len(names) == 241


def test_spec_declares_sampled_coverage_and_the_text_ping() -> None:
    assert (SPEC.name, SPEC.coverage, SPEC.ws_url) == ("okx", "sampled", "wss://ws.okx.com:8443/ws/v5/public")
    assert SPEC.heartbeat is not None and SPEC.heartbeat.message() == "ping" and SPEC.heartbeat.interval_s < 30
    assert len(topics([BTC_USDT] * 40)) <= SPEC.max_topics_per_connection


# ------------------------------------------------------------------------------------------- channels


def test_trade_linear_contracts_become_coins(tardis: list[dict[str, Any]]) -> None:
    trade = only_event(parser().parse(frame(channel(tardis, "trades", "BTC-USDT-SWAP")), 7))
    assert isinstance(trade, Trade)
    assert fields(trade) == ("okx", "BTC-USDT-SWAP", "BTC", 1640131236050 * NS, 7, 48938.5, pytest.approx(0.05), "buy")
    assert trade.notional_usd == pytest.approx(48938.5 * 5 * 0.01)


def test_recorded_session_inverse_trades_and_acks() -> None:
    """Every frame of the 2022 cryptofeed session is accounted for: acks, trades of the inverse swap and future
    (``sz`` USD contracts), the spot pair unknown, tickers and the 400-level book not subscribed here."""
    p = parser()
    recv = [r for r in recording() if r["t"] == "recv"]
    trades = 0
    for record in recv:
        raw = json.loads(record["data"])
        result = p.parse(record["data"].encode(), 1)
        if "event" in raw:
            assert result.acks == [f"{raw['arg']['channel']}:{raw['arg']['instId']}"]
        elif raw["arg"]["channel"] == "trades" and raw["arg"]["instId"] != "BTC-USDT":
            t = raw["data"][0]
            contract = 10.0 if t["instId"] == "UNI-USD-SWAP" else 100.0
            assert fields(only_event(result)) == ("okx", t["instId"], t["instId"].partition("-")[0],
                                                  int(t["ts"]) * NS, 1, float(t["px"]),
                                                  pytest.approx(float(t["sz"]) * contract / float(t["px"])), t["side"])
            trades += 1
        elif raw["arg"]["channel"] == "trades":
            assert only_reject(result) == ("unknown_symbol", "BTC-USDT")
        else:
            assert only_reject(result) == ("unknown_type", raw["arg"]["channel"])
    assert trades == 5
    uni = next(r for r in recv if '"UNI-USD-SWAP","tradeId"' in r["data"])
    trade = only_event(parser().parse(uni["data"], 1))
    assert (trade.size, trade.side, trade.notional_usd) == (pytest.approx(100 * 10 / 5.123), "sell",
                                                            pytest.approx(1000.0))
    again = [p.parse(r["data"], 2) for r in recv if '"trades"' in r["data"] and "UNI-USD" in r["data"]]
    assert [r.rejects[0].reason for r in again if r.rejects] == ["duplicate"]


def test_books5_from_real_levels_linear(tardis: list[dict[str, Any]]) -> None:
    """The real ``bbo-tbt`` push has the ``books5`` item shape; read as a one-level books5 of BTC-USDT-SWAP."""
    message = channel(tardis, "bbo-tbt")
    message["arg"] = {"channel": "books5", "instId": "BTC-USDT-SWAP"}
    depth = only_event(parser().parse(frame(message), 3))
    assert (depth.symbol, depth.ts_event) == ("BTC-USDT-SWAP", 1651761120004 * NS)
    assert depth.mid == pytest.approx(38632.35)
    assert depth.spread_bps == pytest.approx(0.1 / 38632.35 * 1e4)
    assert depth.bid_usd == pytest.approx((38632.3 * 9.90,) * 3)  # 990 contracts of 0.01 BTC
    assert depth.ask_usd == pytest.approx((38632.4 * 7.27,) * 3)


def test_books5_from_real_levels_inverse() -> None:
    """The first five levels of the recorded 400-level snapshot of an inverse future (100 USD contracts): every
    level is worth exactly its contracts x 100 USD, whatever the price."""
    snap = next(json.loads(r["data"]) for r in recording() if r["t"] == "recv" and '"snapshot"' in r["data"])
    item = snap["data"][0]
    message = {"arg": {"channel": "books5", "instId": snap["arg"]["instId"]},
               "data": [{"asks": item["asks"][:5], "bids": item["bids"][:5], "ts": item["ts"], "seqId": 1}]}
    depth = only_event(parser().parse(frame(message), 1))
    assert depth.symbol == "BTC-USD-220527"
    assert depth.bid_usd[2] == pytest.approx(sum(float(b[1]) for b in item["bids"][:5]) * 100.0)
    assert depth.ask_usd[2] == pytest.approx(sum(float(a[1]) for a in item["asks"][:5]) * 100.0)
    assert depth.mid == pytest.approx((float(item["bids"][0][0]) + float(item["asks"][0][0])) / 2)


def test_funding_mark_joins_mark_index_and_funding(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    nothing(p.parse(frame(channel(tardis, "funding-rate", "WNCG-USDT-SWAP")), 1))  # mark, index unknown yet
    nothing(p.parse(frame(channel(tardis, "index-tickers", "WNCG-USDT")), 2))
    mark = only_event(p.parse(frame(channel(tardis, "mark-price", "WNCG-USDT-SWAP")), 3))
    assert isinstance(mark, FundingMark)
    assert (mark.mark_price, mark.index_price, mark.ts_event, mark.ts_recv) == (2.1729, 2.1675, 1640131259180 * NS, 3)
    # The 2021 shape has no nextFundingTime: 8 h is assumed, so the 8 h rate is the venue's own.
    assert (mark.funding_rate, mark.funding_interval_h, mark.funding_8h) == (0.00048105, 8.0, 0.00048105)
    assert mark.funding_annual == pytest.approx(0.00048105 * 1095)
    assert mark.next_funding_ts == 1640131200000 * NS
    assert mark.premium_bps == pytest.approx((2.1729 / 2.1675 - 1) * 1e4)


@pytest.mark.parametrize(("hours", "per_8h"), [(8, 1.0), (4, 2.0), (1, 8.0)])
def test_funding_interval_from_next_minus_this_settlement(hours: int, per_8h: float) -> None:
    """The current shape (OKX docs example): the interval is nextFundingTime - fundingTime."""
    p = parser()
    p.parse(frame({"arg": {"channel": "index-tickers", "instId": "BTC-USD"},
                   "data": [{"instId": "BTC-USD", "idxPx": "37000", "ts": "1700724675000"}]}), 1)
    p.parse(frame({"arg": {"channel": "mark-price", "instId": "BTC-USD-SWAP"}, "data": [
        {"instId": "BTC-USD-SWAP", "instType": "SWAP", "markPx": "37010", "ts": "1700724675100"}]}), 1)
    funding = {"formulaType": "noRate", "fundingRate": "0.0001875391284828", "fundingTime": "1700726400000",
               "instId": "BTC-USD-SWAP", "instType": "SWAP", "method": "current_period", "nextFundingRate": "",
               "nextFundingTime": str(1700726400000 + hours * 3_600_000), "premium": "0.0001233824646391",
               "settFundingRate": "0.0001699799259033", "settState": "settled", "ts": "1700724675402"}
    arg = {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}
    mark = only_event(p.parse(frame({"arg": arg, "data": [funding]}), 2))
    assert (mark.funding_interval_h, mark.ts_event) == (hours, 1700724675402 * NS)
    assert mark.funding_8h == pytest.approx(0.0001875391284828 * per_8h)
    assert (mark.mark_price, mark.index_price, mark.next_funding_ts) == (37010.0, 37000.0, 1700726400000 * NS)


def test_open_interest_held_until_the_first_mark(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    nothing(p.parse(frame(channel(tardis, "open-interest", "WNCG-USDT-SWAP")), 1))
    [oi] = p.parse(frame(channel(tardis, "mark-price", "WNCG-USDT-SWAP")), 2).events
    assert isinstance(oi, OpenInterest)
    assert fields(oi) == ("okx", "WNCG-USDT-SWAP", "WNCG", 1640131258756 * NS, 1, 644195.0,
                          pytest.approx(644195 * 2.1729))


def test_open_interest_coins_one_side_and_usd(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    p.parse(frame(channel(tardis, "mark-price", "FIL-USDT-220325")), 1)
    oi = only_event(p.parse(frame(channel(tardis, "open-interest", "FIL-USDT-220325")), 2))
    assert (oi.oi_base, oi.oi_usd) == (23687.0, pytest.approx(23687 * 36.232))  # oiCcy, not oi (contracts)
    current = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "oi": "2216113.01000000309",
               "oiCcy": "22161.1301000000309", "oiUsd": "1939251795.54769270396321", "ts": "1743041250440"}
    arg = {"channel": "open-interest", "instId": "BTC-USDT-SWAP"}
    oi = only_event(p.parse(frame({"arg": arg, "data": [current]}), 3))
    assert (oi.oi_base, oi.oi_usd) == (pytest.approx(22161.1301), pytest.approx(1939251795.5477))


def test_liquidation_short_from_the_real_fixture(tardis: list[dict[str, Any]]) -> None:
    liq = only_event(parser().parse(frame(channel(tardis, "liquidation-orders")), 5))
    assert isinstance(liq, Liquidation)
    assert fields(liq) == ("okx", "XRP-USD-230929", "XRP", 1680173247614 * NS, 5, 0.55205,
                           pytest.approx(39 * 10 / 0.55205), "short")  # posSide short (a buy closes it)
    assert liq.notional_usd == pytest.approx(390.0)


def liquidation(pos_side: str, side: str, ts: str = "1692266434010", inst_id: str = "IOST-USDT-SWAP") -> dict[str, Any]:
    """OKX's documented push (IOST-USDT-SWAP), with the sides and time given."""
    return {"instFamily": "IOST-USDT", "instId": inst_id, "instType": "SWAP", "uly": "IOST-USDT",
            "details": [{"bkLoss": "0", "bkPx": "0.007831", "ccy": "", "posSide": pos_side, "side": side,
                         "sz": "13", "ts": ts}]}


def liquidations(*items: dict[str, Any]) -> bytes:
    return frame({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": list(items)})


@pytest.mark.parametrize(("pos_side", "side", "liquidated"), [
    ("long", "sell", "long"), ("net", "sell", "long"), ("short", "buy", "short"), ("net", "buy", "short")])
def test_a_long_liquidated(pos_side: str, side: str, liquidated: str) -> None:
    """posSide names the position in hedge mode; in one-way mode (net) a sell closes a long."""
    liq = only_event(parser().parse(liquidations(liquidation(pos_side, side)), 1))
    assert (liq.side, liq.size, liq.price) == (liquidated, pytest.approx(13 * 1000), 0.007831)


def test_liquidations_out_of_order_kept_repeats_dropped_unwatched_counted() -> None:
    p = parser()
    newer, older = liquidation("long", "sell", "1692266434010"), liquidation("net", "buy", "1692266433000")
    result = p.parse(liquidations(newer, liquidation("long", "sell", inst_id="DOGE-USDT-SWAP"), older), 1)
    assert [e.ts_event for e in result.events] == [1692266434010 * NS, 1692266433000 * NS]  # not stale
    assert [(r.reason, r.detail) for r in result.rejects] == [("unknown_symbol", "DOGE-USDT-SWAP")]
    assert only_reject(p.parse(liquidations(older), 2))[0] == "duplicate"


# --------------------------------------------------------------------------------------------- rejects


@pytest.mark.parametrize(("field", "value"), [
    ("px", "NaN"), ("px", "0"), ("px", "-1"), ("sz", "inf"), ("sz", "abc"), ("sz", "0"), ("side", "BUY"),
    ("ts", "soon"), ("ts", "-5"), ("tradeId", "x1"), ("tradeId", "9" * 5000)])
def test_bad_trade_values(tardis: list[dict[str, Any]], field: str, value: str) -> None:
    message = channel(tardis, "trades", "BTC-USDT-SWAP")
    message["data"][0][field] = value
    assert only_reject(parser().parse(frame(message), 1))[0] == "bad_value"


def test_trades_repeated_or_older_are_dropped(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    message = channel(tardis, "trades", "BTC-USDT-SWAP")
    only_event(p.parse(frame(message), 1))
    assert only_reject(p.parse(frame(message), 2))[0] == "duplicate"
    message["data"][0]["tradeId"] = "148266904"
    assert only_reject(p.parse(frame(message), 3))[0] == "stale"


def test_unknown_symbols(tardis: list[dict[str, Any]]) -> None:
    for name, key in (("trades", "FIL-USD-220325"), ("mark-price", "FIL-USDT-220325"),
                      ("index-tickers", "FIL-USDT"), ("open-interest", "FIL-USDT-220325")):
        only_btc = OkxParser([BTC_USDT], 1 << 20)
        assert only_reject(only_btc.parse(frame(channel(tardis, name, key)), 1)) == ("unknown_symbol", key)


def test_funding_without_a_current_rate_is_bad(tardis: list[dict[str, Any]]) -> None:
    """The 2021 fixture of SOS-USDT-SWAP carries only the forecast (nextFundingRate), not the rate."""
    message = channel(tardis, "funding-rate", "SOS-USDT-SWAP")
    p = OkxParser([*WATCHED, inst("SOS-USDT-SWAP", "SOS", "linear", 1.0)], 1 << 20)
    assert only_reject(p.parse(frame(message), 1))[0] == "bad_value"


def test_books_bad_crossed_short_and_stale() -> None:
    def book(asks: list[list[str]], bids: list[list[str]], ts: str = "1651761120004") -> bytes:
        return frame({"arg": {"channel": "books5", "instId": "BTC-USDT-SWAP"},
                      "data": [{"asks": asks, "bids": bids, "instId": "BTC-USDT-SWAP", "ts": ts, "seqId": 5}]})

    p = parser()
    assert only_reject(p.parse(book([["100", "NaN", "0", "1"]], [["99", "1", "0", "1"]]), 1))[0] == "bad_value"
    assert only_reject(p.parse(book([["100"]], [["99", "1", "0", "1"]]), 1))[0] == "bad_value"
    assert only_reject(p.parse(book([["98", "1", "0", "1"]], [["99", "1", "0", "1"]]), 1))[0] == "bad_value"
    assert only_reject(p.parse(book([], [["99", "1", "0", "1"]]), 1))[0] == "bad_value"
    huge = book([["1e308", "1e308", "0", "1"]], [["9e307", "9e307", "0", "1"]])  # notional overflows
    assert only_reject(p.parse(huge, 1))[0] == "bad_value"
    assert only_reject(p.parse(book([["x", "1", "0", "1"]], [["99", "1", "0", "1"]]), 1))[0] == "malformed"
    only_event(p.parse(book([["100", "1", "0", "1"]], [["99", "1", "0", "1"]]), 1))
    assert only_reject(p.parse(book([["100", "2", "0", "1"]], [["99", "1", "0", "1"]]), 1))[0] == "duplicate"
    older = book([["100", "2", "0", "1"]], [["99", "1", "0", "1"]], "1651761120003")
    assert only_reject(p.parse(older, 1))[0] == "stale"


def test_a_delta_channel_is_never_read_as_a_book(tardis: list[dict[str, Any]]) -> None:
    """``books5`` is the only book here and a full snapshot each push; the incremental channels (a delta with
    no snapshot behind it) are refused, not applied."""
    for message in tardis:
        if message.get("arg", {}).get("channel") == "books-l2-tbt":
            assert only_reject(parser().parse(frame(message), 1)) == ("unknown_type", "books-l2-tbt")


def test_marks_never_go_back_but_a_same_time_mark_wins() -> None:
    p = parser()
    p.parse(frame({"arg": {"channel": "index-tickers", "instId": "BTC-USDT"},
                   "data": [{"instId": "BTC-USDT", "idxPx": "100", "ts": "1700000001000"}]}), 1)

    def mark(px: str, ts: str) -> bytes:
        return frame({"arg": {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
                      "data": [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "markPx": px, "ts": ts}]})

    nothing(p.parse(mark("101", "1700000002000"), 1))  # no funding rate yet: nothing to emit, nothing wrong
    nothing(p.parse(mark("102", "1700000002000"), 1))
    assert only_reject(p.parse(mark("103", "1700000001999"), 1))[0] == "stale"
    p.parse(frame({"arg": {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
                   "data": [{"instId": "BTC-USDT-SWAP", "fundingRate": "0.0001", "ts": "1700000002001"}]}), 1)
    assert only_event(p.parse(mark("104", "1700000002002"), 1)).mark_price == 104.0


@pytest.mark.parametrize(("message", "expected"), [
    ({"id": "1512", "event": "subscribe", "arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"},
      "connId": "a4d3ae55"}, ParseResult([], [], [1512])),
    ({"id": "x7", "event": "unsubscribe", "arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "connId": "a"},
     ParseResult([], [], ["x7"])),
    ({"event": "subscribe", "arg": {"channel": "liquidation-orders", "instType": "SWAP"}},
     ParseResult([], [], ["liquidation-orders:SWAP"])),
])
def test_acks(message: dict[str, Any], expected: ParseResult) -> None:
    assert parser().parse(frame(message), 1) == expected


@pytest.mark.parametrize(("message", "reason"), [
    ({"event": "error", "msg": "Wrong URL or channel:candle1s,instId:BTC-USDT-SWAP doesn't exist. Please use the "
      "correct URL, channel and parameters referring to API document.", "code": "60018", "connId": "2b5dc6ac"},
     "venue_error"),
    ({"id": "1512", "event": "error", "code": "60012", "msg": "Invalid request: {\"op\": \"subscribe\"}",
      "connId": "a4d3ae55"}, "venue_error"),
    ({"event": "notice", "code": "64008", "msg": "The connection will soon be closed for a service upgrade."},
     "venue_error"),
    ({"event": "channel-conn-count", "channel": "orders", "connCount": "2"}, "unknown_type"),
    ({"event": "subscribe"}, "malformed"),
    ({"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}}, "malformed"),
    ({"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "data": []}, "malformed"),
    ({"data": []}, "malformed"),
])
def test_events_and_shapes(message: dict[str, Any], reason: str) -> None:
    assert only_reject(parser().parse(frame(message), 1))[0] == reason


def test_pong_garbage_and_oversized() -> None:
    nothing(parser().parse(b"pong", 1))
    assert only_reject(parser().parse(b"ping me", 1))[0] == "malformed"
    assert only_reject(OkxParser(WATCHED, 64).parse(b"x" * 65, 1))[0] == "oversized"


# ------------------------------------------------------------------------------------------ instruments


def recorded_body(inst_type: str) -> bytes:
    return next(r["data"] for r in recording() if r["t"] == "http" and r["url"].endswith(f"instType={inst_type}")
                ).encode()


def test_instruments_from_the_recorded_rest_body() -> None:
    instruments = {i.symbol: i for i in parse_instruments(recorded_body("SWAP"))}
    assert instruments["BTC-USDT-SWAP"] == Instrument("okx", "BTC-USDT-SWAP", "BTC", "linear", 0.01, 8.0)
    assert instruments["BTC-USD-SWAP"] == Instrument("okx", "BTC-USD-SWAP", "BTC", "inverse", 100.0, 8.0)
    assert instruments["UNI-USD-SWAP"].contract_size == 10.0
    assert all(i.perpetual and i.active for i in instruments.values())
    assert len(instruments) > 100 and {i.kind for i in instruments.values()} == {"linear", "inverse"}
    # An inverse contract is USD: 5 contracts of 100 USD at 50,000 are 0.01 BTC.
    assert instruments["BTC-USD-SWAP"].base_size(5, 50_000.0) == pytest.approx(0.01)
    assert instruments["BTC-USDT-SWAP"].base_size(5, 50_000.0) == pytest.approx(0.05)
    futures = parse_instruments(recorded_body("FUTURES"))
    assert futures and not any(i.perpetual for i in futures) and all(i.funding_interval_h == 0 for i in futures)


def test_instruments_ranked_by_open_interest_and_volume() -> None:
    oi = b'{"code":"0","msg":"","data":[{"instType":"SWAP","instId":"BTC-USDT-SWAP","oi":"5000","oiCcy":"555.55",' \
         b'"oiUsd":"50000","ts":"1597026383085"},{"instType":"SWAP","instId":"UNI-USD-SWAP","oi":"1","oiCcy":"1",' \
         b'"oiUsd":"NaN","ts":"1597026383085"}]}'
    tickers = b'{"code":"0","msg":"","data":[{"instType":"SWAP","instId":"BTC-USD-SWAP","last":"56956.1",' \
              b'"volCcy24h":"81137.755","vol24h":"46258703","ts":"1620289117764"}]}'
    instruments = {i.symbol: i for i in parse_instruments(recorded_body("SWAP"), oi, tickers)}
    assert instruments["BTC-USDT-SWAP"].oi_usd == 50000.0
    assert instruments["UNI-USD-SWAP"].oi_usd == 0.0
    assert instruments["BTC-USD-SWAP"].volume_usd_24h == pytest.approx(81137.755 * 56956.1)
    with pytest.raises(ValueError, match="50011"):
        parse_instruments(b'{"code":"50011","msg":"Rate limit reached","data":[]}')


# --------------------------------------------------------------------------------------------- fuzzing


STATE_ONLY = ("index-tickers", "mark-price", "funding-rate", "open-interest")
"""Channels whose valid pushes may update state without an event (a mark before the funding rate is known)."""


def check(data: bytes | str, result: ParseResult) -> None:
    """Sane, and every input is accounted for but a pong and state-only pushes; funding every 24 h at most."""
    check_result(result, positive=["index_price"])
    if not (result.events or result.rejects or result.acks):
        text = data if isinstance(data, str) else data.decode()
        assert text == "pong" or any(f'"channel":"{c}"' in text for c in STATE_ONLY), data
    for event in result.events:
        if isinstance(event, FundingMark):
            assert 0 < event.funding_interval_h <= 24, event


@FUZZ
@given(ANY_BYTES)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check(data, parser().parse(data, 1))


@FUZZ
@given(ANY_TEXT)
def test_fuzz_arbitrary_text(data: str) -> None:
    result = parser().parse(data, 1)
    check_result(result, positive=["index_price"])
    assert result.events or result.rejects or result.acks or data == "pong"


VALUES = json_values([*SUSPECTS, "buy", "net", "long", "BTC-USDT-SWAP", "9" * 30])


def real_frames() -> list[dict[str, Any]]:
    messages = tardis_messages("okex-swap.ndjson") + tardis_messages("okex-futures.ndjson")
    book = channel(messages, "bbo-tbt")
    book["arg"]["channel"] = "books5"
    extra = [book, json.loads(liquidations(liquidation("net", "sell"))),
             {"id": "3", "event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}}]
    return [*messages, *extra]


@FUZZ
@given(st.data())
def test_fuzz_mangled_real_frames(data: st.DataObject) -> None:
    encoded = mangle_many(data, data.draw(st.sampled_from(real_frames())), VALUES)
    p = parser()
    for m in ("mark-price", "index-tickers"):  # let state-dependent paths (FundingMark, valued OI) run too
        p.parse(frame(channel(real_frames(), m, "WNCG-USDT-SWAP" if m == "mark-price" else "WNCG-USDT")), 1)
    check(encoded, p.parse(encoded, 1))
