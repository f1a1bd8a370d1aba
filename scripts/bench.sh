#!/usr/bin/env bash
# Load benchmark on loopback. Starts the release build (logs at the
# production level, discarded) and a fast stand-in for the email API, then
# measures with wrk: subscribe (a new address each request), confirm (real
# tokens) and the health check, at 32 and 64 connections; and, with pgbench,
# the subscribe handler's SQL transaction on the same Postgres at the same
# client counts, once for one sign-up per transaction (the ratio's
# reference) and once for batches of ten, as the service writes them under
# load. Prints one table; pgbench rows count sign-ups per second.
#   scripts/bench.sh            20 s per run
#   DURATION=60 scripts/bench.sh
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench.sh   measure that build
#   SKIP_PGBENCH=1 scripts/bench.sh                       the service only
#   SUBSCRIBE_ONLY=1 SKIP_PGBENCH=1 scripts/bench.sh      subscribe only
# scripts/bench_compare.sh measures two revisions side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION="${DURATION:-20}"
APP_PORT=18000
STUB_PORT=18025
RUN="$(date +%s)"
DB="bench_${RUN}"
WORK="$(mktemp -d)"
TOKENS="${WORK}/tokens"

ensure_postgres
ensure_redis
command -v wrk >/dev/null || apt_install wrk
command -v pgbench >/dev/null || apt_install postgresql-contrib

NEWSLETTER_BIN="${NEWSLETTER_BIN:-}"
if [ -z "${NEWSLETTER_BIN}" ]; then
  log "building the release binaries"
  SQLX_OFFLINE=true cargo build --release --bin newsletter --example email_api_stub
  NEWSLETTER_BIN=target/release/newsletter
elif [ ! -x target/release/examples/email_api_stub ]; then
  log "building the email API stand-in"
  SQLX_OFFLINE=true cargo build --release --example email_api_stub
fi

export_load_test_settings "${DB}" "bench:${RUN}:" "${STUB_PORT}"
export APP_APPLICATION__PORT="${APP_PORT}"
export RUST_LOG="${RUST_LOG:-info}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  delete_redis_keys "bench:${RUN}:"
  rm -rf "${WORK}"
}
trap cleanup EXIT

"${NEWSLETTER_BIN}" migrate >/dev/null
target/release/examples/email_api_stub "${STUB_PORT}" "${TOKENS}" &
pids+=($!)
"${NEWSLETTER_BIN}" >/dev/null &
APP_PID=$!
pids+=("${APP_PID}")
wait_for_port 127.0.0.1 "${APP_PORT}" "the service"
wait_for_port 127.0.0.1 "${STUB_PORT}" "the email API stand-in"

# CPU time (clock ticks) so far of every process of the given names, one
# "pid ticks name" line each.
cpu_ticks() {
  for pid in $(pgrep -d ' ' -x "$(IFS='|'; echo "$*")"); do
    awk -v pid="${pid}" '{ sub(/^[^)]*\) /, ""); print pid, $12 + $13 }' "/proc/${pid}/stat" 2>/dev/null \
      | sed "s/\$/ $(cat "/proc/${pid}/comm" 2>/dev/null)/"
  done
}
CPU_OF=(newsletter postgres redis-server wrk email_api_stub)
TICKS_PER_SECOND=$(getconf CLK_TCK)

rows=()
# One wrk run; appends a row: name, connections, req/s, p50, p99, errors.
run_wrk() {
  local name=$1 connections=$2 script=$3 url=$4
  log "wrk: ${name}, ${connections} connections, ${DURATION} s"
  local out
  out=$(BENCH_RUN="${RUN}-${connections}" BENCH_TOKENS="${TOKENS}" \
    wrk -t2 -c"${connections}" -d"${DURATION}s" --latency ${script:+-s "${script}"} "${url}")
  local rps p50 p99 non2xx socket
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"${out}")
  p50=$(awk '$1 == "50%" {print $2}' <<<"${out}")
  p99=$(awk '$1 == "99%" {print $2}' <<<"${out}")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"${out}")
  socket=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"${out}")
  rows+=("${name}|${connections}|${rps}|${p50}|${p99}|$(( ${non2xx:-0} + ${socket:-0} ))")
}

# Warm-up, not measured: the first seconds open connections and grow a
# fresh database's tables and indexes. pgbench, which runs last, finds the
# database warm too.
log "warming up for 5 s"
BENCH_RUN="${RUN}-warm-up" wrk -t2 -c32 -d5s -s scripts/bench/subscribe.lua \
  "http://127.0.0.1:${APP_PORT}/subscriptions" >/dev/null
