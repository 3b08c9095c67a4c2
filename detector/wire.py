"""Stream entry payloads straight into the detector's columns, in one numba pass over the MessagePack bytes.

Decoding a batch into ``flushwatch.events`` structs and then reading eight attributes of each back into NumPy
(``flushwatch.streams.decode_events`` + ``detector.batch.stream_columns``) costs about a microsecond per event
in Python. ``wire_columns`` reads the payload msgspec wrote (a MessagePack array of positional event arrays,
each led by its tag) and fills the same columns, bit for bit, without an object per event.

It is a fast path, not a second decoder: whatever it does not read exactly as msgspec would -- a malformed
payload, legal forms msgspec's encoder never writes (float32, extra trailing fields, a uint64 past int64),
two NaNs multiplied or added (the result depends on operand order) -- gives ``None``, and the caller
decodes that payload with msgspec, which accepts or rejects it. So every length is checked here (numba
does no bounds checks) and an error is a return code, never an exception.

A caller that reads many payloads keeps a ``NameTable`` of the names it has numbered: a name the table holds
comes out as its number, and only the names it does not hold yet are returned as ``str`` for the caller to
number (and then teach the table), so a steady stream turns no name into a Python string.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from detector.batch import DEPTH, FUNDING, LIQ, OI, TRADE
from flushwatch.events import Depth, FundingMark, Liquidation, OpenInterest, Trade


class WireColumns(NamedTuple):
    kind: np.ndarray
    """int8, the ``detector.batch`` kind codes."""
    asset: np.ndarray
    """int32, the asset's number (``wire_columns`` says which)."""
    venue: np.ndarray
    """int32, the venue's number."""
    ts: np.ndarray
    """int64, ``ts_event`` in ns."""
    recv: np.ndarray
    """int64, ``ts_recv`` in ns."""
    v0: np.ndarray
    v1: np.ndarray
    v2: np.ndarray
    """float64, as ``detector.batch.stream_columns`` defines them."""
    asset_names: list[str]
    """Distinct assets new to the caller's ``NameTable``, in order of first appearance in the payload."""
    venue_names: list[str]
    """Distinct venues new to it, in order of first appearance."""


ASSET, VENUE = 0, 1
"""The two name tables, numbered separately."""

_CLASSES = {TRADE: Trade, LIQ: Liquidation, FUNDING: FundingMark, OI: OpenInterest, DEPTH: Depth}
_TAGS = np.array([ord(str(_CLASSES[code].__struct_config__.tag)) for code in range(5)], np.uint8)
"""The one-letter tag of each kind code."""
_ARITY = np.array([1 + len(_CLASSES[code].__struct_fields__) for code in range(5)], np.int64)
"""Array length of each kind (the tag, then every field): an event of another length is left to msgspec,
so a field added to a struct makes this path fall back rather than misread."""
_FLOATS = np.array([2, 2, 6, 2, 9], np.int64)
"""Floats after the two times, by kind code: Trade and Liquidation then end with a side, FundingMark with
``next_funding_ts``; Depth's count takes in the six of ``bid_usd`` and ``ask_usd``."""
_BUY, _SELL, _LONG, _SHORT = (np.frombuffer(side.encode(), np.uint8) for side in ("buy", "sell", "long", "short"))

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_BYTE = np.uint64(8)
_SIGN = np.uint64(63)

# Every reader takes a position and returns the next one, -1 when what is there is not what it reads; a
# reader given -1 returns -1, so a failure carries through a chain of reads to the check at its end.


@njit(cache=True, nogil=True, inline="always")
def _be(buf: np.ndarray, pos: int, width: int) -> np.uint64:
    """The big-endian unsigned integer of ``width`` bytes at ``pos`` (the caller checked the length)."""
    value = np.uint64(0)
    for j in range(width):
        value = (value << _BYTE) | np.uint64(buf[pos + j])
    return value


@njit(cache=True, nogil=True, inline="always")
def _array(buf: np.ndarray, pos: int) -> tuple[int, int]:
    """``(length, next position)`` of an array header."""
    if not 0 <= pos < buf.size:
        return 0, -1
    code = buf[pos]
    if 0x90 <= code <= 0x9F:
        return int(code & 0x0F), pos + 1
    width = 2 if code == 0xDC else 4 if code == 0xDD else 0
    if width == 0 or pos + 1 + width > buf.size:
        return 0, -1
    return int(np.int64(_be(buf, pos + 1, width))), pos + 1 + width


