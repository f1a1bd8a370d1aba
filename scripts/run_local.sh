#!/usr/bin/env bash
# Runs the service locally on a fresh Debian machine: makes sure Postgres
# and Redis are running (installing them if needed), creates and migrates the
# database, then serves on http://127.0.0.1:8000. Logs are plain lines, and
# emails are kept in the local inbox instead of being sent: read them, and
# click their links, at http://127.0.0.1:8000/admin/inbox after signing in
# (create an admin with `target/debug/newsletter admin create --username NAME`).
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
log "emails sent are at http://127.0.0.1:8000/admin/inbox (after signing in)"
exec target/debug/newsletter
