"""No secret leaves the process, and the HTTP server offers nothing to write or to escape through.

* ``flushwatch run`` as a user runs it -- a Redis URL with a password in the environment, an MQTT URL with
  user and password in a secret file, DEBUG logs -- in JSON (stderr a pipe) and in text (stderr a terminal);
  on the happy path and on the error paths whose messages tend to quote a URL (Redis unreachable, MQTT
  refusing the password). Every log line, every endpoint of the metrics server and ``flushwatch config show``
  are searched for the passwords.
* Redis with ``requirepass``, and over TLS with a private CA (``rediss://…?ssl_ca_certs=``).
* The metrics server: only GET and HEAD, no path traversal, oversized requests refused without harm, bound
  only to the address it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _server
from harness import fetch
from prometheus_client import CollectorRegistry
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from test_mqtt_tls import certificates  # noqa: F401 -- the private CA fixture, shared

from alerts.exporter import MetricsServer
from alerts.livepage import ROUTES, LivePage
from flushwatch.fake.scenario import Scenario
from flushwatch.fake.server import FakeBinance
from flushwatch.logs import redact
from flushwatch.redis_client import connect_redis
from flushwatch.servers import RunningServer, free_port, start_mosquitto, start_redis
from flushwatch.waiting import until

REDIS_PW = "Redis-Pw-7fK3q"
MQTT_USER, MQTT_PW = "flushwatch", "Mqtt-Pw-9xZ2w"
WRONG_PW = "Wrong-Pw-4hT8m"
SECRETS = (REDIS_PW, MQTT_PW, WRONG_PW)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ENDPOINTS = ("/metrics", "/healthz", "/readyz", *sorted(ROUTES))


@pytest.fixture
def redis_with_password() -> Iterator[RunningServer]:
    yield from _server(start_redis, extra=["--requirepass", REDIS_PW])


@pytest.fixture
def broker_with_password() -> Iterator[RunningServer]:
    yield from _server(start_mosquitto, passwords={MQTT_USER: MQTT_PW})


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: …{text[max(0, text.find(secret) - 300):][:600]}…"


def test_redact_masks_every_url_password_and_nothing_else() -> None:
    assert redact(f"redis://:{REDIS_PW}@h:1/0, mqtt://u:{MQTT_PW}@h") == "redis://:********@h:1/0, mqtt://u:********@h"
    assert redact("mqtt://u:p@ss@h:1883/x") == "mqtt://u:********@h:1883/x"  # an unescaped @ in the password
    assert redact(f"redis://h:1/0?db=0&password={REDIS_PW}&x=1") == "redis://h:1/0?db=0&password=********&x=1"
    assert redact("see http://host/a@b, rediss://user@h/0") == "see http://host/a@b, rediss://user@h/0"


# ----------------------------------------------------------------------------------------- the daemon


def _env(tmp_path: Path, redis_url: str, mqtt_url: str, fake: FakeBinance, metrics_port: int) -> dict[str, str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "flushwatch_mqtt_url").write_text(mqtt_url + "\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "COLUMNS": "2000",
        "FLUSHWATCH_SECRETS_DIR": str(secrets), "FLUSHWATCH_REDIS_URL": redis_url, "FLUSHWATCH_LOG_LEVEL": "DEBUG",
        "FLUSHWATCH_METRICS_HOST": "127.0.0.1", "FLUSHWATCH_METRICS_PORT": str(metrics_port),
        "FLUSHWATCH_SHUTDOWN_GRACE_S": "1", "FLUSHWATCH_MQTT_CLIENT_ID": f"secrets-{metrics_port}",
        "FLUSHWATCH_BINANCE__SYMBOLS": '["BTCUSDT","ETHUSDT","SOLUSDT"]',
        "FLUSHWATCH_BINANCE__MARKET_URL": fake.market_url, "FLUSHWATCH_BINANCE__PUBLIC_URL": fake.public_url,
        "FLUSHWATCH_BINANCE__REST_URL": fake.rest_url, "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": "0.5",
        # The suite's own kernel cache (beside the sources, unless the run names one): a cache of its own would make
        # this daemon compile every kernel cold, 70-85 s on a slow machine, against the 90 s it is given to start.
        **({"NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]} if "NUMBA_CACHE_DIR" in os.environ else {}),
    }


class Daemon:
    """``flushwatch run`` in a child process, its stderr a pipe (JSON logs) or a terminal (text logs)."""

    def __init__(self, env: dict[str, str], text: bool) -> None:
        self.text = text
        self.chunks: list[bytes] = []
        if text:
            self._master, slave = pty.openpty()
            self.proc = subprocess.Popen([sys.executable, "-m", "flushwatch", "run"], env=env, stdin=subprocess.DEVNULL,
                                         stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", "flushwatch", "run"], env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            self._master = self.proc.stdout.fileno()  # type: ignore[union-attr]
        # Drained all along: a child whose DEBUG output fills the pipe would block in its logging call.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):  # EIO once the terminal's last writer is gone
            while chunk := os.read(self._master, 65536):
                self.chunks.append(chunk)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        if self.text:
            os.close(self._master)
        else:
            self.proc.stdout.close()  # type: ignore[union-attr]
        return ANSI.sub("", b"".join(self.chunks).decode(errors="replace"))


def _up(port: int) -> bool:
    try:
        return fetch(port, "/healthz")[0] == 200
    except OSError:  # not listening yet (URLError is one)
        return False


async def _served(port: int) -> dict[str, str]:
    """Every endpoint's answer to GET and HEAD, by path."""
    await until(lambda: _up(port), within=90)
    bodies = {}
    for path in ENDPOINTS:
        status, body = await asyncio.to_thread(fetch, port, path)
        head, _ = await asyncio.to_thread(fetch, port, path, "HEAD")
        assert status in (200, 503) and head == status, (path, status, head)
        bodies[path] = body
    return bodies


