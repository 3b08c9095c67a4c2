"""The Kubernetes manifests in deploy/k8s/: every resource validated offline by kubernetes-validate (strict,
for a pinned Kubernetes version), then what a schema cannot say: sharding, probes, security, the numba cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flushwatch.settings import load_settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
CACHE_DIR = "/var/cache/flushwatch/numba"
WORKLOADS = ("Deployment", "StatefulSet")


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] in WORKLOADS]


def env_config() -> dict[str, str]:
    [env] = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "flushwatch-env"]
    return dict(env["data"])


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    broken = workloads()[0]
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_detectors_are_a_statefulset_with_one_replica_per_shard() -> None:
    [detect] = of_kind("StatefulSet")
    assert detect["spec"]["replicas"] == int(env_config()["FLUSHWATCH_SHARDS"])
    container = detect["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["detect", "--shard", "auto"]
    [governing] = [s for s in of_kind("Service") if s["metadata"]["name"] == detect["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    [budget] = of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"] == detect["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_collectors_per_venue_and_one_alert_role() -> None:
    deployments = of_kind("Deployment")
    args = sorted(tuple(d["spec"]["template"]["spec"]["containers"][0]["args"]) for d in deployments)
    assert args == [("alert",), ("collect", "--venue", "binance"), ("collect", "--venue", "bybit")]
    for deployment in deployments:
        # a second replica would publish or write everything twice
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_every_pod_is_probed_locked_down_and_has_a_writable_numba_cache() -> None:
    env = env_config()
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        volumes = {v["name"]: v for v in pod["volumes"]}
        [container] = pod["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "flushwatch-env"}}], name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert "memory" in container["resources"]["requests"] and "memory" in container["resources"]["limits"]
        for each in (container, *pod["initContainers"]):
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"], name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts[CACHE_DIR]], name
        [seed] = pod["initContainers"]
        assert seed["command"][-2:] == [f"{CACHE_DIR}/.", "/seed/"]
        assert {m["mountPath"]: m["name"] for m in seed["volumeMounts"]} == {"/seed": mounts[CACHE_DIR]}
        assert volumes[mounts[env["FLUSHWATCH_SECRETS_DIR"]]]["secret"]["secretName"] == "flushwatch-secrets"
        config_dir = str(Path(env["FLUSHWATCH_CONFIG"]).parent)
        assert volumes[mounts[config_dir]]["configMap"]["name"] == "flushwatch-config"


def test_metrics_service_selects_every_role() -> None:
    [service] = [s for s in of_kind("Service") if s["metadata"]["name"] == "flushwatch-metrics"]
    selector = service["spec"]["selector"].items()
    for workload in workloads():
        assert selector <= workload["spec"]["template"]["metadata"]["labels"].items(), workload["metadata"]["name"]
        ports = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in ports
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_configmap_and_secret_make_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pod sees: the env ConfigMap, the TOML file and the Secret's files, loaded as flushwatch would."""
    [config] = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "flushwatch-config"]
    [secret] = of_kind("Secret")
    (tmp_path / "flushwatch.toml").write_text(config["data"]["flushwatch.toml"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in secret["stringData"].items():
        (secrets / name).write_text(value)
    for key, value in env_config().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLUSHWATCH_CONFIG", str(tmp_path / "flushwatch.toml"))
    monkeypatch.setenv("FLUSHWATCH_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.shards == 2 and settings.universe.watch == "top:20" and settings.bybit.enabled
    assert settings.redis_url == secret["stringData"]["flushwatch_redis_url"]
