#!/usr/bin/env bash
# A rolling update under load, on one machine, the way it happens in
# production: HAProxy in front of two replicas of the old build, a steady mix
# of subscribe, confirm and health-check requests through it, then the new
# build's migrations applied while the old replicas serve, and one by one a
# new replica started, waited for, put in rotation, and an old one drained
# through HAProxy's runtime API and stopped with SIGTERM. Prints requests
# sent, non-2xx answers, connection errors and p99 latency; exits non-zero on
# any failed request.
#
#   scripts/rolling_update.sh [OLD_REV [NEW_REV]]
#       OLD_REV defaults to the parent of the last commit that changed
#       migrations/, NEW_REV to HEAD: the newest schema step.
#   scripts/rolling_update.sh --each-migration-step
#       replays every commit that changed migrations/ after the first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROOT="$PWD"
LB_PORT=18100
OLD1_PORT=18101
OLD2_PORT=18102
NEW1_PORT=18103
NEW2_PORT=18104
STUB_PORT=18125
STEADY_SECONDS="${STEADY_SECONDS:-5}"
CONNECTIONS="${CONNECTIONS:-16}"
# One target directory for every revision: their dependencies are built once.
export CARGO_TARGET_DIR="${ROOT}/target/rolling"

ensure_postgres
ensure_redis
command -v haproxy >/dev/null || apt_install haproxy
command -v wrk >/dev/null || apt_install wrk
command -v socat >/dev/null || apt_install socat

WORK="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for tree in "${WORK}"/src-*; do
    [ -d "${tree}" ] && git worktree remove --force "${tree}" >/dev/null 2>&1
  done
  git worktree prune
  rm -rf "${WORK}"
}
trap cleanup EXIT

# Checks out a revision and builds its release binary; prints the checkout.
build() {
  local rev=$1 tree="${WORK}/src-$1"
  if [ ! -d "${tree}" ]; then
    git worktree add --quiet --detach "${tree}" "${rev}"
    log "building ${rev}: $(git log -1 --format=%s "${rev}")"
    (cd "${tree}" && SQLX_OFFLINE=true cargo build --release --quiet --bin newsletter)
    cp "${CARGO_TARGET_DIR}/release/newsletter" "${tree}/newsletter-bin"
  fi
  echo "${tree}"
}

haproxy_cli() { echo "$1" | socat stdio "unix-connect:${WORK}/haproxy.sock"; }

# Current sessions of one server, from HAProxy's CSV statistics.
sessions_of() {
  haproxy_cli "show stat" | awk -F, -v server="$1" '$1 == "replicas" && $2 == server {print $5}'
}

# Starts a replica of the build checked out in $2 on port $3; prints its pid.
start_replica() {
  local name=$1 tree=$2 port=$3
  (cd "${tree}" && APP_APPLICATION__PORT="${port}" exec ./newsletter-bin) \
    >"${WORK}/${name}.log" 2>&1 &
  echo $!
}

# Ready means /ready answers 200, or, for builds from before it existed,
# that it answers 404 while /health_check answers 200.
wait_until_ready() {
  local port=$1
  for _ in $(seq 1 120); do
    local ready live
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port}/ready" || true)
    live=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port}/health_check" || true)
    if [ "${ready}" = 200 ] || { [ "${ready}" = 404 ] && [ "${live}" = 200 ]; }; then return 0; fi
    sleep 0.25
  done
  die "the replica on port ${port} never became ready"
}

# Takes a server out of rotation, waits for its sessions to end, then stops
# its process with SIGTERM and waits for it to exit.
drain_and_stop() {
  local server=$1 pid=$2
  log "draining ${server}"
  haproxy_cli "set server replicas/${server} state drain" >/dev/null
  for _ in $(seq 1 120); do
    [ "$(sessions_of "${server}")" = 0 ] && break
    sleep 0.25
  done
  log "stopping ${server} (SIGTERM)"
  kill -TERM "${pid}"
  while kill -0 "${pid}" 2>/dev/null; do sleep 0.1; done
  haproxy_cli "set server replicas/${server} state maint" >/dev/null
}

bring_in() {
  local server=$1 port=$2
  wait_until_ready "${port}"
  haproxy_cli "set server replicas/${server} state ready" >/dev/null
  log "${server} is in rotation"
  sleep "${STEADY_SECONDS}"
}

