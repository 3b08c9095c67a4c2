"""Process metrics shared by every role: feed health, writer, detector pipeline.

Per-asset market values (funding, open interest, scores, stages) are not here: the alert role exposes them
from the detector's snapshots (``alerts.exporter``). Labels are limited to ``venue``, ``symbol``,
``asset``, ``side`` and small enums such as ``reason``, so cardinality is bounded by the watchlist.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# A *_created series per counter doubles the scrape for a timestamp nobody alerts on.
disable_created_metrics()

FEED_MESSAGES: Final = Counter(
    "flushwatch_feed_messages_total", "Frames received from a venue, accepted or not.", ["venue"]
)
FEED_EVENTS: Final = Counter(
    "flushwatch_feed_events_total", "Normalised events produced from venue frames.", ["venue"]
)
FEED_REJECTED: Final = Counter(
    "flushwatch_feed_rejected_messages_total",
    "Frames or items dropped by a collector, by reason.",
    ["venue", "reason"],
)
FEED_RECONNECTS: Final = Counter(
    "flushwatch_feed_reconnects_total", "Websocket reconnections, by cause.", ["venue", "reason"]
)
FEED_LAST_MESSAGE: Final = Gauge(
    "flushwatch_feed_last_message_timestamp_seconds", "Local time of the newest frame of a venue.", ["venue"]
)
FEED_COVERAGE: Final = Gauge(
    "flushwatch_feed_coverage_ratio",
    "Share of a venue's watched instruments that produced an event in the last minute, 0..1.", ["venue"]
)
FEED_CONNECTED: Final = Gauge(
    "flushwatch_feed_connected_connections", "Open websocket connections per venue.", ["venue"]
)
REST_REQUESTS: Final = Counter(
    "flushwatch_rest_requests_total", "REST polls by outcome.", ["venue", "outcome"]
)
REST_WEIGHT_USED: Final = Gauge(
    "flushwatch_rest_weight_used_ratio", "Share of the venue's request-weight budget used.", ["venue"]
)
WRITER_WRITTEN: Final = Counter(
    "flushwatch_writer_written_events_total", "Events written to Redis streams."
)
WRITER_DROPPED: Final = Counter(
    "flushwatch_writer_dropped_events_total", "Events that could not be kept, by reason.", ["reason"]
)
WRITER_ERRORS: Final = Counter("flushwatch_redis_errors_total", "Failed Redis operations, by role.", ["role"])
WRITER_QUEUE: Final = Gauge("flushwatch_writer_queue_events", "Events waiting for the Redis writer.")
WRITER_BUFFERED: Final = Gauge(
    "flushwatch_writer_buffered_events", "Events held back while Redis is unreachable."
)
DETECTOR_EVENTS: Final = Counter("flushwatch_detector_events_total", "Events processed by the detector.")
DETECTOR_LAG: Final = Gauge(
    "flushwatch_detector_lag_seconds", "Local time minus receive time of the newest processed event.", ["shard"]
)
DETECTOR_PENDING: Final = Gauge(
    "flushwatch_detector_pending_entries",
    "Stream entries delivered to the detector but not acknowledged (they are, with the next checkpoint).", ["shard"]
)
DETECTOR_RESUMED: Final = Counter(
    "flushwatch_detector_resumed_signals_total",
    "Signals recomputed after a restart from the entries that followed the checkpoint, and not written again: "
    "they were written before the stop.",
)
DETECTOR_CHECKPOINTS: Final = Counter(
    "flushwatch_detector_checkpoints_total",
    "Detector checkpoints, by outcome: written; failed (Redis refused; the entries stay pending for the next); "
    "restored at a start; refused (unreadable, e.g. another version's layout: the shard starts from its baselines).",
    ["outcome"],
)
DETECTOR_REJECTED: Final = Counter(
    "flushwatch_detector_rejected_events_total", "Events the detector refused, by reason.", ["reason"]
)
PIPELINE_LATENCY: Final = Histogram(
    "flushwatch_pipeline_latency_seconds",
    "Time from frame receipt to the publication of a detector signal.",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
MQTT_CONNECTED: Final = Gauge("flushwatch_mqtt_connected", "1 while the MQTT client is connected.")
MQTT_PUBLISHED: Final = Counter("flushwatch_mqtt_published_messages_total", "MQTT messages published.", ["kind"])
MQTT_DROPPED: Final = Counter(
    "flushwatch_mqtt_dropped_messages_total", "MQTT messages dropped because the outbound queue was full."
)
MQTT_QUEUED: Final = Gauge("flushwatch_mqtt_queued_messages", "MQTT messages waiting for the broker.")


class RateLimitedLog:
    """Logs a keyed message at most once per ``interval`` seconds and says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, **context: object) -> None:
        """``context`` (``venue=``, ``asset=``) becomes fields of a structured log line."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        skipped = self._suppressed.pop(key, 0)
        self._last[key] = now
        if skipped:
            self._logger.warning(msg + " (%d similar suppressed)", *args, skipped,
                                 extra={**context, "suppressed": skipped})
        else:
            self._logger.warning(msg, *args, extra=context)
