#!/usr/bin/env bash
# Faults under load, with nothing lost. Two replicas behind HAProxy take a
# steady sign-up load (examples/fault_load.rs: every address and its answer
# recorded) while the run, one after another:
#   - makes Postgres unreachable for 10 s (the replicas reach it through
#     examples/fault_proxy.rs, which goes silent),
#   - restarts Redis (a private redis-server the run starts for itself),
#   - makes the email API answer 500, then 429, then hang,
#   - kills one replica with SIGKILL and starts it again.
# Then it lets the outbox drain and prints one table: requests sent, answers
# by status, sign-ups answered 200, how many of those have a subscriber and
# got a confirmation email, and lost = answered 200 without both. Exits
# non-zero if anything is lost or duplicates pass their bound.
#
#   scripts/fault_run.sh           a release build, three minutes of load
#   scripts/fault_run.sh --short   a debug build, 75 seconds (the test command)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

LB_PORT=18200
R1_PORT=18201
R2_PORT=18202
STUB_PORT=18225
SMTP_PORT=18226
PG_PROXY_PORT=18232
FAULT_REDIS_PORT=18279
CONCURRENCY="${CONCURRENCY:-16}"

# The second of the load at which each fault begins.
case "${1:-}" in
  --short)
    profile=debug
    LOAD_SECONDS=75; PG_CUT_AT=8; REDIS_AT=22; ISSUE_AT=26; API_500_AT=28; SMTP_DOWN_AT=30
    SMTP_UP_AT=33; API_429_AT=33; API_HANG_AT=38; API_OK_AT=50; KILL_AT=56
    # Emails that failed during the API faults come back within seconds,
    # not the production backoff's minute: the drain is short, and what it
    # proves (every one sent in the end) is the same.
    export APP_DELIVERY__BACKOFF_MAX_SECONDS=5 ;;
  "")
    profile=release
    LOAD_SECONDS=180; PG_CUT_AT=20; REDIS_AT=50; ISSUE_AT=66; API_500_AT=70; SMTP_DOWN_AT=75
    SMTP_UP_AT=85; API_429_AT=85; API_HANG_AT=100; API_OK_AT=115; KILL_AT=130 ;;
  *) die "usage: scripts/fault_run.sh [--short]" ;;
esac
PG_CUT_SECONDS=10
DRAIN_SECONDS=300
# An issue goes out to this many confirmed subscribers during the provider
# faults, at a rate that keeps it sending through them.
ISSUE_RECIPIENTS=2000
export APP_CAMPAIGNS__MESSAGES_PER_SECOND=100 APP_CAMPAIGNS__BATCH_SIZE=50
# The delivery settings the duplicates bound is computed from, set here so
# that the bound and the replicas agree.
export APP_DELIVERY__WORKERS=2 APP_DELIVERY__BATCH_SIZE=50

# One run at a time: a second would find the first one's ports taken.
exec 9>"${TMPDIR:-/tmp}/newsletter-fault-run.lock"
flock -n 9 || die "another fault run is going on"
for port in "${LB_PORT}" "${R1_PORT}" "${R2_PORT}" "${STUB_PORT}" "${SMTP_PORT}" "${PG_PROXY_PORT}" "${FAULT_REDIS_PORT}"; do
  port_open 127.0.0.1 "${port}" && die "port ${port} is taken; the fault run needs 18200-18279 free"
done

