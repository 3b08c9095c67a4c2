"""The exporter over real HTTP: the asset collector in the default registry, /metrics and /healthz."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import flushwatch
from alerts.exporter import AssetStateCollector, HealthCheck, MetricsServer
from flushwatch.signals import FEATURE_NAMES, TOTAL_KEYS, AssetState, SideState, packed

TS = 1_727_740_800_000_000_000


def asset_state(asset: str, *, long_stage: int = 0, short_stage: int = 0, ts: int = TS,
                features: dict[str, float] | None = None, totals: dict[str, float] | None = None) -> AssetState:
    return AssetState(
        asset=asset,
        ts=ts,
        ts_recv=ts,
        long=SideState("long", long_stage, "calm", 40.0, ""),
        short=SideState("short", short_stage, "calm", 12.5, ""),
        feature_values=packed(features or {}, FEATURE_NAMES),
        total_values=packed(totals or {}, TOTAL_KEYS),
    )


@pytest.fixture
def collector() -> Iterator[AssetStateCollector]:
    collector = AssetStateCollector()
    REGISTRY.register(collector)
    try:
        yield collector
    finally:
        REGISTRY.unregister(collector)


def serve(health: HealthCheck | None = None) -> MetricsServer:
    server = MetricsServer("127.0.0.1", 0, health=health)
    server.start()
    return server


def scrape(server: MetricsServer) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return response.text, values


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_metrics_expose_the_newest_state_per_asset(collector: AssetStateCollector) -> None:
    collector.update(asset_state("BTC", features={"price": 1.0}, totals={"liq_long_usd": 1.0}))
    collector.update(asset_state(
        "BTC",
        long_stage=3,
        ts=TS + 2_000_000_000,
        features={
            "price": 63_000.5, "funding_8h": 0.0003, "oi_usd": 9.5e9, "premium_bps": 5.0, "spread_bps": 0.2,
            "depth1_usd": 4.2e7, "liq_rate_long": 250_000.0, "liq_rate_short": 0.0, "z1": 3.3,
        },
        totals={"liq_long_usd": 1.5e6, "liq_short_usd": 2.0e4, "taker_buy_usd": 7e8, "taker_sell_usd": 8e8,
                "trades": 123_456.0},
    ))
    collector.update(asset_state("ETH", short_stage=1, features={"price": 2_500.0, "oi_usd": math.nan,
                                                                  "funding_8h": math.inf}))
    server = serve()
    try:
        text, values = scrape(server)
    finally:
        server.close()
    expected = {
        key("flushwatch_stage", asset="BTC", side="long"): 3,
        key("flushwatch_stage", asset="BTC", side="short"): 0,
        key("flushwatch_stage", asset="ETH", side="short"): 1,
        key("flushwatch_overheat_score", asset="BTC", side="long"): 40.0,
        key("flushwatch_overheat_score", asset="BTC", side="short"): 12.5,
        key("flushwatch_asset_state_timestamp_seconds", asset="BTC"): 1_727_740_802.0,
        key("flushwatch_price_usd", asset="BTC"): 63_000.5,
        key("flushwatch_price_usd", asset="ETH"): 2_500.0,
        key("flushwatch_funding_rate_8h_ratio", asset="BTC"): 0.0003,
        key("flushwatch_open_interest_usd", asset="BTC"): 9.5e9,
        key("flushwatch_premium_ratio", asset="BTC"): 0.0005,
        key("flushwatch_spread_ratio", asset="BTC"): 0.00002,
        key("flushwatch_depth_1pct_usd", asset="BTC"): 4.2e7,
        key("flushwatch_liquidation_rate_usd", asset="BTC", side="long"): 250_000.0,
        key("flushwatch_liquidation_rate_usd", asset="BTC", side="short"): 0.0,
        key("flushwatch_liquidations_usd_total", asset="BTC", side="long"): 1.5e6,
        key("flushwatch_liquidations_usd_total", asset="BTC", side="short"): 2.0e4,
        key("flushwatch_taker_volume_usd_total", asset="BTC", side="buy"): 7e8,
        key("flushwatch_taker_volume_usd_total", asset="BTC", side="sell"): 8e8,
        key("flushwatch_asset_events_total", asset="BTC", kind="trades"): 123_456.0,
        key("flushwatch_build_info", version=flushwatch.__version__): 1.0,
    }
    for name, value in expected.items():
        assert values.get(name) == pytest.approx(value), name
    # non-finite or missing features are absent, not NaN
    assert key("flushwatch_open_interest_usd", asset="ETH") not in values
    assert key("flushwatch_funding_rate_8h_ratio", asset="ETH") not in values
    assert key("flushwatch_liquidations_usd_total", asset="ETH", side="long") not in values
    assert "NaN" not in text and "Inf" not in text.replace("+Inf", "")
    # the shared process metrics are on the same page
    assert "# TYPE flushwatch_mqtt_connected gauge" in text
    assert "# TYPE flushwatch_liquidations_usd_total counter" in text


def test_scrape_passes_promtool(collector: AssetStateCollector) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'); exposition lint skipped")
    collector.update(asset_state("BTC", long_stage=4, features={"price": 1.0, "premium_bps": -3.0},
                                 totals={"liq_long_usd": 5.0, "trades": 2.0}))
    server = serve()
    try:
        text, _ = scrape(server)
    finally:
        server.close()
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize(
    ("health", "status", "body"),
    [
        (None, 200, "ok"),
        (lambda: (True, "redis ok, mqtt ok"), 200, "redis ok, mqtt ok"),
        (lambda: (False, "mqtt disconnected"), 503, "mqtt disconnected"),
        (lambda: 1 / 0, 503, "health check failed: ZeroDivisionError('division by zero')"),
    ],
)
def test_healthz_reports_the_hook(health: HealthCheck | None, status: int, body: str) -> None:
    server = serve(health)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        missing = httpx.get(f"http://127.0.0.1:{server.port}/nope", timeout=5)
    finally:
        server.close()
    assert (response.status_code, response.text) == (status, body + "\n")
    assert missing.status_code == 404


def test_close_releases_the_port() -> None:
    server = serve()
    assert httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code == 200
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
