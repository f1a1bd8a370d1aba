#!/usr/bin/env bash
# Campaign benchmark on loopback. Fills a scratch database with N confirmed
# subscribers, starts `newsletter worker` (release build, logs at the
# production level) against the fast stand-in for the email API, publishes
# one issue of about 7 KB of HTML and 6 KB of text the way the publish form
# does, and waits until every delivery is settled. Prints one table: how
# long recording the audience took, deliveries per second, the round trip
# of one batch call, the worker's peak RSS, and where the CPU went.
#   scripts/bench_campaign.sh             a million subscribers
#   N=20000 scripts/bench_campaign.sh     a quick run
#   TIMEOUT=900 scripts/bench_campaign.sh gives up 900 s after the build
#                                         (default 600)
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench_campaign.sh   that build
#   KEEP_LOGS=dir scripts/bench_campaign.sh  keeps the worker's log and the
#                                            stand-in's timings in dir
#   PG_SET="synchronous_commit=off log_min_duration_statement=0" \
#     scripts/bench_campaign.sh   Postgres settings for the scratch database
#                                 only (ALTER DATABASE … SET), for experiments
# APP_CAMPAIGNS__* variables reach the worker, e.g. APP_CAMPAIGNS__SENDERS=4.
# Everything it makes (the database bench_campaign_<time>, the Redis keys
# under its prefix, the processes) is removed when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N="${N:-1000000}"
TIMEOUT="${TIMEOUT:-600}"
STUB_PORT=18125
RUN="$(date +%s)"
DB="bench_campaign_${RUN}"
KEY_PREFIX="bench-campaign:${RUN}:"
WORK="$(mktemp -d)"
WORKER_LOG="${WORK}/worker.log"
STUB_TIMINGS="${WORK}/stub_timings"
CORES=$(nproc)
TICKS_PER_SECOND=$(getconf CLK_TCK)

