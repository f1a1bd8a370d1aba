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
PG_PROXY_PORT=18232
FAULT_REDIS_PORT=18279
CONCURRENCY="${CONCURRENCY:-16}"

if [ "${1:-}" = "--short" ]; then
  profile=debug
  # second: what happens then
  LOAD_SECONDS=75; PG_CUT_AT=8; REDIS_AT=22; API_500_AT=28; API_429_AT=33
  API_HANG_AT=38; API_OK_AT=50; KILL_AT=56
else
  profile=release
  LOAD_SECONDS=180; PG_CUT_AT=20; REDIS_AT=50; API_500_AT=70; API_429_AT=85
  API_HANG_AT=100; API_OK_AT=115; KILL_AT=130
fi
PG_CUT_SECONDS=10
DRAIN_SECONDS=300

ensure_postgres
ensure_redis
command -v haproxy >/dev/null || apt_install haproxy
command -v redis-server >/dev/null || apt_install redis-server

log "building the service and the fault run's tools (${profile})"
build_flags=(--quiet --bin newsletter --example email_api_stub --example fault_proxy --example fault_load)
[ "${profile}" = release ] && build_flags+=(--release)
SQLX_OFFLINE=true cargo build "${build_flags[@]}"
bin="target/${profile}"

WORK="$(mktemp -d)"
run="$(date +%s%N)"
db="fault_${run}"
pids=()
replica_pids=(0 0)
redis_pid=0
cleanup() {
  local status=$?
  for pid in "${pids[@]}" "${replica_pids[@]}" "${redis_pid}"; do
    [ "${pid}" != 0 ] && kill -KILL "${pid}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null 2>&1 || true
  # A failed run keeps its logs for whoever looks into it.
  if [ "${status}" != 0 ]; then
    mkdir -p target/fault-run
    cp "${WORK}"/*.log target/fault-run/ 2>/dev/null || true
    printf 'logs of the failed run: target/fault-run/\n' >&2
  fi
  rm -rf "${WORK}"
}
trap cleanup EXIT

sql() {
  PGPASSWORD="${DB_PASSWORD}" psql -q -At -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${db}" "$@"
}

# The private Redis keeps nothing on disk: a restart forgets every counter,
# as a real one without persistence does.
start_redis() {
  redis-server --bind 127.0.0.1 --port "${FAULT_REDIS_PORT}" --save "" --appendonly no \
    --dir "${WORK}" >>"${WORK}/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_port 127.0.0.1 "${FAULT_REDIS_PORT}" "the run's Redis"
}

start_replica() {
  local n=$1 port=$2
  APP_APPLICATION__PORT="${port}" "${bin}/newsletter" >>"${WORK}/replica${n}.log" 2>&1 &
  replica_pids[n - 1]=$!
}

wait_until_ready() {
  local port=$1
  for _ in $(seq 1 240); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port}/ready" || true)" = 200 ] \
      && return 0
    sleep 0.25
  done
  die "the replica on port ${port} never became ready"
}

fault_api() { curl -s --fail -X POST "http://127.0.0.1:${STUB_PORT}/fault/$1" >/dev/null; }

started=0
until_second() {
  while [ "$(($(date +%s) - started))" -lt "$1" ]; do sleep 0.2; done
}

export_load_test_settings "${db}" "fault:${run}:" "${STUB_PORT}"
export EMAIL_STUB_RECIPIENTS="${WORK}/recipients"
: >"${EMAIL_STUB_RECIPIENTS}"

log "migrating a fresh database"
"${bin}/newsletter" migrate >/dev/null

"${bin}/examples/email_api_stub" "${STUB_PORT}" "${WORK}/tokens" &
pids+=($!)
"${bin}/examples/fault_proxy" "${PG_PROXY_PORT}" "${DB_HOST}:${DB_PORT}" 2>>"${WORK}/proxy.log" &
proxy_pid=$!
pids+=("${proxy_pid}")
start_redis
wait_for_port 127.0.0.1 "${STUB_PORT}" "the email API stand-in"
wait_for_port 127.0.0.1 "${PG_PROXY_PORT}" "the Postgres proxy"

# The replicas reach Postgres and Redis only through what the run controls.
export APP_DATABASE__PORT="${PG_PROXY_PORT}"
export APP_REDIS_URI="redis://127.0.0.1:${FAULT_REDIS_PORT}"
export APP_LOG_FORMAT=json RUST_LOG=info
start_replica 1 "${R1_PORT}"
start_replica 2 "${R2_PORT}"
wait_until_ready "${R1_PORT}"
wait_until_ready "${R2_PORT}"

sed -e "s|\${WORK}|${WORK}|" -e "s|\${LB_PORT}|${LB_PORT}|" \
  -e "s|\${R1_PORT}|${R1_PORT}|" -e "s|\${R2_PORT}|${R2_PORT}|" \
  scripts/fault/haproxy.cfg >"${WORK}/haproxy.cfg"
haproxy -q -f "${WORK}/haproxy.cfg" &
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

until_second "${API_500_AT}"
log "the email API answers 500"
fault_api 500
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
wait_until_ready "${R1_PORT}"
log "replica 1 is back"

wait "${load_pid}"

log "waiting up to ${DRAIN_SECONDS} s for the outbox to drain"
drain_started=$(date +%s)
while :; do
  pending=$(sql -c "SELECT count(*) FROM email_outbox WHERE status = 'pending'")
  [ "${pending}" = 0 ] && break
  [ "$(($(date +%s) - drain_started))" -ge "${DRAIN_SECONDS}" ] && break
  log "${pending} emails still pending"
  sleep 2
done

# Count with the service stopped, so nothing moves under the counting.
for pid in "${replica_pids[@]}"; do kill -TERM "${pid}" 2>/dev/null || true; done
for pid in "${replica_pids[@]}"; do wait "${pid}" 2>/dev/null || true; done
replica_pids=(0 0)

sql <<SQL >"${WORK}/table"
CREATE TEMP TABLE answers (address text, status int);
\copy answers FROM '${WORK}/answers' WITH (FORMAT text, DELIMITER ' ')
CREATE TEMP TABLE received (address text);
\copy received FROM '${EMAIL_STUB_RECIPIENTS}' WITH (FORMAT text)
CREATE TEMP TABLE stored AS
  SELECT a.address,
         EXISTS (SELECT 1 FROM subscriptions s WHERE lower(s.email) = lower(a.address)) AS subscriber,
         (SELECT count(*) FROM received r WHERE r.address = a.address) AS emails
  FROM answers a WHERE a.status = 200;
SELECT 'requests sent', count(*) FROM answers;
SELECT 'answered ' || CASE status WHEN 0 THEN 'nothing' ELSE status::text END, count(*)
  FROM answers GROUP BY status ORDER BY status;
SELECT 'stored (answered 200)', count(*) FROM stored;
SELECT '  with a subscriber', count(*) FILTER (WHERE subscriber) FROM stored;
SELECT '  with a confirmation email', count(*) FILTER (WHERE emails > 0) FROM stored;
SELECT 'subscribers in the database', count(*) FROM subscriptions;
SELECT 'confirmation emails received', count(*) FROM received;
SELECT 'emails still pending', count(*) FROM email_outbox WHERE status = 'pending';
SELECT 'emails failed for good', count(*) FROM email_outbox WHERE status = 'failed';
SELECT 'duplicates', coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM received GROUP BY address) d;
SELECT 'lost', count(*) FILTER (WHERE NOT subscriber OR emails = 0) FROM stored;
SQL

# An email goes twice only when a batch reached the API and its outcome was
# never recorded, so its claim lapsed and another worker sent it again: at
# the kill, each of the killed replica's delivery workers may have had one
# batch out; at the cut, each worker of both replicas.
bound=$((3 * workers * batch))

printf '\nfault run (%s, %s s of load, %s clients)\n' "${profile}" "${LOAD_SECONDS}" "${CONCURRENCY}"
printf '| %-32s | %8s |\n' "" "count" "--------------------------------" "--------"
while IFS='|' read -r what count; do
  printf '| %-32s | %8s |\n' "${what}" "${count}"
done <"${WORK}/table"
printf '| %-32s | %8s |\n\n' "duplicates allowed" "${bound}"

lost=$(awk -F'|' '$1 == "lost" {print $2}' "${WORK}/table")
duplicates=$(awk -F'|' '$1 == "duplicates" {print $2}' "${WORK}/table")
[ "${lost}" = 0 ] || die "${lost} sign-ups answered 200 were lost"
[ "${duplicates}" -le "${bound}" ] || die "${duplicates} duplicate emails, more than ${bound}"
log "nothing lost"
