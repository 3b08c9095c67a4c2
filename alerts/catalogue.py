"""The metric catalogue, ``docs/metrics.md``, generated from the live registries.

    python -m alerts.catalogue > docs/metrics.md

Two sources, both as a scrape of ``flushwatch run`` would see them:

* the default ``REGISTRY`` once every module of the process is imported (``flushwatch.daemon`` imports them
  all: the shared metrics of ``flushwatch.telemetry``, the build info of ``alerts.exporter``, the alert
  role's counters of ``alerts.service``);
* an :class:`~alerts.exporter.AssetStateCollector` fed one sample ``AssetState`` with every feature and
  total set, so each per-asset family has a sample to take its labels from.

Only ``flushwatch_*`` families are listed; prometheus_client's own ``process_*`` and ``python_*`` metrics
are mentioned, not catalogued (they differ by platform). ``tests/test_prometheus_config.py`` checks that
``docs/metrics.md`` is current and that every metric the alert rules use is in it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import flushwatch.daemon  # registers every metric `flushwatch run` serves
import flushwatch.recorder  # noqa: F401 -- and `flushwatch record`'s
from alerts.exporter import _ASSET_GAUGES, _SIDE_COUNTERS, _SIDE_GAUGES, AssetStateCollector
from flushwatch.signals import FEATURE_NAMES, TOTAL_KEYS, AssetState, SideState, VenueView, packed

PREFIX: Final = "flushwatch_"

_STRUCTURAL_LABELS: Final = frozenset({"le", "quantile"})
"""Labels a histogram or summary adds to its own series; not dimensions of the metric."""

_UNIT_OVERRIDES: Final[dict[str, str]] = {
    "flushwatch_stage": "stage number, 0..7",
    "flushwatch_overheat_score": "score, 0..100",
    "flushwatch_mqtt_connected": "boolean, 1 = connected",
    "flushwatch_build_info": "none, always 1",
    "flushwatch_liquidation_rate_usd": "USD per minute",
}
"""Metrics whose unit the name's suffix does not say."""

_UNIT_SUFFIXES: Final[tuple[tuple[str, str], ...]] = (
    # checked in order: the first suffix that matches the name (without `_total`) wins
    ("_timestamp_seconds", "seconds since the Unix epoch"),
    ("_seconds", "seconds"),
    ("_ratio", "ratio, 1 = 100 %"),
    ("_usd", "USD"),
    ("_bytes", "bytes"),
)


