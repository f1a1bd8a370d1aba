#!/usr/bin/env bash
# Load benchmark of the public archive on loopback: wrk against
# /health_check and /archive/{slug} in one run, one after the other, on the
# same release build, so the two figures are comparable (the health check is
# the ceiling: no database, no rendering). The issue page is served from the
# archive's in-process cache (src/archive/cache.rs), which the database
# refills every few seconds. Prints one table: req/s, p50, p99, errors.
#   scripts/bench_archive.sh            20 s per run
#   DURATION=60 scripts/bench_archive.sh
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench_archive.sh
# The database and the Redis keys of the run are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION="${DURATION:-20}"
CONNECTIONS="${CONNECTIONS:-64}"
APP_PORT=18100
STUB_PORT=18125
RUN="$(date +%s)"
DB="bench_archive_${RUN}"

ensure_postgres
ensure_redis
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl

NEWSLETTER_BIN="${NEWSLETTER_BIN:-}"
if [ -z "${NEWSLETTER_BIN}" ]; then
  log "building the release binary"
  SQLX_OFFLINE=true cargo build --release --bin newsletter
  NEWSLETTER_BIN=target/release/newsletter
fi

# The email API is never called (nothing is sent); a closed port will do.
export_load_test_settings "${DB}" "bench:${RUN}:" "${STUB_PORT}"
export APP_APPLICATION__PORT="${APP_PORT}"
export APP_APPLICATION__BASE_URL="http://127.0.0.1:${APP_PORT}"
export RUST_LOG="${RUST_LOG:-info}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  delete_redis_keys "bench:${RUN}:"
}
trap cleanup EXIT

"${NEWSLETTER_BIN}" migrate >/dev/null

# One public issue, already sent to no one: the bench's own issue body, at
# a fixed slug.
SLUG=winter-notes
PGPASSWORD="${DB_PASSWORD}" psql -q -v ON_ERROR_STOP=1 -h "${DB_HOST}" -p "${DB_PORT}" \
  -U "${DB_USER}" -d "${DB}" \
  -v html="$(cat scripts/bench/campaign_issue.html)" \
  -v text="$(cat scripts/bench/campaign_issue.txt)" -v slug="${SLUG}" <<'SQL'
INSERT INTO newsletter_issues
  (id, title, content, subject, html_body, text_body, message_stream, send_at, state,
   audience_complete, finished_at, public_at, slug, publicity_changed_at)
VALUES (gen_random_uuid(), 'Winter notes', :'text', 'Winter notes', :'html', :'text',
        'broadcast', now() - interval '1 day', 'done', true, now() - interval '1 day',
        now(), :'slug', now());
SQL

"${NEWSLETTER_BIN}" >/dev/null &
pids+=($!)
wait_for_port 127.0.0.1 "${APP_PORT}" "the service"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${APP_PORT}/archive/${SLUG}")
[ "${status}" = 200 ] || die "/archive/${SLUG} answered ${status}"

rows=()
# One wrk run; appends a row: name, req/s, p50, p99, errors.
run_wrk() {
  local name=$1 url=$2
  log "wrk: ${name}, ${CONNECTIONS} connections, ${DURATION} s"
  local out rps p50 p99 non2xx socket
  out=$(wrk -t2 -c"${CONNECTIONS}" -d"${DURATION}s" --latency "${url}")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"${out}")
  p50=$(awk '$1 == "50%" {print $2}' <<<"${out}")
  p99=$(awk '$1 == "99%" {print $2}' <<<"${out}")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"${out}")
  socket=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"${out}")
  rows+=("${name}|${rps}|${p50}|${p99}|$(( ${non2xx:-0} + ${socket:-0} ))")
}

log "warming up for 3 s"
wrk -t2 -c"${CONNECTIONS}" -d3s "http://127.0.0.1:${APP_PORT}/archive/${SLUG}" >/dev/null
run_wrk health_check "http://127.0.0.1:${APP_PORT}/health_check"
run_wrk "archive/${SLUG}" "http://127.0.0.1:${APP_PORT}/archive/${SLUG}"

load=$(cut -d' ' -f1-3 /proc/loadavg)
printf '\n%-22s %12s %10s %10s %8s\n' endpoint req/s p50 p99 errors
for row in "${rows[@]}"; do
  IFS='|' read -r name rps p50 p99 errors <<<"${row}"
  printf '%-22s %12s %10s %10s %8s\n' "${name}" "${rps}" "${p50}" "${p99}" "${errors}"
done
printf '\n%s connections, %s s each, %s cores, load average before the table: %s\n' \
  "${CONNECTIONS}" "${DURATION}" "$(nproc)" "${load}"
