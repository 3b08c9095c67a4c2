"""Deribit: connection spec, instrument metadata and the pure parser, on real recorded frames."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import msgspec
import pytest
from conftest import shared_data, tardis_messages
from fuzzing import ANY_BYTES, ANY_TEXT, FUZZ, SUSPECTS, check_result, frame, json_values, mangle
from hypothesis import given
from hypothesis import strategies as st

from collectors.deribit import SPEC
from collectors.deribit.instruments import parse_instruments, summary_currencies
from collectors.deribit.parse import RESYNC_RETRY_NS, DeribitParser
from collectors.deribit.spec import (
    SUBSCRIBE_CHUNK,
    TEST_MESSAGE,
    resubscribe_messages,
    subscribe_messages,
    topics,
)
from collectors.instruments import Instrument
from collectors.parsing import ParseResult
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade
from flushwatch.fake import deribit as fake
from flushwatch.fake.venue_server import record_lines, recorded_frames

NS = 1_000_000  # ns per ms
BTC = Instrument("deribit", "BTC-PERPETUAL", "BTC", "inverse", 1.0, 8.0)
ETH = Instrument("deribit", "ETH-PERPETUAL", "ETH", "inverse", 1.0, 8.0)
LINK = Instrument("deribit", "LINK_USDC-PERPETUAL", "LINK", "linear", 1.0, 8.0)
SOL = Instrument("deribit", "SOL_USDC-PERPETUAL", "SOL", "linear", 1.0, 8.0)
WATCHED = [BTC, ETH, LINK, SOL]
T0 = 1_700_000_000_000  # ms

# ---------------------------------------------------------------------------------------------- helpers


def parser() -> DeribitParser:
    return DeribitParser(WATCHED, 1 << 20)


def on_channel(messages: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    found = [m for m in messages if m.get("params", {}).get("channel", "").startswith(prefix)]
    assert found, f"no {prefix} message in the fixture"
    return found


def liquidation_message(messages: list[dict[str, Any]], flag: str) -> dict[str, Any]:
    return next(m for m in on_channel(messages, "trades.BTC-PERPETUAL")
                if m["params"]["data"][0].get("liquidation") == flag)


def clean(result: ParseResult) -> list[Any]:
    assert result.rejects == [] and result.acks == [] and result.replies == [], result
    return list(result.events)


def only_reject(result: ParseResult) -> tuple[str, str]:
    assert result.events == [] and result.acks == [], result
    assert len(result.rejects) == 1, result
    return result.rejects[0].reason, result.rejects[0].detail


@pytest.fixture(scope="module")
def tardis() -> list[dict[str, Any]]:
    return tardis_messages("deribit.ndjson")


# ------------------------------------------------------------------------------------------------- spec


def test_topics_keep_an_instruments_channels_together_on_100ms() -> None:
    assert topics([BTC, LINK]) == [
        "ticker.BTC-PERPETUAL.100ms", "trades.BTC-PERPETUAL.100ms", "book.BTC-PERPETUAL.100ms",
        "ticker.LINK_USDC-PERPETUAL.100ms", "trades.LINK_USDC-PERPETUAL.100ms", "book.LINK_USDC-PERPETUAL.100ms",
    ]
    assert SPEC.max_topics_per_connection % 3 == 0  # a connection never splits an instrument


def test_subscribe_messages_set_the_heartbeat_first_then_chunk_with_increasing_ids() -> None:
    channels = [f"trades.X{i}-PERPETUAL.100ms" for i in range(SUBSCRIBE_CHUNK + 5)]
    messages = [json.loads(m) for m in subscribe_messages(channels, 7)]
    assert messages[0] == {"jsonrpc": "2.0", "id": 7, "method": "public/set_heartbeat", "params": {"interval": 10}}
    assert [m["id"] for m in messages] == [7, 8, 9]
    assert [m["method"] for m in messages[1:]] == ["public/subscribe"] * 2
    assert [c for m in messages[1:] for c in m["params"]["channels"]] == channels
    assert len(messages[1]["params"]["channels"]) == SUBSCRIBE_CHUNK


def test_spec_exports_what_the_generic_collector_needs() -> None:
    assert (SPEC.name, SPEC.coverage, SPEC.ws_url) == ("deribit", "complete", "wss://www.deribit.com/ws/api/v2")
    assert SPEC.heartbeat is not None
    assert json.loads(SPEC.heartbeat.message())["method"] == "public/test"
    assert isinstance(SPEC.parser([BTC], 1024), DeribitParser)
    assert [json.loads(m)["method"] for m in resubscribe_messages("book.BTC-PERPETUAL.100ms")] == [
        "public/unsubscribe", "public/subscribe"]


# ----------------------------------------------------------------------------------------------- trades


def test_trades_inverse_amount_is_usd(tardis: list[dict[str, Any]]) -> None:
    first = on_channel(tardis, "trades.BTC-PERPETUAL")[0]
    a, b = clean(parser().parse(frame(first), 42))
    assert isinstance(a, Trade) and isinstance(b, Trade)
    assert (a.venue, a.symbol, a.asset, a.side, a.price) == ("deribit", "BTC-PERPETUAL", "BTC", "sell", 9598.5)
    assert a.size == pytest.approx(2000 / 9598.5)  # 2000 USD at 9598.5
    assert a.notional_usd == pytest.approx(2000.0)
    assert b.size == pytest.approx(50 / 9598.5)
    assert (a.ts_event, a.ts_recv) == (1567296022565 * NS, 42)


def test_trades_linear_amount_is_coins() -> None:
    msg = fake.trades_frame("SOL_USDC-PERPETUAL", [fake.trade("SOL_USDC-PERPETUAL", 5, 150.0, 2.5, "buy", T0)])
    [t] = clean(parser().parse(msg, 1))
    assert (t.size, t.price, t.side, t.notional_usd) == (2.5, 150.0, "buy", 375.0)


def test_a_long_liquidated_taker_sell_flagged_t(tardis: list[dict[str, Any]]) -> None:
    """2020-03-13 00:07:24 UTC: a taker sold 1120 USD into the bid and the taker was the liquidated one."""
    msg = liquidation_message(tardis, "T")
    trade, liq = clean(parser().parse(frame(msg), 1))
    assert isinstance(trade, Trade) and isinstance(liq, Liquidation)
    assert (trade.side, liq.side) == ("sell", "long")
    assert (liq.price, liq.size) == (4469.5, pytest.approx(1120 / 4469.5))
    assert liq.notional_usd == pytest.approx(1120.0)
    assert liq.ts_event == 1584058044032 * NS


def test_maker_liquidated_is_the_opposite_of_the_taker(tardis: list[dict[str, Any]]) -> None:
    """'M': a taker buy met the liquidated maker's sell, which closed a long."""
    msg = liquidation_message(tardis, "M")
    trade, liq = clean(parser().parse(frame(msg), 1))
    assert (trade.side, liq.side, liq.size) == ("buy", "long", pytest.approx(2500 / 4458.5))


