#!/usr/bin/env bash
# Several masters on one PostgreSQL (docs/scale-out.md, docs/benchmarks.md
# "Several masters"): the same churn against one master on SQLite, one on
# PostgreSQL and two sharing PostgreSQL, then two masters with the leader
# SIGKILLed mid-run, then Amon beside Alertmanager (`amon-load compare
# --quick`) in the same run. Needs a PostgreSQL: AMON_TEST_DATABASE_URL, or
# (as root) Debian's server started by .ci/postgres.sh. Reports and logs go
# to $OUT (default ./cluster-bench). Arguments are passed to every churn run.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-cluster-bench}"
mkdir -p "$out"
if [ -z "${AMON_TEST_DATABASE_URL:-}" ]; then
  bash .ci/postgres.sh >/dev/null
  AMON_TEST_DATABASE_URL="$(cat .ci/postgres.url)"
fi
url="$AMON_TEST_DATABASE_URL"
cargo build --release --quiet --bins
load=target/release/amon-load
churn=(--scenario churn --servers 30 --zones-per-server 100 --relays 3 --rate 300 --duration 30s --hold 2s "$@")
run() {
  local name="$1"; shift
  echo "== $name: amon-load $*" | tee "$out/$name.log"
  "$load" "$@" --report "$out/$name.json" 2>>"$out/$name.log" | tee -a "$out/$name.log"
}
run sqlite-1 "${churn[@]}"
run postgres-1 "${churn[@]}" --store-url "$url"
run postgres-2 "${churn[@]}" --store-url "$url" --masters 2
run postgres-2-kill --scenario master-restart --servers 30 --zones-per-server 100 --relays 3 --rate 300 \
  --duration 30s --hold 2s --store-url "$url" --masters 2
# Ingest at full speed (load/ingest.rs: batches of 1,000 over 4 connections,
# each answered 202 after the commit), no probes: one master on SQLite, one
# on PostgreSQL, and two on one PostgreSQL schema posted to at once.
cargo build --release --quiet --example ingest
ingest=target/release/examples/ingest
pids=()
master() { # name port [schema]
  local dir="$out/ingest-$1"; mkdir -p "$dir"
  {
    printf 'datacenter = "bench"\ndata_dir = "%s"\n[master]\nlisten = "127.0.0.1:%s"\n' "$dir" "$2"
    printf '[auth]\nopen = true\n[demo]\nenabled = false\n'
    if [ -n "${3:-}" ]; then printf '[store]\nurl = "%s"\nschema = "%s"\n' "$url" "$3"; fi
  } > "$dir.toml"
  AMON_LOG=warn target/release/amon master -c "$dir.toml" 2>"$dir.log" &
  pids+=("$!")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/ping" >/dev/null && break; sleep 0.1; done
}
stop_masters() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
trap stop_masters EXIT
schema="amon_bench_$(date +%s)"
echo "== ingest" | tee "$out/ingest.log"
master sqlite 14300
echo "sqlite, one master:" | tee -a "$out/ingest.log"
"$ingest" http://127.0.0.1:14300 100000 1000 4 | tee -a "$out/ingest.log"
stop_masters
master pg1 14301 "${schema}_1"
echo "postgresql, one master:" | tee -a "$out/ingest.log"
"$ingest" http://127.0.0.1:14301 100000 1000 4 | tee -a "$out/ingest.log"
stop_masters
master pga 14302 "${schema}_2"
master pgb 14303 "${schema}_2"
echo "postgresql, two masters, 100,000 events to each at once:" | tee -a "$out/ingest.log"
"$ingest" http://127.0.0.1:14302 100000 1000 4 > "$out/ingest-a.txt" &
other=$!
"$ingest" http://127.0.0.1:14303 100000 1000 4 > "$out/ingest-b.txt"
wait "$other"
cat "$out/ingest-a.txt" "$out/ingest-b.txt" | tee -a "$out/ingest.log"
stop_masters

if [ -x /usr/bin/prometheus-alertmanager ]; then
  echo "== compare: amon-load compare --quick" | tee "$out/compare.log"
  "$load" compare --quick --report "$out/compare.json" 2>>"$out/compare.log" | tee -a "$out/compare.log"
else
  echo "no /usr/bin/prometheus-alertmanager: the comparison is skipped (bash load/compare.sh installs it)" >&2
fi
