#!/usr/bin/env python3
"""Synapse as the resident server under knock-sim's send_knock benchmark.

Run through tests/bench/synapse.sh (which supplies the interop virtualenv's Python). Reuses
tests/interop/driver.py's Synapse class (TLS federation listener on loopback with a self-signed
certificate, server_name 127.0.0.1:<port>, trusted_key_servers [], relaxed rate limits), adds
the federation limits a 32-connection burst from one origin needs, creates a room version 10
knock room through the client API, then runs `knock-sim bench --room ...` against it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))
import driver  # noqa: E402
from driver import Procs, Synapse, free_ports, http, log, q  # noqa: E402

BIG = {"per_second": 100000, "burst_count": 100000}


class BenchSynapse(Synapse):
    log_level = "WARNING"
    pg: dict | None = None  # psycopg2 connection args; None: SQLite

    def write_config(self) -> Path:
        path = super().write_config()
        config = json.loads(path.read_text())
        config["rc_federation"] = {
            "window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
            "reject_limit": 100000, "concurrent": 1000,
        }
        config["federation_rr_transactions_per_room_per_second"] = 100000
        if self.pg is not None:
            config["database"] = {"name": "psycopg2", "args": dict(self.pg, cp_min=5, cp_max=10)}
        for k in ("rc_message", "rc_joins_per_room", "rc_key_requests"):
            config[k] = BIG
        config["rc_joins"] = {"local": BIG, "remote": BIG}
        path.write_text(json.dumps(config, indent=1))
        log_yaml = self.dir / "log.yaml"
        lc = json.loads(log_yaml.read_text())
        lc["root"]["level"] = self.log_level
        log_yaml.write_text(json.dumps(lc, indent=1))
        return path


def rss_mb(pid: int) -> tuple[float | None, float | None]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    vals = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            k, v = line.split(":", 1)
            vals[k] = round(int(v.split()[0]) / 1024, 1)
    return vals.get("VmHWM"), vals.get("VmRSS")


def forward_extremities(hs: BenchSynapse, room_id: str) -> int | None:
    """Synapse's forward extremity count for the room, read from its database (best effort)."""
    sql = "SELECT count(*) FROM event_forward_extremities WHERE room_id = %s"
    try:
        if hs.pg is not None:
            import psycopg2
            with psycopg2.connect(**hs.pg) as conn, conn.cursor() as cur:
                cur.execute(sql, (room_id,))
                return cur.fetchone()[0]
        import sqlite3
        conn = sqlite3.connect(f"file:{hs.dir / 'homeserver.db'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql.replace("%s", "?"), (room_id,)).fetchone()[0]
        finally:
            conn.close()
    except Exception as e:  # noqa: BLE001
        log(f"cannot read forward extremities: {e}")
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", default="1:50,32:300", help="C:N pairs, comma separated")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--workdir")
    ap.add_argument("--pg", help="PostgreSQL as host:port:user:database (default: SQLite)")
    args = ap.parse_args()
    driver.BUDGET = driver.Budget(3600)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="knockd-synapse-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Procs(workdir)
    BenchSynapse.log_level = args.log_level
    db = "sqlite3"
    if args.pg:
        host, port, user, database = args.pg.split(":")
        BenchSynapse.pg = {"host": host, "port": int(port), "user": user, "database": database}
        db = f"postgresql {host}:{port}/{database}"
    fed, client = free_ports(2)
    hs = BenchSynapse("synapse", workdir, fed, client)
    failed = False
    try:
        hs.start(procs)
        hs.wait_ready()
        import synapse
        log(f"Synapse {synapse.__version__}, database "
            + (db if args.pg else f"sqlite3 {hs.dir / 'homeserver.db'}"))
        owner = hs.register("owner")
        r = owner.api("POST", "/_matrix/client/v3/createRoom",
                      {"room_version": "10", "preset": "private_chat", "name": "Benchmark room"})
        driver.expect(r.status == 200, f"createRoom: {r}")
        room_id = r.body["room_id"]
        r = owner.api("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.join_rules",
                      {"join_rule": "knock"})
        driver.expect(r.status == 200, f"join_rules: {r}")
        log(f"room {room_id} (v10, join_rule knock) on {hs.server_name}")
        summary = []
        for pair in args.runs.split(","):
            c, n = (int(x) for x in pair.split(":"))
            argv = [args.sim, "bench", "--server", hs.server_name, "--room", room_id,
                    "-n", str(n), "-c", str(c), "--template", "fresh", "--json",
                    "--admin-url", "http://127.0.0.1:1", "--token-file", "/dev/null"]
            log(f"knock-sim bench -c {c} -n {n}")
            t0 = time.monotonic()
            p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            wall = time.monotonic() - t0
            if p.stderr.strip():
                log("knock-sim stderr: " + p.stderr.strip()[-2000:])
            line = next((ln for ln in reversed(p.stdout.splitlines())
                         if ln.startswith("{")), None)
            if line is None:
                log(f"knock-sim exited {p.returncode} without JSON; stdout: {p.stdout[-2000:]}")
                failed = True
                continue
            result = json.loads(line)
            result["forward_extremities_after"] = forward_extremities(hs, room_id)
            hwm, rss = rss_mb(hs.proc.pid)
            result["resident"] = {"server": "synapse", "version": synapse.__version__,
                                  "database": "postgresql" if args.pg else "sqlite3", "peak_rss_mb": hwm, "rss_mb": rss,
                                  "wall_seconds_including_make_knock": round(wall, 2)}
            name = out / f"synapse-{'postgres' if args.pg else 'sqlite'}-c{c}.json"
            name.write_text(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
            if p.returncode != 0:
                failed = True
            lat = result.get("latency", {})
            summary.append(f"C={c} n={n}: {result.get('knocks_per_second', 0):.1f} knocks/s, "
                           f"latency {json.dumps(lat)}, ok {result.get('ok')}, "
                           f"errors {json.dumps(result.get('errors'))}, "
                           f"forward extremities after {result['forward_extremities_after']}")
        for s in summary:
            log(s)
        dead = procs.check_alive()
        if dead:
            log("died: " + "; ".join(dead))
            failed = True
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {e}")
        failed = True
    finally:
        procs.stop_all()
        if failed:
            log(f"Synapse log tail ({hs.logfile}):\n{driver.tail(hs.logfile, 80)}")
        log(f"work dir {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
