"""A detector checkpoint: restored and fed what followed, it gives the signals of a run that never stopped;
bytes that are not a checkpoint of this version are refused, never half-restored."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from detector import checkpoint
from detector.checkpoint import CheckpointError
from detector.engine import Detector
from detector.shard import DetectorEngine
from flushwatch.events import Event
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer
from flushwatch.settings import SettingsError, load_settings
from flushwatch.signals import Signal, StageChange
from flushwatch.streams import baselines_key, checkpoint_key


def wire(signals: list[Signal]) -> bytes:
    return msgspec.msgpack.encode(signals)


@settings(max_examples=6, deadline=None)
@given(cut=st.floats(0.05, 0.95))
def test_a_restored_detector_continues_exactly_like_one_that_never_stopped(
        cascade: list[Event], uninterrupted: list[Signal], cut: float) -> None:
    n = int(len(cascade) * cut)  # anywhere: mid-segment, mid-cascade
    first = Detector(load_settings())
    before = first.process(cascade[:n])
    blob = first.checkpoint()
    second = Detector(load_settings())
    second.restore(blob)
    after = second.process(cascade[n:])
    assert wire(before + after) == wire(uninterrupted)
    assert second.assets == first.assets and second.events == len(cascade)


def test_the_cascade_is_in_the_signals(uninterrupted: list[Signal]) -> None:
    """The comparison above is worth something only if the run goes through a cascade."""
    stages = {s.stage for s in uninterrupted if isinstance(s, StageChange)}
    assert {1, 7} <= stages and max(stages) >= 5


def test_a_checkpoint_is_small_enough_to_write_often(cascade: list[Event]) -> None:
    detector = Detector(load_settings())
    detector.process(cascade)
    blob = detector.checkpoint()
    raw = sum(a.nbytes for a in (*detector.state, detector.extras.tape)) if detector.assets else 0
    assert 0 < len(blob) < raw / 4  # zstd shrinks the NaN-filled rings


def test_bytes_that_are_not_a_checkpoint_are_refused_and_leave_the_detector_alone(cascade: list[Event]) -> None:
    detector = Detector(load_settings())
    detector.process(cascade[:5000])
    blob = detector.checkpoint()
    fresh = Detector(load_settings())
    for bad in (b"", b"not a checkpoint", blob[: len(blob) // 2]):
        with pytest.raises(CheckpointError):
            fresh.restore(bad)
    assert fresh.assets == [] and fresh.events == 0


def test_a_checkpoint_of_an_earlier_format_is_refused_saying_so(cascade: list[Event]) -> None:
    """Format 1 kept the segment in progress as event objects; a shard given one starts from its baselines."""
    detector = Detector(load_settings())
    detector.process(cascade[:5000])
    expected = rf"format {checkpoint.FORMAT - 1}, this version reads {checkpoint.FORMAT}"
    with pytest.raises(CheckpointError, match=expected):
        Detector(load_settings()).restore(earlier_format(detector))


def earlier_format(detector: Detector) -> bytes:
    """``detector``'s checkpoint, labelled with the format before this one."""
    saved = checkpoint.decode(detector.checkpoint())
    return zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(
        {"format": checkpoint.FORMAT - 1, "capacity": saved.capacity, "arrays": saved.arrays, "meta": saved.meta}))


def test_a_checkpoint_of_another_layout_is_refused_naming_the_array(cascade: list[Event]) -> None:
    detector = Detector(load_settings())
    detector.process(cascade[:5000])
    saved = checkpoint.decode(detector.checkpoint())
    arrays = dict(saved.arrays)
    px = arrays["state.px_sec"]
    arrays["state.px_sec"] = checkpoint.Arrays(px.dtype, [px.shape[0], px.shape[1] - 1],
                                               px.data[: len(px.data) - 8 * px.shape[0]])
    with pytest.raises(CheckpointError, match=r"state\.px_sec"):
        Detector(load_settings()).restore(checkpoint.encode(saved.capacity, arrays, saved.meta))
    del arrays["state.px_sec"]
    with pytest.raises(CheckpointError, match=r"lacks state\.px_sec"):
        Detector(load_settings()).restore(checkpoint.encode(saved.capacity, arrays, saved.meta))


def test_flatten_names_every_array_and_keeps_values(cascade: list[Event]) -> None:
    detector = Detector(load_settings())
    detector.process(cascade[:5000])
    flat = checkpoint.flatten(detector.state)
    assert set(flat) == set(type(detector.state)._fields)
    back = checkpoint.unflatten(detector.state, flat)
    for a, b in zip(back, detector.state, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a is not b


def test_a_retention_shorter_than_three_checkpoints_is_refused_at_start_naming_both() -> None:
    with pytest.raises(SettingsError, match=r"writer\.retention_s .*detector\.checkpoint_s"):
        load_settings(writer={"retention_s": 20}, detector={"checkpoint_s": 10})
    assert load_settings(writer={"retention_s": 30}, detector={"checkpoint_s": 10}).writer.retention_s == 30


async def test_a_shard_refuses_an_earlier_checkpoint_and_starts_from_its_baselines(
        cascade: list[Event], redis_server: RunningServer) -> None:
    """What an upgrade across a checkpoint format does to a running deployment: counted, logged, no crash, and
    the weeks of hour-of-week history kept."""
    settings = load_settings()
    before = Detector(settings)
    before.process(cascade[:5000])
    redis = connect_redis(redis_server.url)
    try:
        await redis.set(checkpoint_key(0), earlier_format(before))
        await redis.set(baselines_key(0), before.baselines())
        refused = REGISTRY.get_sample_value("flushwatch_detector_checkpoints_total", {"outcome": "refused"}) or 0.0
        shard = DetectorEngine(redis, settings, shard=0, consumer="detector-0")
        await shard.resume()
        assert not shard.resumed and shard.detector.events == 0
        assert shard.detector.assets == before.assets  # the baselines came back, asset by asset
        np.testing.assert_array_equal(shard.detector.extras.season.median[: len(before.assets)],
                                      before.extras.season.median[: len(before.assets)])
        assert REGISTRY.get_sample_value("flushwatch_detector_checkpoints_total", {"outcome": "refused"}) == refused + 1
    finally:
        await redis.aclose()