ensure_postgres
# Debian installs HAProxy in /usr/sbin, which a user's PATH may lack.
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
[ -x "${HAPROXY}" ] || { apt_install haproxy; HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"; }
command -v redis-server >/dev/null || apt_install redis-server
ensure_smtp_test_server

# With NEWSLETTER_BUILT set the binaries are taken as built (scripts/test.sh
# builds them all before its checks, which then run side by side).
if [ -z "${NEWSLETTER_BUILT:-}" ]; then
  log "building the service and the fault run's tools (${profile})"
  build_flags=(--quiet --bin newsletter --example email_api_stub --example fault_proxy --example fault_load)
  [ "${profile}" = release ] && build_flags+=(--release)
  SQLX_OFFLINE=true cargo build "${build_flags[@]}"
fi
bin="target/${profile}"

WORK="$(mktemp -d)"
run="$(date +%s%N)"
db="fault_${run}"
pids=()
replica_pids=(0 0)
redis_pid=0
smtp_pid=0
cleanup() {
  local status=$?
  for pid in "${pids[@]}" "${replica_pids[@]}" "${redis_pid}" "${smtp_pid}"; do
    [ "${pid}" != 0 ] && kill -KILL "${pid}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null 2>&1 || true
  # A failed run keeps its logs for whoever looks into it.
  if [ "${status}" != 0 ]; then
    mkdir -p "target/fault-run/${run}"
    cp "${WORK}"/*.log "target/fault-run/${run}/" 2>/dev/null || true
    printf 'logs of the failed run: target/fault-run/%s/\n' "${run}" >&2
  fi
  rm -rf "${WORK}"
}
trap cleanup EXIT

sql() {
  PGPASSWORD="${DB_PASSWORD}" psql -q -At -v ON_ERROR_STOP=1 -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${db}" "$@"
}

# The private Redis keeps nothing on disk: a restart forgets every counter,
# as a real one without persistence does.
start_redis() {
  redis-server --bind 127.0.0.1 --port "${FAULT_REDIS_PORT}" --save "" --appendonly no \
    --dir "${WORK}" >>"${WORK}/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_port 127.0.0.1 "${FAULT_REDIS_PORT}" "the run's Redis"
}

# The second provider: a real SMTP server that writes what it receives into
# ${WORK}/smtp, one file per message and recipient.
start_smtp() {
  "${SMTP_TEST_PYTHON}" tests/smtp_server.py --port "${SMTP_PORT}" --dir "${WORK}/smtp" \
    >>"${WORK}/smtp.log" 2>&1 &
  smtp_pid=$!
  wait_for_port 127.0.0.1 "${SMTP_PORT}" "the SMTP server"
}

start_replica() {
  local n=$1 port=$2
  APP_APPLICATION__PORT="${port}" "${bin}/newsletter" >>"${WORK}/replica${n}.log" 2>&1 &
  replica_pids[n - 1]=$!
}

wait_until_ready() {
  local n=$1 port=$2
  for _ in $(seq 1 240); do
    kill -0 "${replica_pids[n - 1]}" 2>/dev/null || die "replica ${n} exited (its log: see below)"
    [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port}/ready" || true)" = 200 ] \
      && return 0
    sleep 0.25
  done
  die "replica ${n} on port ${port} never became ready"
}

fault_api() { curl -s -m 5 --fail -X POST "http://127.0.0.1:${STUB_PORT}/fault/$1" >/dev/null; }

started=0
until_second() {
  while [ "$(($(date +%s) - started))" -lt "$1" ]; do sleep 0.2; done
}

export_load_test_settings "${db}" "fault:${run}:" "${STUB_PORT}"
export EMAIL_STUB_RECIPIENTS="${WORK}/recipients"
: >"${EMAIL_STUB_RECIPIENTS}"

log "migrating a fresh database"
"${bin}/newsletter" migrate >/dev/null
sql -v n="${ISSUE_RECIPIENTS}" <<'SQL'
INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at)
SELECT gen_random_uuid(), 'issue-reader' || g || '@example.com', 'Reader ' || g,
       now() - interval '30 days', 'confirmed', now() - interval '29 days'
FROM generate_series(1, :n) AS g;
SQL
admin_id=$(sql -c "INSERT INTO admins (id, username, password_hash) \
  VALUES (gen_random_uuid(), 'fault-run-editor', 'never signs in') RETURNING id")

"${bin}/examples/email_api_stub" "${STUB_PORT}" "${WORK}/tokens" &
pids+=($!)
"${bin}/examples/fault_proxy" "${PG_PROXY_PORT}" "${DB_HOST}:${DB_PORT}" 2>>"${WORK}/proxy.log" &
proxy_pid=$!
pids+=("${proxy_pid}")
start_redis
start_smtp
wait_for_port 127.0.0.1 "${STUB_PORT}" "the email API stand-in"
wait_for_port 127.0.0.1 "${PG_PROXY_PORT}" "the Postgres proxy"

# The replicas reach Postgres and Redis only through what the run controls.
export APP_DATABASE__HOST=127.0.0.1 APP_DATABASE__PORT="${PG_PROXY_PORT}"
export APP_REDIS_URI="redis://127.0.0.1:${FAULT_REDIS_PORT}"
export APP_LOG_FORMAT=json RUST_LOG=info
# Postmark's stand-in first, the SMTP server when it is down: circuits open
# after three failures, and are probed again after two seconds.
export APP_EMAIL_CLIENT__PROVIDERS=postmark,smtp
unset APP_EMAIL_CLIENT__BACKEND
export APP_EMAIL_CLIENT__OPEN_CIRCUIT_AFTER_FAILURES=3
export APP_EMAIL_CLIENT__PROBE_AFTER_MILLISECONDS=2000
export APP_EMAIL_CLIENT__SMTP__HOST=127.0.0.1 APP_EMAIL_CLIENT__SMTP__PORT="${SMTP_PORT}"
export APP_EMAIL_CLIENT__SMTP__TLS=none APP_EMAIL_CLIENT__SMTP__POOL_SIZE=4
export APP_EMAIL_CLIENT__SMTP__TIMEOUT_MILLISECONDS=5000
start_replica 1 "${R1_PORT}"
start_replica 2 "${R2_PORT}"
wait_until_ready 1 "${R1_PORT}"
wait_until_ready 2 "${R2_PORT}"

sed -e "s|\${WORK}|${WORK}|" -e "s|\${LB_PORT}|${LB_PORT}|" \
  -e "s|\${R1_PORT}|${R1_PORT}|" -e "s|\${R2_PORT}|${R2_PORT}|" \
  scripts/fault/haproxy.cfg >"${WORK}/haproxy.cfg"
"${HAPROXY}" -q -f "${WORK}/haproxy.cfg" &
pids+=($!)
wait_for_port 127.0.0.1 "${LB_PORT}" HAProxy

log "steady load for ${LOAD_SECONDS} s: ${CONCURRENCY} clients through HAProxy"
started=$(date +%s)
"${bin}/examples/fault_load" "http://127.0.0.1:${LB_PORT}" "${LOAD_SECONDS}" "${CONCURRENCY}" \
  "${WORK}/answers" "${run}" &
load_pid=$!
pids+=("${load_pid}")

until_second "${PG_CUT_AT}"
log "Postgres unreachable for ${PG_CUT_SECONDS} s"
kill -USR1 "${proxy_pid}"
until_second "$((PG_CUT_AT + PG_CUT_SECONDS))"
kill -USR2 "${proxy_pid}"
log "Postgres reachable again"

until_second "${REDIS_AT}"
log "restarting Redis"
kill -TERM "${redis_pid}"
wait "${redis_pid}" 2>/dev/null || true
start_redis

until_second "${ISSUE_AT}"
log "publishing an issue to ${ISSUE_RECIPIENTS} subscribers"
# As `ledger::publish` does it: the issue sent now, and the senders woken.
issue_id=$(sql -v admin="${admin_id}" <<'SQL'
BEGIN;
WITH issue AS (
  INSERT INTO newsletter_issues
    (id, title, content, subject, html_body, text_body, message_stream, send_at, created_by,
     rate_since)
  VALUES (gen_random_uuid(), 'Through the faults', 'Hello {{name}}.', 'Through the faults',
          '<p>Hello {{name}}.</p>', 'Hello {{name}}.', 'broadcast', now(), :'admin', now())
  RETURNING id
)
INSERT INTO publish_requests (admin_id, idempotency_key, fingerprint, issue_id)
SELECT :'admin', 'fault-run', sha256(convert_to('Hello', 'UTF8')), id FROM issue
RETURNING issue_id;
SELECT pg_notify('newsletter_work', '') \g /dev/null
COMMIT;
SQL
)
[ -n "${issue_id}" ] || die "publishing stored no issue"

until_second "${API_500_AT}"
log "the email API answers 500: sending moves to SMTP"
fault_api 500
until_second "${SMTP_DOWN_AT}"
log "the SMTP server stops too: both providers are down"
kill -KILL "${smtp_pid}"
wait "${smtp_pid}" 2>/dev/null || true
until_second "${SMTP_UP_AT}"
log "the SMTP server is back"
start_smtp
until_second "${API_429_AT}"
log "the email API answers 429"
fault_api 429
until_second "${API_HANG_AT}"
log "the email API hangs"
fault_api hang
until_second "${API_OK_AT}"
log "the email API answers again"
fault_api ok

until_second "${KILL_AT}"
log "killing replica 1 with SIGKILL and starting it again"
kill -KILL "${replica_pids[0]}"
wait "${replica_pids[0]}" 2>/dev/null || true
start_replica 1 "${R1_PORT}"
wait_until_ready 1 "${R1_PORT}"
log "replica 1 is back"

wait "${load_pid}"

log "waiting up to ${DRAIN_SECONDS} s for the outbox to drain"
drain_started=$(date +%s)
while :; do
  pending=$(sql -c "SELECT count(*) FROM email_outbox WHERE status = 'pending'")
  issue_state=$(sql -c "SELECT state FROM newsletter_issues WHERE id = '${issue_id}'")
  [ "${pending}" = 0 ] && [ "${issue_state}" = done ] && break
  [ "$(($(date +%s) - drain_started))" -ge "${DRAIN_SECONDS}" ] && break
  log "${pending} emails still pending, the issue ${issue_state}"
  sleep 2
done

# What the SMTP server received counts as received, as the stand-in's list.
"${SMTP_TEST_PYTHON}" - "${WORK}/smtp" >>"${EMAIL_STUB_RECIPIENTS}" <<'PY'
import json, os, sys
directory = sys.argv[1]
for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
    if name.endswith(".json"):
        with open(os.path.join(directory, name)) as f:
            print(json.load(f)["rcpt_to"])
PY

# Count with the service stopped, so nothing moves under the counting.
for pid in "${replica_pids[@]}"; do kill -TERM "${pid}" 2>/dev/null || true; done
for pid in "${replica_pids[@]}"; do wait "${pid}" 2>/dev/null || true; done
replica_pids=(0 0)

sql <<SQL >"${WORK}/table"
CREATE TEMP TABLE answers (address text, status int);
\copy answers FROM '${WORK}/answers' WITH (FORMAT text, DELIMITER ' ')
CREATE TEMP TABLE received (address text);
\copy received FROM '${EMAIL_STUB_RECIPIENTS}' WITH (FORMAT text)
CREATE TEMP TABLE emails AS SELECT address, count(*) AS n FROM received GROUP BY address;
CREATE TEMP TABLE stored AS
  SELECT a.address, s.email IS NOT NULL AS subscriber, coalesce(e.n, 0) AS emails
  FROM answers a
  LEFT JOIN subscriptions s ON lower(s.email) = lower(a.address)
  LEFT JOIN emails e ON e.address = a.address
  WHERE a.status = 200;
SELECT 'requests sent', count(*) FROM answers;
SELECT 'answered ' || CASE status WHEN 0 THEN 'nothing' ELSE status::text END, count(*)
  FROM answers GROUP BY status ORDER BY status;
SELECT 'stored (answered 200)', count(*) FROM stored;
SELECT '  with a subscriber', count(*) FILTER (WHERE subscriber) FROM stored;
SELECT '  with a confirmation email', count(*) FILTER (WHERE emails > 0) FROM stored;
SELECT 'subscribers in the database', count(*) FROM subscriptions
  WHERE email NOT LIKE 'issue-reader%';
SELECT 'confirmation emails received', count(*) FROM received
  WHERE address NOT LIKE 'issue-reader%';
SELECT '  through SMTP', count(*) FROM email_outbox WHERE provider = 'smtp';
SELECT 'emails still pending', count(*) FROM email_outbox WHERE status = 'pending';
SELECT 'emails failed for good', count(*) FROM email_outbox WHERE status = 'failed';
SELECT 'duplicates', coalesce(sum(n - 1), 0) FROM emails;
SELECT 'lost', count(*) FILTER (WHERE NOT subscriber OR emails = 0) FROM stored;
CREATE TEMP TABLE issue AS
  SELECT s.email AS address, d.status, d.provider, coalesce(e.n, 0) AS emails
  FROM deliveries d JOIN subscriptions s ON s.id = d.subscriber_id
  LEFT JOIN emails e ON e.address = s.email
  WHERE d.issue_id = '${issue_id}';
SELECT 'issue recipients', count(*) FROM issue;
SELECT '  sent through SMTP', count(*) FILTER (WHERE provider = 'smtp') FROM issue;
SELECT '  not sent', count(*) FILTER (WHERE status <> 'sent') FROM issue;
SELECT '  issue duplicates', coalesce(sum(emails - 1) FILTER (WHERE emails > 1), 0) FROM issue;
SELECT '  issue lost', count(*) FILTER (WHERE status <> 'sent' OR emails = 0) FROM issue;
SQL

# An email goes twice only when a batch reached a provider and its outcome
# was never recorded, so its claim lapsed and another task sent it again. A
# cut of Postgres shorter than half the claim does not do it (the outcome is
# written again until the claim is half gone); the kill does, for each batch
# the killed replica had out: one per delivery worker, and one of the emails
# handed over straight from sign-ups. Failing over does too, once per task:
# a batch whose call timed out (the stand-in hanging, the SMTP server
# killed mid-transaction) may have arrived, and the next provider sends it.
bound=$((2 * (APP_DELIVERY__WORKERS + 1) * APP_DELIVERY__BATCH_SIZE))
# The same for the issue, whose batches go one per sender (two a replica).
issue_bound=$((2 * 2 * APP_CAMPAIGNS__BATCH_SIZE))

printf '\nfault run (%s, %s s of load, %s clients)\n' "${profile}" "${LOAD_SECONDS}" "${CONCURRENCY}"
printf '| %-32s | %8s |\n' "" "count" "--------------------------------" "--------"
while IFS='|' read -r what count; do
  printf '| %-32s | %8s |\n' "${what}" "${count}"
done <"${WORK}/table"
printf '| %-32s | %8s |\n' "duplicates allowed" "${bound}"
printf '| %-32s | %8s |\n\n' "  issue duplicates allowed" "${issue_bound}"

lost=$(awk -F'|' '$1 == "lost" {print $2}' "${WORK}/table")
duplicates=$(awk -F'|' '$1 == "duplicates" {print $2}' "${WORK}/table")
stored=$(awk -F'|' '$1 == "stored (answered 200)" {print $2}' "${WORK}/table")
refused=$(awk -F'|' '$1 ~ /^answered / && $1 != "answered 200" {n += $2} END {print n + 0}' "${WORK}/table")
# A run where nothing was stored, or no fault showed, proves nothing.
[ "${stored:-0}" -gt 0 ] || die "no sign-up was answered 200"
[ "${refused}" -gt 0 ] || die "every sign-up was answered 200: the faults did not reach the service"
grep -q cut "${WORK}/proxy.log" || die "the Postgres proxy never cut"
[ "${lost}" = 0 ] || die "${lost} sign-ups answered 200 were lost"
[ "${duplicates}" -le "${bound}" ] || die "${duplicates} duplicate emails, more than ${bound}"
issue_recipients=$(awk -F'|' '$1 == "issue recipients" {print $2}' "${WORK}/table")
issue_lost=$(awk -F'|' '$1 == "  issue lost" {print $2}' "${WORK}/table")
issue_duplicates=$(awk -F'|' '$1 == "  issue duplicates" {print $2}' "${WORK}/table")
[ "${issue_recipients}" = "${ISSUE_RECIPIENTS}" ] \
  || die "the issue recorded ${issue_recipients} recipients, not ${ISSUE_RECIPIENTS}"
[ "${issue_lost}" = 0 ] || die "${issue_lost} of the issue's recipients were not reached"
[ "${issue_duplicates}" -le "${issue_bound}" ] \
  || die "${issue_duplicates} recipients got the issue twice, more than ${issue_bound}"
log "nothing lost"
