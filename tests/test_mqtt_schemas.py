"""The published JSON Schemas match the pydantic models, and what the alert role publishes matches them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from alerts import schemas
from alerts.models import SCHEMA_VERSION, EventPayload, StatePayload, StatusPayload, idempotency_key
from flushwatch.signals import FEATURE_NAMES, TOTAL_KEYS, AssetState, SideState, StageChange, packed, stage_name

T0 = 1_727_740_800_000_000_000


def side(name: str, stage: int, score: float, episode: str = "") -> SideState:
    return SideState(name, stage, stage_name(stage, stage == 0 and score >= 70), score, episode)  # type: ignore[arg-type]


def features(values: dict[str, float]) -> bytes:
    return packed(values, FEATURE_NAMES)


def totals(values: dict[str, float]) -> bytes:
    return packed(values, TOTAL_KEYS)


def states() -> list[AssetState]:
    return [
        AssetState("BTC", T0, T0 + 5, side("long", 3, 42.0, "BTC-long-1"), side("short", 0, 3.5),
                   features({"price": 63_000.0, "funding_8h": 0.0004, "z1": math.nan}), totals({"trades": 10.0})),
        AssetState("ETH", T0 + 1, T0 + 7, side("long", 0, 10.0), side("short", 4, 100.00000000000001, "ETH-short-2"),
                   features({}), totals({})),
        AssetState("1000PEPE", 0, 0, side("long", 0, 80.0), side("short", 0, 0.0), features({"oi_usd": -math.inf}),
                   totals({})),
    ]


def changes() -> list[StageChange]:
    base: dict[str, Any] = {
        "ts_recv": T0 + 123, "overheat_score": 55.5, "evidence": {"liq_ratio_long": 7.5, "z1": -3.2,
                                                                   "oi_chg_5m": math.nan},
        "thresholds": {"liq_trigger_ratio": 6.0, "oi_purge_log_chg": -math.inf},
        "conditions": ["liq_ratio >= liq_trigger_ratio"],
    }
    return [
        StageChange(asset="BTC", side="long", ts=T0, stage_from=1, stage=3, stage_name=stage_name(3, False),
                    episode_id="BTC-long-1", **base),
        StageChange(asset="ETH", side="short", ts=T0 + 9, stage_from=7, stage=0, stage_name="calm", episode_id="",
                    **{**base, "conditions": [], "evidence": {}}),
    ]


def payloads() -> list[tuple[str, BaseModel]]:
    out: list[tuple[str, BaseModel]] = [("state", StatePayload.from_signal(s)) for s in states()]
    out += [("event", EventPayload.from_signal(c)) for c in changes()]
    out += [("status", StatusPayload.now("online")), ("status", StatusPayload.now("offline"))]
    return out


# -- a small checker of the schema subset pydantic emits, so the test stands without the jsonschema package --

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
}


def problems(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return problems(value, root["$defs"][name], root, where)
    if "anyOf" in schema:
        options = [problems(value, option, root, where) for option in schema["anyOf"]]
        return [] if any(not p for p in options) else [f"{where}: matches no anyOf option"]
    found: list[str] = []
    if "type" in schema and not _TYPES[schema["type"]](value):
        return [f"{where}: {value!r} is not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{where}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{where}: {value} > {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [f"{where}: missing {key}" for key in schema.get("required", []) if key not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                found += problems(item, properties[key], root, f"{where}.{key}")
            elif extra is False:
                found.append(f"{where}: unexpected {key}")
            elif isinstance(extra, dict):
                found += problems(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for k, item in enumerate(value):
            found += problems(item, schema["items"], root, f"{where}[{k}]")
    return found


def committed(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schemas.schema_path(name).read_text())
    return schema


@pytest.mark.parametrize("name", list(schemas.PAYLOADS))
def test_committed_schemas_equal_the_exported_ones(name: str) -> None:
    assert schemas.schema_path(name).read_text() == schemas.schema_text(name), "run: python -m alerts.schemas"
    schema = committed(name)
    assert schema["$id"] == f"urn:flushwatch:mqtt:v{SCHEMA_VERSION}:{name}"
    assert schema["version"] == SCHEMA_VERSION and schema["title"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert "schema_version" in schema["required"]
    assert schema["additionalProperties"] is False


def test_the_module_writes_and_checks(tmp_path: Path) -> None:
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1
    assert schemas.main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "event.schema.json", "state.schema.json", "status.schema.json"]
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "event.schema.json").write_text("{}\n")
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1


def test_required_fields_and_types_follow_the_models() -> None:
    event = committed("event")
    assert set(event["required"]) == set(EventPayload.model_fields)
    types = {k: v.get("type") for k, v in event["properties"].items()}
    assert types["ts_ns"] == types["received_ns"] == types["stage"] == "integer"
    assert types["overheat_score"] == "number" and types["idempotency_key"] == "string"
    assert event["properties"]["evidence"]["additionalProperties"] == {"type": "number"}
    state = committed("state")
    assert set(state["required"]) == set(StatePayload.model_fields)
    assert set(state["$defs"]) == {"SidePayload", "SidesPayload", "VenuePayload"}
    venue = state["$defs"]["VenuePayload"]
    assert venue["properties"]["liq_long_usd"]["minimum"] == 0 and "coverage" in venue["required"]
    assert committed("status")["properties"]["status"]["enum"] == ["online", "offline"]


@pytest.mark.parametrize(("name", "payload"), payloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_published_payloads_validate_against_their_schema(name: str, payload: BaseModel) -> None:
    wire = payload.model_dump_json().encode()
    body = json.loads(wire)
    schema = committed(name)
    assert problems(body, schema, schema) == []
    assert set(schema["required"]) <= set(body)
    # and a round trip through the model gives the same bytes
    model = schemas.PAYLOADS[name][0]
    assert model.model_validate_json(wire).model_dump_json().encode() == wire


@pytest.mark.parametrize(("name", "payload"), payloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_published_payloads_validate_with_jsonschema(name: str, payload: BaseModel) -> None:
    schema = committed(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(payload.model_dump_json()))


@pytest.mark.parametrize(
    "damage",
    [
        {"stage": 8},
        {"side": "both"},
        {"asset": "BTC/USDT"},
        {"schema_version": 2},
        {"ts_ns": "1727740800000000000"},
        {"evidence": {"z1": "low"}},
        {"unexpected": 1},
    ],
)
def test_the_schema_rejects_broken_payloads(damage: dict[str, Any]) -> None:
    body = json.loads(EventPayload.from_signal(changes()[0]).model_dump_json()) | damage
    schema = committed("event")
    assert problems(body, schema, schema)
    try:
        import jsonschema
    except ImportError:
        return
    assert not jsonschema.Draft202012Validator(schema).is_valid(body)


def test_a_missing_field_is_rejected() -> None:
    body = json.loads(EventPayload.from_signal(changes()[0]).model_dump_json())
    del body["idempotency_key"]
    schema = committed("event")
    assert problems(body, schema, schema) == ["$: missing idempotency_key"]


def test_the_examples_in_the_mqtt_doc_validate() -> None:
    text = (schemas.SCHEMA_DIR.parent / "mqtt.md").read_text()
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.+?)\n```", text, re.S)]
    kinds = ["event" if "idempotency_key" in b else "state" if "sides" in b else "status" for b in blocks]
    assert sorted(kinds) == ["event", "state", "status"]
    for kind, body in zip(kinds, blocks, strict=True):
        schema = committed(kind)
        assert problems(body, schema, schema) == [], kind
        schemas.PAYLOADS[kind][0].model_validate(body)
    event = EventPayload.model_validate(blocks[kinds.index("event")])
    assert event.idempotency_key == idempotency_key(
        event.asset, event.side, event.episode_id, event.stage_from, event.stage, event.ts_ns)
