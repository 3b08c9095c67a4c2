"""The built-in live page: its routes on the metrics server, what ``/api/assets`` and ``/api/events`` carry,
and the page itself in headless Chromium following a real daemon through the scripted flush.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (fails, not skips, without them:
``bash scripts/install-test-tools``) and selenium (the ``dev`` extra). It saves ``artefacts/live-page.png``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from harness import flush_daemon
from prometheus_client import CollectorRegistry

from alerts.exporter import MetricsServer
from alerts.livepage import LIVE_PAGE, ROUTES, LivePage
from flushwatch.daemon import Daemon
from flushwatch.events import PositionSide
from flushwatch.fake.server import FakeBinance
from flushwatch.servers import RunningServer
from flushwatch.signals import FEATURE_NAMES, TOTAL_KEYS, AssetState, SideState, StageChange, packed, stage_name
from flushwatch.waiting import until

ARTIFACTS = Path(__file__).resolve().parents[1] / "artefacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T0 = 1_700_000_000_000_000_000
NO_TOTALS = packed({}, TOTAL_KEYS)


def side(name: PositionSide, stage: int = 0, score: float = 10.0, paused: bool = False) -> SideState:
    return SideState(side=name, stage=stage, stage_name=stage_name(stage, score >= 70), overheat_score=score,
                     episode_id=f"{name}-1" if stage else "", paused=paused)


def snapshot(asset: str = "BTC", t_s: float = 0.0, *, long_stage: int = 0, long_score: float = 20.0,
             short_score: float = 5.0, price: float = 60_000.0, **features: float) -> AssetState:
    values = {"price": price, "liq_rate_long": 1e6, "liq_rate_short": 0.0, "oi_usd": 8e9, "funding_8h": 1e-4,
              **features}
    return AssetState(asset=asset, ts=T0 + int(t_s * 1e9), ts_recv=time.time_ns(),
                      long=side("long", long_stage, long_score), short=side("short", 0, short_score),
                      feature_values=packed(values, FEATURE_NAMES), total_values=NO_TOTALS)


def change(asset: str = "BTC", stage_from: int = 0, stage: int = 1) -> StageChange:
    return StageChange(asset=asset, side="long", ts=T0, ts_recv=time.time_ns(), stage_from=stage_from, stage=stage,
                       stage_name=stage_name(stage, False), overheat_score=55.0, episode_id="BTC-long-1",
                       evidence={}, thresholds={}, conditions=[])


class Served:
    """A real metrics server (its own registry) serving ``page`` on a free port."""

    def __init__(self, page: LivePage) -> None:
        self.page = page
        self.server = MetricsServer("127.0.0.1", 0, registry=CollectorRegistry(), live=page)
        self.server.start()

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def assets(self) -> dict[str, Any]:
        status, _, body = self.request("GET", "/api/assets")
        assert status == 200
        return dict(json.loads(body))


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(LivePage(keepalive_s=0.3))
    try:
        yield s
    finally:
        s.server.close()


class EventStream:
    """A raw ``/api/events`` connection read line by line, as a browser's EventSource reads it."""

    def __init__(self, port: int, last_event_id: int | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/api/events", headers=headers)
        self.response = self.conn.getresponse()

    def line(self) -> str:
        raw = self.response.readline()
        if not raw:
            raise EOFError("the stream ended")
        return raw.decode().rstrip("\n")

    def until(self, predicate: Any) -> list[str]:
        """Lines read up to and including the first that satisfies ``predicate``."""
        lines = [self.line()]
        while not predicate(lines[-1]):
            lines.append(self.line())
        return lines

    def event(self) -> tuple[str, str, str]:
        """The next event: (id, event type, data), skipping comments and the retry field."""
        fields: dict[str, str] = {}
        while True:
            line = self.line()
            if not line:
                if "data" in fields:
                    return fields.get("id", ""), fields.get("event", "message"), fields["data"]
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def close(self) -> None:
        self.response.close()  # the response holds the socket open otherwise
        self.conn.close()


# -- the routes ---------------------------------------------------------------------------------------------


def test_static_files_are_package_data() -> None:
    for name in ("index.html", "app.js", "style.css"):
        assert resources.files("alerts").joinpath("live", name).is_file(), name


def test_routes_answer_beside_metrics_and_healthz(served: Served) -> None:
    expected = {
        "/": "text/html",
        "/live/app.js": "text/javascript",
        "/live/style.css": "text/css",
        "/api/assets": "application/json",
    }
    for path, content_type in expected.items():
        status, headers, body = served.request("GET", path)
        assert status == 200, path
        assert headers["content-type"].startswith(content_type), (path, headers)
        assert headers["x-content-type-options"] == "nosniff"
        assert int(headers["content-length"]) == len(body) > 0
        head_status, head_headers, head_body = served.request("HEAD", path)
        assert (head_status, head_body) == (200, b"")
        assert head_headers["content-length"] == headers["content-length"]
    page = served.request("GET", "/")[2].decode()
    assert 'src="live/app.js"' in page and 'href="live/style.css"' in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert "script-src 'self'" in served.request("GET", "/")[1]["content-security-policy"]
    status, headers, body = served.request("HEAD", "/api/events")
    assert (status, body) == (200, b"") and headers["content-type"].startswith("text/event-stream")

    for path in sorted(ROUTES):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, _ = served.request(method, path)
            assert status == 405, (method, path)
            assert headers["allow"] == "GET, HEAD"
    for path in ("/nope", "/live/", "/live/secret.py", "/api", "/api/assets/BTC", "/index.html"):
        assert served.request("GET", path)[0] == 404, path
    assert served.request("GET", "/metrics")[0] == 200
    assert served.request("GET", "/healthz")[:3:2] == (200, b"ok\n")


def test_metrics_server_without_a_live_page_serves_none() -> None:
    server = MetricsServer("127.0.0.1", 0, registry=CollectorRegistry(), live=None)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        server.close()


# -- /api/assets ----------------------------------------------------------------------------------------------


def test_assets_reflect_the_signals_fed_in(served: Served) -> None:
    page = served.page
    assert served.assets()["assets"] == []
    page.update(snapshot("BTC", 0.0, long_stage=0, long_score=20.0))
    page.update(snapshot("ETH", 0.0, price=3000.0, oi_usd=float("nan")))
    page.change(change("BTC", 0, 4))
    page.update(snapshot("BTC", 1.0, long_stage=4, long_score=81.5, liq_rate_long=4e7))
    page.update(AssetState(asset="SOL", ts=T0, ts_recv=0, long=side("long", 0, 20.0),
                           short=side("short", 2, 75.0, paused=True), feature_values=packed({}, FEATURE_NAMES),
                           total_values=NO_TOTALS))

    body = served.assets()
    assert [a["asset"] for a in body["assets"]] == ["BTC", "ETH", "SOL"]
    btc, eth, sol = body["assets"]
    assert (btc["stage"], btc["stage_name"], btc["side"], btc["overheat_score"]) == (4, "cascade", "long", 81.5)
    assert btc["sides"]["short"] == {"stage": 0, "stage_name": "calm", "overheat_score": 5.0, "paused": False}
    assert (btc["price"], btc["liq_rate_long"], btc["liq_rate_short"], btc["oi_usd"], btc["funding_8h"]) == (
        60_000.0, 4e7, 0.0, 8e9, 1e-4)
    assert btc["ts"] == pytest.approx(T0 / 1e9 + 1.0)
    assert btc["history"]["t"] == pytest.approx([T0 / 1e9, T0 / 1e9 + 1.0])
    assert btc["history"]["liq_rate_long"] == [1e6, 4e7]
    assert eth["oi_usd"] is None and eth["history"]["oi_usd"] == [None]  # JSON has no NaN
    # The side at risk is the one with the higher stage, and it carries the pause.
    assert (sol["side"], sol["stage"], sol["stage_name"], sol["paused"]) == ("short", 2, "air_pocket", True)
    assert sol["price"] is None
    assert body["changes"] == [{"asset": "BTC", "side": "long", "ts": T0 / 1e9, "stage_from": 0,
                                "stage_from_name": "calm", "stage": 4, "stage_name": "cascade",
                                "overheat_score": 55.0, "paused": False}]
    assert body["seq"] == 5 and body["window_s"] == 900.0
    assert "settings" not in body and "url" not in json.dumps(body)


def test_history_is_bounded_by_points_window_and_step() -> None:
    page = LivePage(history_max=10, window_s=3600.0)
    for i in range(100):
        page.update(snapshot("BTC", float(i), price=float(i)))
    history = page.snapshot()["assets"][0]["history"]
    assert history["price"] == [float(i) for i in range(90, 100)]

    page = LivePage(window_s=5.0)
    for i in range(20):
        page.update(snapshot("BTC", float(i)))
    t = page.snapshot()["assets"][0]["history"]["t"]
    assert len(t) == 6 and t[0] == pytest.approx(T0 / 1e9 + 14.0)

    # Snapshots faster than the step share one point (the newest), so the window is not cut short.
    page = LivePage(step_s=1.0)
    for i in range(50):
        page.update(snapshot("BTC", i * 0.1, price=float(i)))
    history = page.snapshot()["assets"][0]["history"]
    assert len(history["t"]) == 5 and history["price"][-1] == 49.0

    page = LivePage(max_assets=2, changes_max=3)
    for asset in ("A", "B", "C"):
        page.update(snapshot(asset))
    for _ in range(5):
        page.change(change("A"))
    page.change(change("C"))
    body = page.snapshot()
    assert [a["asset"] for a in body["assets"]] == ["A", "B"]
    assert len(body["changes"]) == 3 and {c["asset"] for c in body["changes"]} == {"A"}

    page.clear()
    assert page.snapshot()["assets"] == [] and page.snapshot()["changes"] == []


# -- /api/events ----------------------------------------------------------------------------------------------


def test_event_stream_delivers_updates_pushed_after_it_opened_and_keeps_alive(served: Served) -> None:
    page = served.page
    page.update(snapshot("BTC", 0.0))  # before the stream: not replayed to a new page
    stream = EventStream(served.server.port)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        assert stream.response.getheader("Cache-Control") == "no-cache"
        assert stream.until(lambda line: line == ": connected")[0] == "retry: 2000"

        pushed = threading.Thread(target=page.update, args=(snapshot("BTC", 1.0, long_stage=1, long_score=40.0),))
        pushed.start()
        pushed.join(5)
        event_id, kind, data = stream.event()
        state = json.loads(data)
        assert (event_id, kind) == ("2", "state")
        assert (state["asset"], state["stage"], state["stage_name"], state["side"]) == ("BTC", 1, "shock", "long")
        assert state["point"][0] == pytest.approx(T0 / 1e9 + 1.0)

        page.change(change("BTC", 1, 3))
        event_id, kind, data = stream.event()
        assert (event_id, kind, json.loads(data)["stage"]) == ("3", "change", 3)

        started = time.monotonic()
        assert stream.until(lambda line: line.startswith(":")) == [": keep-alive"]
        assert 0.2 < time.monotonic() - started < 3.0
        stream.until(lambda line: line == ": keep-alive")  # and again
    finally:
        stream.close()


def test_event_stream_resumes_after_last_event_id_or_asks_for_a_reload() -> None:
    page = LivePage(backlog=4, keepalive_s=0.3)
    s = Served(page)
    try:
        for i in range(6):
            page.update(snapshot("BTC", float(i), price=float(i)))
        resumed = EventStream(s.server.port, last_event_id=4)
        assert [resumed.event()[:2] for _ in range(2)] == [("5", "state"), ("6", "state")]
        resumed.close()
        lost = EventStream(s.server.port, last_event_id=1)  # older than the backlog holds
        assert lost.event()[1] == "reset"
        lost.close()

        follower = EventStream(s.server.port)
        follower.until(lambda line: line == ": connected")
        page.clear()
        assert follower.event()[1] == "reset"
        follower.close()
    finally:
        s.server.close()


def test_event_streams_are_bounded_and_end_when_the_server_closes() -> None:
    page = LivePage(max_streams=1, keepalive_s=0.2)
    s = Served(page)
    first = EventStream(s.server.port)
    try:
        first.until(lambda line: line == ": connected")
        status, headers, body = s.request("GET", "/api/events")
        assert status == 503 and headers["retry-after"] and b"/api/assets" in body
        first.close()
        # The server notices the closed connection at its next keep-alive, and frees the slot.
        deadline = time.monotonic() + 5
        while True:
            second = EventStream(s.server.port)
            if second.response.status == 200:
                break
            second.close()
            assert time.monotonic() < deadline, "the stream's slot was never freed"
            time.sleep(0.1)
        second.until(lambda line: line == ": connected")
        s.server.close()
        started = time.monotonic()
        with pytest.raises(EOFError):
            while True:
                second.line()
        assert time.monotonic() - started < 3.0
        second.close()
    finally:
        first.close()
        s.server.close()


def test_a_push_does_not_wait_for_a_stalled_stream(served: Served) -> None:
    """A browser that stops reading fills its socket; the feed still returns at once."""
    stalled = EventStream(served.server.port)
    try:
        stalled.until(lambda line: line == ": connected")
        started = time.monotonic()
        for i in range(3000):  # about 1 MB of events: more than the socket buffers hold
            served.page.update(snapshot("BTC", float(i)))
        assert time.monotonic() - started < 10.0
        assert served.assets()["seq"] == 3000
    finally:
        stalled.close()


# -- the page in a browser ------------------------------------------------------------------------------------


def _browser() -> Any:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
                    "(bash scripts/install-test-tools)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: python3 -m pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,720"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


async def eventually(check: Callable[[], bool], within: float) -> None:
    """``until`` for a check that talks to the browser: on a thread, so the daemon's loop keeps running."""
    async with asyncio.timeout(within):
        while not await asyncio.to_thread(check):  # noqa: ASYNC110 - the condition lives in the browser
            await asyncio.sleep(0.1)


ROWS_JS = """
return Array.from(document.querySelectorAll('#assets tbody tr')).map(tr => ({
  asset: tr.dataset.asset,
  stage: tr.querySelector('td.stage').dataset.stage,
  stageText: tr.querySelector('td.stage').textContent,
  side: tr.querySelector('td.side').dataset.side,
  score: tr.querySelector('td.score').textContent,
}));
"""
# Every stage the BTC row shows, as it shows it: a change between two polls of the test is not missed.
WATCH_JS = """
window.__reloaded = false;
window.__btcStages = [];
new MutationObserver(() => {
  const cell = document.querySelector('tr[data-asset="BTC"] td.stage');
  const stage = cell && Number(cell.dataset.stage);
  const seen = window.__btcStages;
  if (cell && seen[seen.length - 1] !== stage) seen.push(stage);
}).observe(document.querySelector('#assets tbody'), {subtree: true, childList: true, attributes: true});
"""


@pytest.mark.slow
async def test_the_page_follows_a_running_daemon_in_headless_chromium(
    fake: FakeBinance, redis_server: RunningServer, mosquitto: RunningServer
) -> None:
    speed = 60.0
    scenario, settings = flush_daemon(fake, redis_server.url, mosquitto.port, f"live-{uuid.uuid4().hex[:6]}/v1",
                                      speed)
    driver = await asyncio.to_thread(_browser)
    LIVE_PAGE.clear()  # the daemon feeds the process's page: nothing from an earlier test in this process
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.ready.is_set() and len(fake.open_connections) == 2, within=60)
        await asyncio.to_thread(driver.get, f"http://127.0.0.1:{daemon.metrics_port}/")
        assert driver.title.startswith("flushwatch")
        await asyncio.to_thread(driver.execute_script, WATCH_JS)
        await eventually(lambda: driver.execute_script("return document.body.dataset.mode") == "live", within=10)
        fake.attach(scenario)

        def rows() -> dict[str, dict[str, str]]:
            return {row["asset"]: row for row in driver.execute_script(ROWS_JS)}

        await eventually(lambda: {"BTC", "ETH", "SOL"} <= rows().keys(), within=60)
        for row in rows().values():
            assert row["stage"].isdigit() and row["side"] in ("long", "short"), row
            assert row["stageText"].strip() and "/" in row["score"] and any(c.isdigit() for c in row["score"]), row

        def btc_stages() -> list[int]:
            return [int(s) for s in driver.execute_script("return window.__btcStages")]

        # The flush drives BTC's shown stage from calm to the cascade or beyond, with no reload of the page.
        await eventually(lambda: max(btc_stages(), default=0) >= 4, within=scenario.duration_s / speed + 60)
        stages = btc_stages()
        assert stages[0] == 0 and max(stages) >= 4, stages
        assert driver.execute_script("return window.__reloaded") is False  # the same document throughout
        assert driver.execute_script("return document.body.dataset.mode") == "live"
        changes = driver.execute_script("return document.querySelectorAll('#changes li').length")
        assert changes >= 1
        history = driver.execute_script(
            "return document.querySelector('tr[data-asset=\"BTC\"] td.chart-price canvas').getAttribute('aria-label')")
        assert "price:" in history  # the chart drew a range

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "live-page.png"
        assert await asyncio.to_thread(driver.save_screenshot, str(screenshot))
        assert screenshot.stat().st_size > 10_000
        console = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        assert not console, console
    finally:
        await asyncio.to_thread(driver.quit)
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
        LIVE_PAGE.clear()


def test_scores_in_json_are_finite() -> None:
    page = LivePage()
    page.update(AssetState(asset="BTC", ts=T0, ts_recv=0, long=side("long", 0, math.nan),
                           short=side("short", 0, math.inf),
                           feature_values=packed({"price": math.nan}, FEATURE_NAMES), total_values=NO_TOTALS))
    body = json.loads(json.dumps(page.snapshot(), allow_nan=False))
    assert body["assets"][0]["overheat_score"] is None and body["assets"][0]["price"] is None
