#!/usr/bin/env bash
# Fuzzes a live service against its own contract (GET /openapi.json) with
# schemathesis: every documented operation, public and admin, with examples
# from the document, boundary and malformed inputs, and random ones. It
# fails on any 5xx, any status the document does not list for that
# operation, and any response whose content type or body breaks it.
#
# The service is the debug build, run against a database and a Redis key
# prefix of its own and the email API stub, with its rate limits raised so
# that the fuzzer is not answered 429 throughout. Admin routes are fuzzed
# signed in: an admin is created with the command line and signs in, and
# its session cookie and CSRF token go with every request
# (scripts/fuzz/hooks.py). /api/v1 is fuzzed with an API token of every
# scope, made with the command line. Its stateful phase follows the links
# between operations (a POST's `Location` and the ids in its answer): it
# creates, then reads, changes and deletes what it created. Everything is
# stopped and dropped at the end.
#
#   scripts/fuzz_api.sh              fuzz the service
#   scripts/fuzz_api.sh --self-test  serve it with a deliberately broken
#                                    route (src/routes/self_test.rs) and
#                                    require the fuzzer to catch it
#
# FUZZ_MAX_EXAMPLES (default 20) and FUZZ_MAX_SECONDS (default 180) bound
# the run; FUZZ_SEED replays one. With NEWSLETTER_BUILT set, the binaries
# are taken as built (scripts/test.sh builds them all before its checks).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SCHEMATHESIS_VERSION=4.32.5
self_test=0
case "${1:-}" in
  --self-test) self_test=1 ;;
  "") ;;
  *) die "usage: $0 [--self-test]" ;;
esac

ensure_postgres
ensure_redis

# schemathesis, pinned, in a virtualenv kept between runs.
venv="${XDG_CACHE_HOME:-${HOME}/.cache}/newsletter/schemathesis-${SCHEMATHESIS_VERSION}"
if ! "${venv}/bin/schemathesis" --version 2>/dev/null | grep -qF "${SCHEMATHESIS_VERSION}"; then
  log "installing schemathesis ${SCHEMATHESIS_VERSION} in ${venv}"
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "${venv}"
  python3 -m venv "${venv}" || { apt_install python3-venv && python3 -m venv "${venv}"; }
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
fi

service=target/debug/newsletter
if [ -z "${NEWSLETTER_BUILT:-}" ]; then
  log "building the service"
  SQLX_OFFLINE=true cargo build --quiet --bin newsletter --example email_api_stub
fi
# The debug build serves a deliberately broken route when asked to.
[ "${self_test}" = 1 ] && export NEWSLETTER_FUZZ_SELF_TEST_ROUTE=1

run="$(date +%s)_$$"
db="fuzz_${run}"
prefix="fuzz:${run}:"
work="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-fuzz-XXXXXXXX")"
port="$(free_port)"
stub_port="$(free_port)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "${pid}" 2>/dev/null || true; done
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" >/dev/null 2>&1 || true
  delete_redis_keys "${prefix}"
  rm -rf "${work}"
}
trap cleanup EXIT

export_load_test_settings "${db}" "${prefix}" "${stub_port}"
export APP_APPLICATION__PORT="${port}"
export APP_APPLICATION__BASE_URL="http://127.0.0.1:${port}"
export APP_RATE_LIMIT__PER_ADDRESS__BURST=1000000000
export APP_RATE_LIMIT__PER_ADDRESS__PER_PERIOD=1000000000
for limit in LOGIN_PER_IP LOGIN_PER_ACCOUNT; do
  export "APP_RATE_LIMIT__${limit}__BURST=1000000000"
  export "APP_RATE_LIMIT__${limit}__PER_PERIOD=1000000000"
done
# Nor are attempts on one account slowed down: the fuzzer names a few.
export APP_RATE_LIMIT__LOGIN_ACCOUNT_SLOWDOWN__MAX_DELAY_MILLISECONDS=0
# Nor is the API's, per token, per address or per token's sign-ups: the
# stateful phase would otherwise meet 429 (documented, so passing) from its
# twentieth sign-up on, and never reach what it created.
for limit in API_PER_TOKEN API_PER_IP API_SIGNUPS_PER_TOKEN; do
  export "APP_RATE_LIMIT__${limit}__BURST=1000000000"
  export "APP_RATE_LIMIT__${limit}__PER_PERIOD=1000000000"
done
# The fuzzer registers outgoing webhook endpoints (POST /api/v1/webhooks,
# POST /admin/webhooks) at whatever URLs it makes up: no webhook worker
# runs, so none is ever called, and addresses inside this machine or its
# network are refused as in production, whatever the local settings say.
export APP_OUTGOING_WEBHOOKS__WORKERS=0
export APP_OUTGOING_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=false
export APP_WEBHOOKS__POSTMARK_USERNAME=postmark
export APP_WEBHOOKS__POSTMARK_PASSWORD="fuzz-${run}"
export RUST_LOG="${RUST_LOG:-warn}"

