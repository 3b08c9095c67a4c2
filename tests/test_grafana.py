"""The Grafana dashboards (``grafana/build.py``) and their provisioning files.

No Grafana server is needed: the committed JSON must be what the generator writes, every panel must have
what dashboard-linter's rules ask for (title, description, unit, target, datasource, counters in
``rate``/``increase``), every metric must be catalogued, and every query must be valid PromQL for Debian's
``promtool`` (fails, not skips, without it: ``bash scripts/install-test-tools``).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "flushwatch.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "flushwatch-prometheus"}
EXPECTED = {"market-overview.json", "asset-drilldown.json", "pipeline-health.json"}

COUNTER = re.compile(r"\bflushwatch_\w+_(?:total|bucket)\b")
RANGE = r"\[(?:\$__rate_interval|\$__range|\d+[smhdw])\]"
RECORDING_RULE_NAME = re.compile(r"\b[a-zA-Z_]\w*(?::\w+)+")
METRIC_NAME = re.compile(r"\bflushwatch_\w+")


def build() -> ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("grafana.build")


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = build().dashboards()
    return result


def panels(boards: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, panel) for name, board in boards.items() for panel in board["panels"]]


def exprs(boards: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"{name}: {panel['title']}", t["expr"]) for name, panel in panels(boards) for t in panel["targets"]]


def catalogued_metrics() -> set[str]:
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(flushwatch_\w+)` \| (\w+) \|", METRICS_DOC.read_text(), re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert len(names) > 30, "could not parse docs/metrics.md"
    return names


def recording_rules() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_committed_json_is_what_the_generator_writes(boards: dict[str, dict[str, Any]]) -> None:
    module = build()
    assert set(boards) == EXPECTED
    assert {p.name for p in DASHBOARDS.glob("*.json")} == EXPECTED
    for name, board in boards.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == module.render(board), (
            f"grafana/dashboards/{name} is not current: run `python -m grafana.build`"
        )
    assert module.stale() == []


def test_generator_command_writes_the_files(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "grafana.build", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in EXPECTED:
        assert (tmp_path / name).read_bytes() == (DASHBOARDS / name).read_bytes()
    check = subprocess.run([sys.executable, "-m", "grafana.build", "--check", "--out", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_dashboards_are_classic_model_with_stable_unique_uids(boards: dict[str, dict[str, Any]]) -> None:
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    assert set(uids) == {"flushwatch-market-overview", "flushwatch-asset-drilldown", "flushwatch-pipeline-health"}
    for name, board in boards.items():
        assert 39 <= board["schemaVersion"] <= 42, name
        assert board["id"] is None and board["title"] and board["description"] and "flushwatch" in board["tags"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), name
        titles = [panel["title"] for panel in board["panels"]]
        assert len(set(titles)) == len(titles), name


def test_panels_do_not_overlap_and_fit_the_grid(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (name, panel["title"])
            mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & mine, (name, panel["title"])
            cells |= mine


def test_every_panel_has_title_description_unit_datasource_and_targets(boards: dict[str, dict[str, Any]]) -> None:
    for name, panel in panels(boards):
        where = f"{name}: {panel.get('title')!r}"
        assert panel["title"].strip(), where
        assert len(panel["description"].strip()) >= 20, where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), where
        for t in panel["targets"]:
            assert t["datasource"] == DATASOURCE, where
            assert t["expr"].strip(), where


def test_the_requested_panels_are_there(boards: dict[str, dict[str, Any]]) -> None:
    def text(name: str) -> str:
        return " ".join(t["expr"] for panel in boards[name]["panels"] for t in panel["targets"])

    overview = text("market-overview.json")
    for metric in ("flushwatch_stage", "flushwatch_overheat_score", "flushwatch_liquidations_usd_total",
                   "flushwatch_funding_rate_8h_ratio", "flushwatch_open_interest_usd"):
        assert metric in overview
    overview_panels = boards["market-overview.json"]["panels"]
    stage_panels = [p for p in overview_panels if "flushwatch_stage" in p["targets"][0]["expr"]]
    mapping = stage_panels[0]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert set(mapping) == {str(stage) for stage in range(8)}
    assert all(option["color"] and option["text"] for option in mapping.values())

    drilldown = text("asset-drilldown.json")
    for metric in ("flushwatch_price_usd", "flushwatch_stage", "flushwatch_liquidations_usd_total",
                   "flushwatch_liquidation_rate_usd", "flushwatch_open_interest_usd",
                   "flushwatch_funding_rate_8h_ratio", "flushwatch_premium_ratio", "flushwatch_depth_1pct_usd",
                   "flushwatch_spread_ratio", "flushwatch_overheat_score"):
        assert f'{metric}{{asset="$asset"}}' in drilldown, metric
    (variable,) = boards["asset-drilldown.json"]["templating"]["list"]
    assert variable["name"] == "asset" and variable["type"] == "query"
    assert variable["definition"].startswith("label_values(") and variable["datasource"] == DATASOURCE

    health = text("pipeline-health.json")
    for fragment in ("flushwatch_feed_messages_total", "flushwatch_feed_rejected_messages_total",
                     "flushwatch_feed_reconnects_total", "time() - max by (venue) (flushwatch_feed_last_message",
                     "flushwatch_writer_queue_events", "flushwatch_writer_buffered_events",
                     "flushwatch_writer_dropped_events_total", "flushwatch_detector_lag_seconds",
                     "flushwatch_detector_pending_entries", "histogram_quantile(",
                     "flushwatch_mqtt_connected", "flushwatch_mqtt_queued_messages", "flushwatch_redis_errors_total"):
        assert fragment in health, fragment


def test_counters_are_only_read_through_rate_or_increase(boards: dict[str, dict[str, Any]]) -> None:
    for where, expr in exprs(boards):
        for match in COUNTER.finditer(expr):
            before = expr[: match.start()]
            after = expr[match.end():]
            assert re.search(r"\b(?:rate|irate|increase)\(\s*$", before), f"{where}: {match.group()} bare: {expr}"
            assert re.match(r"(?:\{[^}]*\})?" + RANGE, after), f"{where}: {match.group()} without a range: {expr}"
        if re.search(r"\b(?:rate|irate)\(", expr):
            assert "[$__rate_interval]" in expr, f"{where}: rate without $__rate_interval: {expr}"


def test_every_metric_is_catalogued_or_a_recording_rule(boards: dict[str, dict[str, Any]]) -> None:
    known = catalogued_metrics()
    records = recording_rules()
    variables = [v["definition"] for board in boards.values() for v in board["templating"]["list"]]
    for where, expr in [*exprs(boards), *(("variable", d) for d in variables)]:
        for name in RECORDING_RULE_NAME.findall(expr):
            assert name in records, f"{where}: {name} is not a recording rule"
        for name in METRIC_NAME.findall(RECORDING_RULE_NAME.sub("", expr)):
            assert name in known, f"{where}: {name} is not in docs/metrics.md"


def test_every_expression_is_valid_promql(boards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found on PATH: install Debian's `prometheus` (bash scripts/install-test-tools)")
    rules = []
    for number, (where, expr) in enumerate(exprs(boards)):
        substituted = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$asset", "BTC")
        assert "$" not in substituted, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"grafana:expr_{number}", "expr": substituted})
    path = tmp_path / "grafana.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}, sort_keys=False))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"{len(rules)} rules found" in result.stdout


def test_provisioning_files() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "flushwatch.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE["uid"]
    assert source["url"] == "http://prometheus:9090" and source["access"] == "proxy"

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "flushwatch.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "flushwatch"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
