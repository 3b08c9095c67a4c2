"""The local book's depth against the plain reference: a dict of levels, sorted, cut to ``keep`` and banded by
``depth_from_levels``, after any sequence of snapshots, deltas and direct level edits.

The book keeps running ring sums instead of summing best first on every read, so its bands may differ from
the reference in the last bits; they must stay within 1e-12 relative, however long the book lives. Mid,
spread and reach come from the same prices and must be identical.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.book import Book
from flushwatch.events import DepthBands, depth_from_levels

Model = tuple[dict[float, float], dict[float, float]]

TICK_STEPS = (1e-5, 2e-4, 1e-3)
"""Relative tick sizes: 300 ticks inside the narrowest band (a deep liquid book), spread over all bands, and
mostly beyond the widest (a thin one)."""

levels = st.lists(st.tuples(st.integers(0, 300), st.one_of(st.just(0.0), st.floats(1e-6, 1e6))), max_size=250)
deltas = st.lists(st.tuples(levels.map(lambda x: x[:12]), levels.map(lambda x: x[:12])), max_size=60)
EXAMPLES = settings(max_examples=150, deadline=None)


def price(step: float, bid: bool, tick: int) -> float:
    """A bid ``tick + 1`` ticks under 100, an ask ``tick - 3`` ticks over it: the lowest asks cross the book.
    Ticks from 250 on are far out, past the widest band: they make a deep book wide, until they go."""
    offset = step * (tick + 1 if bid else tick - 3) if tick < 250 else 0.03 + 1e-3 * (tick - 250)
    return 100.0 * (1 - offset) if bid else 100.0 * (1 + offset)


def merged(side: dict[float, float], changes: list[tuple[float, float]]) -> None:
    for p, q in changes:
        if q == 0.0:
            side.pop(p, None)
        else:
            side[p] = q


def reference(model: Model, keep: int) -> DepthBands | None:
    bids, asks = model
    return depth_from_levels(sorted(bids.items(), reverse=True)[:keep], sorted(asks.items())[:keep])


def assert_same(book: Book, model: Model) -> None:
    got, want = book.depth(), reference(model, book.keep)
    if want is None or got is None:
        assert got == want
        return
    assert (got[0], got[1], got[4]) == (want[0], want[1], want[4])
    for mine, theirs in zip(got[2] + got[3], want[2] + want[3], strict=True):
        assert math.isclose(mine, theirs, rel_tol=1e-12, abs_tol=0.0), (got, want)


@EXAMPLES
@given(st.sampled_from(TICK_STEPS), st.sampled_from([1, 20, 200]), levels, levels, deltas)
def test_bands_equal_the_reference_through_snapshot_and_deltas(
        step: float, keep: int, bids: list[tuple[int, float]], asks: list[tuple[int, float]],
        changes: list[tuple[list[tuple[int, float]], list[tuple[int, float]]]]) -> None:
    book = Book(keep)
    model: Model = ({}, {})
    snapshot = [(price(step, True, t), q) for t, q in bids], [(price(step, False, t), q) for t, q in asks]
    assert book.snapshot(*snapshot)
    for side, given_levels in zip(model, snapshot, strict=True):
        merged(side, given_levels)
    assert_same(book, model)
    for delta_bids, delta_asks in changes:
        delta = [(price(step, True, t), q) for t, q in delta_bids], [(price(step, False, t), q) for t, q in delta_asks]
        assert book.update(*delta)
        for side, given_levels in zip(model, delta, strict=True):
            merged(side, given_levels)
        assert_same(book, model)


@EXAMPLES
@given(st.sampled_from(TICK_STEPS), levels, st.lists(st.tuples(st.booleans(), st.integers(0, 300),
                                                                st.one_of(st.none(), st.floats(1e-6, 1e6)))))
def test_bands_equal_the_reference_through_direct_level_edits(
        step: float, asks: list[tuple[int, float]], edits: list[tuple[bool, int, float | None]]) -> None:
    """BitMEX's parser sets and pops levels one by one (``None`` here pops), and empties a side by assigning."""
    book = Book(200)
    model: Model = ({}, {})
    ask_levels = [(price(step, False, t), q) for t, q in asks]
    assert book.snapshot([], ask_levels)
    merged(model[1], ask_levels)
    for bid, tick, size in edits:
        p = price(step, bid, tick)
        side, mine = (model[0], book.bids) if bid else (model[1], book.asks)
        if size is None:
            assert mine.pop(p, None) == side.pop(p, None)
        else:
            mine[p] = side[p] = size
        assert (len(book.bids), len(book.asks)) == (len(model[0]), len(model[1]))
        assert_same(book, model)
    book.bids = {}
    model[0].clear()
    assert not book.bids
    assert_same(book, model)


