"""A detector's whole state as bytes, so a restarted shard resumes exactly where it stopped.

What a checkpoint holds: every array of the kernel state and of its companions (baselines, Hawkes arrivals,
fuel maps), the asset slots, the evaluation clock, the columns of the evaluation segment in progress (read
and acknowledged with the checkpoint, not yet applied), and the market view's per-venue sums. Restoring it
and feeding the entries that followed gives the same signals as a run that never stopped (tested).

The format is data, not code: a MessagePack map of plain values and raw array buffers, zstd-compressed. A
pickle would be shorter to write, but a checkpoint comes back from Redis, and whoever can write a key there
must not be able to run code in the detector. A checkpoint whose array layout differs from this version's
(an upgrade changed a ring's length) is refused with ``CheckpointError``; the shard then starts from its
saved baselines instead.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import numpy as np
import zstandard

FORMAT: Final = 2  # 2: the segment in progress is kept as columns, not events
_LEVEL: Final = 3  # zstd: the state is mostly NaN-filled rings; level 3 shrinks it ~20x at hundreds of MB/s

T = TypeVar("T", bound=tuple[Any, ...])


class CheckpointError(ValueError):
    """The bytes are not a checkpoint this version can restore."""


class Arrays(msgspec.Struct, array_like=True):
    dtype: str
    shape: list[int]
    data: bytes


def flatten(state: tuple[Any, ...], prefix: str = "") -> dict[str, Arrays]:
    """Every array of a (nested) NamedTuple of arrays, by dotted field name."""
    out: dict[str, Arrays] = {}
    for name, value in zip(type(state)._fields, state, strict=True):  # type: ignore[attr-defined]
        key = f"{prefix}{name}"
        if isinstance(value, np.ndarray):
            out[key] = Arrays(value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes())
        elif isinstance(value, tuple) and hasattr(value, "_fields"):
            out.update(flatten(value, f"{key}."))
        else:
            raise TypeError(f"{key}: a checkpointed state holds arrays only, not {type(value).__name__}")
    return out


def unflatten(template: T, saved: dict[str, Arrays], prefix: str = "") -> T:
    """``template`` (a freshly allocated state of the saved capacity) with every array replaced by the saved
    one; raises ``CheckpointError`` if an array is missing or its dtype or shape differs."""
    values = []
    for name, value in zip(type(template)._fields, template, strict=True):  # type: ignore[attr-defined]
        key = f"{prefix}{name}"
        if isinstance(value, np.ndarray):
            found = saved.get(key)
            if found is None:
                raise CheckpointError(f"checkpoint lacks {key}")
            if found.dtype != value.dtype.str or tuple(found.shape) != value.shape:
                raise CheckpointError(f"{key}: saved {found.dtype}{tuple(found.shape)}, this version has "
                                      f"{value.dtype.str}{value.shape}")
            values.append(np.frombuffer(found.data, dtype=value.dtype).reshape(value.shape).copy())
        else:
            values.append(unflatten(value, saved, f"{key}."))
    return type(template)(*values)


class Checkpoint(NamedTuple):
    """The decoded content; ``meta`` is what the detector keeps outside arrays."""

    capacity: int
    arrays: dict[str, Arrays]
    meta: dict[str, Any]


class _Wire(msgspec.Struct):
    format: int
    capacity: int
    arrays: dict[str, Arrays]
    meta: dict[str, Any]


def encode(capacity: int, arrays: dict[str, Arrays], meta: dict[str, Any]) -> bytes:
    raw = msgspec.msgpack.encode(_Wire(FORMAT, capacity, arrays, meta))
    return zstandard.ZstdCompressor(level=_LEVEL).compress(raw)


_decoder = msgspec.msgpack.Decoder(_Wire)


def decode(blob: bytes) -> Checkpoint:
    try:
        wire = _decoder.decode(zstandard.ZstdDecompressor().decompress(blob))
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise CheckpointError(f"not a checkpoint: {exc}") from None
    if wire.format != FORMAT:
        raise CheckpointError(f"checkpoint format {wire.format}, this version reads {FORMAT}")
    return Checkpoint(wire.capacity, wire.arrays, wire.meta)
