#!/usr/bin/env bash
# Interop test: two real Synapse homeservers knock on rooms hosted by knockd.
# See tests/interop/README.md. Exit 0 when every check passes, non-zero otherwise.
#
# Environment:
#   KNOCKD_INTEROP_CACHE     where the Synapse virtualenv is kept (default ~/.cache/knockd-interop)
#   KNOCKD_INTEROP_PYTHON    the Python that creates it (default python3.11, else python3)
#   KNOCKD_INTEROP_VERSIONS  room versions to test (default 7,8,9,10,11,12)
#   KNOCKD_INTEROP_SKIP_BUILD=1  use target/debug/{knockd,knockctl} (under CARGO_TARGET_DIR when set) as they are
#   KNOCKD_INTEROP_KEEP=1    keep the work directory (configs, databases, logs) even on success
#   KNOCKD_INTEROP_LOG       knockd's log filter (default info,ruma_state_res=warn)
set -euo pipefail

SYNAPSE_VERSION=1.163.2

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KNOCKD_INTEROP_CACHE:-$HOME/.cache/knockd-interop}
venv="$cache/venv-$SYNAPSE_VERSION"
marker="$venv/.knockd-interop-installed"

say() { echo "interop: $*"; }

# 1. Synapse, pinned, in a cached virtualenv. The marker is written last, so an interrupted
#    install is thrown away and redone rather than half-used.
if [[ ! -f "$marker" ]]; then
  python=${KNOCKD_INTEROP_PYTHON:-}
  if [[ -z "$python" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
  fi
  say "installing matrix-synapse==$SYNAPSE_VERSION into $venv (with $python)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "matrix-synapse==$SYNAPSE_VERSION"
  "$venv/bin/python" -c 'import synapse, signedjson, cryptography; print(synapse.__version__)' \
    | grep -qx "$SYNAPSE_VERSION"
  touch "$marker"
fi
say "Synapse $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)') from $venv"

# 2. knockd and knockctl.
if [[ "${KNOCKD_INTEROP_SKIP_BUILD:-0}" != 1 ]]; then
  say "building knockd and knockctl"
  (cd "$root" && cargo build --quiet -p knockd -p knockctl)
fi
# Where cargo put them: target/, or CARGO_TARGET_DIR (or a configured target-dir) when set.
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
knockd="$target/debug/knockd"
knockctl="$target/debug/knockctl"
[[ -x "$knockd" && -x "$knockctl" ]] || { say "missing $knockd or $knockctl"; exit 1; }

# 3. A fresh work directory (databases, keys, logs) for this run only.
work=$(mktemp -d "${TMPDIR:-/tmp}/knockd-interop.XXXXXX")
logs=("$work/synapse1/homeserver.log" "$work/synapse2/homeserver.log" "$work/knockd/knockd.log")

driver_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Interrupted: let the driver stop its servers itself (it handles SIGTERM), for up to 15 s.
  if [[ -n "$driver_pid" ]] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  # Whatever survived the driver (killed, crashed...): by pid, each in its own process group,
  # and only if that pid still is one of ours (its command line or environment names $work).
  if [[ -f "$work/pids" ]]; then
    ours() { grep -qsaF "$work" "/proc/$1/cmdline" "/proc/$1/environ"; }
    local pid name left=0
    while read -r pid name; do
      if ours "$pid"; then
        say "stopping leftover $name (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        left=1
      fi
    done <"$work/pids"
    if [[ $left == 1 ]]; then
      sleep 2
      while read -r pid name; do
        if ours "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" || true; fi
      done <"$work/pids"
    fi
  fi
  if [[ $rc -ne 0 ]]; then
    for f in "${logs[@]}"; do
      if [[ -f "$f" ]]; then
        echo
        echo "==================== last 200 lines of $f ===================="
        tail -n 200 "$f"
      fi
    done
    echo
    say "FAILED (exit $rc); everything is kept in $work"
  elif [[ "${KNOCKD_INTEROP_KEEP:-0}" == 1 ]]; then
    say "passed; kept $work"
  else
    rm -rf "$work"
    say "passed"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 4. The scenarios. `timeout` bounds the run (the driver has its own, shorter, budget).
say "work directory $work"
# In the background so that a signal to this script is handled at once (see cleanup).
timeout --kill-after=20 570 "$venv/bin/python" -u "$here/driver.py" \
  --workdir "$work" --knockd "$knockd" --knockctl "$knockctl" &
driver_pid=$!
rc=0
wait "$driver_pid" || rc=$?
driver_pid=""
exit $rc
