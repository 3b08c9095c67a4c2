"""The commands a new user types, run as a new user would: as processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import flushwatch


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


@pytest.mark.slow
def test_demo_plays_the_whole_flush_and_exits_zero() -> None:
    result = flushwatch_cmd("demo", "--speed", "160", env={"FLUSHWATCH_METRICS_PORT": "0", "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    btc = [line for line in lines if " BTC " in line and "long" in line]
    for stage in ("1 shock", "3 liquidations_triggered", "4 cascade", "4 → 7 flushed"):
        assert any(stage in line for line in btc), (stage, result.stdout)
