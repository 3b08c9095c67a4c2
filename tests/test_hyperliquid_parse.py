"""Hyperliquid: connection spec, instrument metadata and the pure parser, on real recorded frames."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from conftest import tardis_messages
from fuzzing import ANY_BYTES, ANY_TEXT, FUZZ, SUSPECTS, check_result, frame, json_values, mangle
from hypothesis import given
from hypothesis import strategies as st

from collectors.hyperliquid import SPEC
from collectors.hyperliquid.instruments import parse_instruments
from collectors.hyperliquid.parse import REPLAY_WAIT_NS, HyperliquidParser
from collectors.hyperliquid.spec import MAX_TOPICS_PER_CONNECTION, subscribe_messages, topics
from collectors.instruments import Instrument
from collectors.parsing import ParseResult
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake.hyperliquid import HyperliquidProtocol, book_frame, ctx_frame, trade_frame

NS = 1_000_000  # ns per ms
COINS = ("BTC", "FXS", "BANANA", "MOODENG", "SHIA", "kPEPE")


def inst(coin: str, **kw: Any) -> Instrument:
    return Instrument("hyperliquid", coin, coin.upper(), "linear", 1.0, 1.0, **kw)


def parser(*coins: str) -> HyperliquidParser:
    return HyperliquidParser([inst(c) for c in coins or COINS])


def only_event(result: ParseResult) -> Any:
    assert result.rejects == [] and result.acks == [], result
    assert len(result.events) == 1, result
    return result.events[0]


def trades_of(result: ParseResult) -> list[Trade]:
    assert all(isinstance(e, Trade) for e in result.events), result
    return [e for e in result.events if isinstance(e, Trade)]


def only_reject(result: ParseResult) -> tuple[str, str]:
    assert result.events == [] and result.acks == [], result
    assert len(result.rejects) == 1, result
    return result.rejects[0].reason, result.rejects[0].detail


@pytest.fixture(scope="module")
def tardis() -> list[dict[str, Any]]:
    return tardis_messages("hyperliquid.ndjson")


def of_channel(messages: list[dict[str, Any]], channel: str, coin: str | None = None) -> list[dict[str, Any]]:
    found = [m for m in messages if m["channel"] == channel
             and coin in (None, (m["data"][0] if isinstance(m["data"], list) else m["data"])["coin"])]
    assert found, f"no {channel} {coin} message in the fixture"
    return found


def clocked(p: HyperliquidParser, time_ms: int = 1_730_160_007_687) -> None:
    """Give the parser a venue clock (a BTC book at ``time_ms``), as the first pushes of a session do."""
    bids, asks = [(100.0, 1.0)], [(100.1, 1.0)]
    assert isinstance(only_event(p.parse(book_frame("BTC", time_ms, bids, asks), 1)), Depth)


# ----------------------------------------------------------------------------------------------- spec


def test_spec_topics_and_subscribe_messages() -> None:
    names = topics([inst("BTC"), inst("kPEPE")])
    assert names == ["activeAssetCtx:BTC", "trades:BTC", "l2Book:BTC",
                     "activeAssetCtx:kPEPE", "trades:kPEPE", "l2Book:kPEPE"]
    messages = subscribe_messages(names[:2], 7)
    assert [json.loads(m) for m in messages] == [
        {"method": "subscribe", "subscription": {"type": "activeAssetCtx", "coin": "BTC"}},
        {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}},
    ]
    assert MAX_TOPICS_PER_CONNECTION % 3 == 0 and 10 * MAX_TOPICS_PER_CONNECTION <= 1000
    assert SPEC.heartbeat is not None and json.loads(SPEC.heartbeat.message()) == {"method": "ping"}
    assert SPEC.heartbeat.interval_s < 60
    # 300 subscribe messages of a 100-coin universe, paced, stay far under 2000 messages a minute.
    assert 60 / SPEC.subscribe_interval_s <= 2000 / 4


# ----------------------------------------------------------------------------------------------- trades


def test_trades_taker_side_size_in_coins_and_venue_time(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    fxs = of_channel(tardis, "trades", "FXS")[0]
    sell = only_event(p.parse(frame(fxs), 5))
    assert isinstance(sell, Trade)
    assert (sell.venue, sell.symbol, sell.asset) == ("hyperliquid", "FXS", "FXS")
    assert sell.side == "sell"  # "A": the taker sold into the bid
    assert (sell.price, sell.size) == (1.9008, 10.5)
    assert sell.notional_usd == pytest.approx(1.9008 * 10.5)
    assert (sell.ts_event, sell.ts_recv) == (1730160015113 * NS, 5)

    btc = of_channel(tardis, "trades", "BTC")[0]  # three fills of one taker order, ids NOT increasing
    result = p.parse(frame(btc), 6)
    assert result.rejects == []
    assert [(t.side, t.price, t.size) for t in trades_of(result)] == [
        ("buy", 69997.0, 0.38111), ("buy", 69997.0, 0.33458), ("buy", 69997.0, 0.83613)]
    assert {t.ts_event for t in result.events} == {1730160006192 * NS}


def test_trades_are_deduplicated_by_id_and_ordered_by_time(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    first, later = of_channel(tardis, "trades", "BTC")
    assert len(p.parse(frame(first), 1).events) == 3
    again = p.parse(frame(first), 2)
    assert again.events == [] and [r.reason for r in again.rejects] == ["duplicate"] * 3
    assert len(p.parse(frame(later), 3).events) == 1
    assert only_reject(p.parse(frame({**first, "data": first["data"][:1]}), 4))[0] == "stale"
    # A new id at the newest millisecond is a new trade (the block's other fills).
    extra = copy.deepcopy(later)
    extra["data"][0]["tid"] += 1
    assert only_event(p.parse(frame(extra), 5)).size == 0.00714


def test_first_trades_after_subscribing_are_the_venues_replay_and_predate_the_watch() -> None:
    p = parser("BTC")
    ack = ('{"channel":"subscriptionResponse","data":{"method":"subscribe",'
           '"subscription":{"type":"trades","coin":"BTC"}}}')
    assert p.parse(ack, 1).acks == ["trades:BTC"]
    replay = trade_frame("BTC", 11, 1_700_000_000_000, 100.0, 1.0)
    reason, detail = only_reject(p.parse(replay, 2))
    assert reason == "stale" and "replayed" in detail
    assert only_event(p.parse(trade_frame("BTC", 12, 1_700_000_000_500, 100.0, 1.0), 3)).ts_event > 0
    # Resubscribing after a reconnect: the replay fills the gap, minus what was already seen.
    assert p.parse(ack, 4).acks == ["trades:BTC"]
    seen, new = (json.loads(trade_frame("BTC", *t)) for t in ((12, 1_700_000_000_500, 100.0, 1.0),
                                                               (13, 1_700_000_000_900, 101.0, 2.0)))
    result = p.parse(frame({"channel": "trades", "data": seen["data"] + new["data"]}), 5)
    assert [r.reason for r in result.rejects] == ["duplicate"]
    assert [t.price for t in trades_of(result)] == [101.0]


def test_a_coin_whose_replay_was_empty_keeps_its_first_live_trades() -> None:
    """An empty replay names no coin: the first frame that comes later than a replay would is live."""
    p = parser("BTC", "ETH")
    sub = ('{"channel":"subscriptionResponse","data":{"method":"subscribe",'
           '"subscription":{"type":"trades","coin":"%s"}}}')
    t0 = 1_700_000_000 * 10**9  # local receive time, ns
    assert p.parse(sub % "BTC", t0).acks == ["trades:BTC"] and p.parse(sub % "ETH", t0).acks == ["trades:ETH"]
    assert p.parse('{"channel":"trades","data":[]}', t0 + 2 * 10**6) == p.parse('{"channel":"pong"}', t0)
    eth_replay = trade_frame("ETH", 21, 1_699_999_999_000, 2000.0, 1.0)
    assert only_reject(p.parse(eth_replay, t0 + 3 * 10**6))[0] == "stale"
    live = trade_frame("BTC", 11, 1_700_000_004_000, 100.0, 1.0)
    assert only_event(p.parse(live, t0 + REPLAY_WAIT_NS + 1)).price == 100.0


@pytest.mark.parametrize(("field", "value"), [
    ("px", "NaN"), ("px", "0"), ("sz", "-1"), ("sz", "inf"), ("time", 0), ("time", 2**62), ("side", "X"),
])
def test_bad_trade_values_are_rejected(tardis: list[dict[str, Any]], field: str, value: Any) -> None:
    message = copy.deepcopy(of_channel(tardis, "trades", "FXS")[0])
    message["data"][0][field] = value
    assert only_reject(parser().parse(frame(message), 1))[0] == "bad_value"


def test_unknown_coins_are_rejected(tardis: list[dict[str, Any]]) -> None:
    p = parser("BTC")
    assert only_reject(p.parse(frame(of_channel(tardis, "trades", "FXS")[0]), 1)) == ("unknown_symbol", "FXS")
    assert only_reject(p.parse(frame(of_channel(tardis, "l2Book", "BANANA")[0]), 1))[0] == "unknown_symbol"
    assert only_reject(p.parse(frame(of_channel(tardis, "activeAssetCtx", "MOODENG")[0]), 1))[0] == "unknown_symbol"


# ----------------------------------------------------------------------------------------------- books


def test_l2book_is_a_whole_book_summed_into_bands(tardis: list[dict[str, Any]]) -> None:
    depth = only_event(parser().parse(frame(of_channel(tardis, "l2Book", "BANANA")[0]), 9))
    assert isinstance(depth, Depth)
    assert depth.ts_event == 1730160007687 * NS and depth.symbol == "BANANA"
    mid = (59.8 + 59.811) / 2
    assert depth.mid == pytest.approx(mid)
    assert depth.spread_bps == pytest.approx((59.811 - 59.8) / mid * 1e4)
    # Every level lies within 50 bps of mid, so all three bands hold the whole visible side.
    bids, asks = 59.8 * 3.4 + 59.778 * 1.6, 59.811 * 2.9 + 59.832 * 17.6
    assert depth.bid_usd == pytest.approx((bids, bids, bids))
    assert depth.ask_usd == pytest.approx((asks, asks, asks))
    assert depth.reach_bps == pytest.approx(min(mid - 59.778, 59.832 - mid) / mid * 1e4)


def test_an_empty_book_is_rejected_and_the_next_push_needs_no_resync(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    assert only_reject(p.parse(frame(of_channel(tardis, "l2Book", "SHIA")[0]), 1))[0] == "bad_value"
    # There are no deltas: whatever came before, each push is a complete book of its own.
    assert isinstance(only_event(p.parse(book_frame("SHIA", 1730160008187, [(1.0, 5.0)], [(1.1, 5.0)]), 2)), Depth)


def test_books_repeated_or_out_of_order_are_dropped(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    banana = of_channel(tardis, "l2Book", "BANANA")[0]
    only_event(p.parse(frame(banana), 1))
    assert only_reject(p.parse(frame(banana), 2))[0] == "duplicate"
    older = copy.deepcopy(banana)
    older["data"]["time"] -= 500
    assert only_reject(p.parse(frame(older), 3))[0] == "stale"


@pytest.mark.parametrize("level", [{"px": "NaN", "sz": "1"}, {"px": "-1", "sz": "1"}, {"px": "59.7", "sz": "0"},
                                   {"px": "59.7", "sz": "1e999"}])
def test_bad_levels_are_rejected(tardis: list[dict[str, Any]], level: dict[str, str]) -> None:
    message = copy.deepcopy(of_channel(tardis, "l2Book", "BANANA")[0])
    message["data"]["levels"][0].append(level)
    assert only_reject(parser().parse(frame(message), 1))[0] in ("bad_value", "malformed")


def test_a_crossed_book_is_rejected() -> None:
    assert only_reject(parser().parse(book_frame("BTC", 1, [(101.0, 1.0)], [(100.0, 1.0)]), 1))[0] == "bad_value"


# ---------------------------------------------------------------------------------- asset context


def test_asset_context_is_hourly_funding_oracle_index_and_one_side_oi(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    clocked(p)
    mark, oi = p.parse(frame(of_channel(tardis, "activeAssetCtx", "MOODENG")[0]), 7).events
    assert isinstance(mark, FundingMark) and isinstance(oi, OpenInterest)
    assert (mark.symbol, mark.asset, mark.ts_recv) == ("MOODENG", "MOODENG", 7)
    assert mark.ts_event == 1730160007687 * NS  # the venue clock of the latest block seen
    assert (mark.mark_price, mark.index_price) == (0.19963, 0.1995)
    assert mark.funding_rate == 0.00004863 and mark.funding_interval_h == 1.0
    assert mark.funding_8h == pytest.approx(0.00004863 * 8)
    assert mark.funding_annual == pytest.approx(0.00004863 * 8760)
    assert mark.next_funding_ts == 1730163600 * 10**9  # the next whole hour
    assert mark.premium_bps == pytest.approx((0.19963 / 0.1995 - 1) * 1e4)
    assert oi.oi_base == 18617460.0
    assert oi.oi_usd == pytest.approx(18617460.0 * 0.19963)


def test_asset_context_is_emitted_only_on_change() -> None:
    p = parser("BTC")
    clocked(p)
    base = {"funding": "0.0000125", "open_interest": "28000.5", "mark": "104000.0", "oracle": "104010.0"}
    assert len(p.parse(ctx_frame("BTC", **base), 1).events) == 2
    assert p.parse(ctx_frame("BTC", **base), 2) == ParseResult()  # pushed again, unchanged
    moved = only_event(p.parse(ctx_frame("BTC", **(base | {"mark": "104001.0"})), 3))
    assert isinstance(moved, FundingMark) and moved.mark_price == 104001.0
    grown = only_event(p.parse(ctx_frame("BTC", **(base | {"mark": "104001.0", "open_interest": "28001.5"})), 4))
    assert isinstance(grown, OpenInterest) and grown.oi_usd == pytest.approx(28001.5 * 104001.0)


def test_asset_context_before_any_venue_time_is_held_until_one_arrives(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    assert p.parse(frame(of_channel(tardis, "activeAssetCtx", "MOODENG")[0]), 3) == ParseResult()
    result = p.parse(frame(of_channel(tardis, "trades", "FXS")[0]), 4)
    trade, mark, oi = result.events
    assert isinstance(trade, Trade) and isinstance(mark, FundingMark) and isinstance(oi, OpenInterest)
    assert mark.ts_event == oi.ts_event == 1730160015113 * NS and mark.ts_recv == 3


@pytest.mark.parametrize(("field", "value"), [
    ("markPx", "0"), ("oraclePx", "NaN"), ("funding", "x"), ("openInterest", "-5"), ("openInterest", "inf")])
def test_bad_asset_context_values_are_rejected(tardis: list[dict[str, Any]], field: str, value: str) -> None:
    message = copy.deepcopy(of_channel(tardis, "activeAssetCtx", "MOODENG")[0])
    message["data"]["ctx"][field] = value
    p = parser()
    clocked(p)
    assert only_reject(p.parse(frame(message), 1))[0] == "bad_value"


# ------------------------------------------------------------------------------------- liquidations


def test_no_public_liquidations_so_a_long_liquidated_is_never_invented() -> None:
    """Hyperliquid publishes no liquidation stream: a long liquidated shows only in that user's own fills.
    Such a fill (docs' WsUserFills shape) is not read as a liquidation -- nothing is guessed."""
    assert SPEC.coverage == "none"
    fill = {"channel": "userFills", "data": {"isSnapshot": False, "user": "0x" + "a" * 40, "fills": [
        {"coin": "BTC", "px": "104000.0", "sz": "0.5", "side": "A", "time": 1730160015113, "startPosition": "0.5",
         "dir": "Close Long", "closedPnl": "-900.0", "hash": "0x" + "0" * 64, "oid": 1, "crossed": True,
         "fee": "10.0", "tid": 1, "feeToken": "USDC",
         "liquidation": {"liquidatedUser": "0x" + "a" * 40, "markPx": "104000.0", "method": "market"}}]}}
    assert only_reject(parser().parse(frame(fill), 1)) == ("unknown_type", "userFills")
    trades = [trade_frame("BTC", 10 + i, 1730160015113 + i, 104000.0, 0.5, "A") for i in range(3)]
    assert not any(isinstance(e, Liquidation) for f in trades for e in parser().parse(f, 1).events)


# ------------------------------------------------------------------------------- control messages


def test_acks_pongs_errors_and_unknown_channels(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    ack: dict[str, Any] = {"channel": "subscriptionResponse",
                           "data": {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}}
    assert p.parse(frame(ack), 1) == ParseResult(acks=["l2Book:BTC"])
    ack["data"]["method"] = "unsubscribe"
    assert p.parse(frame(ack), 1) == ParseResult()
    assert p.parse(b'{"channel":"pong"}', 1) == ParseResult()
    error = '{"channel":"error","data":"Already subscribed: {\\"type\\":\\"activeAssetCtx\\",\\"coin\\":\\"UNI\\"}"}'
    assert only_reject(p.parse(error, 1)) == ("venue_error",
                                              'Already subscribed: {"type":"activeAssetCtx","coin":"UNI"}')
    for channel in ("bbo", "activeSpotAssetCtx"):
        assert only_reject(p.parse(frame(of_channel(tardis, channel)[0]), 1)) == ("unknown_type", channel)


@pytest.mark.parametrize("text", [b"not json", b"[1,2]", b'{"data":[]}', b'{"channel":"trades","data":{}}',
                                  b'{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[]]}}',
                                  b'{"channel":"trades","data":[{"coin":"BTC"', b'{"channel":7}'])
def test_malformed_frames(text: bytes) -> None:
    assert only_reject(parser().parse(text, 1))[0] == "malformed"


def test_oversized_frames() -> None:
    p = HyperliquidParser([inst("BTC")], max_frame_bytes=64)
    assert only_reject(p.parse(trade_frame("BTC", 1, 1_700_000_000_000, 1.0, 1.0), 1))[0] == "oversized"


# ------------------------------------------------------------------------------------------- instruments

META = [
    {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 40, "marginTableId": 56},
                  {"name": "kPEPE", "szDecimals": 0, "maxLeverage": 10, "marginTableId": 10},
                  {"name": "MATIC", "szDecimals": 1, "maxLeverage": 20, "marginTableId": 20, "isDelisted": True}],
     "marginTables": [[56, {"description": "tiered 40x", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": 40}]}]]},
    [{"funding": "0.0000125", "openInterest": "28127.5", "prevDayPx": "103500.0", "dayNtlVlm": "2651234567.1",
      "premium": "0.0002", "oraclePx": "104000.0", "markPx": "104020.0", "midPx": "104019.5",
      "impactPxs": ["104019.0", "104021.0"], "dayBaseVlm": "25500.1"},
     {"funding": "-0.00001", "openInterest": "5000000000.0", "prevDayPx": "0.0101", "dayNtlVlm": "12000000.0",
      "premium": "0.0", "oraclePx": "0.0102", "markPx": "0.0102", "midPx": None, "impactPxs": None},
     {"funding": "0.0", "openInterest": "0.0", "prevDayPx": "0.2", "dayNtlVlm": "0.0", "premium": None,
      "oraclePx": "0.2", "markPx": "0.2", "midPx": None, "impactPxs": None}],
]


def test_instruments_from_meta_and_asset_ctxs() -> None:
    btc, kpepe, matic = parse_instruments(frame(META))
    assert (btc.symbol, btc.asset, btc.kind, btc.contract_size, btc.funding_interval_h) == ("BTC", "BTC", "linear",
                                                                                            1.0, 1.0)
    assert btc.active and btc.perpetual
    assert btc.oi_usd == pytest.approx(28127.5 * 104020.0)
    assert btc.volume_usd_24h == pytest.approx(2651234567.1)
    assert (kpepe.symbol, kpepe.asset) == ("kPEPE", "KPEPE")  # 1000 PEPE: its own asset, not PEPE
    assert kpepe.oi_usd == pytest.approx(5e9 * 0.0102)
    assert not matic.active and matic.oi_usd == 0.0
    with pytest.raises(msgspec.DecodeError):
        parse_instruments(b'{"universe":[]}')


def test_instruments_from_the_fakes_info_answer() -> None:
    listed = [inst("BTC", oi_usd=2.9e9, volume_usd_24h=2.6e9), inst("ETH", active=False)]
    protocol = HyperliquidProtocol(listed)
    protocol.observe(ctx_frame("BTC", funding="0.00001", open_interest="1", mark="100000.0", oracle="100000.0"))
    answer = protocol.rest("POST", "/info", {}, b'{"type":"metaAndAssetCtxs"}')
    assert answer is not None and answer[0] == 200
    btc, eth = parse_instruments(answer[1])
    assert btc.oi_usd == pytest.approx(2.9e9) and btc.volume_usd_24h == pytest.approx(2.6e9)
    assert not eth.active


# ------------------------------------------------------------------------------------------- fuzzing


def check(result: ParseResult) -> None:
    """Sane (a frame may carry nothing: a pong, an empty replay)."""
    check_result(result, positive=["index_price"])


@FUZZ
@given(ANY_BYTES)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    result = parser().parse(data, 1)
    check(result)
    assert result.rejects  # random bytes are never a valid frame worth keeping


@FUZZ
@given(ANY_TEXT)
def test_fuzz_arbitrary_text(data: str) -> None:
    check(parser().parse(data, 1))


VALUES = json_values([*SUSPECTS, "A", "B", "BTC", "trades", "l2Book", "error"])


def real_frames() -> list[dict[str, Any]]:
    ack = {"channel": "subscriptionResponse", "data": {"method": "subscribe",
                                                       "subscription": {"type": "trades", "coin": "BTC"}}}
    return [*tardis_messages("hyperliquid.ndjson"), ack, {"channel": "error", "data": "Invalid subscription"}]


@FUZZ
@given(st.data())
def test_fuzz_mangled_real_frames(data: st.DataObject) -> None:
    encoded = mangle(data, data.draw(st.sampled_from(real_frames())), VALUES)
    p = parser()
    clocked(p)  # so a mangled asset context is emitted (and checked) rather than held
    check(p.parse(encoded, 1))
