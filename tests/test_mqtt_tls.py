"""MQTT over TLS with a username and password, end to end: flushwatch's publisher talks to a real mosquitto
that speaks only TLS and requires a user, and the real ``mosquitto_sub`` client reads what it published."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from alerts.mqtt import MqttPublisher
from flushwatch.servers import RunningServer, ServerUnavailable, start_mosquitto
from flushwatch.settings import MqttTarget, load_settings
from flushwatch.waiting import until

PREFIX = "tls-test/v1"
USER, PASSWORD = "flushwatch", "s3cret-pw"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a broker certificate for 127.0.0.1 signed by it (openssl, as a user would)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found on PATH: it is part of Debian's base system (package openssl)")
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=flushwatch test CA")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture
def broker(certificates: dict[str, Path]) -> RunningServer:
    try:
        server = start_mosquitto(passwords={USER: PASSWORD}, tls=(certificates["cert"], certificates["key"]))
    except ServerUnavailable as exc:
        pytest.fail(f"cannot start mosquitto with TLS: {exc}")
    yield server  # type: ignore[misc]
    server.stop()


def _sub(port: int, ca: Path | None, *, password: str = PASSWORD, count: int = 1) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        pytest.fail("mosquitto_sub not found: install Debian's mosquitto-clients (bash scripts/install-test-tools)")
    tls = ["--cafile", str(ca)] if ca else []
    return subprocess.Popen([binary, "-h", "127.0.0.1", "-p", str(port), *tls, "-u", USER, "-P", password,
                             "-t", f"{PREFIX}/#", "-C", str(count), "-v", "-W", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_alerts_reach_mosquitto_sub_over_tls_with_a_password(broker: RunningServer,
                                                                   certificates: dict[str, Path]) -> None:
    target = MqttTarget(host="127.0.0.1", port=broker.port, username=USER, password=SecretStr(PASSWORD),
                        tls=True, ca_file=certificates["ca"])
    publisher = MqttPublisher(target, prefix=PREFIX, client_id="flushwatch-tls-test", queue_max=100)
    publisher.start()
    try:
        await until(lambda: publisher.connected, within=20)
        sub = _sub(broker.port, certificates["ca"], count=2)  # the retained online status, then the event
        await asyncio.sleep(1.0)
        await publisher.publish("BTC/events", b'{"stage":3}', retain=False, kind="event")
        out, err = await asyncio.to_thread(sub.communicate, timeout=30)
    finally:
        await publisher.close()
    lines = out.decode().splitlines()
    assert sub.returncode == 0, err.decode()
    assert lines[0].startswith(f"{PREFIX}/status ") and '"online"' in lines[0]
    assert lines[1] == f'{PREFIX}/BTC/events {{"stage":3}}'


def test_the_broker_refuses_a_wrong_password_and_an_unverified_certificate(broker: RunningServer,
                                                                           certificates: dict[str, Path]) -> None:
    wrong = _sub(broker.port, certificates["ca"], password="wrong")
    _, err = wrong.communicate(timeout=30)
    assert wrong.returncode != 0 and b"not authorised" in err.lower().replace(b"authorized", b"authorised")
    plain = _sub(broker.port, None)  # no TLS at all against a TLS-only listener
    plain.communicate(timeout=30)
    assert plain.returncode != 0
    system = Path("/etc/ssl/certs/ca-certificates.crt")  # public CAs only: the private CA's certificate fails
    if system.exists():
        untrusted = _sub(broker.port, system)
        _, err = untrusted.communicate(timeout=30)
        assert untrusted.returncode != 0 and b"TLS error" in err


def test_the_ca_file_setting_reaches_the_target(certificates: dict[str, Path]) -> None:
    settings = load_settings(mqtt_url=f"mqtts://{USER}:{PASSWORD}@127.0.0.1:8883",
                             mqtt_ca_file=str(certificates["ca"]))
    target = settings.mqtt
    assert target is not None and target.tls and target.ca_file == certificates["ca"]
    context = target.tls_context()
    assert context is not None and context.check_hostname