@pytest.mark.parametrize(("flag", "direction", "sides"), [
    ("T", "buy", ["short"]), ("M", "sell", ["short"]),
    ("MT", "sell", ["long", "short"]), ("MT", "buy", ["short", "long"]),
])
def test_liquidation_flags(flag: str, direction: str, sides: list[str]) -> None:
    msg = fake.trades_frame("BTC-PERPETUAL", [fake.trade("BTC-PERPETUAL", 9, 50_000.0, 1000.0, direction, T0, flag)])
    trade, *liqs = clean(parser().parse(msg, 1))
    assert trade.side == direction
    assert [liq.side for liq in liqs] == sides
    assert all(liq.size == trade.size == pytest.approx(0.02) for liq in liqs)


def test_unknown_liquidation_flag_keeps_the_trade_and_counts_the_flag() -> None:
    msg = fake.trades_frame("BTC-PERPETUAL", [fake.trade("BTC-PERPETUAL", 9, 50_000.0, 1000.0, "sell", T0, "X")])
    result = parser().parse(msg, 1)
    assert [type(e) for e in result.events] == [Trade]
    assert [r.reason for r in result.rejects] == ["bad_value"]


def test_duplicate_and_stale_trades_are_dropped(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    first = frame(on_channel(tardis, "trades.BTC-PERPETUAL")[0])
    assert len(clean(p.parse(first, 1))) == 2
    again = p.parse(first, 2)
    assert again.events == [] and [r.reason for r in again.rejects] == ["stale", "duplicate"]


@pytest.mark.parametrize(("field", "value"), [("price", 0), ("price", -1.5), ("amount", 0), ("amount", -10),
                                              ("direction", "hold"), ("timestamp", 0)])
def test_bad_trade_values_are_rejected_item_by_item(field: str, value: Any) -> None:
    good = fake.trade("BTC-PERPETUAL", 1, 50_000.0, 1000.0, "sell", T0)
    bad = fake.trade("BTC-PERPETUAL", 2, 50_000.0, 1000.0, "sell", T0) | {field: value}
    result = parser().parse(fake.trades_frame("BTC-PERPETUAL", [good, bad]), 1)
    assert [type(e) for e in result.events] == [Trade]
    assert [r.reason for r in result.rejects] == ["bad_value"]


# ----------------------------------------------------------------------------------------------- ticker


def test_ticker_gives_funding_per_8h_and_one_side_open_interest(tardis: list[dict[str, Any]]) -> None:
    first, second = on_channel(tardis, "ticker.BTC-PERPETUAL")
    mark, oi = clean(parser().parse(frame(first), 3))
    assert isinstance(mark, FundingMark) and isinstance(oi, OpenInterest)
    assert (mark.mark_price, mark.index_price, mark.funding_rate) == (10094.1, 10091.15, 0.00016281)
    assert (mark.funding_interval_h, mark.funding_8h, mark.next_funding_ts) == (8.0, 0.00016281, 0)
    assert mark.funding_annual == pytest.approx(0.00016281 * 1095)
    assert mark.ts_event == oi.ts_event == 1564617604229 * NS
    assert oi.oi_usd == 66128281  # inverse: USD contracts
    assert oi.oi_base == pytest.approx(66128281 / 10094.1)
    negative, _ = clean(parser().parse(frame(second), 3))
    assert negative.funding_8h == pytest.approx(-8.477e-05)


def test_linear_ticker_open_interest_is_coins() -> None:
    msg = fake.ticker_frame("SOL_USDC-PERPETUAL", T0, mark=150.0, index=149.9, open_interest=2000.0,
                            funding_8h=-0.0001)
    mark, oi = clean(parser().parse(msg, 1))
    assert (oi.oi_base, oi.oi_usd) == (2000.0, 300_000.0)
    assert mark.funding_8h == -0.0001


def test_ticker_duplicates_bad_values_and_unknown_symbols(tardis: list[dict[str, Any]]) -> None:
    p = parser()
    first = frame(on_channel(tardis, "ticker.BTC-PERPETUAL")[0])
    p.parse(first, 1)
    assert only_reject(p.parse(first, 2))[0] == "duplicate"
    option = on_channel(tardis, "ticker.BTC-8JUN20-8750-P")[0]
    assert only_reject(p.parse(frame(option), 1)) == ("unknown_symbol", "BTC-8JUN20-8750-P")
    for key, value in (("mark_price", 0), ("index_price", -1)):
        bad = copy.deepcopy(on_channel(tardis, "ticker.BTC-PERPETUAL")[1])
        bad["params"]["data"][key] = value
        assert only_reject(parser().parse(frame(bad), 1))[0] == "bad_value"
    no_oi = copy.deepcopy(on_channel(tardis, "ticker.BTC-PERPETUAL")[1])
    no_oi["params"]["data"]["open_interest"] = 0
    result = parser().parse(frame(no_oi), 1)
    assert [type(e) for e in result.events] == [FundingMark] and [r.reason for r in result.rejects] == ["bad_value"]


# ------------------------------------------------------------------------------------------------- book


def test_book_snapshot_of_an_inverse_perpetual_sums_usd(tardis: list[dict[str, Any]]) -> None:
    snapshot = on_channel(tardis, "book.ETH-PERPETUAL")[0]  # 2019: no "type", no prev_change_id
    [depth] = clean(parser().parse(frame(snapshot), 1))
    assert isinstance(depth, Depth)
    assert depth.mid == pytest.approx((217.8 + 218.6) / 2)
    assert depth.bid_usd == pytest.approx((1895 + 712,) * 3)  # amounts are USD already
    assert depth.ask_usd == pytest.approx((179803 + 7887,) * 3)
    assert depth.ts_event == 1564617600273 * NS


def test_book_gap_is_out_of_sync_and_asks_for_a_fresh_snapshot(tardis: list[dict[str, Any]]) -> None:
    """The fixture's change follows the snapshot with changes missing between (prev_change_id differs)."""
    snapshot, change = on_channel(tardis, "book.ETH-PERPETUAL")
    p = parser()
    p.parse(frame(snapshot), 1)
    gap = p.parse(frame(change), 2)
    assert only_reject(gap)[0] == "out_of_sync" and "gap" in only_reject(gap)[1]
    assert gap.replies == resubscribe_messages("book.ETH-PERPETUAL.raw")
    nxt = copy.deepcopy(change)
    nxt["params"]["data"] |= {"prev_change_id": 1776294623, "change_id": 1776294650}
    assert only_reject(later := p.parse(frame(nxt), 3))[0] == "out_of_sync" and later.replies == []
    assert p.parse(frame(nxt), 3 + RESYNC_RETRY_NS).replies  # no snapshot came: ask again
    assert isinstance(clean(p.parse(frame(snapshot), 4))[0], Depth)  # a fresh snapshot resyncs


def test_recorded_book_chains_apply_without_a_gap() -> None:
    """Every book frame of the cryptofeed recording (options: the channel and chain rules are the same)."""
    frames = [f for _, f in recorded_frames(shared_data("cryptofeed_recordings", "DERIBIT.jsonl.zst"))
              if json.loads(f).get("params", {}).get("channel", "").startswith("book.")]
    names = {json.loads(f)["params"]["data"]["instrument_name"] for f in frames}
    p = DeribitParser([Instrument("deribit", n, n[:3], "linear", 1.0, 0.0, perpetual=False) for n in names], 1 << 20)
    results = [p.parse(f, 1) for f in frames]
    assert sum(r.rejects == [] and r.replies == [] for r in results) == len(frames) == 46
    assert sum(len(r.events) for r in results) == 44  # two snapshots have an empty side: nothing to measure
    mine = [e for r, f in zip(results, frames, strict=True) if "BTC-24SEP21-8000-P" in f
            for e in r.events if isinstance(e, Depth)]
    # snapshot: bid 0.0005, ask 0.0015; then an ask at 0.001 comes, goes, comes back, goes
    assert [d.mid for d in mine[:5]] == pytest.approx([0.001, 0.00075, 0.001, 0.00075, 0.001])


def test_linear_book_in_coins_one_sided_snapshot_then_change(tardis: list[dict[str, Any]]) -> None:
    snapshot = on_channel(tardis, "book.LINK_USDC-PERPETUAL")[0]  # "type":"snapshot" and yet a prev_change_id
    p = parser()
    assert p.parse(frame(snapshot), 1) == ParseResult()  # asks empty: nothing to measure, nothing wrong
    change = fake.book_frame("LINK_USDC-PERPETUAL", 1232767970, 1654041600000, [], [("new", 7.57, 100)],
                             prev_change_id=1232767964)
    [depth] = clean(p.parse(change, 2))
    assert depth.ask_usd == pytest.approx((757.0,) * 3)  # 100 LINK at 7.57
    assert depth.bid_usd[0] == pytest.approx(7.562 * 34 + 7.561 * 329 + 7.56 * 401 + 7.559 * 133 + 7.558 * 660)


def test_book_change_without_snapshot_duplicate_bad_level_and_crossed() -> None:
    p = parser()
    change = fake.book_frame("BTC-PERPETUAL", 11, T0, [("new", 99.0, 10)], [], prev_change_id=10)
    assert only_reject(p.parse(change, 1))[0] == "out_of_sync"
    snap = fake.book_frame("BTC-PERPETUAL", 10, T0, [("new", 99.0, 1000)], [("new", 101.0, 1000)])
    assert clean(p.parse(snap, 2))
    assert clean(p.parse(change, 3))
    assert only_reject(p.parse(change, 4))[0] == "duplicate"  # the book stays in sync
    assert clean(p.parse(fake.book_frame("BTC-PERPETUAL", 12, 1_700_000_000_001, [], [("delete", 101.0, 0)],
                                         prev_change_id=11), 5)) == []  # one-sided now: no Depth, no reject
    for level in (("new", 0.0, 5), ("new", 100.0, -5), ("upsert", 100.0, 5)):
        q = parser()
        q.parse(snap, 1)
        bad = q.parse(fake.book_frame("BTC-PERPETUAL", 11, T0, [level], [], prev_change_id=10), 2)
        assert only_reject(bad)[0] == "bad_value" and bad.replies
    q = parser()
    q.parse(snap, 1)
    crossed = q.parse(fake.book_frame("BTC-PERPETUAL", 11, T0, [("new", 102.0, 5)], [],
                                      prev_change_id=10), 2)
    assert only_reject(crossed)[0] == "out_of_sync" and crossed.replies


# ------------------------------------------------------------------------------------- answers, control


def test_subscribe_ack_from_the_recording_and_other_answers() -> None:
    ack = next(f for _, f in recorded_frames(shared_data("cryptofeed_recordings", "DERIBIT.jsonl.zst"))
               if '"result"' in f)
    p = parser()
    assert p.parse(ack, 1) == ParseResult(acks=[0])
    assert p.parse(fake.answer(1, "ok"), 1) == ParseResult(acks=[1])  # set_heartbeat
    assert p.parse(fake.answer(0, {"version": "1.2.26"}), 1) == ParseResult()  # public/test: alive, not an ack
    empty = p.parse(fake.answer(4, []), 1)
    assert empty.acks == [4] and [r.reason for r in empty.rejects] == ["venue_error"]
    err = p.parse(fake.error(5, 13778, "raw_subscriptions_not_available_for_unauthorized"), 1)
    assert only_reject(err) == ("venue_error",
                                "request 5: code 13778: raw_subscriptions_not_available_for_unauthorized")
    assert only_reject(p.parse(fake.error(None, 11050, "bad_request", "invalid json"), 1))[0] == "venue_error"


def test_test_request_is_answered_with_public_test() -> None:
    p = parser()
    assert p.parse(fake.TEST_REQUEST, 1) == ParseResult(replies=[TEST_MESSAGE])
    assert json.loads(TEST_MESSAGE) == {"jsonrpc": "2.0", "id": 0, "method": "public/test", "params": {}}
    assert p.parse(b'{"params":{"type":"heartbeat"},"method":"heartbeat","jsonrpc":"2.0"}', 1) == ParseResult()
    assert only_reject(p.parse(b'{"params":{"type":"other"},"method":"heartbeat"}', 1))[0] == "unknown_type"


def test_unknown_channels_garbage_and_oversized(tardis: list[dict[str, Any]]) -> None:
    quote = on_channel(tardis, "quote.BTC-PERPETUAL")[0]
    assert only_reject(parser().parse(frame(quote), 1)) == ("unknown_type", "quote.BTC-PERPETUAL")
    assert only_reject(parser().parse(b"not json", 1))[0] == "malformed"
    assert only_reject(parser().parse(b'{"jsonrpc":"2.0"}', 1))[0] == "malformed"
    assert only_reject(parser().parse(b'{"method":"subscription"}', 1))[0] == "malformed"
    assert only_reject(parser().parse(b'{"method":"subscription","params":{"channel":"trades.X.100ms","data":[]}}',
                                      1))[0] == "malformed"
    big = fake.trades_frame("BTC-PERPETUAL", [fake.trade("BTC-PERPETUAL", i, 1.0, 1.0, "buy", 1) for i in range(50)])
    assert only_reject(DeribitParser(WATCHED, 1024).parse(big, 1))[0] == "oversized"


# ------------------------------------------------------------------------------------------ instruments


def recorded_http() -> dict[str, bytes]:
    """The recording's ``get_instruments?currency=<C>`` answers, by currency."""
    bodies = {}
    for line in record_lines(shared_data("cryptofeed_recordings", "DERIBIT.jsonl.zst")):
        record = json.loads(line)
        if record.get("t") == "http":
            bodies[record["url"].split("currency=")[1].split("&")[0]] = record["data"].encode()
    return bodies


def test_instruments_from_recorded_get_instruments_answers() -> None:
    bodies = recorded_http()
    sol = {i.symbol: i for i in parse_instruments(bodies["SOL"])}
    usdc = {i.symbol: i for i in parse_instruments(bodies["USDC"])}
    perp = sol["SOL-PERPETUAL"]
    assert (perp.asset, perp.kind, perp.contract_size, perp.funding_interval_h, perp.perpetual, perp.active) == (
        "SOL", "inverse", 1.0, 8.0, True, True)  # contract_size 10 USD only sets the increment
    assert sol["SOL-24JUN22"].perpetual is False and sol["SOL-24JUN22"].funding_interval_h == 0.0
    assert not any("-P" in s[-2:] or "-C" in s[-2:] for s in sol)  # options left out
    linear = usdc["SOL_USDC-PERPETUAL"]
    assert (linear.asset, linear.kind, linear.contract_size) == ("SOL", "linear", 1.0)
    btc = {i.symbol: i for i in parse_instruments(bodies["BTC"])}  # 2021: no settlement_currency, no type
    assert btc["BTC-PERPETUAL"].kind == "inverse" and btc["BTC-PERPETUAL"].asset == "BTC"
    assert summary_currencies(bodies["SOL"]) == ["SOL"] and summary_currencies(bodies["USDC"]) == ["USDC"]
    assert summary_currencies(bodies["BTC"]) == ["BTC"]


def test_book_summaries_rank_by_usd_open_interest_and_volume() -> None:
    body = fake.DeribitProtocol([BTC, SOL], marks={"SOL_USDC-PERPETUAL": 150.0}).rest(
        "GET", "/api/v2/public/get_instruments", {"currency": "any", "kind": "future"}, b"")
    assert body is not None and body[0] == 200
    summary = {"result": [
        {"instrument_name": "BTC-PERPETUAL", "open_interest": 5e8, "mark_price": 60_000.0, "volume_usd": 2e9},
        {"instrument_name": "SOL_USDC-PERPETUAL", "open_interest": 1000.0, "mark_price": 150.0, "volume": 20.0,
         "volume_usd": None},
        {"instrument_name": "NOT-LISTED", "open_interest": 1.0, "mark_price": 1.0},
    ]}
    out = {i.symbol: i for i in parse_instruments(body[1], msgspec.json.encode(summary))}
    assert (out["BTC-PERPETUAL"].oi_usd, out["BTC-PERPETUAL"].volume_usd_24h) == (5e8, 2e9)  # USD already
    assert (out["SOL_USDC-PERPETUAL"].oi_usd, out["SOL_USDC-PERPETUAL"].volume_usd_24h) == (150_000.0, 3000.0)
    with pytest.raises(msgspec.DecodeError):
        parse_instruments(fake.error(None, -32602, "Invalid params").encode())


# ------------------------------------------------------------------------------------------- fuzzing


def check(result: ParseResult) -> None:
    """Sane, with open interest above zero (a frame may carry nothing: an answer without events)."""
    check_result(result, positive=["index_price", "oi_base", "oi_usd"])


@FUZZ
@given(ANY_BYTES)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    result = parser().parse(data, 1)
    check(result)
    assert result.rejects  # bytes that happen to be a valid message are vanishingly rare; none were silent


@FUZZ
@given(ANY_TEXT)
def test_fuzz_arbitrary_text(data: str) -> None:
    check(parser().parse(data, 1))


VALUES = json_values([*SUSPECTS, "T", "M", "MT", "sell", "snapshot", "change", "delete", "BTC-PERPETUAL",
                      "test_request"])


def real_frames() -> list[dict[str, Any]]:
    messages = tardis_messages("deribit.ndjson")
    linear_trade = json.loads(fake.trades_frame("SOL_USDC-PERPETUAL", [
        fake.trade("SOL_USDC-PERPETUAL", 3, 150.0, 2.0, "sell", T0, "MT")]))
    return [*messages, linear_trade, json.loads(fake.TEST_REQUEST), json.loads(fake.answer(1, ["x"])),
            json.loads(fake.error(2, 10028, "too_many_requests"))]


def nested(value: Any) -> Any:
    return [[[[{"x": value}]]]]


@FUZZ
@given(st.data())
def test_fuzz_mangled_real_frames(data: st.DataObject) -> None:
    encoded = mangle(data, data.draw(st.sampled_from(real_frames())), VALUES, nest=nested)
    p = parser()
    snapshot = on_channel(tardis_messages("deribit.ndjson"), "book.ETH-PERPETUAL")[0]
    p.parse(frame(snapshot), 1)  # so mangled changes meet a live book
    check(p.parse(encoded, 2))


def test_every_fixture_message_is_accounted_for(tardis: list[dict[str, Any]]) -> None:
    reasons: Counter[str] = Counter()
    p = parser()
    for message in tardis:
        result = p.parse(frame(message), 1)
        check(result)
        assert result.events or result.rejects or result.acks or result.replies or "LINK_USDC" in str(message)
        reasons.update(r.reason for r in result.rejects)
    assert set(reasons) <= {"unknown_symbol", "unknown_type", "out_of_sync"}
