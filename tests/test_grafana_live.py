"""Every Grafana panel query returns data from a real Prometheus scraping a real daemon during a flush."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import flush_daemon

from flushwatch.daemon import Daemon
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import RunningServer, free_port
from flushwatch.signals import Signal, StageChange
from flushwatch.waiting import until
from grafana.build import dashboards

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules" / "flushwatch.rules.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Grafana's variables and macros, as Grafana would expand them for this run (1 s scrape interval).
MACROS = {
    "$__rate_interval": "30s",
    "$__interval": "1s",
    "$__range": "5m",
    "$asset": "BTC",
}

NO_DATA_IN_A_SHORT_RUN = {
    # (dashboard, panel title, refId): reason
    ("market-overview.json", "Open interest change over 1 h", "A"):
        "divides by the open interest of one hour ago (offset 1h): a run of a minute has no such sample",
    ("asset-drilldown.json", "Liquidation rate and its ratio to the baseline", "B"):
        "the baseline is the 6 h liquidation increase ending 5 minutes ago (offset 5m): no history that old",
}
"""Panels that cannot have data in a run of a minute, by construction of the query, with the reason."""


def targets() -> Iterator[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, expr) of every target of every panel, rows included."""
    def walk(name: str, panels: list[dict[str, Any]]) -> Iterator[tuple[str, str, str, str]]:
        for panel in panels:
            yield from walk(name, panel.get("panels", []))
            for target in panel.get("targets", []):
                yield name, panel["title"], target["refId"], target["expr"]

    for name, dashboard in dashboards().items():
        yield from walk(name, dashboard["panels"])


def expand(expr: str) -> str:
    for macro in sorted(MACROS, key=len, reverse=True):  # $__rate_interval before $__range etc.
        expr = expr.replace(macro, MACROS[macro])
    assert "$" not in expr, f"unexpanded variable in {expr!r}"
    return expr


class Prometheus:
    """A real Prometheus scraping ``metrics_port`` every second, with the shipped rules, in ``directory``."""

    def __init__(self, directory: Path, metrics_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "flushwatch",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        config_file = directory / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        self.log = (directory / "prometheus.log").open("w+b")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_file}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read()) if path.startswith("/api/") else response.status

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited:\n{self.output()}"
        try:
            return bool(self._get("/-/ready") == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self._get("/api/v1/query", query=expr, time=f"{time.time():.3f}")
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        body = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def newest_scrape(self) -> float:
        result = self.query('timestamp(up{job="flushwatch"} == 1)')
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.mark.slow
async def test_every_grafana_target_has_data_in_a_real_prometheus(
    fake: FakeBinance, redis_server: RunningServer, mosquitto: RunningServer, tmp_path: Path
) -> None:
    # Prometheus scrapes once a second, so the flushed stage must last a few wall seconds: at 120x it lasted about
    # one, and a daemon that fell behind on a slow machine caught up in a burst that the scrapes missed.
    speed = 60.0
    scenario, settings = flush_daemon(fake, redis_server.url, mosquitto.port, f"graf-{uuid.uuid4().hex[:6]}/v1",
                                      speed)
    changes: list[StageChange] = []

    def on_signals(signals: list[Signal]) -> None:
        changes.extend(s for s in signals if isinstance(s, StageChange) and s.asset == "BTC" and s.side == "long")

    def reached(stage: int) -> float | None:
        """Wall-clock time at which BTC long first reached ``stage`` or beyond."""
        return next((s.ts_recv / 1e9 for s in changes if s.stage >= stage), None)

    daemon = Daemon(settings, on_signals=on_signals)
    runner = asyncio.create_task(daemon.run())
    prometheus: Prometheus | None = None
    try:
        await until(lambda: daemon.ready.is_set() and len(fake.open_connections) == 2, within=60)
        prometheus = Prometheus(tmp_path, daemon.metrics_port)
        prom = prometheus
        await until(prom.ready, within=30)
        await until(lambda: prom.newest_scrape() > 0, within=30)
        start = time.time()
        fake.attach(scenario)

        await until(lambda: reached(4) is not None and reached(7) is not None, within=scenario.duration_s / speed + 60)
        flushed_at = reached(7)
        assert flushed_at is not None
        # Prometheus has scraped (and evaluated the rules) after the flush, and a few seconds of rates exist.
        await until(lambda: prom.newest_scrape() > max(flushed_at, start + 10) + 2, within=30)
        end = time.time()

        empty, checked = [], 0
        for name, title, ref, expr in targets():
            if (name, title, ref) in NO_DATA_IN_A_SHORT_RUN:
                continue
            checked += 1
            if not prom.query_range(expand(expr), start, end):
                empty.append(f"{name} / {title} / {ref}: {expr}")
        assert not empty, "targets without data:\n" + "\n".join(empty)
        assert checked >= 30
        # The stage panels show the cascade and the flush the daemon signalled.
        stages = prom.query_range('max by (side) (flushwatch_stage{asset="BTC"})', start, end)
        seen = {float(v) for series in stages if series["metric"]["side"] == "long" for _, v in series["values"]}
        assert 7.0 in seen and max(seen) >= 4.0, seen
    finally:
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
        if prometheus is not None:
            assert prometheus.stop() == 0, prometheus.output()
