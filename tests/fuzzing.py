"""Fuzzing machinery shared by the venue parser tests (tests/test_*_parse.py).

Each venue file keeps what is its own: the real frames to mangle, how to prime a parser, the venue words the
random JSON draws from, and any assertion that holds for that venue only. What is the same everywhere lives
here: the settings profile, the random inputs, how a real frame is mangled, and the invariants every parse
result must keep.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.parsing import ParseResult
from collectors.rejects import REASONS
from flushwatch.events import Depth, OpenInterest

FUZZ = hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
"""The profile of every fuzz test of a parser."""

ANY_BYTES = st.binary(max_size=512)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=512)  # surrogates included

SUSPECTS = ("0", "-1", "NaN", "inf", "1e400", "")
"""Strings that look like numbers a parser must refuse (or take with care)."""


def frame(message: Any) -> bytes:
    """``message`` as a compact JSON frame, as the venues send it."""
    return json.dumps(message, separators=(",", ":")).encode()


def json_values(words: Sequence[str], *, text_size: int = 12, width: int = 3, key_size: int = 3,
                max_leaves: int = 8, allow_infinity: bool | None = None) -> st.SearchStrategy[Any]:
    """Random JSON: null, booleans, integers past int64, floats, short text and ``words`` (the venue's own
    strings and the numbers it must refuse), nested in lists and objects of up to ``width`` items."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=allow_infinity)
        | st.text(max_size=text_size)
        | st.sampled_from(list(words)),
        lambda inner: st.lists(inner, max_size=width)
        | st.dictionaries(st.text(max_size=key_size), inner, max_size=width),
        max_leaves=max_leaves,
    )


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into nested JSON (``("data", 0, "p")``), the root excluded."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


def anywhere(data: st.DataObject, message: Any) -> tuple[Any, Any]:
    """A random place inside ``message``: the container and its key (or index) at a drawn path."""
    path = data.draw(st.sampled_from(paths(message)))
    parent = message
    for key in path[:-1]:
        parent = parent[key]
    return parent, path[-1]


def truncated(data: st.DataObject, encoded: bytes) -> bytes:
    """``encoded`` cut at a drawn length (all of it, or nothing, included)."""
    return encoded[: data.draw(st.integers(0, len(encoded)))]


def mangle(data: st.DataObject, message: Any, values: st.SearchStrategy[Any],
           nest: Callable[[Any], Any] | None = None) -> bytes:
    """A real ``message`` (not changed) encoded with one random change: a value somewhere inside replaced by
    one of ``values`` or deleted, the encoded frame truncated, or (given ``nest``) a value wrapped by it."""
    message = copy.deepcopy(message)
    parent, key = anywhere(data, message)
    action = data.draw(st.sampled_from(["replace", "delete", "truncate", *(["nest"] if nest else [])]))
    if action == "replace":
        parent[key] = data.draw(values)
    elif action == "delete":
        del parent[key]
    elif action == "nest":
        assert nest is not None
        parent[key] = nest(parent[key])
    encoded = frame(message)
    return truncated(data, encoded) if action == "truncate" else encoded


def mangle_many(data: st.DataObject, message: Any, values: st.SearchStrategy[Any], most: int = 3) -> bytes:
    """A real ``message`` (not changed) encoded with 1 to ``most`` values inside replaced by one of ``values``
    or deleted, then perhaps truncated."""
    message = copy.deepcopy(message)
    for _ in range(data.draw(st.integers(1, most))):
        if not paths(message):
            break
        parent, key = anywhere(data, message)
        if data.draw(st.booleans()):
            parent[key] = data.draw(values)
        else:
            del parent[key]
    encoded = frame(message)
    return truncated(data, encoded) if data.draw(st.booleans()) else encoded


def numbers(event: Any) -> list[float]:
    """The float fields of an event, the depth bands' tuples flattened."""
    found: list[float] = []
    for value in msgspec.structs.astuple(event):
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float):
                found.append(item)
    return found


def check_result(result: ParseResult, positive: Iterable[str] = ()) -> None:
    """Whatever a parser returns is sane: rejects have known reasons; every event carries a venue time that
    fits int64 nanoseconds, a price, size, mark price and mid (and the fields named in ``positive``) in
    (0, inf), and no other number that is NaN or infinite; open interest and the book's spread and bands are
    not negative. (Whether a frame may bring nothing at all is for each venue to say.)"""
    assert isinstance(result, ParseResult)
    assert all(r.reason in REASONS for r in result.rejects), result.rejects
    for event in result.events:
        assert 0 < event.ts_event < 2**63, event
        for name in ("price", "size", "mark_price", "mid", *positive):
            assert 0 < getattr(event, name, 1.0) < math.inf, (name, event)
        assert all(math.isfinite(v) for v in numbers(event)), event
        if isinstance(event, OpenInterest):
            assert event.oi_base >= 0 and event.oi_usd >= 0, event
        if isinstance(event, Depth):
            assert min(event.spread_bps, *event.bid_usd, *event.ask_usd) >= 0, event
