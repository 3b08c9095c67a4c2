"""Write the secrets of deploy/compose.yaml into deploy/secrets/ (or --out DIR): random passwords, the URLs
flushwatch reads from them, and the files Redis and Mosquitto check them against.

    python3 deploy/make_secrets.py            # once, before `docker compose -f deploy/compose.yaml up`

Only the standard library, so it runs before anything is installed. Existing files are kept (a second run
would otherwise lock the running services out); --force writes new passwords. The directory is private to
you (0700) and the files are world-readable (0644) because compose bind-mounts them into containers whose
users (flushwatch 10001, mosquitto 1883, redis 999, grafana 472) are not you.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "secrets"
MOSQUITTO_ITERATIONS = 101
"""Mosquitto 2's default for its ``$7$`` (PBKDF2-SHA512) password hashes, what ``mosquitto_passwd`` writes."""
MQTT_USERS = ("flushwatch", "reader")
"""``flushwatch`` publishes the alerts, ``reader`` subscribes to them (deploy/mosquitto/acl)."""


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A ``mosquitto_passwd`` line's hash: ``$7$<iterations>$<salt>$<PBKDF2-SHA512 of the password>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    return f"$7${MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def redis_acl(password: str) -> str:
    """Redis ACL file: flushwatch may use its own keys (``fw:*``) but no administrative command; the default
    user (no password) may only PING, which is what the health check sends."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (
        "user default on nopass resetchannels -@all +ping\n"
        f"user flushwatch on #{digest} ~fw:* resetchannels +@all -@dangerous\n"
    )


def contents(passwords: dict[str, str]) -> dict[str, str]:
    """File name -> content for a set of passwords (keys: redis, grafana, and each MQTT user)."""
    mqtt = passwords["flushwatch"]
    return {
        "flushwatch_redis_url": f"redis://flushwatch:{passwords['redis']}@redis:6379/0",
        "flushwatch_mqtt_url": f"mqtt://flushwatch:{mqtt}@mosquitto:1883",
        "redis_users_acl": redis_acl(passwords["redis"]),
        "mosquitto_passwd": "".join(f"{user}:{mosquitto_hash(passwords[user])}\n" for user in MQTT_USERS),
        "mqtt_reader_password": passwords["reader"],
        "grafana_admin_password": passwords["grafana"],
    }


def write(out: Path, force: bool) -> list[Path]:
    """Write every secret file that is missing (all of them with ``force``); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    files = contents({name: secrets.token_hex(24) for name in ("redis", "grafana", *MQTT_USERS)})
    if not force and any((out / name).exists() for name in files):
        # Passwords and their hashes must come from one run, so a partial directory is not completed.
        missing = [name for name in files if not (out / name).exists()]
        if missing:
            raise SystemExit(f"{out} holds some secrets but not {', '.join(missing)}: rerun with --force")
        return []
    # Alertmanager's receiver tokens (deploy/alertmanager/alertmanager.yml) are yours to put here.
    (out / "alertmanager").mkdir(mode=0o755, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"directory (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="replace existing secrets with new passwords")
    args = parser.parse_args()
    written = write(args.out, args.force)
    print(f"wrote {len(written)} secret files to {args.out}" if written else f"{args.out}: secrets exist, kept")


if __name__ == "__main__":
    main()
