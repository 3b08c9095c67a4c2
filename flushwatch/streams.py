"""The Redis stream layout: key names, entry encoding, trimming and consumer groups.

See ``docs/architecture.md`` for the prose version. In short:

* ``fw:{s<i>}:events``  -- normalised events of the assets owned by shard ``i``; written by collectors,
  read by the ``detector`` consumer group.
* ``fw:{s<i>}:signals`` -- detector output (asset snapshots and stage changes) of shard ``i``; read by the
  ``alerts`` consumer group.

The ``{s<i>}`` hash tag keeps a shard's keys in one Redis Cluster slot. An asset's shard is a stable hash
(CRC-32) of its name, so every collector routes it to the same stream without coordination.

One stream entry holds a *batch*: field ``v`` (encoding version), ``n`` (count) and ``b`` (a MessagePack
array of events, each itself a positional array led by its type tag). Batching is what lets one XADD carry
hundreds of events; trimming is ``MAXLEN ~`` so Redis trims whole macro-nodes cheaply.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from flushwatch.events import Event
from flushwatch.signals import Signal

ENCODING_VERSION: Final = b"1"
DETECTOR_GROUP: Final = "detector"
ALERTS_GROUP: Final = "alerts"

_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(list[Event])
_signal_decoder = msgspec.msgpack.Decoder(list[Signal])


def shard_of(asset: str, shards: int) -> int:
    """The shard that owns ``asset``: stable across processes, hosts and Python versions."""
    return zlib.crc32(asset.encode()) % shards


def events_key(shard: int) -> str:
    return f"fw:{{s{shard}}}:events"


def signals_key(shard: int) -> str:
    return f"fw:{{s{shard}}}:signals"


def baselines_key(shard: int) -> str:
    """The hour-of-week baselines of the assets of shard ``i`` (``Detector.baselines``), so a restart keeps
    weeks of history."""
    return f"fw:{{s{shard}}}:baselines"


def checkpoint_key(shard: int) -> str:
    """Shard ``i``'s detector state (``detector.checkpoint``), written with the acknowledgement of the entries
    it covers."""
    return f"fw:{{s{shard}}}:checkpoint"


def emitted_key(shard: int) -> str:
    """Event time (ns) of the newest signals shard ``i`` wrote, set with them: after a restart, signals
    recomputed up to it are not written twice."""
    return f"fw:{{s{shard}}}:emitted"


def encode_batch(items: Sequence[Event] | Sequence[Signal]) -> dict[FieldT, EncodableT]:
    """The fields of one stream entry carrying ``items``."""
    return {b"v": ENCODING_VERSION, b"n": str(len(items)).encode(), b"b": _event_encoder.encode(items)}


def entry_payload(fields: dict[Any, Any]) -> bytes:
    """The batch payload of one entry; raises ``ValueError`` for an entry of another encoding or none."""
    version = fields.get(b"v", fields.get("v"))
    if version not in (ENCODING_VERSION, ENCODING_VERSION.decode()):
        raise ValueError(f"unknown stream entry encoding {version!r}")
    payload = fields.get(b"b", fields.get("b"))
    if not isinstance(payload, bytes):
        raise ValueError("stream entry has no batch payload")
    return payload


def decode_events(fields: dict[Any, Any]) -> list[Event]:
    """The events of one entry. Raises ``ValueError`` or ``msgspec.DecodeError`` for a foreign entry."""
    return decode_event_batch(entry_payload(fields))


def decode_event_batch(payload: bytes) -> list[Event]:
    """The events of an entry's payload. Raises ``msgspec.DecodeError`` (a ``ValueError``) for anything else."""
    return _event_decoder.decode(payload)


def decode_signals(fields: dict[Any, Any]) -> list[Signal]:
    return _signal_decoder.decode(entry_payload(fields))


def entries_of(reply: Any) -> Iterable[tuple[str, bytes, dict[Any, Any]]]:
    """Flatten an XREAD/XREADGROUP reply into ``(stream, entry_id, fields)``.

    redis-py returns a list of ``[stream, entries]`` pairs with RESP2-compatible shapes and a dict keyed by
    stream with RESP3 "unified" shapes; both are accepted so a client option cannot silently break reads.
    """
    if not reply:
        return
    pairs = reply.items() if isinstance(reply, dict) else reply
    for stream, entries in pairs:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        for entry in entries:
            entry_id, fields = entry[0], entry[1]
            # An entry trimmed away while pending comes back without fields; it is yielded empty so the
            # consumer rejects it (counted) and acknowledges it instead of leaving it pending forever.
            yield name, entry_id if isinstance(entry_id, bytes) else str(entry_id).encode(), fields or {}


async def trim_older(redis: Any, keys: Iterable[str], retention_s: float) -> None:
    """Trim the entries of ``keys`` older than ``retention_s`` (``XTRIM MINID ~``, by the entry ids' clock):
    the time bound that keeps Redis memory flat at a steady rate, beside ``MAXLEN ~``, which only bounds a
    burst. Raises the client's errors; callers count them."""
    oldest = f"{max(0, int((time.time() - retention_s) * 1000))}-0"
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.xtrim(key, minid=oldest, approximate=True)
    await pipe.execute()


async def ensure_group(redis: Any, key: str, group: str, start: str) -> None:
    """Create consumer group ``group`` on ``key`` (and the stream) unless it exists; ``start`` is where a new
    group begins: ``0`` for everything in the stream, ``$`` for what comes next."""
    try:
        await redis.xgroup_create(key, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
