"""The shipped Prometheus and Alertmanager files, checked with the real tools, and the docs that go with them.

promtool (Debian package ``prometheus``) and amtool and alertmanager (``prometheus-alertmanager``) must be
installed: these tests fail, not skip, without them (``bash scripts/install-test-tools`` installs them).
Written against Debian bookworm's versions, Prometheus 2.42 and Alertmanager 0.25.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from alerts.catalogue import catalogue, catalogue_markdown, sample_state
from alerts.exporter import AssetStateCollector, MetricsServer

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "flushwatch.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "flushwatch.rules.test.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"

RUNBOOK_URL = "https://github.com/flushwatch/flushwatch/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning", "info"}
EVALUATION_INTERVAL_S = 15
PROMETHEUS_OWN_METRICS = {"up"}

INSTALL_HINT = (
    "install Debian's `prometheus` (promtool) and `prometheus-alertmanager` (amtool, alertmanager) packages: "
    "`bash scripts/install-test-tools`, or `apt-get install prometheus prometheus-alertmanager`"
)


def tool(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(f"{' / '.join(names)} not found on PATH: {INSTALL_HINT}")


def run(*args: str | Path, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], input=stdin.decode() if stdin is not None else None, capture_output=True,
        text=True, timeout=timeout,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout}\n{result.stderr}"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def seconds(duration: str) -> int:
    total = 0
    for amount, unit in re.findall(r"(\d+)(ms|[smhdwy])", duration):
        assert unit != "ms", duration
        total += int(amount) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]
    return total


def duration(total: int) -> str:
    return f"{total}s"


# --- the tools' own checks ----------------------------------------------------------------------------------


def test_prometheus_config_passes_promtool() -> None:
    assert_ok(run(tool("promtool"), "check", "config", "--lint=all", "--lint-fatal", PROMETHEUS_CONFIG))


def test_prometheus_config_scrapes_flushwatch_every_15_s() -> None:
    config = load(PROMETHEUS_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "flushwatch"]
    assert job["static_configs"] == [{"targets": ["flushwatch:9464"]}]
    assert job["scrape_interval"] == config["global"]["evaluation_interval"] == f"{EVALUATION_INTERVAL_S}s"
    assert [PROMETHEUS_CONFIG.parent / f for f in config["rule_files"]] == [RULES]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_rules_pass_promtool_lint() -> None:
    # 2.42's --lint knows `duplicate-rules` only; `all` picks up whatever a newer promtool adds.
    assert_ok(run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", RULES))


def test_rule_unit_tests_pass() -> None:
    assert_ok(run(tool("promtool"), "test", "rules", RULE_TESTS))


def test_alertmanager_config_passes_amtool() -> None:
    assert_ok(run(tool("amtool"), "check-config", ALERTMANAGER_CONFIG))


# --- conventions of the rules -------------------------------------------------------------------------------


def test_every_alert_follows_the_conventions() -> None:
    rules = alert_rules()
    assert len(rules) >= 15
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Flushwatch(?:[A-Z][a-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        summary, description = annotations["summary"], annotations["description"]
        assert "{{" not in summary and summary.endswith("."), f"{name}: summary must be static and end with '.'"
        assert "$labels" in description or "$value" in description, f"{name}: description must be templated"
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        # entry and exit hysteresis, in whole evaluations
        for key in ("for", "keep_firing_for"):
            assert key in rule, f"{name} has no {key}:"
            assert seconds(rule[key]) > 0 and seconds(rule[key]) % EVALUATION_INTERVAL_S == 0, (name, key)
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))


def test_the_required_alerts_exist_with_their_severity() -> None:
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert severity == {
        "FlushwatchOverheatHot": "info",
        "FlushwatchOverheated": "warning",
        "FlushwatchCascadeActive": "critical",
        "FlushwatchSnowball": "critical",
        "FlushwatchFlushComplete": "info",
        "FlushwatchTargetDown": "critical",
        "FlushwatchFeedStale": "critical",
        "FlushwatchFeedSilent": "critical",
        "FlushwatchDetectorLag": "warning",
        "FlushwatchRedisErrors": "warning",
        "FlushwatchWriterDroppingEvents": "warning",
        "FlushwatchMqttDisconnected": "warning",
        "FlushwatchMqttDroppingMessages": "warning",
        "FlushwatchCheckpointFailing": "warning",
        "FlushwatchFeedRejectsSpike": "warning",
        "FlushwatchDetectorRejectsSpike": "warning",
        "FlushwatchAssetStateStale": "warning",
        "FlushwatchVenueCoverageLost": "warning",
    }


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        text = re.sub(r"[`*_\[\]()]", "", heading).strip().lower()
        anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_every_runbook_url_has_its_section() -> None:
    runbook = RUNBOOK.read_text()
    anchors = github_anchors(runbook)
    names = {rule["alert"] for rule in alert_rules()}
    for name in names:
        assert name.lower() in anchors, f"docs/runbook.md has no section '{name}'"
    # and no section for an alert that does not exist (any more)
    documented = set(re.findall(r"^#{2,6}\s+(Flushwatch\w+)\s*$", runbook, re.M))
    assert documented == names


def test_the_runbook_table_matches_the_rules() -> None:
    rows = {
        m[0]: (m[1], m[2], m[3])
        for m in re.findall(r"^\| \[(Flushwatch\w+)\]\(#\w+\)[^|]*\| (\w+) \| (\w+) \| (\w+) \|$",
                            RUNBOOK.read_text(), re.M)
    }
    expected = {r["alert"]: (r["labels"]["severity"], r["for"], r["keep_firing_for"]) for r in alert_rules()}
    assert rows == expected


# --- unit tests of the rules: coverage, and that they pin `for:` and `keep_firing_for:` ------------------------


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"


def promtool_test_of(alert: str, rule_change: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Runs the unit tests that check ``alert`` against the rules with ``rule_change`` applied to it."""
    rules = load(RULES)
    groups = []
    for group in rules["groups"]:
        kept = []
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                kept.append({**rule, **rule_change})
            elif "record" in rule:
                kept.append(rule)
        if kept:
            groups.append({**group, "rules": kept})
    tests = load(RULE_TESTS)
    cases = []
    for group in tests["tests"]:
        checks = [c for c in group.get("alert_rule_test", []) if c["alertname"] == alert]
        if checks:
            cases.append({k: v for k, v in group.items() if k != "promql_expr_test"} | {"alert_rule_test": checks})
    assert cases, alert
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    test_file = tmp / "tests.yml"
    test_file.write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": tests["evaluation_interval"], "tests": cases},
        sort_keys=False,
    ))
    return run(tool("promtool"), "test", "rules", test_file)