@njit(cache=True, nogil=True, inline="always")
def _str(buf: np.ndarray, pos: int) -> tuple[int, int]:
    """``(start, length)`` of a string, its bytes unchecked; the next position is ``start + length``, and a
    start of -1 (length 0) says there is no string."""
    if not 0 <= pos < buf.size:
        return -1, 0
    code = buf[pos]
    if 0xA0 <= code <= 0xBF:
        start, length = pos + 1, int(code & 0x1F)
    else:
        width = 1 if code == 0xD9 else 2 if code == 0xDA else 4 if code == 0xDB else 0
        if width == 0 or pos + 1 + width > buf.size:
            return -1, 0
        start, length = pos + 1 + width, int(np.int64(_be(buf, pos + 1, width)))
    if start + length > buf.size:
        return -1, 0
    return start, length


@njit(cache=True, nogil=True, inline="always")
def _int(buf: np.ndarray, pos: int) -> tuple[int, int]:
    """``(value, next position)`` of an integer that fits int64: msgspec takes a larger uint64, but it
    cannot fill an int64 column."""
    if not 0 <= pos < buf.size:
        return 0, -1
    code = buf[pos]
    if code <= 0x7F:
        return int(code), pos + 1
    if code >= 0xE0:
        return int(code) - 256, pos + 1
    if not 0xCC <= code <= 0xD3:
        return 0, -1
    width = 1 << ((code - 0xCC) & 3)  # 1, 2, 4, 8 bytes: uint8..uint64 (0xcc..0xcf), int8..int64 (0xd0..0xd3)
    if pos + 1 + width > buf.size:
        return 0, -1
    raw = _be(buf, pos + 1, width)
    if code <= 0xCF:
        if raw >> _SIGN:
            return 0, -1
        return int(np.int64(raw)), pos + 1 + width
    shift = 64 - 8 * width
    return int(np.int64(raw << np.uint64(shift)) >> shift), pos + 1 + width


