#!/usr/bin/env bash
# SMTP provider benchmark on loopback: starts the local SMTP server
# (tests/smtp_server.py, keeping nothing it receives) and sends N emails
# through the SMTP provider in batches of 500, with pools of 1, 4 and 16
# sessions (examples/bench_smtp.rs). Prints emails per second for each.
# The server is one Python process, so past a few sessions the figures say
# more about aiosmtpd than about the provider.
#   scripts/bench_smtp.sh                 5000 emails, release build
#   N=1000 scripts/bench_smtp.sh          a quick run
#   PROFILE=dev scripts/bench_smtp.sh     the debug build (no release build)
#   TLS=starttls scripts/bench_smtp.sh    encrypted sessions (starttls or
#                                         implicit), with a self-signed
#                                         certificate made for the run
#   TIMEOUT=300 scripts/bench_smtp.sh     gives up 300 s after the build
#                                         (default 120)
# The server is stopped when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N="${N:-5000}"
TIMEOUT="${TIMEOUT:-120}"
PROFILE="${PROFILE:-release}"
TLS="${TLS:-none}"
[[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of emails, not '${N}'"
case "${PROFILE}" in
  release) BUILD_FLAGS=(--release); BIN=target/release/examples/bench_smtp ;;
  dev) BUILD_FLAGS=(); BIN=target/debug/examples/bench_smtp ;;
  *) die "PROFILE is release or dev, not '${PROFILE}'" ;;
esac
case "${TLS}" in
  none|starttls|implicit) ;;
  *) die "TLS is none, starttls or implicit, not '${TLS}'" ;;
esac

ensure_smtp_test_server
log "building the benchmark (${PROFILE})"
SQLX_OFFLINE=true cargo build "${BUILD_FLAGS[@]}" --example bench_smtp

WORK="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-bench-smtp-XXXXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "${SERVER_PID}" ]; then
    kill "${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
  fi
  rm -rf "${WORK}"
}
trap cleanup EXIT

TLS_ARGS=()
if [ "${TLS}" != none ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "${WORK}/key.pem" -out "${WORK}/cert.pem" 2>/dev/null
  [ "${TLS}" = starttls ] && TLS_ARGS=(--starttls) || TLS_ARGS=(--implicit-tls)
  TLS_ARGS+=("${WORK}/cert.pem" "${WORK}/key.pem")
fi

# The server picks a free port and writes it once it listens.
"${SMTP_TEST_PYTHON}" tests/smtp_server.py --discard --port 0 \
  --ready-file "${WORK}/port" "${TLS_ARGS[@]}" 2>"${WORK}/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  [ -s "${WORK}/port" ] && break
  kill -0 "${SERVER_PID}" 2>/dev/null || { cat "${WORK}/server.log" >&2; die "the SMTP server exited"; }
  sleep 0.1
done
[ -s "${WORK}/port" ] || die "the SMTP server did not listen within 10 s"
PORT="$(cat "${WORK}/port")"
log "SMTP server listening on 127.0.0.1:${PORT}"

timeout "${TIMEOUT}" "${BIN}" "${PORT}" "${N}" "${TLS}" \
  || die "the benchmark failed or ran past ${TIMEOUT} s"
