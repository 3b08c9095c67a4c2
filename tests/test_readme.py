"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```bash\n(.+?)\n```", section, re.S)
    assert match, heading
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    assert command_after("Run the tests") in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_names_aiomqtt_as_the_successor_of_asyncio_mqtt() -> None:
    text = (ROOT / "README.md").read_text()
    assert "aiomqtt" in text and "asyncio-mqtt" in text
    assert 'aiomqtt>=2.3,<3' in (ROOT / "pyproject.toml").read_text()
