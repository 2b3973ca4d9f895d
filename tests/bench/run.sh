#!/usr/bin/env bash
# Benchmarks of docs/BENCHMARKS.md: knockd (release) on PostgreSQL and SQLite, driven by
# knock-sim over loopback, with pgbench doing single-row inserts on the same database in the same
# run. Usage: tests/bench/run.sh [N] ; prints JSON lines and a summary. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth) and pgbench. KNOCKD_BENCH_BACKENDS="postgres" (or "sqlite") runs one.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
PG=${KNOCKD_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
OUT=${KNOCKD_BENCH_OUT:-target/bench-results}
mkdir -p "$OUT"
cargo build --release -q -p knockd -p knockd-tests --bin knockd --bin knock-sim
KNOCKD=target/release/knockd
SIM=target/release/knock-sim
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_knockd() { # $1 = database url, $2 = data dir, $3 = fed port, $4 = admin port
  rm -rf "$2"; mkdir -p "$2"
  KNOCKD_SERVER_NAME=127.0.0.1:$3 KNOCKD_FEDERATION_LISTEN=127.0.0.1:$3 KNOCKD_ADMIN_LISTEN=127.0.0.1:$4 \
  KNOCKD_DATA_DIR=$2 KNOCKD_DATABASE_URL=$1 KNOCKD_FEDERATION_VERIFY_CERTIFICATES=false KNOCKD_LOG=warn \
  KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST=127.0.0.1 KNOCKD_KNOCK_RATE_PER_ORIGIN=0 \
  KNOCKD_KNOCK_RATE_PER_ROOM=0 KNOCKD_KNOCK_MAX_PENDING_PER_ROOM=0 \
    "$KNOCKD" > "$2/knockd.log" 2>&1 &
  pids+=($!)
  KPID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$4/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "knockd did not start"; cat "$2/knockd.log"; exit 1
}

sim() { # $1 fed port, $2 admin port, $3 data dir, rest: knock-sim args
  local fed=$1 adm=$2 dir=$3; shift 3
  "$SIM" "$@" --server "127.0.0.1:$fed" --admin-url "http://127.0.0.1:$adm" --token-file "$dir/admin.token" --json
}

# PostgreSQL's autovacuum analyses a table once a tenth of it has changed, and the planner's
# choices follow those statistics. Where it is off (the CI machines' conf.d/90-ci.conf), ANALYZE
# after each phase stands in for it; otherwise plans made from empty-table estimates (sequential
# scans of `events`) would be measured instead of knockd.
settle() { # $1 database url
  case "$1" in
    postgres*) [ "$(psql "$1" -tAc "SHOW autovacuum")" = on ] || psql "$1" -qc ANALYZE ;;
  esac
}

peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

run_backend() { # $1 name, $2 db url
  local name=$1 url=$2 dir="$OUT/$1-data" fed=18548 adm=18549
  start_knockd "$url" "$dir" $fed $adm
  echo "== $name"
  sim $fed $adm "$dir" bench -n 300 -c 1 --template fresh | tee "$OUT/$name-c1.json"
  sim $fed $adm "$dir" bench -n "$N" -c 32 --template fresh | tee "$OUT/$name-c32.json"
  settle "$url"
  if [ "$name" = postgres ]; then
    pgbench -n -c 32 -j 2 -T 10 -f tests/bench/insert.sql "$url" 2>/dev/null | grep -E "tps|latency average" | tee "$OUT/pgbench.txt"
  fi
  sim $fed $adm "$dir" bench -n "$N" -c 32 --template stale | tee "$OUT/$name-stale.json"
  settle "$url"
  sim $fed $adm "$dir" bench-make-knock -n 5000 -c 32 | tee "$OUT/$name-make-knock.json"
  sim $fed $adm "$dir" bench-approve -n 200 | tee "$OUT/$name-approve.json"
  # Flat cost: C=1 latency in a room holding 10,000 pending knocks vs an empty room.
  local big
  big=$(sim $fed $adm "$dir" bench -n 10000 -c 1 --template fresh | tee "$OUT/$name-10k-fill.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["room_id"])')
  settle "$url"
  # Alternating, three rounds, so that neither room is always the first measured after the fill.
  for round in 1 2 3; do
    sim $fed $adm "$dir" bench -n 300 -c 1 --template fresh | tee "$OUT/$name-empty-c1-$round.json"
    sim $fed $adm "$dir" bench -n 300 -c 1 --template fresh --room "$big" | tee "$OUT/$name-10k-c1-$round.json"
  done
  # /send bursts (40 transactions of 50 messages) from a joined server, with send_knock from
  # another server timed alone and during the burst; in an empty room and in the 10,000-knock room.
  sim $fed $adm "$dir" bench-send --txns 40 --per-txn 50 --knocks 100 | tee "$OUT/$name-send-empty.json"
  sim $fed $adm "$dir" bench-send --txns 40 --per-txn 50 --knocks 100 --room "$big" | tee "$OUT/$name-send-10k.json"
  echo "{\"backend\":\"$name\",\"peak_rss_mb\":$(peak_rss_mb "$KPID")}" | tee "$OUT/$name-rss.json"
  kill "$KPID"; wait "$KPID" 2>/dev/null || true
}

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS knockd_bench" -qc "CREATE DATABASE knockd_bench"
psql "$PG/knockd_bench" -qc "CREATE TABLE IF NOT EXISTS pgbench_rows (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)"
for backend in ${KNOCKD_BENCH_BACKENDS:-postgres sqlite}; do
  case "$backend" in
    postgres) run_backend postgres "$PG/knockd_bench" ;;
    sqlite) run_backend sqlite "sqlite://$OUT/sqlite-data/knockd.db" ;;
    *) echo "unknown backend $backend (postgres, sqlite)"; exit 2 ;;
  esac
done
