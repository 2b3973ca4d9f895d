#!/usr/bin/env bash
# Synapse as the resident server under the same send_knock benchmark as knockd (tests/bench/run.sh):
# one Synapse (pinned version, the interop virtualenv, TLS federation on loopback), a room
# version 10 knock room created through the client API, then `knock-sim bench --template fresh`
# at C=1 (n=50) and C=32 (n=300). Results: target/bench-results/synapse-<db>-c<C>.json.
# Usage: tests/bench/synapse.sh [C:N,C:N...]   (default 1:50,32:300)
# Env: SYNAPSE_BENCH_DB    sqlite (default: fresh file in a temp dir) or postgres (drops and
#                          recreates database synapse_bench on 127.0.0.1:5432, user postgres, trust
#                          auth). The interop venv has no psycopg2; point SYNAPSE_BENCH_PYDEPS at a
#                          dir made with `$venv/bin/python -m pip install --target DIR psycopg2-binary`.
#      SYNAPSE_VERSION (1.163.2), KNOCKD_INTEROP_CACHE (~/.cache/knockd-interop),
#      KNOCKD_BENCH_OUT (target/bench-results), SYNAPSE_BENCH_LOG (WARNING; INFO logs every request)
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."
SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
cache=${KNOCKD_INTEROP_CACHE:-$HOME/.cache/knockd-interop}
venv="$cache/venv-$SYNAPSE_VERSION"
OUT=${KNOCKD_BENCH_OUT:-target/bench-results}
RUNS=${1:-1:50,32:300}
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import synapse' 2>/dev/null; then
  echo "no Synapse virtualenv at $venv: run tests/interop/run.sh once to install it" >&2
  exit 2
fi
[[ -x target/release/knock-sim ]] || cargo build --release -q -p knockd-tests --bin knock-sim
pgargs=()
case "${SYNAPSE_BENCH_DB:-sqlite}" in
  sqlite) ;;
  postgres)
    if [[ -n "${SYNAPSE_BENCH_PYDEPS:-}" ]]; then export PYTHONPATH="$SYNAPSE_BENCH_PYDEPS${PYTHONPATH:+:$PYTHONPATH}"; fi
    "$venv/bin/python" -c 'import psycopg2' 2>/dev/null || {
      echo "psycopg2 is not importable by $venv/bin/python: set SYNAPSE_BENCH_PYDEPS (see header)" >&2; exit 2; }
    PG=postgres://postgres@127.0.0.1:5432
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS synapse_bench" \
      -qc "CREATE DATABASE synapse_bench ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    pgargs=(--pg 127.0.0.1:5432:postgres:synapse_bench) ;;
  *) echo "SYNAPSE_BENCH_DB: sqlite or postgres" >&2; exit 2 ;;
esac
workdir=$(mktemp -d /tmp/knockd-synapse-bench.XXXXXX)
cleanup() {
  # The helper stops Synapse itself; this catches a helper killed before it could.
  if [[ -f "$workdir/pids" ]]; then
    while read -r pid _; do kill -TERM -- "-$pid" 2>/dev/null || true; done < "$workdir/pids"
  fi
}
trap cleanup EXIT
"$venv/bin/python" -u tests/bench/synapse_bench.py --sim target/release/knock-sim --out "$OUT" \
  --runs "$RUNS" --workdir "$workdir" --log-level "${SYNAPSE_BENCH_LOG:-WARNING}" "${pgargs[@]}"