@pytest.mark.parametrize("text", [False, True], ids=["json", "text"])
async def test_a_running_daemon_logs_and_serves_no_secret(fake: FakeBinance, redis_with_password: RunningServer,
                                                          broker_with_password: RunningServer, tmp_path: Path,
                                                          text: bool) -> None:
    scenario = Scenario("flush", speed=40.0)
    fake.register(scenario)
    port = free_port()
    redis_url = f"redis://:{REDIS_PW}@127.0.0.1:{redis_with_password.port}/0"
    mqtt_url = f"mqtt://{MQTT_USER}:{MQTT_PW}@127.0.0.1:{broker_with_password.port}"
    daemon = Daemon(_env(tmp_path, redis_url, mqtt_url, fake, port), text)
    try:
        await until(lambda: _up(port), within=90)
        fake.attach(scenario)
        # ready: Redis took the password, and the feed's data is flowing
        await until(lambda: fetch(port, "/readyz")[0] == 200, within=60)
        bodies = await _served(port)
    finally:
        logs = daemon.stop()
    assert 'flushwatch_mqtt_connected 1.0' in bodies["/metrics"] or "MQTT" in logs
    for path, body in bodies.items():
        assert_no_secret(path, body)
    assert_no_secret("the logs", logs)
    assert "DEBUG" in logs and "shutting down" in logs, logs[-2000:]  # DEBUG lines were captured, to the end


