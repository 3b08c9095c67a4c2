"""The snapshot's packed values: named on access, and refused when packed in another layout."""

from __future__ import annotations

import math

import msgspec
import pytest

from flushwatch.signals import FEATURE_NAMES, LAYOUT, TOTAL_KEYS, AssetState, SideState, Signal, packed

SIDE = SideState("long", 0, "calm", 12.5, "")


def state(features: dict[str, float], totals: dict[str, float]) -> AssetState:
    return AssetState("BTC", 1, 2, SIDE, SideState("short", 0, "calm", 3.0, ""), packed(features, FEATURE_NAMES),
                      packed(totals, TOTAL_KEYS))


def test_values_survive_the_wire_by_name() -> None:
    features = {name: float(i) - 37.5 for i, name in enumerate(FEATURE_NAMES)}
    features["z1"] = math.inf
    sent = state(features, {"trades": 7.0, "liq_long_usd": 1e9})
    got = msgspec.msgpack.decode(msgspec.msgpack.encode([sent]), type=list[Signal])[0]
    assert isinstance(got, AssetState) and got == sent
    assert got.features == features
    assert got.totals["trades"] == 7.0 and got.totals["liq_long_usd"] == 1e9
    assert math.isnan(got.totals["depth"])  # a name not given is NaN, as an unknown feature is
    assert list(got.features) == list(FEATURE_NAMES)


def test_a_name_outside_the_layout_is_refused() -> None:
    with pytest.raises(KeyError, match="oi_usd_typo"):
        packed({"oi_usd_typo": 1.0}, FEATURE_NAMES)


@pytest.mark.parametrize("change", ["layout", "short_features", "long_totals"])
def test_another_layout_is_refused_on_decode(change: str) -> None:
    fields = msgspec.to_builtins(state({"price": 1.0}, {}), builtin_types=(bytes,))
    if change == "layout":
        fields["layout"] = LAYOUT ^ 1
    elif change == "short_features":
        fields["feature_values"] = fields["feature_values"][:-8]
    else:
        fields["total_values"] += b"\0" * 8
    with pytest.raises(msgspec.ValidationError, match="this version reads layout"):
        msgspec.msgpack.decode(msgspec.msgpack.encode([fields]), type=list[Signal])