def test_unit_tests_pin_for_and_keep_firing_for_of_every_alert(tmp_path: Path) -> None:
    """One evaluation more or less of ``for:`` or ``keep_firing_for:`` must fail the alert's tests."""
    step = EVALUATION_INTERVAL_S
    jobs: list[tuple[str, dict[str, str], bool]] = []
    for rule in alert_rules():
        name, hold, keep = rule["alert"], seconds(rule["for"]), seconds(rule["keep_firing_for"])
        jobs.append((name, {}, True))
        jobs += [(name, {"for": duration(hold + d)}, False) for d in (-step, step)]
        jobs += [(name, {"keep_firing_for": duration(keep + d)}, False) for d in (-step, step)]

    def check(index: int) -> str | None:
        name, change, should_pass = jobs[index]
        work = tmp_path / str(index)
        work.mkdir()
        result = promtool_test_of(name, change, work)
        if (result.returncode == 0) != should_pass:
            return f"{name} {change or 'unchanged'}: promtool test {'failed' if should_pass else 'passed'}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(check, range(len(jobs))) if p]
    assert problems == []


# --- metric names: the catalogue, the rules and a live scrape ------------------------------------------------


def test_metrics_doc_is_generated_from_the_registries() -> None:
    assert METRICS_DOC.read_text() == catalogue_markdown(), (
        "docs/metrics.md is out of date: python -m alerts.catalogue > docs/metrics.md"
    )


def rule_metric_names() -> set[str]:
    rules = [rule for group in load(RULES)["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    names = set()
    for rule in rules:
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', rule["expr"])  # no label values
        expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
        for token in re.findall(r"(?<![\w:.])[a-zA-Z_:][\w:]*", expr):
            if token not in recorded and (token.startswith("flushwatch_") or token in PROMETHEUS_OWN_METRICS):
                names.add(token)
    for token in recorded:
        assert ":" in token, f"recording rule {token} should be named level:metric:operations"
    return names


def test_rules_use_only_catalogued_metrics() -> None:
    exposed = {series for entry in catalogue() for series in entry.series_names}
    used = rule_metric_names()
    assert {"flushwatch_stage", "flushwatch_overheat_score", "flushwatch_feed_messages_total", "up"} <= used
    unknown = used - exposed - PROMETHEUS_OWN_METRICS
    assert unknown == set(), "rules use metrics flushwatch does not export (see docs/metrics.md)"


@pytest.fixture
def served() -> Iterator[MetricsServer]:
    collector = AssetStateCollector()
    collector.update(sample_state())
    REGISTRY.register(collector)
    server = MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.close()
        REGISTRY.unregister(collector)


def test_live_scrape_passes_promtool_check_metrics(served: MetricsServer) -> None:
    promtool = tool("promtool")
    response = httpx.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5)
    assert response.status_code == 200
    result = run(promtool, "check", "metrics", stdin=response.content)
    assert_ok(result)
    # the catalogue lists exactly what is served
    families = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in text_string_to_metric_families(response.text)
        if f.name.startswith("flushwatch_")
    }
    assert families == {entry.name for entry in catalogue()}