@pytest.mark.parametrize("text", [False, True], ids=["json", "text"])
async def test_failures_that_quote_a_url_log_no_secret(fake: FakeBinance, broker_with_password: RunningServer,
                                                       tmp_path: Path, text: bool) -> None:
    """Redis unreachable at a URL with a password, and an MQTT broker that refuses the password."""
    port = free_port()
    redis_url = f"redis://:{REDIS_PW}@127.0.0.1:{free_port()}/0"  # nothing listens there
    mqtt_url = f"mqtt://{MQTT_USER}:{WRONG_PW}@127.0.0.1:{broker_with_password.port}"
    daemon = Daemon(_env(tmp_path, redis_url, mqtt_url, fake, port), text)
    try:
        bodies = await _served(port)
        await until(lambda: b"unavailable" in b"".join(daemon.chunks), within=30)  # the MQTT refusal, logged
    finally:
        logs = daemon.stop()
    assert "redis not reachable" in bodies["/readyz"]
    assert "redis://:********@127.0.0.1" in logs, logs[-3000:]  # the URL was logged, its password masked
    assert re.search(r"MQTT 127\.0\.0\.1:\d+ unavailable", logs), logs[-3000:]
    for path, body in bodies.items():
        assert_no_secret(path, body)
    assert_no_secret("the logs", logs)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flushwatch", *args], capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", ""), "COLUMNS": "2000", **env}, timeout=60)


def test_config_show_masks_passwords_from_the_environment_and_secret_files(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "flushwatch_mqtt_url").write_text(f"mqtts://{MQTT_USER}:{MQTT_PW}@broker.example:8883\n")
    shown = _cli("config", "show", env={"FLUSHWATCH_SECRETS_DIR": str(secrets),
                                         "FLUSHWATCH_REDIS_URL": f"rediss://default:{REDIS_PW}@redis.example:6380/0"})
    assert shown.returncode == 0, shown.stderr
    assert_no_secret("config show", shown.stdout + shown.stderr)
    assert '"mqtt_url": "mqtts://flushwatch:********@broker.example:8883"' in shown.stdout  # the file was read
    assert '"redis_url": "rediss://default:********@redis.example:6380/0"' in shown.stdout


def test_config_check_refusing_an_mqtt_url_does_not_print_its_password(tmp_path: Path) -> None:
    checked = _cli("config", "check", env={"FLUSHWATCH_SECRETS_DIR": str(tmp_path),
                                           "FLUSHWATCH_MQTT_URL": f"mqt://{MQTT_USER}:{MQTT_PW}@broker:1883"})
    assert checked.returncode == 2 and "mqtt_url" in checked.stderr
    assert_no_secret("config check", checked.stdout + checked.stderr)


# ---------------------------------------------------------------------------------- Redis auth and TLS


async def test_redis_requires_the_password_in_the_url(redis_with_password: RunningServer) -> None:
    good = connect_redis(f"redis://:{REDIS_PW}@127.0.0.1:{redis_with_password.port}/0")
    bad = connect_redis(f"redis://:{WRONG_PW}@127.0.0.1:{redis_with_password.port}/0")
    none = connect_redis(f"redis://127.0.0.1:{redis_with_password.port}/0")
    try:
        assert await good.xadd("fw:{s0}:events", {"v": 1}) and await good.xlen("fw:{s0}:events") == 1
        with pytest.raises(AuthenticationError) as refused:
            await bad.ping()
        assert_no_secret("the error", str(refused.value))
        with pytest.raises(AuthenticationError):
            await none.xlen("fw:{s0}:events")
    finally:
        for client in (good, bad, none):
            await client.aclose()


@pytest.fixture
def redis_over_tls(certificates: dict[str, Path]) -> Iterator[RunningServer]:  # noqa: F811
    """redis-server speaking only TLS (Debian's is built with it), with a certificate from the private CA."""
    port = free_port()
    yield from _server(start_redis, port=port, extra=[
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certificates["cert"]),
        "--tls-key-file", str(certificates["key"]), "--tls-ca-cert-file", str(certificates["ca"]),
        "--tls-auth-clients", "no", "--requirepass", REDIS_PW])


async def test_rediss_with_a_private_ca_given_in_the_url(redis_over_tls: RunningServer,
                                                         certificates: dict[str, Path]) -> None:  # noqa: F811
    base = f"rediss://:{REDIS_PW}@127.0.0.1:{redis_over_tls.port}/0"
    trusted = connect_redis(f"{base}?ssl_ca_certs={certificates['ca']}")
    untrusted = connect_redis(base)  # the system trust store does not know the private CA
    plain = connect_redis(base.replace("rediss://", "redis://"))
    try:
        assert await trusted.ping() is True
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.ping()
        with pytest.raises(RedisConnectionError):
            await plain.ping()
    finally:
        for client in (trusted, untrusted, plain):
            await client.aclose()


