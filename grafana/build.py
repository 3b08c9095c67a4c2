"""The flushwatch Grafana dashboards, generated as Classic-model dashboard JSON.

    python -m grafana.build            # writes grafana/dashboards/*.json
    python -m grafana.build --check    # exits 1 when a committed file differs from what this module generates

Plain Python, no dashboard library: a few typed helpers build targets, panels and dashboards, and
:func:`dashboards` returns every dashboard as a dict keyed by file name. ``tests/test_grafana.py`` checks
that the committed JSON is current, that every panel has a title, a description, a unit and a target, and
validates every query with ``promtool``.

Conventions: every panel and target uses the provisioned datasource (uid ``flushwatch-prometheus``, see
``grafana/provisioning/datasources/flushwatch.yaml``); counters are only read through
``rate(...[$__rate_interval])``, ``increase(...[$__rate_interval])`` or ``increase`` over a fixed window;
dashboard uids are fixed, so links and bookmarks survive a regeneration. Metric names and units are those
of ``docs/metrics.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from flushwatch.settings import DetectorSettings
from flushwatch.signals import STAGE_NAMES

Json = dict[str, Any]

DASHBOARD_DIR: Final = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION: Final = 39
"""Classic JSON model; Grafana 10.4 to 13 load it (newer versions migrate it on load)."""
DATASOURCE: Final[Json] = {"type": "prometheus", "uid": "flushwatch-prometheus"}
TAGS: Final = ["flushwatch"]
GRID_WIDTH: Final = 24

# Grafana unit ids (fieldConfig.defaults.unit)
USD: Final = "currencyUSD"
USD_PER_MIN: Final = "suffix: USD/min"
RATIO: Final = "percentunit"
SECONDS: Final = "s"
PER_SECOND: Final = "cps"
REQUESTS_PER_SECOND: Final = "reqps"
COUNT: Final = "short"
NUMBER: Final = "none"
MULTIPLE: Final = "suffix:×"

STAGE_COLORS: Final[dict[int, str]] = {
    0: "green",
    1: "yellow",
    2: "orange",
    3: "light-red",
    4: "red",
    5: "dark-red",
    6: "purple",
    7: "blue",
}
"""One colour per stage 0..7 (``flushwatch/signals.py``); 7 (flushed) is the cascade's end, hence not red."""

SCORE_WARNING: Final = 60
SCORE_CRITICAL: Final = 75
"""The overheating score thresholds of the alerts in ``deploy/prometheus/rules/flushwatch.rules.yml``."""
FEED_STALE_S: Final = 60
SNAPSHOT_STALE_S: Final = 120
DETECTOR_LAG_S: Final = 5

_DETECTOR: Final = DetectorSettings()
RATE: Final = "[$__rate_interval]"

DRILLDOWN_UID: Final = "flushwatch-asset-drilldown"
DRILLDOWN_LINK: Final[Json] = {
    "title": "Asset drill-down: ${__field.labels.asset}",
    "url": f"/d/{DRILLDOWN_UID}/asset-drilldown?var-asset=${{__field.labels.asset}}&${{__url_time_range}}",
}


