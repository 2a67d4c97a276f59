#!/usr/bin/env bash
# Memory per zone watcher of a real `amon relay` running the simulated cloud.
#
# Starts the release binary three times per size (1 zone, then N zones), waits
# until the relay's admin API reports every zone watched, reads the process's
# resident set size, and prints (RSS(N) - RSS(1)) / (N - 1) per run and the
# median. The relay has no master here (its events queue in memory); the
# simulated cloud's reboots and crashes are off so nothing else grows.
#
#   usage: load/relay-memory.sh [ZONES_PER_SERVER] [SERVERS] [RUNS]
#   e.g.   load/relay-memory.sh 100 100 3     # 10,000 zones
set -euo pipefail
per_server=${1:-100}
servers=${2:-100}
runs=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/amon
[ -x "$bin" ] || (cd "$root" && cargo build --release --quiet)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# rss_kib SERVERS PER_SERVER: starts a relay, waits for all zones, prints VmRSS in KiB.
rss_kib() {
  local n_servers=$1 n_per=$2 port dir pid want got
  port=$(free_port)
  dir=$(mktemp -d -p "$work")
  AMON__DATA_DIR=$dir \
  AMON__RELAY__ADMIN_LISTEN=127.0.0.1:$port \
  AMON__RELAY__MASTER_URL=http://127.0.0.1:9 \
  AMON__RELAY__ZONES__SOURCE=sim \
  AMON__RELAY__ZONES__SIM__SERVERS=$n_servers \
  AMON__RELAY__ZONES__SIM__ZONES_PER_SERVER=$n_per \
  AMON__RELAY__ZONES__SIM__REBOOT_EVERY=0s \
  AMON__RELAY__ZONES__SIM__CRASH_EVERY=0s \
  AMON__RELAY__ZONES__SIM__SERVER_SHUTDOWN_EVERY=0s \
  AMON_LOG=warn "$bin" relay 2>"$dir/log" &
  pid=$!
  want=$((n_servers * n_per))
  for _ in $(seq 1 600); do
    got=$(curl -fsS "http://127.0.0.1:$port/state" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["zones"]["zones"])' 2>/dev/null || echo 0)
    [ "$got" = "$want" ] && break
    sleep 0.1
  done
  [ "$got" = "$want" ] || { echo "relay never reported $want zones (got $got)" >&2; cat "$dir/log" >&2; exit 1; }
  sleep 1 # let the snapshot's transient allocations be freed
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

zones=$((servers * per_server))
echo "zones=$zones runs=$runs binary=$bin"
results=()
for run in $(seq 1 "$runs"); do
  base=$(rss_kib 1 1)
  full=$(rss_kib "$servers" "$per_server")
  per=$(python3 -c "print(round(($full - $base) * 1024 / ($zones - 1)))")
  echo "run $run: rss(1 zone)=${base} KiB rss($zones zones)=${full} KiB -> ${per} bytes per zone watcher"
  results+=("$per")
done
median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median: ${median} bytes per zone watcher (target: <= 2048)"