[[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of subscribers, not '${N}'"

ensure_postgres
ensure_redis

NEWSLETTER_BIN="${NEWSLETTER_BIN:-}"
if [ -z "${NEWSLETTER_BIN}" ]; then
  log "building the release binaries"
  SQLX_OFFLINE=true cargo build --release --bin newsletter --example email_api_stub
  NEWSLETTER_BIN=target/release/newsletter
elif [ ! -x target/release/examples/email_api_stub ]; then
  log "building the email API stand-in"
  SQLX_OFFLINE=true cargo build --release --example email_api_stub
fi

export_load_test_settings "${DB}" "${KEY_PREFIX}" "${STUB_PORT}"
# JSON lines, as in production: the round trips are read off them.
export APP_LOG_FORMAT=json
# Production's level, plus one line per call to the email API with its
# duration (a debug line of the Postmark client: `delivery::postmark`, or
# `email_client` in builds before it moved).
export RUST_LOG="info,newsletter::delivery::postmark=debug,newsletter::email_client=debug"
# Far above what the worker can reach: the throttle books, never waits.
export APP_CAMPAIGNS__MESSAGES_PER_SECOND=1000000

# Everything from here on is bounded by TIMEOUT.
DEADLINE=$(( SECONDS + TIMEOUT ))
remaining() { echo $(( DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1 )); }

# Asks a process to stop, and makes it after 15 s.
stop() {
  local pid=$1
  kill "${pid}" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
}

pids=()
WORKER_PID=""
cleanup() {
  local status=$?
  # Last started, first stopped: the worker before the stand-in it calls.
  local i
  for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop "${pids[i]}"; done
  if [ "${status}" -ne 0 ] && [ -s "${WORKER_LOG}" ]; then
    # Warnings, errors, and anything that is not a log line (a panic).
    printf '\nthe worker'"'"'s warnings and errors (last 20):\n' >&2
    grep -vE '^\{.*"level":"(INFO|DEBUG)"' "${WORKER_LOG}" | tail -n 20 >&2 || true
  fi
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "${KEEP_LOGS}"
    cp "${WORKER_LOG}" "${STUB_TIMINGS}" "${KEEP_LOGS}/" 2>/dev/null || true
  fi
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  delete_redis_keys "${KEY_PREFIX}"
  rm -rf "${WORK}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql on the scratch database, unaligned, bounded by what is left of the
# overall time.
sql() {
  PGPASSWORD="${DB_PASSWORD}" timeout "$(remaining)" \
    psql -X -Atq -v ON_ERROR_STOP=1 -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${DB}" "$@"
}

log "migrating a scratch database, ${DB}"
timeout "$(remaining)" "${NEWSLETTER_BIN}" migrate >/dev/null

log "recording ${N} confirmed subscribers"
started=${EPOCHREALTIME}
# Ids at random, as sign-ups make them: the audience is read in id order,
# which is then not the order the rows were written in.
sql -v n="${N}" <<'SQL'
INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at)
SELECT gen_random_uuid(), 'reader' || g || '@example.com', 'Reader ' || g,
       now() - interval '30 days', 'confirmed', now() - interval '29 days'
FROM generate_series(1, :n) AS g;
SQL
# A long-lived database has statistics on its subscribers; a fresh one
# gets them here, so the audience is read with the plan it would have.
sql -c "VACUUM ANALYZE subscriptions"
fill_seconds=$(awk -v a="${started}" -v b="${EPOCHREALTIME}" 'BEGIN { printf "%.1f", b - a }')
log "subscribers recorded in ${fill_seconds} s"
for setting in ${PG_SET:-}; do
  sql -c "ALTER DATABASE ${DB} SET ${setting%%=*} = '${setting#*=}'"
done
ADMIN_ID=$(sql -c "INSERT INTO admins (id, username, password_hash) \
  VALUES (gen_random_uuid(), 'bench-editor', 'never signs in') RETURNING id")

: >"${STUB_TIMINGS}"
target/release/examples/email_api_stub "${STUB_PORT}" /dev/null "${STUB_TIMINGS}" &
STUB_PID=$!
pids+=("${STUB_PID}")
"${NEWSLETTER_BIN}" worker >"${WORKER_LOG}" 2>&1 &
WORKER_PID=$!
pids+=("${WORKER_PID}")
wait_for_port 127.0.0.1 "${STUB_PORT}" "the email API stand-in"
# The senders say so once they run; give them a moment to be listening.
for _ in $(seq 1 100); do
  [ "$(grep -c 'Campaign sender started' "${WORKER_LOG}" || true)" -ge 1 ] && break
  kill -0 "${WORKER_PID}" 2>/dev/null || die "the worker stopped before publishing"
  sleep 0.1
done
sleep 1

# CPU time so far (clock ticks), one "group ticks" line per process: the
# worker, the stand-in, Redis, Postgres (its server processes and this
# database's backends), and Postgres backends of other databases apart (work
# on this machine that is not the benchmark's).
cpu_ticks() {
  local entry pid comm args group
  for entry in /proc/[0-9]*; do
    pid=${entry#/proc/}
    read -r comm 2>/dev/null <"${entry}/comm" || continue
    case "${comm}" in
      postgres)
        args=$(tr '\0' ' ' <"${entry}/cmdline" 2>/dev/null) || continue
        if [[ "${args}" == "postgres: ${DB_USER} "* && "${args}" != *" ${DB} "* ]]; then
          group=postgres_other
        else
          group=postgres
        fi ;;
      redis-server) group=redis ;;
      *)
        if [ "${pid}" = "${WORKER_PID}" ]; then group=worker
        elif [ "${pid}" = "${STUB_PID}" ]; then group=stub
        else continue
        fi ;;
    esac
    awk -v g="${group}" -v pid="${pid}" '{ sub(/^[^)]*\) /, ""); print pid, g, $12 + $13 }' \
      "${entry}/stat" 2>/dev/null || true
  done
}

# Busy ticks of the whole machine (user, nice, system, irq, softirq, steal).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

log "publishing an issue to ${N} subscribers"
cpu_ticks >"${WORK}/cpu_before"
machine_before=$(machine_ticks)
started=${EPOCHREALTIME}
# As `ledger::publish` does it: the key, the issue sent now, and the
# senders woken at commit.
ISSUE_ID=$(sql -v admin="${ADMIN_ID}" -v run="${RUN}" \
  -v html="$(cat scripts/bench/campaign_issue.html)" \
  -v text="$(cat scripts/bench/campaign_issue.txt)" <<'SQL'
BEGIN;
WITH issue AS (
  INSERT INTO newsletter_issues
    (id, title, content, subject, html_body, text_body, message_stream, send_at, created_by,
     rate_since)
  VALUES (gen_random_uuid(),
          'Winter notes: what changed, what is next, and three things to try',
          :'text', 'Winter notes: what changed, what is next, and three things to try',
          :'html', :'text', 'broadcast', now(), :'admin', now())
  RETURNING id
)
INSERT INTO publish_requests (admin_id, idempotency_key, fingerprint, issue_id)
SELECT :'admin', 'bench-campaign-' || :'run', sha256(convert_to(:'text', 'UTF8')), id FROM issue
RETURNING issue_id;
SELECT pg_notify('newsletter_work', '') \g /dev/null
COMMIT;
SQL
)
[ -n "${ISSUE_ID}" ] || die "publishing stored no issue"