def test_bands_stay_within_bounds_over_a_long_life() -> None:
    """Tens of thousands of changes to a 200-level book, with levels that dwarf the rest coming and going (the
    running sums then lose their low bits to cancellation), read after every change."""
    rng = random.Random(20261121)
    book = Book(200)
    model: Model = ({}, {})
    step = rng.choice(TICK_STEPS)
    snapshot = ([(price(step, True, t), rng.lognormvariate(0, 2)) for t in range(200)],
                [(price(step, False, t + 3), rng.lognormvariate(0, 2)) for t in range(200)])
    assert book.snapshot(*snapshot)
    for side, given_levels in zip(model, snapshot, strict=True):
        merged(side, given_levels)
    huge: list[tuple[bool, float]] = []  # levels that dwarf the book, removed a few changes later
    for n in range(30_000):
        if n % 2_000 == 0:
            step = rng.choice(TICK_STEPS)  # prices move: edges sweep the book
        bid = rng.random() < 0.5
        level = (price(step, bid, rng.randrange(220) + (0 if bid else 3)),
                 0.0 if rng.random() < 0.25 else rng.lognormvariate(0, 2))
        if huge and rng.random() < 0.2:
            bid, gone = huge.pop()
            level = (gone, 0.0)
        elif rng.random() < 0.01:
            level = (level[0], 1e9 * (1 + rng.random()))
            huge.append((bid, level[0]))
        assert book.update([level], []) if bid else book.update([], [level])
        merged(model[0] if bid else model[1], [level])
        assert_same(book, model)


def test_a_price_jump_brings_outer_levels_inside() -> None:
    """A deep side read with levels in every band, then a mid that jumps 0.7 % onto them: all of them are
    inside the narrowest band now, however they were summed before."""
    near_bids = [(100.0 - 0.001 * i, 1.0 + i) for i in range(40)]
    far_bids = [(99.3 - 0.01 * i, 2.0 + i) for i in range(40)]
    asks = [(100.01 + 0.001 * i, 1.0) for i in range(40)]
    book, model = Book(200), (dict(near_bids + far_bids), dict(asks))
    assert book.snapshot(near_bids + far_bids, asks)
    assert_same(book, model)
    jump = [(p, 0.0) for p, _ in near_bids], [(99.32 + 0.001 * i, 1.0) for i in range(40)]
    assert book.update(*jump)
    for side, changes in zip(model, jump, strict=True):
        merged(side, changes)
    assert_same(book, model)
    depth = book.depth()
    assert depth is not None and depth[2][0] == depth[2][2]  # every bid inside 0.5 %


def test_an_overflowing_level_hides_the_depth_only_while_it_is_there() -> None:
    book = Book(200)
    assert book.snapshot([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])
    assert book.update([(98.0, 1e308)], [(102.0, 1e308)])  # 98e308 overflows
    assert book.depth() is None
    assert book.update([(98.0, 0.0)], [(102.0, 0.0)])
    assert book.depth() == depth_from_levels([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])


def test_a_bad_level_puts_the_book_out_of_sync() -> None:
    book = Book(200)
    assert book.snapshot([(100.0, 1.0)], [(101.0, 1.0)])
    assert not book.update([(math.nan, 1.0)], [])
    assert not book.synced and book.depth() is None
    assert not book.update([(100.0, 2.0)], [])  # until the next snapshot
    assert not book.snapshot([(100.0, -1.0)], [(101.0, 1.0)])
    assert book.snapshot([(100.0, 1.0)], [(101.0, math.inf)]) is False
    assert book.snapshot([(100.0, 1.0)], [(101.0, 1.0)])
    assert book.depth() == depth_from_levels([(100.0, 1.0)], [(101.0, 1.0)])


def test_the_mid_follows_the_best_prices_across_reads() -> None:
    """A read reuses the mid and band limits of the last one while the best prices are the same: a book that
    crosses, stays crossed and uncrosses again reads as the reference each time."""
    bids, asks = [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)]
    book = Book(200)
    assert book.snapshot(bids, asks)
    assert book.depth() == depth_from_levels(bids, asks)
    assert book.update([], [(99.5, 1.0)])
    assert book.depth() is None and book.depth() is None
    assert book.update([(98.0, 3.0)], [(99.5, 0.0)])
    assert book.depth() == depth_from_levels([*bids, (98.0, 3.0)], asks)


@pytest.mark.parametrize("keep", [50, 200])
def test_a_deep_side_inside_the_narrowest_band_follows_its_worst_level(keep: int) -> None:
    """More than ``SCAN_LEVELS`` levels a side, all within 0.5 % of mid (a liquid book read in rings): deltas
    that add levels beyond the worst kept one, delete it, or push it out of the kept ones, read after each."""
    bids = [(100.0 - 0.001 * i, 1.0 + i) for i in range(60)]
    asks = [(100.001 + 0.001 * i, 2.0 + 0.5 * i) for i in range(60)]
    book, model = Book(keep), (dict(bids), dict(asks))
    assert book.snapshot(bids, asks)
    assert_same(book, model)
    deltas = [
        ([(99.9, 3.0), (99.95, 0.25)], [(100.1, 4.0)]),  # beyond the worst: it moves out
        ([(99.9, 0.0), (99.941, 0.0)], [(100.1, 0.0), (100.06, 0.0)]),  # the worst deleted: it moves in
        ([(99.9995, 5.0), (99.9985, 1.5)], [(100.0005, 1.0)]),  # new best levels push the kept worst out
        ([(99.9995, 0.0)], [(100.0005, 0.0), (100.002, 7.0)]),
    ]
    for delta in deltas:
        assert book.update(*delta)
        for side, changes in zip(model, delta, strict=True):
            merged(side, changes)
        assert_same(book, model)