@intrinsic
def _as_float(typingctx, bits):
    """The float64 whose bits are the uint64 ``bits``, NaN payloads included (numba has no such cast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@njit(cache=True, nogil=True, inline="always")
def _float(buf: np.ndarray, pos: int) -> tuple[float, int]:
    """``(value, next position)`` of a float64 or an integer (msgspec takes both, and converts an integer
    as C does)."""
    if 0 <= pos < buf.size and buf[pos] == 0xCB:
        if pos + 9 > buf.size:
            return 0.0, -1
        return _as_float(_be(buf, pos + 1, 8)), pos + 9
    value, pos = _int(buf, pos)
    return float(value), pos


@njit(cache=True, nogil=True)
def _utf8(buf: np.ndarray, start: int, length: int) -> bool:
    """Strict UTF-8, as Python's codec (and so msgspec) takes it: no overlong forms, surrogates, or code
    points past U+10FFFF."""
    end = start + length
    i = start
    while i < end:
        lead = buf[i]
        if lead < 0x80:
            i += 1
            continue
        if 0xC2 <= lead <= 0xDF:
            tail, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= lead <= 0xEF:
            tail, low, high = 2, 0xA0 if lead == 0xE0 else 0x80, 0x9F if lead == 0xED else 0xBF
        elif 0xF0 <= lead <= 0xF4:
            tail, low, high = 3, 0x90 if lead == 0xF0 else 0x80, 0x8F if lead == 0xF4 else 0xBF
        else:
            return False
        if i + tail >= end or not low <= buf[i + 1] <= high:
            return False
        for j in range(i + 2, i + tail + 1):
            if not 0x80 <= buf[j] <= 0xBF:
                return False
        i += tail + 1
    return True


@njit(cache=True, nogil=True, inline="always")
def _same(a: np.ndarray, a_start: int, b: np.ndarray, b_start: int, length: int) -> bool:
    j = 0
    while j < length and a[a_start + j] == b[b_start + j]:
        j += 1
    return j == length


@njit(cache=True, nogil=True, inline="always")
def _side(buf: np.ndarray, pos: int, up: np.ndarray, down: np.ndarray) -> tuple[float, int]:
    """``(+1.0, next position)`` for the string ``up``, ``(-1.0, ...)`` for ``down``: the two values of a
    side ``Literal``; any other string is not read."""
    start, length = _str(buf, pos)
    if start >= 0:
        if length == up.size and _same(buf, start, up, 0, length):
            return 1.0, start + length
        if length == down.size and _same(buf, start, down, 0, length):
            return -1.0, start + length
    return 0.0, -1


@njit(cache=True, nogil=True, inline="always")
def _fnv(buf: np.ndarray, start: int, length: int) -> np.uint64:
    h = _FNV_OFFSET
    for j in range(start, start + length):
        h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
    return h


@njit(cache=True, nogil=True, inline="always")
def _kind(buf: np.ndarray, start: int, length: int) -> int:
    """The kind code of a tag string, or -1."""
    if length == 1:
        for code in range(_TAGS.size):
            if buf[start] == _TAGS[code]:
                return code
    return -1


@njit(cache=True, nogil=True, inline="always")
def _find(slots: np.ndarray, hashes: np.ndarray, spans: np.ndarray, store: np.ndarray, which: int, h: np.uint64,
          buf: np.ndarray, start: int, size: int) -> tuple[int, int]:
    """``(slot, number)`` of the name ``buf[start : start + size]`` in table ``which`` of an open-addressing
    table whose name ``number`` hashes to ``hashes[which, number]`` and is ``store[spans[which, number]]``
    (start, length); ``number`` is -1 when the name is not there, and ``slot`` then the free slot it takes.
    Bytes are compared on every hash match, so two names never share a number."""
    mask = np.uint64(slots.shape[1] - 1)
    slot = np.int64(h & mask)
    number = slots[which, slot]
    while number >= 0 and (hashes[which, number] != h or spans[which, number, 1] != size
                           or not _same(store, spans[which, number, 0], buf, start, size)):
        slot = np.int64(np.uint64(slot + 1) & mask)
        number = slots[which, slot]
    return int(slot), number


@njit(cache=True, nogil=True, inline="always")
def _place(slots: np.ndarray, which: int, h: np.uint64, number: int) -> None:
    """Put ``number``, a name not in table ``which`` yet, in the first free slot from its hash ``h``."""
    mask = np.uint64(slots.shape[1] - 1)
    slot = np.int64(h & mask)
    while slots[which, slot] >= 0:
        slot = np.int64(np.uint64(slot + 1) & mask)
    slots[which, slot] = number


@njit(cache=True, nogil=True)
def _columns(buf: np.ndarray, held: np.ndarray, held_hashes: np.ndarray, held_spans: np.ndarray,
             held_text: np.ndarray, key: np.uint64, asset_base: int, venue_base: int
             ) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                        np.ndarray, np.ndarray, np.ndarray]:
    """``(ok, kind, asset, venue, ts, recv, v0, v1, v2, text, ends)``. A name the ``held`` table (a
    ``NameTable``'s arrays, ``key`` its hash mask) holds comes out as its number there; the others are new:
    name table ``t`` (``ASSET``, ``VENUE``) has ``ends[t, 0]`` of them, in order of first appearance, joined by
    NULs in ``text[t]``, new name ``i`` ending at ``ends[t, 1 + i]`` and numbered ``i`` past the table's
    ``asset_base`` or ``venue_base``.

    One function, its helpers inlined by numba: a call that passes arrays pays their reference counts, and
    calls per field made this path five times slower (~230 ns an event instead of ~45)."""
    n, pos = _array(buf, 0)
    if n > buf.size:  # every event takes bytes: a larger count is a lie, not an allocation to make
        n, pos = 0, -1
    kind = np.empty(n, np.int8)
    asset, venue = np.empty(n, np.int32), np.empty(n, np.int32)
    ts, recv = np.empty(n, np.int64), np.empty(n, np.int64)
    v0, v1, v2 = np.empty(n), np.empty(n), np.empty(n)
    # New names by first appearance: open addressing (at most half full) from the FNV-1a hash to the name's
    # number in the entry. The previous name is tried first: a batch mostly repeats one venue, and assets come
    # in runs.
    slots = 8
    while slots < 2 * n:
        slots *= 2
    table = np.full((2, slots), -1, np.int32)
    hashes = np.empty((2, n), np.uint64)
    spans = np.empty((2, n, 2), np.int64)
    last_start, last_size, last_number = np.zeros(2, np.int64), np.full(2, -1, np.int64), np.zeros(2, np.int64)
    text, ends = np.empty((2, buf.size + n), np.uint8), np.zeros((2, n + 1), np.int64)
    values = np.empty(9)
    row = 0
    while pos >= 0 and row < n:
        length, pos = _array(buf, pos)
        start, size = _str(buf, pos)
        code = _kind(buf, start, size)
        if code < 0 or length != _ARITY[code]:
            break
        kind[row] = code
        pos = start + size
        for field in range(3):  # venue, symbol, asset
            start, size = _str(buf, pos)
            pos = start + size
            if start < 0 or (field == 1 and not _utf8(buf, start, size)):  # msgspec checks the symbol too
                pos = -1
                break
            if field == 1:
                continue
            which = VENUE if field == 0 else ASSET
            if last_size[which] != size or not _same(buf, last_start[which], buf, start, size):
                h = _fnv(buf, start, size)
                _, number = _find(held, held_hashes, held_spans, held_text, which, h & key, buf, start, size)
                if number < 0:
                    slot, number = _find(table, hashes, spans, buf, which, h, buf, start, size)
                    if number < 0:
                        number = ends[which, 0]
                        ends[which, 0] += 1
                        table[which, slot] = number
                        hashes[which, number] = h
                        spans[which, number, 0], spans[which, number, 1] = start, size
                        at = ends[which, number] + 1 if number else 0
                        for j in range(size):  # a slice assignment would copy through a temporary
                            text[which, at + j] = buf[start + j]
                        text[which, at + size] = 0
                        ends[which, number + 1] = at + size
                    number += venue_base if which == VENUE else asset_base
                last_start[which], last_size[which], last_number[which] = start, size, number
            (venue if which == VENUE else asset)[row] = last_number[which]
        ts[row], pos = _int(buf, pos)
        recv[row], pos = _int(buf, pos)
        for j in range(_FLOATS[code]):  # one call site: each inlined read is compile time
            if code == DEPTH and (j == 2 or j == 5):  # bid_usd, ask_usd
                length, pos = _array(buf, pos)
                if length != 3:
                    pos = -1
            values[j], pos = _float(buf, pos)
        if code in (TRADE, LIQ):
            side, pos = _side(buf, pos, _BUY if code == TRADE else _LONG, _SELL if code == TRADE else _SHORT)
            price, amount = values[0], values[1]
            if price != price and amount != amount:
                break  # two NaNs: which payload a multiply keeps depends on operand order, numpy's may differ
            v0[row], v1[row], v2[row] = price, price * amount, side
        elif code == FUNDING:
            _, pos = _int(buf, pos)  # next_funding_ts
            v0[row], v1[row], v2[row] = values[0], values[1], values[4]  # mark, index, funding_8h
        elif code == OI:
            v0[row], v1[row], v2[row] = values[1], values[0], 0.0  # oi_usd, oi_base
        else:
            bid, ask = values[3], values[6]  # the 1 % bands
            if bid != bid and ask != ask:
                break  # as for a multiply: the sum of two NaNs depends on operand order
            v0[row], v1[row], v2[row] = values[0], bid + ask, values[1]  # mid, spread_bps
        row += 1
    return row == n and pos == buf.size, kind, asset, venue, ts, recv, v0, v1, v2, text, ends


def _names(text: np.ndarray, ends: np.ndarray) -> list[str]:
    """The names of one table, their UTF-8 checked. One decode and a split of the NUL-joined names cost a
    seventh of a decode per name; a NUL is never part of another character, so the joined text is valid
    exactly when every name is. Raises ``UnicodeDecodeError``."""
    stops = ends[1 : 1 + ends[0]].tolist()
    if not stops:
        return []
    joined = text[: stops[-1]].tobytes()
    names = joined.decode().split("\x00")
    if len(names) == len(stops):
        return names
    starts = [0, *(stop + 1 for stop in stops[:-1])]
    return [joined[start:stop].decode() for start, stop in zip(starts, stops, strict=True)]  # names with a NUL


@njit(cache=True, nogil=True)
def _learn(slots: np.ndarray, hashes: np.ndarray, spans: np.ndarray, text: np.ndarray, which: int, used: int,
           key: np.uint64, joined: np.ndarray, lengths: np.ndarray, numbers: np.ndarray) -> None:
    """Put the names ``joined`` (``lengths`` bytes each, none in table ``which`` yet) in it as ``numbers``, their
    bytes from ``text[used]`` on; the caller made room."""
    start = 0
    for i in range(lengths.size):
        size, number = lengths[i], numbers[i]
        h = _fnv(joined, start, size) & key
        for j in range(size):
            text[used + j] = joined[start + j]
        hashes[which, number] = h
        spans[which, number, 0], spans[which, number, 1] = used, size
        _place(slots, which, h, number)
        start += size
        used += size


@njit(cache=True, nogil=True)
def _rehashed(hashes: np.ndarray, spans: np.ndarray, size: int) -> np.ndarray:
    """Slots for both tables, ``size`` each, holding every name ``spans`` holds."""
    slots = np.full((2, size), -1, np.int32)
    for which in range(2):
        for number in range(spans.shape[1]):
            if spans[which, number, 1] >= 0:
                _place(slots, which, hashes[which, number], number)
    return slots


class NameTable:
    """Names already numbered, kept across payloads so that ``wire_columns`` gives them their number without a
    Python string: a cache of a detector's numbering, which must be ``clear``-ed whenever that numbering is
    replaced (it only ever learns a name with the number the numbering gives it).

    Two tables (``ASSET``, ``VENUE``) share the arrays: open addressing (at most half full) from the FNV-1a hash,
    masked with ``key``, to the name's number; name ``number`` of table ``t`` is ``text[start : start + length]``
    with ``(start, length) = spans[t, number]``, a length of -1 when the table does not hold that number. ``key``
    exists for the tests: a narrow one makes names share a hash, which the byte comparison must tell apart."""

    def __init__(self, key: int = (1 << 64) - 1) -> None:
        self.key = np.uint64(key)
        self.clear()

    def clear(self) -> None:
        """Forget every name."""
        self.slots = np.full((2, 8), -1, np.int32)
        self.hashes = np.zeros((2, 4), np.uint64)
        self.spans = np.full((2, 4, 2), -1, np.int64)
        self.text = np.empty(256, np.uint8)
        self.used = 0
        """Bytes of ``text`` the names fill."""
        self.held = [0, 0]
        """Names in each table."""

    def learn(self, which: int, names: list[str], numbers: list[int]) -> None:
        """Hold ``names``, which it does not hold yet, as ``numbers``."""
        if not names:
            return
        encoded = [name.encode() for name in names]
        joined = np.frombuffer(b"".join(encoded), np.uint8)
        top = max(numbers) + 1
        if top > self.spans.shape[1]:
            more = max(top, 2 * self.spans.shape[1]) - self.spans.shape[1]
            self.hashes = np.concatenate([self.hashes, np.zeros((2, more), np.uint64)], axis=1)
            self.spans = np.concatenate([self.spans, np.full((2, more, 2), -1, np.int64)], axis=1)
        if self.used + joined.size > self.text.size:
            self.text = np.concatenate([self.text, np.empty(max(self.used + joined.size, 2 * self.text.size)
                                                            - self.text.size, np.uint8)])
        self.held[which] += len(names)
        if 2 * self.held[which] > self.slots.shape[1]:
            size = self.slots.shape[1]
            while 2 * self.held[which] > size:
                size *= 2
            self.slots = _rehashed(self.hashes, self.spans, size)
        _learn(self.slots, self.hashes, self.spans, self.text, which, self.used, self.key, joined,
               np.array([len(name) for name in encoded], np.int64), np.array(numbers, np.int64))
        self.used += joined.size


_NONE = NameTable()
"""The table of a caller that keeps none, never taught: every name is new."""


def wire_columns(payload: bytes, table: NameTable = _NONE, base: tuple[int, int] = (0, 0)) -> WireColumns | None:
    """The columns of an entry's event batch, or None when the payload holds anything the fast path does
    not read (the caller then decodes it with msgspec, which accepts or rejects it).

    A name ``table`` holds is numbered as there; the others are the columns' ``asset_names`` and
    ``venue_names``, the ``i``-th numbered ``base[t] + i`` (table ``t`` as ``ASSET``, ``VENUE``). With the
    defaults, every name is in the lists and numbered by its place there."""
    ok, kind, asset, venue, ts, recv, v0, v1, v2, text, ends = _columns(
        np.frombuffer(payload, np.uint8), table.slots, table.hashes, table.spans, table.text, table.key, *base)
    if not ok:
        return None
    try:
        assets, venues = _names(text[ASSET], ends[ASSET]), _names(text[VENUE], ends[VENUE])
    except UnicodeDecodeError:
        return None
    return WireColumns(kind, asset, venue, ts, recv, v0, v1, v2, assets, venues)
