#!/usr/bin/env python3
"""Interop driver: two real Synapse homeservers knock on rooms hosted by knockd.

Run through tests/interop/run.sh, which installs the pinned Synapse into a cached virtualenv,
builds knockd and knockctl, and runs this file with the virtualenv's Python (Synapse itself,
`signedjson` and `cryptography` come from there; everything else is the standard library).

The driver starts both Synapse servers and knockd (each in its own process group, their pids
written to <workdir>/pids so that run.sh can clean up even if this process is killed), runs the
scenarios for each room version, prints one line per check and a closing
"N passed, N failed" line, and exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# ------------------------------------------------------------------------------------------
# Small utilities
# ------------------------------------------------------------------------------------------

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def q(s: str) -> str:
    """Percent-encodes one path segment (room IDs, aliases, user IDs, event IDs)."""
    return urllib.parse.quote(s, safe="")


def short(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Fail(Exception):
    """A failed check: the scenario stops here."""


def expect(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


@dataclass
class Resp:
    status: int | None  # None: no HTTP answer at all
    body: Any
    raw: bytes
    error: str | None = None

    def __str__(self) -> str:
        if self.status is None:
            return f"no response ({self.error})"
        return f"HTTP {self.status} {short(self.body if self.body is not None else self.raw)}"


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Resp:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    ctx = _INSECURE if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return Resp(None, None, b"", error=str(e))
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return Resp(status, parsed, raw)


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ------------------------------------------------------------------------------------------
# Deadline: the whole run must stay under the CI budget even when knockd misbehaves
# ------------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def wait_limit(self, wanted: float) -> float:
        return max(0.5, min(wanted, self.left()))


BUDGET = Budget(480)


def wait_for(
    what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.25
) -> Any:
    """Calls fn until it returns something truthy; Fail with the last value after timeout."""
    deadline = time.monotonic() + BUDGET.wait_limit(timeout)
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise Fail(f"timed out waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------


class Procs:
    """Every process the driver starts, each in its own session (process group)."""

    def __init__(self, workdir: Path) -> None:
        self.pidfile = workdir / "pids"
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], logfile: Path, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        out = open(logfile, "ab")
        p = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
        out.close()
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        log(f"started {name} (pid {p.pid}), log {logfile}")
        return p

    def check_alive(self) -> list[str]:
        return [f"{n} (pid {p.pid}) exited with {p.returncode}"
                for n, p in self.procs if p.poll() is not None]

    def stop_all(self) -> None:
        for _name, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _name, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs.clear()


# ------------------------------------------------------------------------------------------
# Synapse
# ------------------------------------------------------------------------------------------

# Synapse's DEFAULT_IP_RANGE_BLOCKLIST without 127.0.0.0/8 and ::1/128, so that it federates
# with the other servers of this test, all on loopback. Synapse always adds 0.0.0.0 and :: itself.
IP_RANGE_BLACKLIST = [
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8",
    "fec0::/10",
]

RELAXED = {"per_second": 1000, "burst_count": 1000}


def make_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (Synapse's TLS federation listener)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pkey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    key.chmod(0o600)


class Synapse:
    def __init__(self, label: str, workdir: Path, fed_port: int, client_port: int) -> None:
        self.label = label
        self.dir = workdir / label
        self.dir.mkdir(parents=True)
        self.fed_port = fed_port
        self.client_port = client_port
        self.server_name = f"127.0.0.1:{fed_port}"
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.fed_url = f"https://127.0.0.1:{fed_port}"
        self.shared_secret = secrets.token_hex(16)
        self.logfile = self.dir / "homeserver.log"
        self.signing_key = None
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        from signedjson.key import generate_signing_key, write_signing_keys

        make_certificate(self.dir / "tls.crt", self.dir / "tls.key")
        self.signing_key = generate_signing_key("a_" + secrets.token_hex(2))
        with open(self.dir / "signing.key", "w") as f:
            write_signing_keys(f, [self.signing_key])
        log_config = {
            "version": 1,
            "formatters": {"precise": {"format": (
                "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
            )}},
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter",
                                    "request": ""}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "precise",
                                     "filters": ["context"]}},
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"},
                        "twisted": {"level": "WARNING"}},
            "root": {"level": "INFO", "handlers": ["console"]},
            "disable_existing_loggers": False,
        }
        (self.dir / "log.yaml").write_text(json.dumps(log_config, indent=1))
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.client_url + "/",
            "pid_file": str(self.dir / "homeserver.pid"),
            "listeners": [
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http",
                 "tls": True, "x_forwarded": False,
                 "resources": [{"names": ["federation"], "compress": False}]},
                {"port": self.client_port, "bind_addresses": ["127.0.0.1"], "type": "http",
                 "tls": False, "x_forwarded": False,
                 "resources": [{"names": ["client"], "compress": False}]},
            ],
            "tls_certificate_path": str(self.dir / "tls.crt"),
            "tls_private_key_path": str(self.dir / "tls.key"),
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "log_config": str(self.dir / "log.yaml"),
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(self.dir / "signing.key"),
            "report_stats": False,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "registration_shared_secret": self.shared_secret,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": False,
            "ip_range_blacklist": IP_RANGE_BLACKLIST,
            "federation": {
                # Synapse backs off a destination for 10 minutes after a failure by default;
                # one hiccup must not sink the scenarios that follow.
                "destination_min_retry_interval": "1s",
                "destination_retry_multiplier": 1.5,
                "destination_max_retry_interval": "5s",
                "client_timeout": "20s",
            },
            "use_presence": False,
            "enable_metrics": False,
            "url_preview_enabled": False,
            "allow_public_rooms_over_federation": True,
            "rc_message": RELAXED,
            "rc_registration": RELAXED,
            "rc_login": {"address": RELAXED, "account": RELAXED, "failed_attempts": RELAXED},
            "rc_joins": {"local": RELAXED, "remote": RELAXED},
            "rc_joins_per_room": RELAXED,
            "rc_invites": {"per_room": RELAXED, "per_user": RELAXED, "per_issuer": RELAXED},
            "rc_third_party_invite": RELAXED,
            "rc_room_creation": RELAXED,
            "rc_key_requests": RELAXED,
            "rc_admin_redaction": RELAXED,
            "rc_profile": RELAXED,
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1,
                              "reject_limit": 10000, "concurrent": 100},
        }
        path = self.dir / "homeserver.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    def start(self, procs: Procs) -> None:
        config = self.write_config()
        env = dict(os.environ, SYNAPSE_ASYNC_IO_REACTOR="0")
        self.proc = procs.start(
            self.label, [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            self.logfile, env=env, cwd=self.dir,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise Fail(f"{self.label} exited with {self.proc.returncode} while starting")
            r1 = http("GET", self.client_url + "/_matrix/client/versions", timeout=2)
            r2 = http("GET", self.fed_url + "/_matrix/federation/v1/version", timeout=2)
            return r1.status == 200 and r2.status == 200
        wait_for(f"{self.label} to start", ready, timeout=timeout, interval=0.5)
        log(f"{self.label} is up: server name {self.server_name}, client API {self.client_url}")

    def register(self, localpart: str) -> "User":
        url = self.client_url + "/_synapse/admin/v1/register"
        r = http("GET", url)
        expect(r.status == 200, f"{self.label}: register nonce: {r}")
        nonce, password = r.body["nonce"], secrets.token_hex(8)
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"notadmin"]))
        r = http("POST", url, {"nonce": nonce, "username": localpart, "password": password,
                               "admin": False, "mac": mac.hexdigest(),
                               "displayname": localpart.capitalize()})
        expect(r.status == 200, f"{self.label}: register {localpart}: {r}")
        user = User(self, r.body["user_id"], r.body["access_token"])
        user.sync(0)
        return user

    def sign_request(self, method: str, destination: str, uri: str, content: Any = None) -> str:
        """An X-Matrix Authorization header, signed with this Synapse's own key."""
        from signedjson.sign import sign_json

        obj = {"method": method, "uri": uri, "origin": self.server_name,
               "destination": destination}
        if content is not None:
            obj["content"] = content
        signed = sign_json(obj, self.server_name, self.signing_key)
        key_id = f"{self.signing_key.alg}:{self.signing_key.version}"
        sig = signed["signatures"][self.server_name][key_id]
        return (f'X-Matrix origin="{self.server_name}",destination="{destination}",'
                f'key="{key_id}",sig="{sig}"')


