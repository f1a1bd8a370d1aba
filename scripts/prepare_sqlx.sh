#!/usr/bin/env bash
# Regenerates .sqlx/, the query metadata that lets `sqlx::query!` compile
# without a database (CI, Docker builds). Run it after changing a query or a
# migration, and commit the result. It needs only a running Postgres: the
# migrations are applied to a scratch database with psql.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_postgres
db="sqlx_prepare_$(date +%s)_$$"
export PGPASSWORD="${DB_PASSWORD}"
psql_admin() { psql -v ON_ERROR_STOP=1 -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" "$@"; }
psql_admin -d postgres -c "CREATE DATABASE ${db}"
trap 'psql_admin -d postgres -c "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null' EXIT
for migration in migrations/*.sql; do
  psql_admin -d "${db}" -f "${migration}"
done

rm -rf .sqlx && mkdir .sqlx
# The macros only write metadata when they expand, so force this crate to rebuild.
cargo clean -p newsletter >/dev/null 2>&1 || true
DATABASE_URL="postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}:${DB_PORT}/${db}" \
  SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" \
  cargo check --all-targets --quiet
log "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