# --- Alertmanager: routing (amtool) and inhibition (a real alertmanager) -----------------------------------


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ("alertname=FlushwatchCascadeActive severity=critical asset=BTC side=long", "webhook,telegram-majors"),
        ("alertname=FlushwatchSnowball severity=critical asset=ETH side=short", "webhook,telegram-majors"),
        ("alertname=FlushwatchCascadeActive severity=critical asset=SOL side=long", "webhook,slack-market"),
        ("alertname=FlushwatchOverheated severity=warning asset=BTC side=long", "webhook,slack-market"),
        ("alertname=FlushwatchFlushComplete severity=info asset=ETH side=long", "webhook,slack-market"),
        ("alertname=FlushwatchFeedStale severity=critical venue=binance", "webhook,slack-ops"),
        ("alertname=FlushwatchDetectorLag severity=warning", "webhook,slack-ops"),
        ("alertname=SomethingElse", "webhook"),
    ],
)
def test_alertmanager_routes_by_severity_and_asset(labels: str, receivers: str) -> None:
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                 f"--verify.receivers={receivers}", *labels.split())
    assert_ok(result)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The shipped routes and inhibition rules in a real Alertmanager, with receivers that send nothing."""
    binary = tool("prometheus-alertmanager", "alertmanager")
    config = copy.deepcopy(load(ALERTMANAGER_CONFIG))
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}", "--cluster.listen-address="],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"alertmanager did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_alertmanager_inhibits_as_documented(alertmanager: str) -> None:
    def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": severity, "instance": "flushwatch:9464", **labels}}

    alerts = [
        # snowball hides the cascade of the same asset and side, not of the other side
        alert("FlushwatchSnowball", "critical", asset="BTC", side="long"),
        alert("FlushwatchCascadeActive", "critical", asset="BTC", side="long"),
        alert("FlushwatchCascadeActive", "critical", asset="ETH", side="short"),
        # a cascade hides overheating of the same asset, either side; not of other assets
        alert("FlushwatchOverheated", "warning", asset="ETH", side="long"),
        alert("FlushwatchOverheatHot", "info", asset="BTC", side="short"),
        alert("FlushwatchOverheated", "warning", asset="SOL", side="long"),
        # overheated hides hot of the same side only
        alert("FlushwatchOverheatHot", "info", asset="SOL", side="long"),
        alert("FlushwatchOverheatHot", "info", asset="SOL", side="short"),
        # silent hides stale for the same venue; a stale feed hides stale asset states
        alert("FlushwatchFeedSilent", "critical", venue="binance"),
        alert("FlushwatchFeedStale", "critical", venue="binance"),
        alert("FlushwatchFeedStale", "critical", venue="bybit"),
        alert("FlushwatchAssetStateStale", "warning", asset="BTC"),
    ]
    response = httpx.post(f"{alertmanager}/api/v2/alerts", content=json.dumps(alerts),
                          headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 200, response.text
    expected_suppressed = {
        ("FlushwatchCascadeActive", "BTC", "long", ""),
        ("FlushwatchOverheated", "ETH", "long", ""),
        ("FlushwatchOverheatHot", "BTC", "short", ""),
        ("FlushwatchOverheatHot", "SOL", "long", ""),
        ("FlushwatchFeedStale", "", "", "binance"),
        ("FlushwatchAssetStateStale", "BTC", "", ""),
    }
    deadline = time.monotonic() + 10
    while True:
        listed = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        state = {
            (a["labels"]["alertname"], a["labels"].get("asset", ""), a["labels"].get("side", ""),
             a["labels"].get("venue", "")): a["status"]["state"]
            for a in listed
        }
        suppressed = {key for key, value in state.items() if value == "suppressed"}
        if (len(state) == len(alerts) and suppressed == expected_suppressed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(state) == len(alerts)
    assert suppressed == expected_suppressed
