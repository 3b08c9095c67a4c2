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
    """int32, index into ``asset_names``."""
    venue: np.ndarray
    """int32, index into ``venue_names``."""
    ts: np.ndarray
    """int64, ``ts_event`` in ns."""
    recv: np.ndarray
    """int64, ``ts_recv`` in ns."""
    v0: np.ndarray
    v1: np.ndarray
    v2: np.ndarray
    """float64, as ``detector.batch.stream_columns`` defines them."""
    asset_names: list[str]
    """Distinct assets in order of first appearance in the payload."""
    venue_names: list[str]
    """Distinct venues in order of first appearance."""


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


@njit(cache=True, nogil=True)
def _columns(buf: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ok, kind, asset, venue, ts, recv, v0, v1, v2, text, ends)``: name table ``t`` (``ASSET``,
    ``VENUE``) has ``ends[t, 0]`` names, joined by NULs in ``text[t]``, name ``i`` ending at ``ends[t, 1 + i]``.

    One function, its helpers inlined by numba: a call that passes arrays pays their reference counts, and
    calls per field made this path five times slower (~230 ns an event instead of ~45)."""
    n, pos = _array(buf, 0)
    if n > buf.size:  # every event takes bytes: a larger count is a lie, not an allocation to make
        n, pos = 0, -1
    kind = np.empty(n, np.int8)
    asset, venue = np.empty(n, np.int32), np.empty(n, np.int32)
    ts, recv = np.empty(n, np.int64), np.empty(n, np.int64)
    v0, v1, v2 = np.empty(n), np.empty(n), np.empty(n)
    # Names by first appearance: open addressing (at most half full) from the FNV-1a hash to the name's
    # number, whose bytes are compared on every match, so two names never share a number. The previous name
    # is tried first: a batch mostly repeats one venue, and assets come in runs.
    slots = 8
    while slots < 2 * n:
        slots *= 2
    mask = np.uint64(slots - 1)
    table = np.full((2, slots), -1, np.int32)
    hashes = np.empty((2, n), np.uint64)
    spans = np.empty((2, n, 2), np.int64)
    last = np.full(2, -1, np.int64)
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
            number = last[which]
            if number < 0 or spans[which, number, 1] != size or not _same(buf, spans[which, number, 0], buf, start,
                                                                          size):
                h = _fnv(buf, start, size)
                slot = np.int64(h & mask)
                number = table[which, slot]
                while number >= 0 and hashes[which, number] != h:
                    slot = np.int64(np.uint64(slot + 1) & mask)
                    number = table[which, slot]
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
                elif spans[which, number, 1] != size or not _same(buf, spans[which, number, 0], buf, start, size):
                    pos = -1  # another name with the same hash
                    break
                last[which] = number
            (venue if which == VENUE else asset)[row] = number
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


def wire_columns(payload: bytes) -> WireColumns | None:
    """The columns of an entry's event batch, or None when the payload holds anything the fast path does
    not read (the caller then decodes it with msgspec, which accepts or rejects it)."""
    ok, kind, asset, venue, ts, recv, v0, v1, v2, text, ends = _columns(np.frombuffer(payload, np.uint8))
    if not ok:
        return None
    try:
        assets, venues = _names(text[ASSET], ends[ASSET]), _names(text[VENUE], ends[VENUE])
    except UnicodeDecodeError:
        return None
    return WireColumns(kind, asset, venue, ts, recv, v0, v1, v2, assets, venues)