run_wrk subscribe 32 scripts/bench/subscribe.lua "http://127.0.0.1:${APP_PORT}/subscriptions"
# Where the machine's time goes under the heaviest load: CPU per process
# name, in % of one core, over the subscribe run at 64 connections. The
# sample ends a second before wrk does, while every process is still busy.
cpu_ticks "${CPU_OF[@]}" >"${WORK}/cpu_before"
( sleep $(( DURATION - 1 )); cpu_ticks "${CPU_OF[@]}" >"${WORK}/cpu_after" ) &
run_wrk subscribe 64 scripts/bench/subscribe.lua "http://127.0.0.1:${APP_PORT}/subscriptions"
wait $!
cpu_share=$(awk -v seconds=$(( DURATION - 1 )) -v tck="${TICKS_PER_SECOND}" '
  NR == FNR { before[$1] = $2; next }
  { used[$3] += $2 - (($1 in before) ? before[$1] : 0) }
  END { for (name in used) printf "%s %.0f%%\n", name, 100 * used[name] / tck / seconds }
' "${WORK}/cpu_before" "${WORK}/cpu_after" | sort -k2 -rn | paste -sd ',' | sed 's/,/, /g')
log "waiting for the outbox to drain"
for _ in $(seq 1 120); do
  pending=$(PGPASSWORD="${DB_PASSWORD}" psql -Atq -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${DB}" \
    -c "SELECT count(*) FROM email_outbox WHERE status = 'pending'")
  [ "${pending}" = 0 ] && break
  sleep 1
done
if [ -z "${SUBSCRIBE_ONLY:-}" ]; then
  for connections in 32 64; do
    run_wrk confirm "${connections}" scripts/bench/confirm.lua "http://127.0.0.1:${APP_PORT}/"
  done
  for connections in 32 64; do
    run_wrk health_check "${connections}" "" "http://127.0.0.1:${APP_PORT}/health_check"
  done
fi
peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/${APP_PID}/status")

pg_rows=()
# One pgbench run; appends a row: name, clients, sign-ups/s, p50, p99 and
# failures per transaction.
run_pgbench() {
  local name=$1 connections=$2 script=$3 sign_ups=$4
  log "pgbench: ${name}, ${connections} clients, ${DURATION} s"
  local out tps failed p50 p99
  out=$(cd "${WORK}" && PGPASSWORD="${DB_PASSWORD}" pgbench -n -M prepared -c "${connections}" -j 2 \
    -T "${DURATION}" -l --log-prefix=pg -f "${OLDPWD}/${script}" \
    -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" "${DB}" 2>&1)
  tps=$(awk '/^tps/ {print $3; exit}' <<<"${out}")
  failed=$(awk '/number of failed transactions/ {print $5}' <<<"${out}")
  # Per-transaction log: the third field is the latency in microseconds.
  read -r p50 p99 < <(cat "${WORK}"/pg.* | awk '{print $3}' | sort -n | awk '
    { v[NR] = $1 } END { printf "%.2fms %.2fms\n", v[int(NR * 0.5)] / 1000, v[int(NR * 0.99)] / 1000 }')
  rm -f "${WORK}"/pg.*
  pg_rows+=("${name}|${connections}|$(awk -v t="${tps}" -v n="${sign_ups}" 'BEGIN { print t * n }')|${p50}|${p99}|${failed:-0}")
}
if [ -z "${SKIP_PGBENCH:-}" ]; then
  for connections in 32 64; do
    run_pgbench "pgbench subscribe" "${connections}" scripts/bench/subscribe.sql 1
  done
  for connections in 32 64; do
    run_pgbench "pgbench batch of 10" "${connections}" scripts/bench/subscribe_batch.sql 10
  done
fi

printf '\n%-20s %6s %10s %9s %9s %7s %10s\n' "load" "conns" "req/s" "p50" "p99" "errors" "vs pgbench"
# The ratio is against pgbench's one sign-up per transaction.
for row in "${rows[@]}" "${pg_rows[@]}"; do
  IFS='|' read -r name connections rps p50 p99 errors <<<"${row}"
  ratio=""
  if [ "${name}" = subscribe ]; then
    for pg in "${pg_rows[@]}"; do
      IFS='|' read -r pg_name pg_connections pg_tps _ _ _ <<<"${pg}"
      [ "${pg_name}" = "pgbench subscribe" ] && [ "${pg_connections}" = "${connections}" ] && ratio=$(awk -v a="${rps}" -v b="${pg_tps}" 'BEGIN { printf "%.2f", a / b }')
    done
  fi
  printf '%-20s %6s %10.0f %9s %9s %7s %10s\n' "${name}" "${connections}" "${rps}" "${p50}" "${p99}" "${errors}" "${ratio}"
done
printf '\npeak RSS of the service: %d MiB\n' $(( peak_rss_kib / 1024 ))
printf 'CPU during subscribe at 64 connections (%% of one core): %s\n' "${cpu_share}"