log "starting the service on port ${port} (database ${db})"
"${service}" migrate >"${work}/migrate.log" 2>&1 || { cat "${work}/migrate.log"; die "migration failed"; }
password="fuzz-password-${run}"
printf '%s\n' "${password}" | "${service}" admin create --username fuzzer >/dev/null
# Every scope, so that /api/v1 is fuzzed past its scope checks.
api_token="$("${service}" admin token create --name fuzzer --scope read,write,publish 2>/dev/null)"
[ -n "${api_token}" ] || die "the command line made no API token"
target/debug/examples/email_api_stub "${stub_port}" "${work}/tokens" &
pids+=($!)
"${service}" >"${work}/service.log" 2>&1 &
pids+=($!)
wait_for_port 127.0.0.1 "${stub_port}" "the email API stub"
wait_for_port 127.0.0.1 "${port}" "the service"
base="http://127.0.0.1:${port}"

# Sign in as a browser would: open the sign-in form (its pre-session cookie
# and CSRF token), send it, then read the session's CSRF token from a form.
form_token="$(curl -s -c "${work}/login.cookies" -H 'Accept: text/html' "${base}/login" \
  | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -n 1)"
[ -n "${form_token}" ] || die "the sign-in form shows no CSRF token"
curl -s -o /dev/null -D "${work}/login.headers" -b "${work}/login.cookies" \
  --data-urlencode username=fuzzer --data-urlencode "password=${password}" \
  --data-urlencode "csrf_token=${form_token}" "${base}/login"
session="$(sed -n 's/^[Ss]et-[Cc]ookie: session=\([^;]*\);.*/\1/p' "${work}/login.headers" | tail -n 1)"
[ -n "${session}" ] || { cat "${work}/login.headers"; die "signing in gave no session cookie"; }
csrf="$(curl -s -H 'Accept: text/html' -b "session=${session}" "${base}/admin/dashboard" \
  | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -n 1)"
[ -n "${csrf}" ] || die "the dashboard shows no CSRF token: not signed in?"

# One worker: with two, schemathesis once failed on a KeyError in a cache
# its threads share, while building cases (a fault of the tool's, not of
# the service), and a fuzzing failure fails the test command.
args=(
  run "${base}/openapi.json"
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
  --phases examples,coverage,fuzzing,stateful
  --max-examples "${FUZZ_MAX_EXAMPLES:-20}"
  --max-time "${FUZZ_MAX_SECONDS:-180}"
  --request-timeout 10
  --workers 1
  --suppress-health-check all
  --header "Cookie: session=${session}"
)
[ -n "${FUZZ_SEED:-}" ] && args+=(--seed "${FUZZ_SEED}")
export FUZZ_CSRF_TOKEN="${csrf}"
export FUZZ_API_TOKEN="${api_token}"
export FUZZ_POSTMARK_AUTH="postmark:${APP_WEBHOOKS__POSTMARK_PASSWORD}"
export SCHEMATHESIS_HOOKS=hooks
export PYTHONPATH="${PWD}/scripts/fuzz"
# schemathesis keeps a cache of what it found in the working directory: the
# run's own, not the checkout.
cd "${work}"

if [ "${self_test}" = 1 ]; then
  # The broken route alone: the rest of the run is the one above.
  log "self-test: the fuzzer must catch the broken route"
  if "${venv}/bin/schemathesis" "${args[@]}" --include-path /fuzz-self-test/broken --max-failures 1 \
      >"${work}/schemathesis.log" 2>&1; then
    cat "${work}/schemathesis.log"
    die "self-test failed: schemathesis passed a route that answers 500"
  fi
  grep -q "Server error" "${work}/schemathesis.log" || {
    cat "${work}/schemathesis.log"
    die "self-test failed: schemathesis failed, but not on the server error"
  }
  log "self-test passed: schemathesis caught the broken route"
  exit 0
fi

log "fuzzing ${base} (at most ${FUZZ_MAX_SECONDS:-180} s)"
status=0
"${venv}/bin/schemathesis" "${args[@]}" || status=$?
if [ "${status}" != 0 ]; then
  log "the service's log:"
  tail -n 50 "${work}/service.log" >&2
  die "schemathesis found responses that break the contract"
fi
# The run must have been signed in to the end: a session lost midway
# would have turned every later admin case into a 401.
code="$(curl -s -o /dev/null -w '%{http_code}' -b "session=${session}" "${base}/admin/dashboard")"
[ "${code}" = 200 ] || die "the fuzzer's session ended during the run (dashboard answered ${code})"
log "schemathesis found nothing"