# --- field configuration ------------------------------------------------------------------------------------


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` below the first step, then each ``(value, colour)``."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": color, "value": value} for value, color in steps)],
    }


def value_mapping(texts: dict[int, tuple[str, str]]) -> Json:
    """A value mapping: number -> (text, colour)."""
    return {
        "type": "value",
        "options": {
            str(value): {"text": text, "color": color, "index": index}
            for index, (value, (text, color)) in enumerate(sorted(texts.items()))
        },
    }


STAGE_MAPPING: Final = value_mapping(
    {stage: (f"{stage} {name.replace('_', ' ')}", STAGE_COLORS[stage]) for stage, name in STAGE_NAMES.items()}
)
STAGE_THRESHOLDS: Final = thresholds(STAGE_COLORS[0], *((float(s), c) for s, c in STAGE_COLORS.items() if s))
SCORE_THRESHOLDS: Final = thresholds("green", (SCORE_WARNING, "orange"), (SCORE_CRITICAL, "red"))
CONNECTED_MAPPING: Final = value_mapping({0: ("disconnected", "red"), 1: ("connected", "green")})


def override_by_query(ref_id: str, **properties: Any) -> Json:
    """Field overrides for the series of one query (``custom.axisPlacement="right"`` style keys)."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref_id},
        "properties": [{"id": key.replace("__", "."), "value": value} for key, value in properties.items()],
    }


def right_axis_steps(ref_id: str, label: str, top: int, **extra: Any) -> Json:
    """Overrides drawing one query's integer series (a stage, a 0/1 flag) as steps on a right-hand axis."""
    return override_by_query(ref_id, unit=NUMBER, min=0, max=top, decimals=0, custom__axisPlacement="right",
                             custom__axisLabel=label, custom__lineInterpolation="stepAfter", **extra)


# --- targets and panels --------------------------------------------------------------------------------------


def target(expr: str, legend: str = "__auto", *, instant: bool = False) -> Json:
    """A Prometheus query; ``refId`` is set by :func:`panel` from the target's position."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Json],
    *,
    width: int = 12,
    height: int = 8,
    defaults: Json | None = None,
    custom: Json | None = None,
    options: Json | None = None,
    overrides: Sequence[Json] = (),
) -> Json:
    """Any panel. ``gridPos`` gets its width and height here, its position and ``id`` from :func:`dashboard`."""
    if not targets:
        raise ValueError(f"panel {title!r} has no target")
    if not 0 < width <= GRID_WIDTH:
        raise ValueError(f"panel {title!r}: width {width} outside 1..{GRID_WIDTH}")
    field_defaults: Json = {"unit": unit, "color": {"mode": "palette-classic"}, "mappings": []}
    field_defaults.update(defaults or {})
    if custom:
        field_defaults["custom"] = custom
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": field_defaults, "overrides": list(overrides)},
        "options": options or {},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    bars: bool = False,
    stacked: bool = False,
    steps: bool = False,
    threshold_steps: Json | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    decimals: int | None = None,
    overrides: Sequence[Json] = (),
    width: int = 12,
    height: int = 8,
) -> Json:
    """A time series panel; ``threshold_steps`` are drawn as dashed lines."""
    defaults: Json = {}
    if threshold_steps is not None:
        defaults["thresholds"] = threshold_steps
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineInterpolation": "stepAfter" if steps else "linear",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold_steps is not None else "off"},
    }
    options: Json = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, targets, width=width, height=height, defaults=defaults,
                 custom=custom, options=options, overrides=overrides)


def state_timeline(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    mapping: Json | None = None,
    threshold_steps: Json,
    links: Sequence[Json] = (),
    width: int = GRID_WIDTH,
    height: int = 8,
) -> Json:
    """A state timeline: one band per series, coloured by ``mapping`` (if any) or ``threshold_steps``."""
    defaults: Json = {
        "color": {"mode": "thresholds"},
        "thresholds": threshold_steps,
        "mappings": [mapping] if mapping else [],
    }
    if links:
        defaults["links"] = list(links)
    options: Json = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": mapping is not None},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("state-timeline", title, description, unit, targets, width=width, height=height,
                 defaults=defaults, custom={"fillOpacity": 80, "lineWidth": 0}, options=options)


def bargauge(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    threshold_steps: Json,
    minimum: float,
    maximum: float,
    links: Sequence[Json] = (),
    width: int = 12,
    height: int = 8,
) -> Json:
    """Horizontal bars of each series' newest value (use instant targets)."""
    defaults: Json = {"color": {"mode": "thresholds"}, "thresholds": threshold_steps, "min": minimum, "max": maximum}
    if links:
        defaults["links"] = list(links)
    options: Json = {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "left",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    return panel("bargauge", title, description, unit, targets, width=width, height=height, defaults=defaults,
                 options=options)


# --- dashboards ----------------------------------------------------------------------------------------------


def layout(panels: Sequence[Json]) -> list[Json]:
    """Sets ``id`` (1, 2, ...) and flows the panels left to right, top to bottom, on the 24-column grid."""
    placed: list[Json] = []
    x = y = row_height = 0
    for number, original in enumerate(panels, start=1):
        w, h = original["gridPos"]["w"], original["gridPos"]["h"]
        if x + w > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append({"id": number, **original, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, row_height = x + w, max(row_height, h)
    return placed


def query_variable(name: str, label: str, definition: str, description: str) -> Json:
    """A single-value template variable filled by ``label_values(...)``, refreshed when the time range changes."""
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": definition,
        "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


def dashboard(uid: str, title: str, description: str, panels: Sequence[Json], *,
              variables: Sequence[Json] = (), time_from: str = "now-6h") -> Json:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "flushwatch",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": list(variables)},
        "panels": layout(panels),
    }


def market_overview() -> Json:
    liq = f"rate(flushwatch_liquidations_usd_total{RATE})"
    return dashboard(
        "flushwatch-market-overview",
        "flushwatch / Market overview",
        "Every watched asset at a glance: flush stage and overheating score per side, liquidations, funding "
        "and open interest. Click a stage or score to open the asset drill-down.",
        [
            state_timeline(
                "Stage by asset and side",
                "Flush stage 0..7 of the positions of each side (`flushwatch_stage`). 0 calm, 1 shock, "
                "2 air pocket, 3 liquidations triggered, 4 cascade, 5 thin-book impact, 6 snowball, 7 flushed.",
                NUMBER,
                target("max by (asset, side) (flushwatch_stage)", "{{asset}} {{side}}"),
                mapping=STAGE_MAPPING,
                threshold_steps=STAGE_THRESHOLDS,
                links=[DRILLDOWN_LINK],
                height=9,
            ),
            bargauge(
                "Overheating score now",
                f"Newest overheating score 0..100 of each side (`flushwatch_overheat_score`); the alerts fire "
                f"at {SCORE_WARNING} (warning) and {SCORE_CRITICAL} (critical).",
                NUMBER,
                target("max by (asset, side) (flushwatch_overheat_score)", "{{asset}} {{side}}", instant=True),
                threshold_steps=SCORE_THRESHOLDS,
                minimum=0,
                maximum=100,
                links=[DRILLDOWN_LINK],
            ),
            state_timeline(
                "Overheating score over time",
                f"Overheating score of each side, green below {SCORE_WARNING}, orange from {SCORE_WARNING}, "
                f"red from {SCORE_CRITICAL}.",
                NUMBER,
                target("max by (asset, side) (flushwatch_overheat_score)", "{{asset}} {{side}}"),
                threshold_steps=SCORE_THRESHOLDS,
                links=[DRILLDOWN_LINK],
                width=12,
            ),
            timeseries(
                "Liquidations by side, all assets",
                "Liquidated notional per minute by position side (long positions are liquidated by sells), "
                "summed over assets, from `flushwatch_liquidations_usd_total`.",
                USD_PER_MIN,
                target(f"sum by (side) ({liq}) * 60", "{{side}}"),
                bars=True,
                stacked=True,
            ),
            timeseries(
                "Liquidations by asset and side",
                "Liquidated notional per minute of each asset and position side, from "
                "`flushwatch_liquidations_usd_total`.",
                USD_PER_MIN,
                target(f"sum by (asset, side) ({liq}) * 60", "{{asset}} {{side}}"),
            ),
            timeseries(
                "Funding rate per 8 h",
                "Funding rate per 8 hours (`flushwatch_funding_rate_8h_ratio`); positive: longs pay shorts.",
                RATIO,
                target("max by (asset) (flushwatch_funding_rate_8h_ratio)", "{{asset}}"),
                decimals=4,
            ),
            timeseries(
                "Open interest change over 1 h",
                "Open interest now relative to one hour earlier (`flushwatch_open_interest_usd`); a sharp drop "
                "during a flush is positions being closed or liquidated.",
                RATIO,
                target(
                    "max by (asset) (flushwatch_open_interest_usd) "
                    "/ max by (asset) (flushwatch_open_interest_usd offset 1h) - 1",
                    "{{asset}}",
                ),
                decimals=2,
            ),
        ],
    )


def asset_drilldown() -> Json:
    a = '{asset="$asset"}'
    return dashboard(
        DRILLDOWN_UID,
        "flushwatch / Asset drill-down",
        "One asset in detail: price with the flush stage, liquidations and their intensity, the branching ratio, "
        "the estimated fuel near the price, liquidations against the book, open interest, funding, premium, "
        "order-book depth and spread, and the overheating score of both sides.",
        [
            timeseries(
                "Price and stage",
                "Last trade price (`flushwatch_price_usd`, left axis) with the flush stage 0..7 of each side "
                "(`flushwatch_stage`, right axis).",
                USD,
                target(f"max(flushwatch_price_usd{a})", "price"),
                target(f"max by (side) (flushwatch_stage{a})", "stage {{side}}"),
                overrides=[
                    right_axis_steps("B", "stage", 7, custom__fillOpacity=0)
                ],
                width=GRID_WIDTH,
                height=9,
            ),
            state_timeline(
                "Stage",
                "Flush stage of the long and the short side (`flushwatch_stage`), named as on MQTT.",
                NUMBER,
                target(f"max by (side) (flushwatch_stage{a})", "{{side}}"),
                mapping=STAGE_MAPPING,
                threshold_steps=STAGE_THRESHOLDS,
                height=5,
            ),
            bargauge(
                "Evidence of the current stage",
                "How close each condition of the stage machine is to its line, as a share of its threshold (1 = "
                f"the line): liquidation intensity over the trigger ratio {_DETECTOR.liq_trigger_ratio:g} (stage 3), "
                f"liquidations against depth over {_DETECTOR.thin_book_ratio:g} (stage 5), the branching ratio over "
                f"{_DETECTOR.snowball_branching:g} (stage 6) and the overheating score over {_DETECTOR.overheat_hot:g}"
                ", per side. The words of each change are in its MQTT event (`conditions`).",
                MULTIPLE,
                target(f"max by (side) (flushwatch_liquidation_intensity_ratio{a}) / {_DETECTOR.liq_trigger_ratio:g}",
                       "intensity {{side}}", instant=True),
                target(f"max by (side) (flushwatch_liquidations_to_depth_ratio{a}) / {_DETECTOR.thin_book_ratio:g}",
                       "liquidations/depth {{side}}", instant=True),
                target(f"max by (side) (flushwatch_branching_ratio{a}) / {_DETECTOR.snowball_branching:g}",
                       "branching {{side}}", instant=True),
                target(f"max by (side) (flushwatch_overheat_score{a}) / {_DETECTOR.overheat_hot:g}",
                       "overheating {{side}}", instant=True),
                threshold_steps=thresholds("green", (0.7, "orange"), (1.0, "red")),
                minimum=0,
                maximum=2,
                width=GRID_WIDTH,
                height=7,
            ),
            timeseries(
                "Liquidations, long and short",
                "Liquidated notional per minute by position side, from the counter "
                "`flushwatch_liquidations_usd_total`.",
                USD_PER_MIN,
                target(f"sum by (side) (rate(flushwatch_liquidations_usd_total{a}{RATE})) * 60", "{{side}}"),
                bars=True,
            ),
            timeseries(
                "Liquidation rate and its ratio to the baseline",
                "The detector's fast liquidation rate (`flushwatch_liquidation_rate_usd`, USD per minute, left) "
                "and, right, its ratio to the baseline the detector judges it by "
                "(`flushwatch_liquidation_intensity_ratio`: the lagged recent mean, at least the usual level of "
                "the hour of week and a share of open interest; held from the start of an episode). Dashed: the "
                f"trigger ratio {_DETECTOR.liq_trigger_ratio:g}.",
                USD_PER_MIN,
                target(f"max by (side) (flushwatch_liquidation_rate_usd{a})", "rate {{side}}"),
                target(f"max by (side) (flushwatch_liquidation_intensity_ratio{a})", "ratio {{side}}"),
                overrides=[
                    override_by_query(
                        "B", unit=MULTIPLE, min=0, custom__axisPlacement="right", custom__axisLabel="ratio",
                        custom__thresholdsStyle={"mode": "dashed"},
                        thresholds=thresholds("transparent", (_DETECTOR.liq_trigger_ratio, "red")),
                    )
                ],
            ),
            timeseries(
                "Reflexivity: branching ratio of liquidations",
                "Hawkes branching ratio of liquidation arrivals by side (`flushwatch_branching_ratio`): how many "
                "liquidations one liquidation triggers, refitted every few seconds over the last minutes; near 1 "
                f"the cascade feeds itself. Dashed: the snowball level {_DETECTOR.snowball_branching:g}. Read "
                "changes, not the level: a rate that shifts inside the window biases it upwards.",
                NUMBER,
                target(f"max by (side) (flushwatch_branching_ratio{a})", "{{side}}"),
                threshold_steps=thresholds("transparent", (_DETECTOR.snowball_branching, "red")),
                minimum=0,
                maximum=1,
            ),
            timeseries(
                "Estimated liquidation fuel near the price (ESTIMATE)",
                "Notional of leveraged positions whose liquidation price the fuel map places within 1/2/5/10 % of "
                "the price (`flushwatch_fuel_usd`): longs below, shorts above. A model built from open-interest "
                "changes and a leverage distribution, not observed positions.",
                USD,
                target(f"max by (side, band) (flushwatch_fuel_usd{a})", "{{side}} within {{band}}"),
            ),
            timeseries(
                "Liquidations against the book, and pauses",
                "Liquidations per minute over order-book depth within 1 % (`flushwatch_liquidations_to_depth_ratio`"
                f", left; above {_DETECTOR.thin_book_ratio:g} forced orders eat the book, stage 5) and, right, 1 "
                "while an exhausted episode lacks the recovery signs of a flush (`flushwatch_paused`: fuel "
                "remains).",
                MULTIPLE,
                target(f"max by (side) (flushwatch_liquidations_to_depth_ratio{a})", "{{side}}"),
                target(f"max by (side) (flushwatch_paused{a})", "paused {{side}}"),
                overrides=[
                    right_axis_steps("B", "paused", 1)
                ],
            ),
            timeseries(
                "Open interest",
                "Open interest in USD (`flushwatch_open_interest_usd`), polled over REST.",
                USD,
                target(f"max(flushwatch_open_interest_usd{a})", "open interest"),
            ),
            timeseries(
                "Funding rate per 8 h",
                "Funding rate per 8 hours (`flushwatch_funding_rate_8h_ratio`); positive: longs pay shorts.",
                RATIO,
                target(f"max(flushwatch_funding_rate_8h_ratio{a})", "funding"),
                decimals=4,
            ),
            timeseries(
                "Premium of mark over index",
                "Premium of the mark price over the index price (`flushwatch_premium_ratio`).",
                RATIO,
                target(f"max(flushwatch_premium_ratio{a})", "premium"),
                decimals=3,
            ),
            timeseries(
                "Order-book depth within 1 %",
                "Order-book depth within 1 % of the mid price, both sides, in USD (`flushwatch_depth_1pct_usd`); "
                "a thin book lets liquidations move the price further.",
                USD,
                target(f"max(flushwatch_depth_1pct_usd{a})", "depth 1 %"),
            ),
            timeseries(
                "Bid-ask spread",
                "Bid-ask spread as a fraction of the mid price (`flushwatch_spread_ratio`).",
                RATIO,
                target(f"max(flushwatch_spread_ratio{a})", "spread"),
                decimals=3,
            ),
            timeseries(
                "Overheating score, both sides",
                f"Overheating score 0..100 of each side (`flushwatch_overheat_score`); dashed lines at the alert "
                f"thresholds {SCORE_WARNING} and {SCORE_CRITICAL}.",
                NUMBER,
                target(f"max by (side) (flushwatch_overheat_score{a})", "{{side}}"),
                threshold_steps=thresholds("transparent", (SCORE_WARNING, "orange"), (SCORE_CRITICAL, "red")),
                minimum=0,
                maximum=100,
            ),
        ],
        variables=[
            query_variable("asset", "Asset", "label_values(flushwatch_stage, asset)",
                           "Assets the detector reports on (the watchlist)."),
        ],
    )


def pipeline_health() -> Json:
    def rate(metric: str) -> str:
        return f"rate({metric}{RATE})"

    return dashboard(
        "flushwatch-pipeline-health",
        "flushwatch / Pipeline health",
        "The flushwatch process: feeds, the Redis writer, the detector, latency, MQTT and Redis. The alerts "
        "on these metrics and what to do about them: docs/runbook.md.",
        [
            timeseries(
                "Feed messages and events",
                "Websocket frames received per second by venue (`flushwatch_feed_messages_total`) and the "
                "normalised events produced from them (`flushwatch_feed_events_total`).",
                PER_SECOND,
                target(f"sum by (venue) ({rate('flushwatch_feed_messages_total')})", "messages {{venue}}"),
                target(f"sum by (venue) ({rate('flushwatch_feed_events_total')})", "events {{venue}}"),
            ),
            timeseries(
                "Feed rejects by reason",
                "Frames or items dropped by a collector per second, by venue and reason "
                "(`flushwatch_feed_rejected_messages_total`); `unknown_symbol` is routine.",
                PER_SECOND,
                target(f"sum by (venue, reason) ({rate('flushwatch_feed_rejected_messages_total')})",
                       "{{venue}} {{reason}}"),
                stacked=True,
            ),
            timeseries(
                "Feed reject ratio",
                "Share of frames rejected for a reason other than `unknown_symbol`, over 5 minutes (recording "
                "rule `instance_venue:flushwatch_feed_rejected_messages:ratio_rate5m`).",
                RATIO,
                target("max by (venue) (instance_venue:flushwatch_feed_rejected_messages:ratio_rate5m)",
                       "{{venue}}"),
                width=8,
            ),
            timeseries(
                "Reconnects by reason",
                "Websocket reconnections per interval, by venue and cause (`flushwatch_feed_reconnects_total`).",
                COUNT,
                target(f"sum by (venue, reason) (increase(flushwatch_feed_reconnects_total{RATE}))",
                       "{{venue}} {{reason}}"),
                bars=True,
                stacked=True,
                width=8,
            ),
            timeseries(
                "Feed staleness",
                "Seconds since the newest frame of each venue "
                f"(`time() - flushwatch_feed_last_message_timestamp_seconds`); the alert fires above {FEED_STALE_S}.",
                SECONDS,
                target("time() - max by (venue) (flushwatch_feed_last_message_timestamp_seconds)", "{{venue}}"),
                threshold_steps=thresholds("transparent", (FEED_STALE_S, "red")),
                minimum=0,
                width=8,
            ),
            timeseries(
                "Open websocket connections",
                "Open websocket connections per venue (`flushwatch_feed_connected_connections`).",
                COUNT,
                target("sum by (venue) (flushwatch_feed_connected_connections)", "{{venue}}"),
                minimum=0,
                decimals=0,
            ),
            timeseries(
                "Asset snapshot age",
                "Seconds since the event time of each asset's newest detector snapshot "
                f"(`flushwatch_asset_state_timestamp_seconds`); the alert fires above {SNAPSHOT_STALE_S}.",
                SECONDS,
                target("time() - max by (asset) (flushwatch_asset_state_timestamp_seconds)", "{{asset}}"),
                threshold_steps=thresholds("transparent", (SNAPSHOT_STALE_S, "red")),
                minimum=0,
            ),
            timeseries(
                "Writer queue and buffer",
                "Events waiting for the Redis writer (`flushwatch_writer_queue_events`) and events held back "
                "while Redis is unreachable (`flushwatch_writer_buffered_events`).",
                COUNT,
                target("sum(flushwatch_writer_queue_events)", "queued"),
                target("sum(flushwatch_writer_buffered_events)", "buffered"),
                minimum=0,
                width=8,
            ),
            timeseries(
                "Writer throughput and drops",
                "Events written to Redis per second (`flushwatch_writer_written_events_total`) and events "
                "dropped, by reason (`flushwatch_writer_dropped_events_total`).",
                PER_SECOND,
                target(f"sum({rate('flushwatch_writer_written_events_total')})", "written"),
                target(f"sum by (reason) ({rate('flushwatch_writer_dropped_events_total')})", "dropped {{reason}}"),
                width=8,
            ),
            timeseries(
                "Redis errors by role",
                "Failed Redis operations per second, by role (`flushwatch_redis_errors_total`).",
                PER_SECOND,
                target(f"sum by (role) ({rate('flushwatch_redis_errors_total')})", "{{role}}"),
                bars=True,
                width=8,
            ),
            timeseries(
                "Detector lag",
                "Local time minus receive time of the newest event the detector processed "
                f"(`flushwatch_detector_lag_seconds`); the alert fires above {DETECTOR_LAG_S} s.",
                SECONDS,
                target("max(flushwatch_detector_lag_seconds)", "lag"),
                threshold_steps=thresholds("transparent", (DETECTOR_LAG_S, "red")),
                minimum=0,
                width=8,
            ),
            timeseries(
                "Detector pending entries",
                "Stream entries delivered to the detector but not yet acknowledged "
                "(`flushwatch_detector_pending_entries`).",
                COUNT,
                target("sum(flushwatch_detector_pending_entries)", "pending"),
                minimum=0,
                width=8,
            ),
            timeseries(
                "Detector events and rejects",
                "Events processed by the detector per second (`flushwatch_detector_events_total`) and events it "
                "refused, by reason (`flushwatch_detector_rejected_events_total`).",
                PER_SECOND,
                target(f"sum({rate('flushwatch_detector_events_total')})", "processed"),
                target(f"sum by (reason) ({rate('flushwatch_detector_rejected_events_total')})",
                       "rejected {{reason}}"),
                width=8,
            ),
            timeseries(
                "Pipeline latency quantiles",
                "Time from frame receipt to the publication of a detector signal, by sink: 50th, 90th and 99th "
                "percentile from the histogram `flushwatch_pipeline_latency_seconds`.",
                SECONDS,
                *(
                    target(
                        f"histogram_quantile({q}, sum by (le, sink) "
                        f"({rate('flushwatch_pipeline_latency_seconds_bucket')}))",
                        f"p{round(q * 100)} {{{{sink}}}}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ),
                minimum=0,
            ),
            timeseries(
                "Alert role: rejected signals and suppressed events",
                "Signals the alert role could not use (`flushwatch_alerts_rejected_signals_total`) and stage "
                "changes not published as events (`flushwatch_alerts_suppressed_events_total`), per second by "
                "reason.",
                PER_SECOND,
                target(f"sum by (reason) ({rate('flushwatch_alerts_rejected_signals_total')})",
                       "rejected {{reason}}"),
                target(f"sum by (reason) ({rate('flushwatch_alerts_suppressed_events_total')})",
                       "suppressed {{reason}}"),
            ),
            state_timeline(
                "MQTT connection",
                "Whether the MQTT client is connected to the broker (`flushwatch_mqtt_connected`).",
                NUMBER,
                target("min(flushwatch_mqtt_connected)", "MQTT"),
                mapping=CONNECTED_MAPPING,
                threshold_steps=thresholds("red", (1, "green")),
                width=8,
            ),
            timeseries(
                "MQTT queued messages",
                "MQTT messages waiting for the broker (`flushwatch_mqtt_queued_messages`).",
                COUNT,
                target("sum(flushwatch_mqtt_queued_messages)", "queued"),
                minimum=0,
                width=8,
            ),
            timeseries(
                "MQTT published and dropped",
                "MQTT messages published per second by kind (`flushwatch_mqtt_published_messages_total`) and "
                "dropped because the outbound queue was full (`flushwatch_mqtt_dropped_messages_total`).",
                PER_SECOND,
                target(f"sum by (kind) ({rate('flushwatch_mqtt_published_messages_total')})",
                       "published {{kind}}"),
                target(f"sum({rate('flushwatch_mqtt_dropped_messages_total')})", "dropped"),
                width=8,
            ),
            timeseries(
                "REST polls by outcome",
                "REST polls (open interest) per second by venue and outcome (`flushwatch_rest_requests_total`).",
                REQUESTS_PER_SECOND,
                target(f"sum by (venue, outcome) ({rate('flushwatch_rest_requests_total')})",
                       "{{venue}} {{outcome}}"),
                stacked=True,
            ),
            timeseries(
                "REST request weight used",
                "Share of each venue's request-weight budget used (`flushwatch_rest_weight_used_ratio`).",
                RATIO,
                target("max by (venue) (flushwatch_rest_weight_used_ratio)", "{{venue}}"),
                minimum=0,
                maximum=1,
            ),
        ],
        time_from="now-3h",
    )


def dashboards() -> dict[str, Json]:
    """Every dashboard, keyed by its file name in ``grafana/dashboards``."""
    return {
        "market-overview.json": market_overview(),
        "asset-drilldown.json": asset_drilldown(),
        "pipeline-health.json": pipeline_health(),
    }


def render(board: Json) -> str:
    """The committed form of a dashboard: two-space indented JSON, key order as built, final newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = DASHBOARD_DIR) -> list[str]:
    """File names whose committed content differs from what :func:`dashboards` generates."""
    return [
        name
        for name, board in dashboards().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != render(board)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build", description="Write the Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is not current")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        if names := stale(args.out):
            print(f"not current, run `python -m grafana.build`: {', '.join(names)}", file=sys.stderr)
            return 1
        return 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
