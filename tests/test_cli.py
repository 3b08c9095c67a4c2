"""The commands a new user types, run as a new user would: as processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from conftest import subscriber

import flushwatch
from flushwatch.servers import RunningServer


def flushwatch_cmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flushwatch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_version() -> None:
    result = flushwatch_cmd("version")
    assert result.returncode == 0 and result.stdout.strip() == flushwatch.__version__


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FLUSHWATCH_METRICS_PORT": "abc"}, "FLUSHWATCH_METRICS_PORT"),
        ({"FLUSHWATCH_MQTT_URL": "http://broker:1883"}, "FLUSHWATCH_MQTT_URL"),
        ({"FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S": "-1"}, "FLUSHWATCH_BINANCE__OI_POLL_INTERVAL_S"),
        ({"FLUSHWATCH_DETECTOR__EXHAUST_RATIO": "9"}, "FLUSHWATCH_DETECTOR"),
    ],
)
def test_invalid_settings_stop_the_start_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = flushwatch_cmd("run", env=env, timeout=60)
    assert result.returncode == 2
    assert named in result.stderr, result.stderr


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    result = flushwatch_cmd("run", "--config", str(tmp_path / "nope.toml"), timeout=60)
    assert result.returncode == 2 and "nope.toml" in result.stderr


def test_toml_settings_are_read_and_env_wins(tmp_path: Path) -> None:
    config = tmp_path / "fw.toml"
    config.write_text('metrics_port = 70000\n[binance]\nsymbols = ["BTCUSDT"]\n')
    result = flushwatch_cmd("run", "--config", str(config), timeout=60)
    assert result.returncode == 2 and "metrics_port" in result.stderr  # from the file
    fixed = flushwatch_cmd("run", "--config", str(config), env={"FLUSHWATCH_METRICS_PORT": "x"}, timeout=60)
    assert "Input should be a valid integer" in fixed.stderr  # the environment overrides the file


async def received(client: aiomqtt.Client, quiet_s: float = 1.0) -> list[aiomqtt.Message]:
    """Every message that arrives until none has for ``quiet_s`` (QoS 1 messages were queued for us)."""
    messages: list[aiomqtt.Message] = []
    while True:
        try:
            async with asyncio.timeout(quiet_s):
                messages.append(await anext(aiter(client.messages)))
        except TimeoutError:
            return messages


@pytest.mark.slow
async def test_demo_plays_the_whole_flush_exits_zero_and_honours_the_broker_setting(
    mosquitto: RunningServer,
) -> None:
    env = {**os.environ, "FLUSHWATCH_METRICS_PORT": "0", "COLUMNS": "200",
           "FLUSHWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}", "FLUSHWATCH_MQTT_PREFIX": "demo/v1"}
    async with subscriber(mosquitto.port, "demo/v1/BTC/events") as client:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "flushwatch", "demo", "--speed", "160",
                                                    env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 180)
        output = stdout.decode()
        assert proc.returncode == 0, output
        events = [json.loads(m.payload) for m in await received(client) if isinstance(m.payload, bytes)]
    btc = [line for line in output.splitlines() if " BTC " in line and "long" in line]
    for stage in ("0 → 1 shock", "→ 7 flushed", "7 → 0 calm"):
        assert any(stage in line for line in btc), (stage, output)
    # The external broker got the same story: shock, rising through the cascade stages, flushed, calm.
    path = [e["stage"] for e in events if e["stage"] != e["stage_from"]]
    assert path[0] == 1 and path[-2:] == [7, 0] and max(path[:-2]) >= 4, path
    assert path[:-1] == sorted(set(path[:-1])), path


def test_subscribe_needs_a_broker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLUSHWATCH_MQTT_URL"}
    result = subprocess.run([sys.executable, "-m", "flushwatch", "subscribe"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2 and "FLUSHWATCH_MQTT_URL" in result.stderr


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flushwatch", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_config_show_merges_file_env_and_secret_files_and_masks_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "flushwatch_mqtt_url").write_text("mqtts://alice:topsecret@broker:8883\n")
    toml = tmp_path / "flushwatch.toml"
    toml.write_text('redis_url = "redis://:redispw@redis:6379/0"\n[detector]\nliq_trigger_ratio = 7\n')
    env = {**os.environ, "FLUSHWATCH_SECRETS_DIR": str(secrets), "FLUSHWATCH_CONFIG": str(toml),
           "FLUSHWATCH_DETECTOR__CASCADE_RATIO": "12"}
    result = _cli("config", "show", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["mqtt_url"] == "mqtts://alice:********@broker:8883"  # from the secret file, masked
    assert shown["redis_url"] == "redis://:********@redis:6379/0"  # from the TOML file, masked
    assert shown["detector"]["liq_trigger_ratio"] == 7 and shown["detector"]["cascade_ratio"] == 12
    assert "topsecret" not in result.stdout and "redispw" not in result.stdout
    assert _cli("config", "check", env=env).returncode == 0


@pytest.mark.parametrize(("env", "named"), [
    ({"FLUSHWATCH_DETECTOR__EXHAUST_RATIO": "9"}, "exhaust_ratio must be below liq_trigger_ratio"),
    ({"FLUSHWATCH_MQTT_CA_FILE": "/nonexistent/ca.pem"}, "setting mqtt_ca_file (FLUSHWATCH_MQTT_CA_FILE)"),
    ({"FLUSHWATCH_SECRETS_DIR": "/nonexistent/secrets"}, "setting secrets_dir (FLUSHWATCH_SECRETS_DIR)"),
])
def test_config_check_fails_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = _cli("config", "check", env={**os.environ, **env})
    assert result.returncode == 2
    assert named in " ".join(result.stderr.split())