last_report=${SECONDS}
while :; do
  IFS='|' read -r state recipients sent failed skipped < <(sql -c \
    "SELECT state, recipients, sent, failed, skipped FROM newsletter_issues WHERE id = '${ISSUE_ID}'")
  [ "${state}" = done ] && break
  [ "${state}" = sending ] || die "the issue is ${state}"
  kill -0 "${WORKER_PID}" 2>/dev/null || die "the worker stopped while sending"
  [ "${SECONDS}" -lt "${DEADLINE}" ] || die "not done after ${TIMEOUT} s: ${sent} sent of ${recipients} recorded"
  if (( SECONDS - last_report >= 5 )); then
    log "recorded ${recipients}, sent ${sent}, failed ${failed}, skipped ${skipped}"
    last_report=${SECONDS}
  fi
  # The times come from the ledger and the log, not from this loop: it
  # only has to notice the end, and cheaply (a connection per look).
  sleep 0.5
done
wall=$(awk -v a="${started}" -v b="${EPOCHREALTIME}" 'BEGIN { print b - a }')
cpu_ticks >"${WORK}/cpu_after"
machine_after=$(machine_ticks)
peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/${WORKER_PID}/status")
stop "${WORKER_PID}"

# When the audience was complete, by the worker's clock (the same machine's).
audience_line=$(grep '"Audience recorded"' "${WORKER_LOG}" | tail -n 1)
[ -n "${audience_line}" ] || die "the worker never logged the audience as recorded"
audience_at=$(date -d "$(grep -o '"timestamp":"[^"]*"' <<<"${audience_line}" | cut -d'"' -f4)" +%s.%N)

# From the ledger: every sent delivery carries the moment it was marked.
IFS='|' read -r send_at finished_at sent failed skipped recipients without_id \
  sent_before p10 p90 last_sent < <(sql -v issue="${ISSUE_ID}" -v audience="${audience_at}" <<'SQL'
WITH issue AS (
  SELECT * FROM newsletter_issues WHERE id = :'issue'
), marks AS (
  SELECT extract(epoch FROM updated_at)::float8 AS at, message_id FROM deliveries
  WHERE issue_id = :'issue' AND status = 'sent'
)
SELECT extract(epoch FROM issue.send_at), extract(epoch FROM issue.finished_at),
       issue.sent, issue.failed, issue.skipped, issue.recipients,
       (SELECT count(*) FROM marks WHERE message_id IS NULL),
       (SELECT count(*) FROM marks WHERE at <= :audience),
       (SELECT percentile_disc(0.1) WITHIN GROUP (ORDER BY at) FROM marks),
       (SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY at) FROM marks),
       (SELECT max(at) FROM marks)
FROM issue;
SQL
)

# Milliseconds of each batch call: as the worker waited for it, and as the
# stand-in spent on it.
percentiles() {
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99 + 0.999999); if (i99 > NR) i99 = NR
    printf "%.1f %.1f %.1f\n", v[i50], v[i99], v[NR] }'
}
read -r call_p50 call_p99 call_max < <(grep '"The email API answered a batch"' "${WORKER_LOG}" \
  | grep -o '"took_ms":[0-9.e+-]*' | cut -d: -f2 | percentiles)
calls=$(grep -c '"The email API answered a batch"' "${WORKER_LOG}" || true)
read -r stub_p50 stub_p99 stub_max < <(awk '{ print $1 / 1000 }' "${STUB_TIMINGS}" | percentiles)

