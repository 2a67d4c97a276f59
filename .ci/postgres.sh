#!/usr/bin/env bash
# Starts Debian's PostgreSQL (the newest installed version's "main" cluster,
# created if missing) and makes a role and database for the tests; writes
# their URL to .ci/postgres.url. Run as root; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q . || pg_createcluster "$version" main >/dev/null
pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start
port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"
as_postgres() { su postgres -c "$1"; }
as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname = 'amon_ci'\"" | grep -q 1 ||
  as_postgres "psql -p $port -qc \"CREATE ROLE amon_ci LOGIN PASSWORD 'amon_ci'\""
as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'amon_ci'\"" | grep -q 1 ||
  as_postgres "createdb -p $port -O amon_ci amon_ci"
echo "postgres://amon_ci:amon_ci@127.0.0.1:$port/amon_ci" > .ci/postgres.url
echo "PostgreSQL $version on port $port: $(cat .ci/postgres.url)"
