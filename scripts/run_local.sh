#!/usr/bin/env bash
# Runs the service locally on a fresh Debian machine: makes sure Postgres
# and Redis are running (installing them if needed), creates and migrates the
# database, then serves on http://127.0.0.1:8000. Emails are written to the
# log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_postgres
ensure_redis
log "building the service"
SQLX_OFFLINE=true cargo build --quiet
log "migrating the database"
target/debug/newsletter migrate
log "serving on http://127.0.0.1:8000 (Ctrl-C to stop)"
exec target/debug/newsletter