# --------------------------------------------------------------------------------- the metrics server


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    """One server for every probe below: each must leave it serving (and closing one takes half a second)."""
    metrics = MetricsServer("127.0.0.1", 0, registry=CollectorRegistry(), live=LivePage())
    metrics.start()
    yield metrics
    metrics.close()


def _raw(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status(response: bytes) -> int:
    """The status of a raw answer; http.server answers what it cannot parse as HTTP/0.9, without a status line."""
    found = re.match(rb"HTTP/\S+ (\d{3})", response) or re.search(rb"Error code: (\d{3})", response)
    assert found, response[:300]
    return int(found[1])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
def test_nothing_is_writable(server: MetricsServer, method: str) -> None:
    for path in (*ENDPOINTS, "/api", "/live/", "/nope"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request(method, path, body=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status in (404, 405), (method, path, response.status, body[:200])
        assert b"flushwatch_" not in body and b"<html" not in body.lower()


TRAVERSALS = ["/live/../../etc/passwd", "/live/%2e%2e/%2e%2e/etc/passwd", "/live/..%2f..%2f..%2fetc%2fpasswd",
              "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/live/app.js/../../../../etc/passwd",
              "/live/..%5c..%5c..%5cetc%5cpasswd", "/live/%252e%252e/%252e%252e/etc/passwd", "/live/./app.js/..",
              "/live/..;/..;/etc/passwd", "/live/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "/../alerts/live/app.js",
              "/live/app.js%00.css", "/live/" + "../" * 50 + "etc/passwd", "/live/style.css/"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_finds_nothing(server: MetricsServer, path: str) -> None:
    response = _raw(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert _status(response) == 404, response[:300]
    assert b"root:" not in response and b"function" not in response


REFUSED = (400, 404, 414, 431)


@pytest.mark.parametrize(("request_bytes", "answers"), [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", REFUSED),  # request line over 64 KiB
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", REFUSED),  # header line
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", REFUSED),
    # a body announced but never sent: no route reads a body, so nothing waits for it
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nshort", (200,)),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500, REFUSED),  # TLS hello on the plain port
    (b"GET " + b"/%ff%fe" * 1000 + b" HTTP/1.0\r\n\r\n", REFUSED),
], ids=["request-line", "header-line", "header-count", "unsent-body", "tls-hello", "bad-escapes"])
def test_oversized_or_garbled_requests_are_refused_and_the_server_carries_on(
        server: MetricsServer, request_bytes: bytes, answers: tuple[int, ...]) -> None:
    response = _raw(server.port, request_bytes)
    assert _status(response) in answers, response[:300]
    assert fetch(server.port, "/healthz") == (200, "ok\n")


def test_the_server_binds_only_where_it_is_told() -> None:
    metrics = MetricsServer("127.0.0.1", 0, registry=CollectorRegistry(), live=LivePage())
    metrics.start()
    try:
        assert metrics._server.socket.getsockname() == ("127.0.0.1", metrics.port)
        assert fetch(metrics.port, "/healthz")[0] == 200
        with pytest.raises(ConnectionRefusedError):
            _raw(metrics.port, b"GET /healthz HTTP/1.0\r\n\r\n", host="127.0.0.2")  # loopback, another address
    finally:
        metrics.close()
    v6 = MetricsServer("::1", 0, registry=CollectorRegistry(), live=None)
    v6.start()
    try:
        assert v6._server.socket.family == socket.AF_INET6
        assert _raw(v6.port, b"GET /healthz HTTP/1.0\r\n\r\n", host="::1").endswith(b"ok\n")
        with pytest.raises(ConnectionRefusedError):
            _raw(v6.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    finally:
        v6.close()