@dataclass(frozen=True)
class MetricEntry:
    """One metric as exposed on ``/metrics``."""

    name: str
    """The exposed name: counters with ``_total``; a histogram's series add ``_bucket``, ``_sum``, ``_count``."""
    type: str
    unit: str
    labels: tuple[str, ...]
    help: str
    per_asset: bool

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every series name a scrape of this metric contains."""
        if self.type == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


def sample_state() -> AssetState:
    """One snapshot with every feature and total the exporter reads, so every per-asset family has a sample."""
    features = {feature: 1.0 for _, _, feature, _ in _ASSET_GAUGES}
    for _, _, by_side in _SIDE_GAUGES:
        features.update(dict.fromkeys(by_side.values(), 1.0))
    totals = dict.fromkeys(TOTAL_KEYS, 1.0)
    for _, _, by_side in _SIDE_COUNTERS:
        totals.update(dict.fromkeys(by_side.values(), 1.0))
    return AssetState(
        asset="BTC",
        ts=1_700_000_000_000_000_000,
        ts_recv=1_700_000_000_000_000_000,
        long=SideState("long", 3, "liquidations_triggered", 70.0, "BTC-long-1"),
        short=SideState("short", 0, "calm", 10.0, ""),
        feature_values=packed(features, FEATURE_NAMES),
        total_values=packed(totals, TOTAL_KEYS),
        venues={"bybit": VenueView("complete", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1_700_000_000_000_000_000)},
    )


def catalogue() -> list[MetricEntry]:
    """Every ``flushwatch_*`` metric of the default registry and of a sample-fed asset collector, by name."""
    entries: dict[str, MetricEntry] = {}
    assets = AssetStateCollector()
    assets.update(sample_state())
    # The daemon registers its own AssetStateCollector while it runs; ours stands for it.
    collectors = [c for c in _registered_collectors() if not isinstance(c, AssetStateCollector)]
    for collector, per_asset in [*((c, False) for c in collectors), (assets, True)]:
        declared = tuple(getattr(collector, "_labelnames", ()))  # Counter, Gauge, ... declare their labels
        for family in collector.collect():
            if not family.name.startswith(PREFIX):
                continue
            entry = _entry(family, declared or _sample_labels(family), per_asset)
            entries.setdefault(entry.name, entry)
    return sorted(entries.values(), key=lambda e: e.name)


def catalogue_markdown() -> str:
    """``docs/metrics.md``."""
    entries = catalogue()
    lines = [
        "# Metric catalogue",
        "",
        "<!-- Generated by `python -m alerts.catalogue > docs/metrics.md`; do not edit by hand.",
        "     tests/test_prometheus_config.py fails when this file is not current. -->",
        "",
        "Everything `flushwatch run` serves on `/metrics` (see `alerts/exporter.py`), built from the live",
        "registries. Units follow the Prometheus conventions: base units in the name's suffix (`_seconds`,",
        "`_ratio` for fractions where 1 = 100 %, `_usd`), counters end in `_total`, and a counter's unit is",
        "what it counts. Label values are bounded: `venue` and `asset` come from the watchlist, `side` is",
        "`long`/`short` (position side) or `buy`/`sell` (taker side), and `reason`, `role`, `kind` and",
        "`sink` are small fixed sets. A labelled series appears when it is first set or incremented.",
        "",
        "Alert rules using these metrics: `deploy/prometheus/rules/flushwatch.rules.yml`; what to do when",
        "they fire: `docs/runbook.md`.",
        "",
        "## Process and pipeline metrics",
        "",
        "Feeds, writer, Redis, detector, alert role and MQTT (`flushwatch/telemetry.py`, `alerts/service.py`).",
        "",
        *_table(e for e in entries if not e.per_asset),
        "",
        "## Per-asset metrics",
        "",
        "Computed at scrape time from the detector's newest snapshot of each asset (`AssetStateCollector`);",
        "a feature that is missing or not finite is left out rather than exported as `NaN`. Counters count",
        "since the detector started (a restart is a reset).",
        "",
        *_table(e for e in entries if e.per_asset),
        "",
        "## Not listed",
        "",
        "prometheus_client's default `process_*` (CPU, memory, file descriptors) and `python_*` (interpreter,",
        "garbage collector) metrics, which vary by platform, and Prometheus's own `up` for the scrape target.",
        "",
    ]
    return "\n".join(lines)


def _registered_collectors() -> list[Collector]:
    # prometheus_client has no public way to list a registry's collectors; this mapping is its own index.
    return list(REGISTRY._collector_to_names)


def _entry(family: Metric, labels: tuple[str, ...], per_asset: bool) -> MetricEntry:
    name = family.name
    if family.type == "counter":
        name += "_total"
    elif family.type == "info":
        name += "_info"
    return MetricEntry(name, family.type, _unit(name, family), labels, family.documentation, per_asset)


def _sample_labels(family: Metric) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for sample in family.samples:
        seen.update(dict.fromkeys(k for k in sample.labels if k not in _STRUCTURAL_LABELS))
    return tuple(seen)


def _unit(name: str, family: Metric) -> str:
    if family.unit:
        return family.unit
    if name in _UNIT_OVERRIDES:
        return _UNIT_OVERRIDES[name]
    base = name.removesuffix("_total")
    for suffix, unit in _UNIT_SUFFIXES:
        if base.endswith(suffix):
            return unit
    # a count: of what the name's last word says (messages, events, errors, connections, ...)
    return base.rsplit("_", 1)[-1]


def _table(entries: Iterable[MetricEntry]) -> Iterator[str]:
    yield "| name | type | unit | labels | help |"
    yield "|---|---|---|---|---|"
    for e in entries:
        labels = ", ".join(f"`{label}`" for label in e.labels) or "none"
        if e.type == "histogram":
            labels += " (+ `le` on `_bucket`)"
        yield f"| `{e.name}` | {e.type} | {e.unit} | {labels} | {_cell(e.help)} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    sys.stdout.write(catalogue_markdown())


if __name__ == "__main__":
    main()