replay() {
  local old_rev new_rev old_tree new_tree
  old_rev=$(git rev-parse --short "$1")
  new_rev=$(git rev-parse --short "$2")
  log "rolling update ${old_rev} -> ${new_rev}"
  old_tree=$(build "${old_rev}")
  new_tree=$(build "${new_rev}")

  local run db
  run="$(date +%s%N)"
  db="rolling_${run}"
  export_load_test_settings "${db}" "rolling:${run}:" "${STUB_PORT}"
  export ROLLING_TOKENS="${WORK}/tokens-${run}"
  export ROLLING_RUN="${run}"
  : >"${ROLLING_TOKENS}"

  log "migrating a fresh database with ${old_rev}"
  (cd "${old_tree}" && ./newsletter-bin migrate >/dev/null)
  target/rolling/release/examples/email_api_stub "${STUB_PORT}" "${ROLLING_TOKENS}" &
  local stub=$!
  pids+=("${stub}")
  local old1 old2 new1 new2
  old1=$(start_replica old1 "${old_tree}" "${OLD1_PORT}"); pids+=("${old1}")
  old2=$(start_replica old2 "${old_tree}" "${OLD2_PORT}"); pids+=("${old2}")
  wait_until_ready "${OLD1_PORT}"
  wait_until_ready "${OLD2_PORT}"

  sed -e "s|\${WORK}|${WORK}|" -e "s|\${LB_PORT}|${LB_PORT}|" \
    -e "s|\${OLD1_PORT}|${OLD1_PORT}|" -e "s|\${OLD2_PORT}|${OLD2_PORT}|" \
    -e "s|\${NEW1_PORT}|${NEW1_PORT}|" -e "s|\${NEW2_PORT}|${NEW2_PORT}|" \
    scripts/rolling/haproxy.cfg >"${WORK}/haproxy.cfg"
  haproxy -q -f "${WORK}/haproxy.cfg" &
  local lb=$!
  pids+=("${lb}")
  wait_for_port 127.0.0.1 "${LB_PORT}" HAProxy

  log "issuing tokens to confirm during the update"
  for i in $(seq 1 200); do
    curl -s -o /dev/null --fail -d "name=Seed&email=seed${run}-${i}%40example.com" \
      "http://127.0.0.1:${LB_PORT}/subscriptions" || die "seeding failed"
  done
  for _ in $(seq 1 100); do
    [ "$(wc -l <"${ROLLING_TOKENS}")" -ge 200 ] && break
    sleep 0.1
  done

  log "steady load: ${CONNECTIONS} connections through HAProxy"
  wrk -t2 -c"${CONNECTIONS}" -d3600s --latency -s scripts/rolling/load.lua \
    "http://127.0.0.1:${LB_PORT}" >"${WORK}/wrk.out" 2>&1 &
  local load=$!
  pids+=("${load}")
  sleep "${STEADY_SECONDS}"

  log "applying ${new_rev}'s migrations while ${old_rev} serves"
  (cd "${new_tree}" && ./newsletter-bin migrate >/dev/null)
  sleep "${STEADY_SECONDS}"

  new1=$(start_replica new1 "${new_tree}" "${NEW1_PORT}"); pids+=("${new1}")
  bring_in new1 "${NEW1_PORT}"
  drain_and_stop old1 "${old1}"
  new2=$(start_replica new2 "${new_tree}" "${NEW2_PORT}"); pids+=("${new2}")
  bring_in new2 "${NEW2_PORT}"
  drain_and_stop old2 "${old2}"
  sleep "${STEADY_SECONDS}"

  kill -INT "${load}"
  wait "${load}" || true
  for pid in "${new1}" "${new2}" "${lb}" "${stub}"; do kill "${pid}" 2>/dev/null || true; done
  for pid in "${new1}" "${new2}" "${lb}" "${stub}"; do
    while kill -0 "${pid}" 2>/dev/null; do sleep 0.1; done
  done
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null
  delete_redis_keys "rolling:${run}:"

  local out requests non2xx socket p99
  out=$(cat "${WORK}/wrk.out")
  requests=$(awk '/requests in/ {print $1}' <<<"${out}")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"${out}")
  socket=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"${out}")
  p99=$(awk '$1 == "99%" {print $2}' <<<"${out}")
  printf '\nrolling update %s -> %s\n' "${old_rev}" "${new_rev}"
  printf '  requests sent:      %s\n' "${requests}"
  printf '  non-2xx answers:    %s\n' "${non2xx:-0}"
  printf '  connection errors:  %s\n' "${socket:-0}"
  printf '  p99 latency:        %s\n\n' "${p99}"
  [ "${non2xx:-0}" = 0 ] && [ "${socket:-0}" = 0 ]
}

log "building the email API stand-in"
SQLX_OFFLINE=true cargo build --release --quiet --example email_api_stub

status=0
if [ "${1:-}" = "--each-migration-step" ]; then
  # Every commit that changed migrations/, oldest first, except the first:
  # before it there was no release to roll from.
  steps=$(git log --reverse --format=%H -- migrations/ | tail -n +2)
  for step in ${steps}; do
    replay "${step}^" "${step}" || status=1
  done
else
  last_step=$(git log -1 --format=%H -- migrations/)
  replay "${1:-${last_step}^}" "${2:-HEAD}" || status=1
fi
[ "${status}" = 0 ] || die "requests failed during the rolling update"
log "no request failed"
