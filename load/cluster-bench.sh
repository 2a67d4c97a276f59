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
if [ -x /usr/bin/prometheus-alertmanager ]; then
  echo "== compare: amon-load compare --quick" | tee "$out/compare.log"
  "$load" compare --quick --report "$out/compare.json" 2>>"$out/compare.log" | tee -a "$out/compare.log"
else
  echo "no /usr/bin/prometheus-alertmanager: the comparison is skipped (bash load/compare.sh installs it)" >&2
fi
