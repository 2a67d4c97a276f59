#!/usr/bin/env bash
# Amon and Prometheus Alertmanager, the same workload, one run, one table
# (docs/benchmarks.md). Installs Debian's prometheus-alertmanager when it is
# missing (as root), builds the release binaries, and runs
# `amon-load compare` with whatever arguments it is given, e.g.
#   bash load/compare.sh --runs 3 --report compare.json
set -euo pipefail
cd "$(dirname "$0")/.."
am=/usr/bin/prometheus-alertmanager
if [ ! -x "$am" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
    # The package starts a system instance; ours are private, on other ports.
    systemctl stop prometheus-alertmanager 2>/dev/null || true
  else
    echo "compare.sh: $am is missing and we are not root: apt-get install prometheus-alertmanager" >&2
    exit 1
  fi
fi
cargo build --release --quiet --bins
exec target/release/amon-load compare --alertmanager "$am" "$@"
