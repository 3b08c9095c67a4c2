"""The benchmark command keeps working and keeps its output format (its figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_prints_one_json_object_per_line() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "collector"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    names = {line["name"] for line in lines}
    assert {"collector.binance.frames_per_s", "collector.binance.decode_only.frames_per_s", "bench.wall_s"} <= names
    for line in lines:
        assert isinstance(line["value"], int | float) and line["value"] > 0 and isinstance(line["unit"], str)
