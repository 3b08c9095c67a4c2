"""JSON Schemas of the MQTT payloads, exported from the pydantic models in :mod:`alerts.models`.

The models are the source of truth; the committed files under ``docs/schemas/`` are generated from them and a
test checks that they are current. Regenerate after changing a payload model::

    python -m alerts.schemas            # writes docs/schemas/{state,event,status}.schema.json
    python -m alerts.schemas --check    # exits 1 if a committed file is stale (for CI)

Each schema is JSON Schema draft 2020-12 with ``$id``, ``title`` and ``version`` (the payload's
``schema_version``, also pinned as a ``const`` on that field). The schemas describe exactly what this release
publishes (``additionalProperties: false``); a subscriber that wants to survive a field added within the same
``schema_version`` should ignore unknown properties rather than validate strictly against an old copy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from alerts.models import SCHEMA_VERSION, EventPayload, StatePayload, StatusPayload

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE: Final = f"urn:flushwatch:mqtt:v{SCHEMA_VERSION}:"
SCHEMA_DIR: Final = Path(__file__).resolve().parents[1] / "docs" / "schemas"

PAYLOADS: Final[dict[str, tuple[type[BaseModel], str]]] = {
    "state": (StatePayload, "<prefix>/<asset>/state"),
    "event": (EventPayload, "<prefix>/<asset>/events"),
    "status": (StatusPayload, "<prefix>/status"),
}
"""Schema name -> (model, topic it is published on)."""

_DESCRIPTIONS: Final[dict[str, str]] = {
    "schema_version": "Payload schema version; renaming or removing a field bumps it, adding one does not.",
    "asset": "Normalised base asset (BTC); also the asset level of the topic.",
    "side": "The crowded position side at risk: long (a down-flush) or short (a squeeze).",
    "stage": "Stage of the cascade, 0 calm/overheated .. 7 flushed.",
    "stage_from": "Stage before this change.",
    "stage_name": "Name of the stage (calm, overheated, shock, liquidations_triggered, cascade, flushed, ...).",
    "overheat_score": "Overheating of the side's positions, 0 (neutral) to 100 (extreme), two decimals.",
    "ts": "Detector event time, ISO-8601 UTC with microseconds (status: local time).",
    "ts_ns": "Detector event time, integer nanoseconds since the epoch.",
    "received_ns": "Local clock (ns) when the triggering frame arrived; publish time - received_ns = latency.",
    "episode_id": "Flush episode this belongs to, or null outside an episode.",
    "sides": "Both sides of the asset.",
    "features": "Current finite feature values (price, returns, liquidation rates, funding, OI, depth).",
    "evidence": "Finite feature values at the moment of the change.",
    "thresholds": "Detector parameters the features were compared with.",
    "conditions": "The conditions that held, in words.",
    "idempotency_key": "sha256(asset|side|episode_id|stage_from|stage|ts_ns)[:32]; drop repeats, delivery is "
    "at least once.",
    "status": "online on connect; offline on a clean close or, via the last will, when the process dies.",
    "version": "flushwatch version of the publisher.",
}


def _describe(schema: dict[str, Any]) -> None:
    for name, prop in schema.get("properties", {}).items():
        if name in _DESCRIPTIONS and "description" not in prop:
            prop["description"] = _DESCRIPTIONS[name]


def payload_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one payload (``state``, ``event`` or ``status``) as a dictionary."""
    model, topic = PAYLOADS[name]
    generated = model.model_json_schema()
    _describe(generated)
    for definition in generated.get("$defs", {}).values():
        _describe(definition)
    properties = generated.get("properties", {})
    if "schema_version" in properties:
        # The model defaults it, so pydantic leaves it optional; every published payload carries it.
        properties["schema_version"] = {
            "const": SCHEMA_VERSION,
            "type": "integer",
            "description": _DESCRIPTIONS["schema_version"],
        }
        required = generated.setdefault("required", [])
        if "schema_version" not in required:
            required.insert(0, "schema_version")
    description = generated.pop("description", "")
    head: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}{name}",
        "title": f"flushwatch {name} payload",
        "version": SCHEMA_VERSION,
        "description": f"Published on {topic}. {description}".strip(),
    }
    generated.pop("title", None)
    return head | generated


def schema_text(name: str) -> str:
    """The committed form: two-space indented JSON with a final newline."""
    return json.dumps(payload_schema(name), indent=2, ensure_ascii=False) + "\n"


def schema_path(name: str, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{name}.schema.json"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PAYLOADS:
        path = schema_path(name, directory)
        path.write_text(schema_text(name))
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Committed schema files that are missing or differ from the models."""
    stale = []
    for name in PAYLOADS:
        path = schema_path(name, directory)
        if not path.exists() or path.read_text() != schema_text(name):
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerts.schemas", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output folder (default: docs/schemas)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_schemas(args.dir)
        for path in stale:
            print(f"stale: {path} (run python -m alerts.schemas)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
