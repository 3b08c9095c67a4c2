"""The whole pipeline at 10x the peak frame rate of a simulated cascade, for 60 s: nothing is lost, the
detector keeps up, memory stays put, and it reaches the stages a slow replay of the same events reaches.

The load (``flushwatch.fake.load``): the simulator's BTC flush on Binance and Bybit, from its first second
on, pushed at 10x its busiest second (222 frames/s for seed 0) -- about 2,200 frames/s for 60 s, which
covers 88 simulated minutes, the shock and the whole cascade among them. ``flushwatch run`` runs in its own
process against the fake venues, with a real redis-server and mosquitto (``bench.pipeline``).

The bounds:

* stream lag (entries of the events stream the detector group has not read yet) stays within one read of
  the detector (``detector.read_count``, 512 entries): a detector that keeps up never leaves more than what
  arrived since its last read; one that falls behind accumulates about 200 entries a second here, past the
  bound within three seconds. The detector's own lag (local time minus receipt of the newest event it
  processed) stays under 1 s, i.e. under 2,200 frames behind;
* pending entries (read, not yet acknowledged: the detector acknowledges with each state checkpoint) stay
  within what arrives in one checkpoint interval plus a read;
* the daemon's resident set at the end is within 40 MB of what it was when the load started (kernels
  compiled, connections open, about 215 MB): its state is one asset's fixed arrays and its queues are
  drained, so only allocator noise should move it (measured: under 10 MB here); a leak of a few hundred
  bytes per frame would add more than 40 MB over 133,000 frames.
"""

from __future__ import annotations

import pytest

from bench.pipeline import Pipeline, total
from flushwatch.fake.load import SteadyCascade, peak_rate
from flushwatch.settings import load_settings
from flushwatch.simulator import SimConfig, Simulation

MULTIPLE = 10
SECONDS = 60.0
RSS_GROWTH_MB = 40.0
DETECTOR_LAG_S = 1.0


@pytest.mark.slow
async def test_ten_times_the_cascade_peak_for_a_minute() -> None:
    simulation = Simulation(SimConfig(seed=0))
    peak, _ = peak_rate(simulation)
    load = SteadyCascade(simulation, MULTIPLE * peak, SECONDS)
    assert load.simulated_s > simulation.run.shock_s + 600  # the load holds the shock and the cascade after it
    settings = load_settings()
    async with Pipeline(simulation) as pipe:
        await pipe.start_daemon(load)
        played = await pipe.play(load)
        live, live_final = await pipe.stage_changes()
        replayed, replayed_final, stored_events = await pipe.replayed_stage_changes(settings)
        entries = await pipe.redis.xlen("fw:{s0}:events")
        await pipe.stop()
        assert pipe.daemon is not None and pipe.daemon.returncode == 0, pipe.daemon_log()[-3000:]
    metrics = played.metrics
    print(f"\n{played.frames} frames in {played.seconds:.1f} s: {played.frames_per_s:.0f} frames/s "
          f"(target {MULTIPLE * peak}), drained {played.drain_s:.2f} s later; first and last samples: "
          f"{played.samples[0]} {played.samples[-1]}")

    # Every frame of the cascade on a subscribed topic was pushed, and every frame sent was received.
    assert played.pushed == played.subscribed
    for venue, sent in played.sent.items():
        assert metrics[f'flushwatch_feed_messages_total{{venue="{venue}"}}'] == sent, venue
    rejected = {k: v for k, v in metrics.items() if k.startswith("flushwatch_feed_rejected_messages_total") and v}
    # The open-interest poller keeps polling after the load has played: the same answer again is a duplicate.
    assert set(rejected) <= {'flushwatch_feed_rejected_messages_total{reason="duplicate",venue="binance"}'}
    # Every event was written, stored and processed; nothing was dropped on the way.
    assert total(metrics, "flushwatch_writer_dropped_events_total") == 0
    assert total(metrics, "flushwatch_mqtt_dropped_messages_total") == 0
    written = total(metrics, "flushwatch_writer_written_events_total")
    assert written == total(metrics, "flushwatch_feed_events_total") == stored_events
    assert total(metrics, "flushwatch_detector_events_total") == written
    assert entries < settings.writer.events_maxlen  # so the stream still holds every entry written

    # The detector kept up.
    samples = played.samples
    assert max(s.stream_lag for s in samples) <= settings.detector.read_count, samples
    assert max(s.detector_lag_s for s in samples) < DETECTOR_LAG_S, samples
    entries_per_s = entries / played.seconds
    assert max(s.pending for s in samples) <= (settings.detector.checkpoint_s + 1) * entries_per_s + \
        settings.detector.read_count, samples
    assert samples[-1].stream_lag == 0

    # Memory stayed put.
    assert samples[-1].rss_mb - samples[0].rss_mb < RSS_GROWTH_MB, samples

    # The stages are those of a detector fed the same events one stream entry at a time.
    assert any(stage >= 4 for asset, side, _, stage, _, _ in live if (asset, side) == ("BTC", "long")), live
    assert live == replayed
    assert live_final == replayed_final