class User:
    """A Synapse user and what its /sync said so far."""

    def __init__(self, hs: Synapse, user_id: str, token: str) -> None:
        self.hs = hs
        self.user_id = user_id
        self.token = token
        self.since: str | None = None
        self.section: dict[str, str] = {}  # room_id -> join/invite/knock/leave, latest seen
        self.events: list[tuple[str, str, dict]] = []  # (section, room_id, event)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Resp:
        return http(method, self.hs.client_url + path, body,
                    {"Authorization": f"Bearer {self.token}"}, timeout=timeout)

    def sync(self, timeout_ms: int = 1000) -> None:
        path = f"/_matrix/client/v3/sync?timeout={timeout_ms}"
        if self.since:
            path += "&since=" + q(self.since)
        r = self.api("GET", path, timeout=timeout_ms / 1000 + 30)
        expect(r.status == 200, f"{self.user_id} /sync: {r}")
        self.since = r.body["next_batch"]
        rooms = r.body.get("rooms", {})
        for section, key_paths in (
            ("join", (("state", "events"), ("timeline", "events"))),
            ("invite", (("invite_state", "events"),)),
            ("knock", (("knock_state", "events"),)),
            ("leave", (("state", "events"), ("timeline", "events"))),
        ):
            for room_id, data in rooms.get(section, {}).items():
                self.section[room_id] = section
                for a, b in key_paths:
                    for ev in data.get(a, {}).get(b, []):
                        self.events.append((section, room_id, ev))

    def wait_sync(self, what: str, pred: Callable[["User"], Any], timeout: float = 20) -> Any:
        def step() -> Any:
            v = pred(self)
            if v:
                return v
            self.sync(1000)
            return pred(self)
        return wait_for(f"{self.user_id} to see {what} in /sync", step, timeout=timeout,
                        interval=0)

    def room_events(self, room_id: str, section: str | None = None) -> list[dict]:
        return [e for s, r, e in self.events if r == room_id and (section is None or s == section)]

    def member_event(self, room_id: str, state_key: str, membership: str) -> dict | None:
        for e in self.room_events(room_id):
            if (e.get("type") == "m.room.member" and e.get("state_key") == state_key
                    and e.get("content", {}).get("membership") == membership):
                return e
        return None

    def knock(self, room_id: str, via: str, reason: str) -> Resp:
        path = (f"/_matrix/client/v3/knock/{q(room_id)}?via={q(via)}&server_name={q(via)}")
        return self.api("POST", path, {"reason": reason})

    def join(self, room_id: str, via: str) -> Resp:
        path = f"/_matrix/client/v3/join/{q(room_id)}?via={q(via)}&server_name={q(via)}"
        return self.api("POST", path, {})

    def leave(self, room_id: str) -> Resp:
        return self.api("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})

    def send_text(self, room_id: str, body: str) -> Resp:
        txn = secrets.token_hex(8)
        return self.api("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
                        {"msgtype": "m.text", "body": body})


# ------------------------------------------------------------------------------------------
# knockd and knockctl
# ------------------------------------------------------------------------------------------


class Knockd:
    def __init__(self, workdir: Path, binary: str, knockctl: str, fed_port: int,
                 admin_port: int) -> None:
        self.binary = binary
        self.knockctl_bin = knockctl
        self.dir = workdir / "knockd"
        self.data_dir = self.dir / "data"
        self.dir.mkdir(parents=True)
        self.logfile = self.dir / "knockd.log"
        self.server_name = f"127.0.0.1:{fed_port}"
        self.fed_port = fed_port
        self.fed_url = f"https://127.0.0.1:{fed_port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.admin_port = admin_port
        self.proc: subprocess.Popen | None = None
        self.ctl_calls = 0

    def start(self, procs: Procs) -> None:
        env = dict(
            os.environ,
            KNOCKD_SERVER_NAME=self.server_name,
            KNOCKD_FEDERATION_LISTEN=f"127.0.0.1:{self.fed_port}",
            KNOCKD_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            KNOCKD_DATA_DIR=str(self.data_dir),
            KNOCKD_FEDERATION_VERIFY_CERTIFICATES="false",
            KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST="127.0.0.1",
            KNOCKD_OUTBOX_MIN_BACKOFF_MS="200",
            KNOCKD_OUTBOX_MAX_BACKOFF_MS="2000",
            KNOCKD_OUTBOX_POLL_MS="100",
            KNOCKD_LOG=os.environ.get("KNOCKD_INTEROP_LOG", "info,ruma_state_res=warn"),
            NO_COLOR="1",
        )
        for var in ("KNOCKD_CONFIG", "KNOCKD_DATABASE_URL", "RUST_LOG", "KNOCKD_FEDERATION_TLS"):
            env.pop(var, None)
        self.proc = procs.start("knockd", [self.binary], self.logfile, env=env, cwd=self.dir)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise Fail(f"knockd exited with {self.proc.returncode} while starting")
            return http("GET", self.admin_url + "/healthz", timeout=2).status == 200
        wait_for("knockd /healthz", ready, timeout=timeout, interval=0.3)
        r = http("GET", self.fed_url + "/_matrix/federation/v1/version", timeout=5)
        expect(r.status == 200, f"knockd federation listener (TLS): {r}")
        log(f"knockd is up: server name {self.server_name}, admin API {self.admin_url}, "
            f"version {short(r.body)}")

    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def ctl(self, *args: str, json_out: bool = True) -> tuple[int, Any, str]:
        argv = [self.knockctl_bin, "--url", self.admin_url, "--token-file",
                str(self.data_dir / "admin.token"), "--color", "never"]
        if json_out:
            argv.append("--json")
        argv += list(args)
        self.ctl_calls += 1
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        out: Any = p.stdout
        if json_out and p.stdout.strip():
            try:
                out = json.loads(p.stdout)
            except ValueError:
                pass
        return p.returncode, out, p.stderr.strip()

    def ctl_ok(self, *args: str, json_out: bool = True) -> Any:
        rc, out, err = self.ctl(*args, json_out=json_out)
        expect(rc == 0, f"knockctl {' '.join(args)} exited {rc}: {err or short(out)}")
        return out

    def knocks(self, room_id: str, status: str = "all") -> list[dict]:
        out = self.ctl_ok("list", "--room", room_id, "--status", status, "--limit", "0")
        if isinstance(out, dict):
            out = out.get("knocks", [])
        expect(isinstance(out, list), f"knockctl list --json printed {short(out)}")
        return out

    def knock_of(self, room_id: str, user_id: str, status: str | None = None,
                 exclude_event: str | None = None) -> dict | None:
        rows = [k for k in self.knocks(room_id) if k.get("user_id") == user_id
                and (status is None or k.get("status") == status)
                and k.get("event_id") != exclude_event]
        return rows[-1] if rows else None

    def wait_knock(self, room_id: str, user_id: str, status: str, timeout: float = 20,
                   exclude_event: str | None = None) -> dict:
        last: list[Any] = [None]

        def probe() -> dict | None:
            rows = [k for k in self.knocks(room_id) if k.get("user_id") == user_id]
            last[0] = [(k.get("id"), k.get("status"), k.get("event_id")) for k in rows]
            for k in reversed(rows):
                if k.get("status") == status and k.get("event_id") != exclude_event:
                    return k
            return None
        try:
            return wait_for(f"knockd to list {user_id}'s knock as {status}", probe, timeout)
        except Fail as e:
            raise Fail(f"{e}; knockd lists (id, status, event_id) {last[0]}") from None

    def federation_get(self, signer: Synapse, path: str) -> Resp:
        auth = signer.sign_request("GET", self.server_name, path)
        return http("GET", self.fed_url + path, headers={"Authorization": auth}, timeout=20)


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    notes: list[str] = field(default_factory=list)


class Run:
    def __init__(self, hs1: Synapse, hs2: Synapse, kd: Knockd, procs: Procs) -> None:
        self.hs1, self.hs2, self.kd, self.procs = hs1, hs2, kd, procs
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.users: dict[str, User] = {}
        self.published: dict[str, str] = {}  # room_id -> name, rooms published in the directory
        self.joined_user: User | None = None  # an hs1 user who shares a room with knockd's admin

    def note(self, text: str) -> None:
        log(f"    note: {text}")
        self.notes.append(text)

    def user(self, hs: Synapse, localpart: str) -> User:
        """Registers the user on first use (inside a scenario, so a failure is reported there)."""
        key = f"{hs.label}/{localpart}"
        if key not in self.users:
            self.users[key] = hs.register(localpart)
        return self.users[key]

    def scenario(self, name: str, fn: Callable[[], None]) -> bool:
        if BUDGET.left() <= 0:
            self.results.append(Result(name, False, 0, "not run: time budget exhausted"))
            log(f"FAIL {name}: not run, time budget exhausted")
            return False
        log(f"---- {name}")
        self.notes = []
        t = time.monotonic()
        ok, detail = True, ""
        try:
            fn()
        except Fail as e:
            ok, detail = False, str(e)
        except Exception:  # a harness bug or an unexpected answer shape: still a failure
            ok, detail = False, "unexpected error:\n" + traceback.format_exc()
        dead = self.procs.check_alive()
        if dead:
            ok, detail = False, (detail + "; " if detail else "") + "; ".join(dead)
        secs = time.monotonic() - t
        self.results.append(Result(name, ok, secs, detail, self.notes))
        log(f"{'PASS' if ok else 'FAIL'} {name} ({secs:.1f}s){': ' + detail if detail else ''}")
        return ok

    def state_of(self, room: str, event_type: str, state_key: str = "") -> dict | None:
        """An entry of knockd's current state, through `knockctl rooms show --json`."""
        detail = self.kd.ctl_ok("rooms", "show", room)
        for s in detail.get("state", []) if isinstance(detail, dict) else []:
            if s.get("type", s.get("event_type")) == event_type and s.get("state_key") == state_key:
                return s
        return None

    def wait_hs_log(self, hs: Synapse, *needles: str, timeout: float = 5) -> str | None:
        """The first line of hs's log containing all needles (diagnostics only, never a check)."""
        def find() -> str | None:
            for line in tail(hs.logfile, 20000).splitlines():
                if all(n in line for n in needles):
                    return line
            return None
        try:
            return wait_for(f"{needles} in {hs.label}'s log", find, timeout=timeout, interval=0.5)
        except Fail:
            return None

    # -- the scenarios of one room version --------------------------------------------------

    def room_version(self, v: str) -> None:
        kd, hs1, hs2 = self.kd, self.hs1, self.hs2
        tag = f"v{v}"
        name = f"Interop room {tag}"
        ctx: dict[str, Any] = {}

        def create() -> None:
            out = kd.ctl_ok("rooms", "create", "--version", v, "--name", name,
                            "--topic", "Knock to enter")
            expect(isinstance(out, dict) and out.get("room_id"), f"rooms create printed {out}")
            expect(str(out.get("room_version")) == v, f"room version {out.get('room_version')}")
            ctx["room"] = out["room_id"]
            log(f"    room {ctx['room']}")
            # knockctl has no flag for the public directory: the admin API's own field.
            r = http("PUT", f"{kd.admin_url}/_knockd/admin/v1/rooms/{q(ctx['room'])}",
                     {"published": True}, {"Authorization": f"Bearer {kd.token()}"})
            if r.status == 200:
                self.published[ctx["room"]] = name
            else:
                self.note(f"publishing through the admin API: {r}")
        if not self.scenario(f"{tag}: knockctl rooms create", create):
            return
        room = ctx["room"]
        via = kd.server_name
        alias = f"#interop-{tag}-{secrets.token_hex(3)}:{kd.server_name}"

        # -- discovery before knocking, from hs2 (nobody there is in the room or has knocked) --
        def set_alias() -> None:
            kd.ctl_ok("rooms", "set", room, "--alias", alias)
            ca = self.state_of(room, "m.room.canonical_alias")
            expect(ca and ca.get("content", {}).get("alias") == alias,
                   f"knockd's m.room.canonical_alias after rooms set: {short(ca)}")
        alias_set = self.scenario(f"{tag}: knockctl rooms set --alias", set_alias)

        def resolve_alias() -> None:
            scout = self.user(hs2, "scout")
            r = scout.api("GET", f"/_matrix/client/v3/directory/room/{q(alias)}")
            expect(r.status == 200, f"hs2 GET /directory/room/{alias}: {r} (hs2 asks knockd "
                   f"GET /_matrix/federation/v1/query/directory?room_alias=...)")
            expect(r.body.get("room_id") == room, f"alias resolved to {r.body.get('room_id')}")
            expect(kd.server_name in r.body.get("servers", []),
                   f"servers {r.body.get('servers')} lack {kd.server_name}")
        if alias_set:
            self.scenario(f"{tag}: alias resolves from Synapse", resolve_alias)

        def summary(identifier: str) -> Callable[[], None]:
            def run() -> None:
                scout = self.user(hs2, "scout")
                path = f"/_matrix/client/v1/room_summary/{q(identifier)}?via={q(via)}"
                r = scout.api("GET", path)
                expect(r.status == 200, f"hs2 GET {path}: {r} (hs2 asks knockd "
                       f"GET /_matrix/federation/v1/hierarchy/{{roomId}})")
                b = r.body
                expect(b.get("room_id") == room, f"summary room_id {b.get('room_id')}")
                expect(b.get("join_rule") == "knock", f"summary join_rule {b.get('join_rule')}")
                expect(b.get("name") == name, f"summary name {b.get('name')}")
                expect(b.get("topic") == "Knock to enter", f"summary topic {b.get('topic')}")
                rv = b.get("room_version", b.get("im.nheko.summary.room_version"))
                expect(rv == v, f"summary room_version {rv}")
                expect(b.get("membership") in (None, "leave"), f"membership {b.get('membership')}")
                if alias_set:
                    expect(b.get("canonical_alias") == alias,
                           f"summary canonical_alias {b.get('canonical_alias')}")
            return run
        self.scenario(f"{tag}: room summary by room ID from Synapse, before knocking",
                      summary(room))
        if alias_set:
            self.scenario(f"{tag}: room summary by alias from Synapse", summary(alias))

        # -- alice (hs1) knocks over make_knock/send_knock: hs1 is not in the room yet --
        reason = f"alice would like to join ({tag})"

        def alice_knocks() -> None:
            alice = self.user(hs1, f"alice-{tag}")
            r = alice.knock(room, via, reason)
            expect(r.status == 200, f"hs1 POST /knock for {alice.user_id}: {r}")
            expect(r.body.get("room_id") == room, f"knock answered {r.body}")
            k = kd.wait_knock(room, alice.user_id, "pending", timeout=10)
            expect(k.get("reason") == reason, f"knockd reason {k.get('reason')!r}")
            expect(k.get("room_name") == name, f"knockd room_name {k.get('room_name')!r}")
            expect(k.get("origin_server") == hs1.server_name, f"origin {k.get('origin_server')}")
            expect(k.get("display_name") == f"Alice-{tag}",
                   f"display_name {k.get('display_name')!r} (Synapse adds the profile)")
            pend = kd.ctl_ok("list", "--room", room)  # the default: pending only
            pend = pend.get("knocks", []) if isinstance(pend, dict) else pend
            expect(any(p.get("id") == k["id"] for p in pend), "not in `knockctl list` (pending)")
            ctx["alice_knock"] = k
            alice.wait_sync("the room under rooms.knock", lambda u: u.section.get(room) == "knock")
            ks = alice.room_events(room, "knock")
            types = sorted({e.get("type") for e in ks})
            expect("m.room.create" in types, f"knock_state lacks m.room.create: types {types}")
            expect(alice.member_event(room, alice.user_id, "knock"),
                   "knock_state lacks the knocker's own m.room.member knock")
            names = [e for e in ks if e.get("type") == "m.room.name"]
            expect(names and names[0].get("content", {}).get("name") == name,
                   f"knock_state m.room.name {short(names)}")
            self.note(f"knock_state types: {types}")
        alice_ok = self.scenario(f"{tag}: Synapse user knocks (make_knock/send_knock)",
                                 alice_knocks)

        def approve_join() -> None:
            alice = self.user(hs1, f"alice-{tag}")
            k = ctx["alice_knock"]
            kd.ctl_ok("approve", str(k["id"]), "--reason", "welcome")
            alice.wait_sync("the invite", lambda u: u.section.get(room) == "invite")
            inv = alice.member_event(room, alice.user_id, "invite")
            expect(inv, "no m.room.member invite event in invite_state")
            kd.wait_knock(room, alice.user_id, "approved", timeout=10)
            shown = kd.ctl_ok("show", str(k["id"]))
            decisions = shown.get("decisions", [])
            expect(decisions and decisions[-1].get("action") == "approve"
                   and decisions[-1].get("delivery") == "delivered",
                   f"knockctl show: decisions {short(decisions)}")
            r = alice.join(room, via)
            expect(r.status == 200, f"hs1 POST /join: {r}")
            kd.wait_knock(room, alice.user_id, "joined", timeout=15)
            r = alice.api("GET", "/_matrix/client/v3/joined_rooms")
            expect(r.status == 200 and room in r.body.get("joined_rooms", []),
                   f"hs1 /joined_rooms: {r}")
            alice.wait_sync("the room under rooms.join", lambda u: u.section.get(room) == "join")
            m = self.state_of(room, "m.room.member", alice.user_id)
            expect(m and m.get("content", {}).get("membership") == "join",
                   f"knockd's state for {alice.user_id}: {short(m)}")
            ctx["joined"] = True
            self.joined_user = alice
        if alice_ok:
            self.scenario(f"{tag}: knockctl approve, Synapse user joins", approve_join)

        def message() -> None:
            alice = self.user(hs1, f"alice-{tag}")
            body = f"hello knockd ({tag})"
            r = alice.send_text(room, body)
            expect(r.status == 200, f"hs1 PUT /send/m.room.message: {r}")
            event_id = r.body["event_id"]
            path = f"/_matrix/federation/v1/event/{q(event_id)}"
            last: list[Resp] = []

            def stored() -> bool:
                resp = kd.federation_get(hs1, path)
                last[:] = [resp]
                return resp.status == 200
            try:
                wait_for(f"knockd to serve {event_id}", stored, timeout=15, interval=0.5)
            except Fail as e:
                raise Fail(f"{e}: knockd GET {path} (signed as {hs1.server_name}): "
                           f"{last[0]}") from None
            pdus = last[0].body.get("pdus", [])
            expect(pdus and pdus[0].get("content", {}).get("body") == body,
                   f"knockd's copy of the message: {short(last[0].body)}")
        if ctx.get("joined"):
            self.scenario(f"{tag}: Synapse user's message reaches knockd (read back over "
                          f"federation)", message)

        # -- bob (hs1): hs1 is in the room now, so his knocks travel in /send transactions --
        def bob_flow() -> None:
            expect(ctx.get("joined"), "needs alice joined (an earlier scenario failed)")
            alice = self.user(hs1, f"alice-{tag}")
            bob = self.user(hs1, f"bob-{tag}")
            r = bob.knock(room, via, "bob knocks")
            expect(r.status == 200, f"hs1 POST /knock for {bob.user_id}: {r}")
            k1 = kd.wait_knock(room, bob.user_id, "pending", timeout=15)
            expect(k1.get("reason") == "bob knocks", f"reason {k1.get('reason')!r}")
            kd.ctl_ok("deny", str(k1["id"]), "--reason", "not today", "--yes")
            kick = alice.wait_sync("bob's kick", lambda u: u.member_event(room, bob.user_id,
                                                                          "leave"))
            expect(kick.get("sender", "").endswith(":" + kd.server_name),
                   f"kick sender {kick.get('sender')}")
            expect(kick.get("content", {}).get("reason") == "not today",
                   f"kick reason {kick.get('content')}")
            bob.wait_sync("the room under rooms.leave", lambda u: u.section.get(room) == "leave")
            # knock again: 200, a new pending row, the denied one stays as history
            r = bob.knock(room, via, "bob knocks again")
            expect(r.status == 200, f"hs1 POST /knock (again, after the kick): {r}")
            k2 = kd.wait_knock(room, bob.user_id, "pending", timeout=15,
                               exclude_event=k1["event_id"])
            expect(k2.get("reason") == "bob knocks again", f"reason {k2.get('reason')!r}")
            rows = {k["id"]: k["status"] for k in kd.knocks(room) if k["user_id"] == bob.user_id}
            expect(rows.get(k1["id"]) == "denied", f"bob's rows {rows}: first knock not denied")
            kd.ctl_ok("deny", str(k2["id"]), "--ban", "--reason", "go away", "--yes")
            alice.wait_sync("bob's ban", lambda u: u.member_event(room, bob.user_id, "ban"))
            expect(kd.knock_of(room, bob.user_id, "banned"), "knockd does not list a banned knock")
            # hs1 knows the ban: the next knock is refused by hs1 itself
            r = bob.knock(room, via, "bob knocks a third time")
            expect(r.status == 403, f"hs1 POST /knock after the ban: {r} (expected 403)")
            self.note(f"knock after ban: {r}")
            log_out = kd.ctl_ok("log", "--room", room)
            decisions = log_out.get("decisions", []) if isinstance(log_out, dict) else log_out
            acts = [(d.get("knock_id"), d.get("action")) for d in decisions]
            expect((k2["id"], "ban") in acts and (k1["id"], "deny") in acts,
                   f"knockctl log: {acts}")
        self.scenario(f"{tag}: knock over /send, deny (kick), knock again, ban", bob_flow)

        # -- erin (hs1) knocks then leaves: hs1 is in the room, so the leave reaches knockd --
        def erin_rescinds() -> None:
            expect(ctx.get("joined"), "needs alice joined (an earlier scenario failed)")
            erin = self.user(hs1, f"erin-{tag}")
            r = erin.knock(room, via, "erin knocks")
            expect(r.status == 200, f"hs1 POST /knock: {r}")
            kd.wait_knock(room, erin.user_id, "pending", timeout=15)
            r = erin.leave(room)
            expect(r.status == 200, f"hs1 POST /leave (rescind): {r}")
            kd.wait_knock(room, erin.user_id, "rescinded", timeout=15)
            m = self.state_of(room, "m.room.member", erin.user_id)
            expect(m and m.get("content", {}).get("membership") == "leave",
                   f"knockd's state for {erin.user_id}: {short(m)}")
        self.scenario(f"{tag}: knock then leave on a server in the room (rescind over /send)",
                      erin_rescinds)

        # -- carol (hs2, nobody of hs2 in the room): re-knock, fan-out, deny, knock again --
        def carol_flow() -> None:
            carol = self.user(hs2, f"carol-{tag}")
            r = carol.knock(room, via, "carol knocks")
            expect(r.status == 200, f"hs2 POST /knock: {r}")
            k0 = kd.wait_knock(room, carol.user_id, "pending", timeout=10)
            r = carol.knock(room, via, "carol knocks, again")
            expect(r.status == 200, f"hs2 POST /knock while already knocking: {r}")
            k1 = kd.wait_knock(room, carol.user_id, "pending", timeout=10,
                               exclude_event=k0["event_id"])
            expect(k1.get("reason") == "carol knocks, again", f"reason {k1.get('reason')!r}")
            rows = {k["id"]: k["status"] for k in kd.knocks(room) if k["user_id"] == carol.user_id}
            expect(rows.get(k0["id"]) == "replaced", f"carol's rows {rows}: first not replaced")
            if ctx.get("joined"):
                alice = self.user(hs1, f"alice-{tag}")
                ev = alice.wait_sync("carol's knock (knockd's fan-out)",
                                     lambda u: u.member_event(room, carol.user_id, "knock"),
                                     timeout=10)
                expect(ev.get("content", {}).get("reason") in ("carol knocks",
                                                               "carol knocks, again"),
                       f"fanned-out knock content {ev.get('content')}")
            kd.ctl_ok("deny", str(k1["id"]), "--yes")
            out = kd.ctl_ok("log", "--knock", str(k1["id"]))
            decisions = out.get("decisions", []) if isinstance(out, dict) else out
            expect(len(decisions) == 1 and decisions[0].get("action") == "deny",
                   f"knockctl log --knock {k1['id']}: {short(decisions)}")
            expect(decisions[0].get("user_id") in (None, carol.user_id),
                   f"decision user_id {decisions[0].get('user_id')}")
            expect(kd.knock_of(room, carol.user_id, "denied"), "knockd does not list it denied")
            if ctx.get("joined"):
                alice.wait_sync("carol's kick", lambda u: u.member_event(room, carol.user_id,
                                                                         "leave"))
            # knockd also pushes the kick to hs2 (KNOCK-SPEC E.33, best effort); Synapse drops
            # PDUs for rooms it has no joined user in, so carol still sees "knocking".
            kick_id = decisions[0].get("event_id") or "?"
            line = self.wait_hs_log(hs2, kick_id, "as we're not in the room", timeout=5)
            self.note(f"decision delivery={decisions[0].get('delivery')!r}; hs2 " + (
                f"dropped the kick {kick_id}: " + line.split(" - ")[-1] if line else
                f"did not log dropping the kick {kick_id}"))
            carol.sync(1000)
            expect(carol.section.get(room) == "knock" and
                   not carol.member_event(room, carol.user_id, "leave"),
                   f"hs2 after the deny: carol's room is under rooms.{carol.section.get(room)}; "
                   f"Synapse 1.163 was expected to keep showing the knock")
            r = carol.knock(room, via, "carol knocks after the deny")
            expect(r.status == 200, f"hs2 POST /knock again after the deny: {r}")
            k2 = kd.wait_knock(room, carol.user_id, "pending", timeout=10,
                               exclude_event=k1["event_id"])
            expect(k2.get("reason") == "carol knocks after the deny",
                   f"reason {k2.get('reason')!r}")
        self.scenario(f"{tag}: remote knock, knock again, fan-out, deny logged, knock again",
                      carol_flow)

        # -- dave (hs2) knocks without a reason and leaves: Synapse rescinds only locally --
        def dave_rescinds() -> None:
            dave = self.user(hs2, f"dave-{tag}")
            r = dave.api("POST", f"/_matrix/client/v3/knock/{q(room)}?via={q(via)}", {})
            expect(r.status == 200, f"hs2 POST /knock without a reason: {r}")
            k = kd.wait_knock(room, dave.user_id, "pending", timeout=10)
            expect(k.get("reason") is None, f"reason {k.get('reason')!r}")
            r = dave.leave(room)
            expect(r.status == 200, f"hs2 POST /leave (rescind): {r}")
            dave.wait_sync("the room under rooms.leave", lambda u: u.section.get(room) == "leave")
            # Synapse 1.163 does not rescind over federation: it makes a local out-of-band leave
            # only (RoomMemberMasterHandler.remote_rescind_knock), so knockd is never told.
            time.sleep(2)
            st = kd.knock_of(room, dave.user_id)
            expect(st and st.get("id") == k["id"] and st.get("status") == "pending",
                   f"knockd after hs2's local rescind: {st}")
            m = self.state_of(room, "m.room.member", dave.user_id)
            expect(m and m.get("content", {}).get("membership") == "knock",
                   f"knockd's state for {dave.user_id}: {short(m)}")
            self.note("hs2 rescinded locally only; knockd still lists the knock as pending")
        self.scenario(f"{tag}: knock then leave on a server not in the room (local rescind)",
                      dave_rescinds)

        # -- frank (hs2) is approved, cannot knock while invited, and declines the invite --
        def frank_declines() -> None:
            frank = self.user(hs2, f"frank-{tag}")
            r = frank.knock(room, via, "frank knocks")
            expect(r.status == 200, f"hs2 POST /knock: {r}")
            k = kd.wait_knock(room, frank.user_id, "pending", timeout=10)
            kd.ctl_ok("approve", str(k["id"]))
            frank.wait_sync("the invite", lambda u: u.section.get(room) == "invite")
            kd.wait_knock(room, frank.user_id, "approved", timeout=10)
            if ctx.get("joined"):
                alice = self.user(hs1, f"alice-{tag}")
                alice.wait_sync("frank's invite (knockd's fan-out)",
                                lambda u: u.member_event(room, frank.user_id, "invite"),
                                timeout=10)
            r = frank.knock(room, via, "frank knocks while invited")
            expect(r.status == 403, f"hs2 POST /knock while invited: {r} (expected 403: "
                   f"knockd's make_knock refuses an invited user, KNOCK-SPEC B.11)")
            r = frank.leave(room)
            expect(r.status == 200, f"hs2 POST /leave (decline the invite): {r}")
            # hs2 declines through knockd's make_leave/send_leave; had that failed, Synapse would
            # still answer 200 with a local out-of-band leave, so look at knockd's state.
            def left() -> bool:
                m = self.state_of(room, "m.room.member", frank.user_id)
                return bool(m and m.get("content", {}).get("membership") == "leave")
            try:
                wait_for("knockd to record frank's leave", left, timeout=10, interval=0.5)
            except Fail as e:
                sl = self.wait_hs_log(hs2, "make_leave", frank.user_id.split(":")[0][1:],
                                      timeout=0.5)
                raise Fail(f"{e}: knockd's state for {frank.user_id}: "
                           f"{short(self.state_of(room, 'm.room.member', frank.user_id))}; "
                           f"hs2 log: {sl}") from None
            if ctx.get("joined"):
                alice.wait_sync("frank's leave (knockd's fan-out)",
                                lambda u: u.member_event(room, frank.user_id, "leave"),
                                timeout=10)
            st = kd.knock_of(room, frank.user_id)
            self.note(f"knockd's knock row after the declined invite: status "
                      f"{st and st.get('status')!r}")
        self.scenario(f"{tag}: approved remote user declines the invite (make_leave/send_leave)",
                      frank_declines)

        # -- both sides agree on the room's current state --
        def same_state() -> None:
            expect(ctx.get("joined"), "needs alice joined (an earlier scenario failed)")
            alice = self.user(hs1, f"alice-{tag}")
            diff: list[Any] = [None]

            def agree() -> bool:
                r = alice.api("GET", f"/_matrix/client/v3/rooms/{q(room)}/state")
                expect(r.status == 200, f"hs1 GET /rooms/{{room}}/state: {r}")
                syn = {(e["type"], e["state_key"]): e["event_id"] for e in r.body}
                detail = kd.ctl_ok("rooms", "show", room)
                ours = {(e.get("type", e.get("event_type")), e["state_key"]): e["event_id"]
                        for e in detail.get("state", [])}
                diff[0] = {f"{k[0]}/{k[1]}": (ours.get(k), syn.get(k))
                           for k in set(syn) | set(ours) if ours.get(k) != syn.get(k)}
                diff.append(len(syn))
                return not diff[0] and len(syn) > 0
            try:
                wait_for("synapse1 and knockd to agree on the state", agree, timeout=10,
                         interval=0.5)
                self.note(f"{diff[-1]} state entries, the same event IDs on both sides")
            except Fail as e:
                raise Fail(f"{e}: differences (knockd, synapse1): {short(diff[0], 1500)}") from None
        self.scenario(f"{tag}: Synapse and knockd agree on the room's current state", same_state)

    # -- once per run: the rest of the discovery surface ------------------------------------

    def discovery(self) -> None:
        kd, hs2 = self.kd, self.hs2

        def public_rooms() -> None:
            scout = self.user(hs2, "scout")
            expect(self.published, "no room was published (see the rooms create notes)")
            r = scout.api("GET", f"/_matrix/client/v3/publicRooms?server={q(kd.server_name)}"
                          f"&limit=50")
            expect(r.status == 200, f"hs2 GET /publicRooms?server=knockd: {r} (hs2 asks knockd "
                   f"GET /_matrix/federation/v1/publicRooms)")
            chunk = {c.get("room_id"): c for c in r.body.get("chunk", [])}
            for room_id, name in self.published.items():
                c = chunk.get(room_id)
                expect(c, f"{room_id} missing from the directory: {short(r.body)}")
                expect(c.get("join_rule") == "knock" and c.get("name") == name,
                       f"directory entry {short(c)}")
            r = scout.api("POST", f"/_matrix/client/v3/publicRooms?server={q(kd.server_name)}",
                          {"limit": 50, "filter": {"generic_search_term": "Interop"}})
            expect(r.status == 200, f"hs2 POST /publicRooms?server=knockd: {r}")
        self.scenario("public room directory of knockd from Synapse (GET and POST)", public_rooms)

        def profile() -> None:
            scout = self.user(hs2, "scout")
            admin = f"@admin:{kd.server_name}"
            r = scout.api("GET", f"/_matrix/client/v3/profile/{q(admin)}")
            expect(r.status == 200, f"hs2 GET /profile/{admin}: {r} (hs2 asks knockd "
                   f"GET /_matrix/federation/v1/query/profile)")
            r = scout.api("GET", f"/_matrix/client/v3/profile/{q('@nobody:' + kd.server_name)}")
            expect(r.status == 404, f"hs2 GET /profile of an unknown knockd user: {r}")
        self.scenario("profile of knockd's admin from Synapse (query/profile)", profile)

        def keys(u_label: str, get_user: Callable[[], User | None]) -> Callable[[], None]:
            def run() -> None:
                u = get_user()
                expect(u, "no hs1 user joined a room (an earlier scenario failed)")
                admin = f"@admin:{kd.server_name}"
                r = u.api("POST", "/_matrix/client/v3/keys/query",
                          {"device_keys": {admin: []}, "timeout": 10000})
                expect(r.status == 200, f"{u.hs.label} POST /keys/query: {r}")
                expect(kd.server_name not in r.body.get("failures", {}),
                       f"{u.hs.label} could not ask knockd: failures {r.body.get('failures')}")
                self.note(f"{u_label}: {short(r.body, 300)}")
            return run
        self.scenario("device keys of knockd's admin from a Synapse not in any room "
                      "(user/keys/query)", keys("hs2", lambda: self.user(hs2, "scout")))
        self.scenario("device keys of knockd's admin from a Synapse sharing rooms "
                      "(user/devices)", keys("hs1", lambda: self.joined_user))

    def finish(self) -> None:
        def outbox_drained() -> None:
            last: list[Any] = [None]

            def drained() -> bool:
                out = self.kd.ctl_ok("outbox")
                last[0] = out
                return out.get("pending") == 0 and not out.get("parked")
            try:
                wait_for("knockd's outbox to drain", drained, timeout=15, interval=0.5)
            except Fail as e:
                raise Fail(f"{e}: knockctl outbox --json: {short(last[0])}") from None
        self.scenario("knockd's outbox drained: every event reached Synapse, nothing parked",
                      outbox_drained)

    def main(self, versions: list[str]) -> None:
        def hs_reach_knockd() -> None:
            path = "/_matrix/federation/v1/version"
            r = self.kd.federation_get(self.hs1, path)
            expect(r.status == 200, f"signed GET {path}: {r}")
        self.scenario("harness: signed federation request to knockd", hs_reach_knockd)
        for v in versions:
            try:
                self.room_version(v)
            except Exception:
                self.results.append(Result(f"v{v}: harness", False, 0, traceback.format_exc()))
        self.discovery()
        self.finish()


def tail(path: Path, n: int = 200) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(lines[-n:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--knockd", required=True)
    ap.add_argument("--knockctl", required=True)
    ap.add_argument("--versions", default=os.environ.get("KNOCKD_INTEROP_VERSIONS",
                                                          "7,8,9,10,11,12"))
    ap.add_argument("--budget", type=float,
                    default=float(os.environ.get("KNOCKD_INTEROP_BUDGET", "480")))
    args = ap.parse_args()
    global BUDGET
    BUDGET = Budget(args.budget)

    def on_term(signum, frame):  # run.sh's timeout or Ctrl-C: clean up through finally
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    procs = Procs(args.workdir)
    p = free_ports(6)
    hs1 = Synapse("synapse1", args.workdir, p[0], p[1])
    hs2 = Synapse("synapse2", args.workdir, p[2], p[3])
    kd = Knockd(args.workdir, args.knockd, args.knockctl, p[4], p[5])
    run = Run(hs1, hs2, kd, procs)
    failed_setup = interrupted = None
    try:
        try:
            kd.start(procs)
            hs1.start(procs)
            hs2.start(procs)
            kd.wait_ready()
            hs1.wait_ready()
            hs2.wait_ready()
        except Fail as e:
            failed_setup = str(e)
        if failed_setup is None:
            run.main([v.strip() for v in args.versions.split(",") if v.strip()])
    except (SystemExit, KeyboardInterrupt) as e:
        interrupted = str(e) or type(e).__name__
    finally:
        procs.stop_all()

    print("\n==== interop summary ====")
    if failed_setup:
        print(f"FAIL setup: {failed_setup}")
        return 1
    if interrupted:
        run.results.append(Result("run interrupted", False, 0, interrupted))
    for r in run.results:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name}  ({r.seconds:.1f}s)")
        if not r.ok:
            for line in r.detail.splitlines():
                print(f"        {line}")
        for n in r.notes:
            print(f"        note: {n}")
    # Warnings and errors knockd logged: never a failure by themselves, often the diagnosis.
    noisy = [line for line in tail(kd.logfile, 100000).splitlines()
             if " WARN " in line or " ERROR " in line]
    if noisy:
        print(f"knockd logged {len(noisy)} warnings/errors (first 20):")
        for line in noisy[:20]:
            print("    " + short(line, 400))
    for hs in (hs1, hs2):
        fed_fail = [line for line in tail(hs.logfile, 100000).splitlines()
                    if "matrixfederationclient" in line and kd.server_name in line
                    and ("Request failed" in line or "Failed to" in line)]
        if fed_fail:
            print(f"{hs.label}: {len(fed_fail)} failed federation requests to knockd "
                  f"(first 10; the make_knock 403s of the invited user are expected):")
            for line in fed_fail[:10]:
                print("    " + short(line.split(" - ", 5)[-1], 400))
    passed = sum(r.ok for r in run.results)
    failed = len(run.results) - passed
    print(f"interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
