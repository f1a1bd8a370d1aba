#!/usr/bin/env bash
# Runs the service locally on a fresh Debian machine: makes sure Postgres
# and Redis are running (installing them if needed), creates and migrates the
# database, then serves on http://127.0.0.1:8000. Logs are plain lines, and
# emails are written to files under target/emails/ instead of being sent
# (the log names each file), each confirmation link on a line of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_postgres
ensure_redis
# Cargo's progress stays visible: the first build takes several minutes.
log "building the service (the first build takes a few minutes)"
SQLX_OFFLINE=true cargo build
log "migrating the database"
target/debug/newsletter migrate
log "serving on http://127.0.0.1:8000 (Ctrl-C to stop)"
exec target/debug/newsletter