cpu_share=$(awk -v seconds="${wall}" -v tck="${TICKS_PER_SECOND}" '
  NR == FNR { before[$1] = $3; next }
  { used[$2] += $3 - (($1 in before) ? before[$1] : 0) }
  END { for (g in used) printf "%s %.1f\n", g, 100 * used[g] / tck / seconds }
' "${WORK}/cpu_before" "${WORK}/cpu_after")
share() { awk -v g="$1" '$1 == g { print $2; found = 1 } END { if (!found) print 0 }' <<<"${cpu_share}"; }
pg_cpu=$(share postgres)
worker_cpu=$(share worker)
stub_cpu=$(share stub)
redis_cpu=$(share redis)
other_pg_cpu=$(share postgres_other)
machine_cpu=$(awk -v a="${machine_before}" -v b="${machine_after}" -v seconds="${wall}" \
  -v tck="${TICKS_PER_SECOND}" 'BEGIN { printf "%.1f", 100 * (b - a) / tck / seconds }')

awk \
  -v n="${N}" -v fill="${fill_seconds}" -v send_at="${send_at}" -v finished_at="${finished_at}" \
  -v audience_at="${audience_at}" -v sent="${sent}" -v sent_before="${sent_before}" \
  -v p10="${p10}" -v p90="${p90}" -v last_sent="${last_sent}" \
  -v call_p50="${call_p50}" -v call_p99="${call_p99}" -v call_max="${call_max}" -v calls="${calls}" \
  -v stub_p50="${stub_p50}" -v stub_p99="${stub_p99}" -v stub_max="${stub_max}" \
  -v rss_kib="${peak_rss_kib}" -v cores="${CORES}" -v wall="${wall}" \
  -v pg="${pg_cpu}" -v worker="${worker_cpu}" -v stub="${stub_cpu}" -v redis="${redis_cpu}" \
  -v other_pg="${other_pg_cpu}" -v machine="${machine_cpu}" '
  function row(what, value, target, ok) {
    printf "%-46s %16s  %-10s %s\n", what, value, target, (target == "" ? "" : (ok ? "met" : "MISSED"))
  }
  BEGIN {
    audience = audience_at - send_at
    total = finished_at - send_at
    end_to_end = sent / total
    sustained = 0.8 * sent / (p90 - p10)
    after = (last_sent > audience_at) ? (sent - sent_before) / (last_sent - audience_at) : 0
    during = (audience > 0) ? sent_before / audience : 0
    rss = rss_kib / 1024
    busy = pg + worker + stub + redis
    printf "\ncampaign of %d recipients, subscribers filled in %.1f s, sent in %.1f s\n\n", n, fill, total
    printf "%-46s %16s  %-10s %s\n", "measure", "value", "target", ""
    row("audience recorded (publish to last chunk)", sprintf("%.2f s", audience), "< 10 s", audience < 10)
    row("deliveries/s, end to end", sprintf("%d", end_to_end), ">= 10,000", end_to_end >= 10000)
    row("deliveries/s, sustained (10th-90th pct)", sprintf("%d", sustained), ">= 10,000", sustained >= 10000)
    row("deliveries/s while the audience was recorded", sprintf("%d", during), "", 0)
    row("deliveries/s after the audience was recorded", sprintf("%d", after), "", 0)
    row(sprintf("batch call round trip, p50 / p99 (%d calls)", calls), sprintf("%s / %s ms", call_p50, call_p99), "", 0)
    row("  of which the stand-in, p50 / p99", sprintf("%s / %s ms", stub_p50, stub_p99), "", 0)
    row("peak RSS of the worker", sprintf("%.1f MiB", rss), "< 50 MiB", rss < 50)
    row("Postgres CPU, % of one core", sprintf("%.0f %%", pg), "", 0)
    row("Postgres share of the CPU used", sprintf("%.0f %%", 100 * pg / busy), "", 0)
    row(sprintf("Postgres share of the %d cores", cores), sprintf("%.0f %%", pg / cores), "", 0)
    printf "\nCPU over the %.1f s from publishing to done, %% of one core: Postgres %.0f, worker %.0f, email stand-in %.0f, Redis %.0f (of %d00 on %d cores)\n", wall, pg, worker, stub, redis, cores, cores
    others = machine - busy
    printf "everything else on the machine meanwhile: %.0f %% of one core%s\n", others, (others > 20 ? " (the figures are noisy)" : "")
    if (other_pg > 1) printf "  of which backends of other databases on this Postgres: %.0f %%\n", other_pg
  }'

if [ "${sent}" != "${N}" ] || [ "${failed}" != 0 ] || [ "${skipped}" != 0 ] || [ "${without_id}" != 0 ]; then
  die "expected ${N} sent, none failed or skipped, each with a MessageID; got ${sent} sent (${without_id} without one), ${failed} failed, ${skipped} skipped"
fi
