#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: makes sure Postgres
# and Redis are running and Chromium with its driver is there (installing
# them if needed), then checks formatting and lints and runs every test,
# the browser tests included. Each test creates and drops its own database
# and Redis keys.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

started_at=$(date +%s)
results="$(mktemp)"
# Every browser the tests start keeps its files in a directory under this
# one: the check at the end tells the browsers this run left running from
# anyone else's. The trap runs it too when the run stops early (a test
# binary that crashed never ends its browsers).
BROWSER_TEST_DIR="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-browsers-XXXXXXXXXX")"
export BROWSER_TEST_DIR
finish() {
  print_step_times
  printf '  %6ss  in all\n' "$(($(date +%s) - started_at))" >&2
  rm -f "${results}"
  check_no_browsers_left "${BROWSER_TEST_DIR}"
}
trap finish EXIT

step "checking the tools" ensure_rust
step "starting Postgres" ensure_postgres
step "starting Redis" ensure_redis
step "installing Chromium" ensure_chromium
drop_stale_test_databases

# Compile against the committed query metadata: a query changed without
# running scripts/prepare_sqlx.sh fails here instead of in a Docker build.
export SQLX_OFFLINE=true

step "linting migrations (self-test)" scripts/lint_migrations.sh --self-test
step "linting migrations" scripts/lint_migrations.sh
step "checking formatting" cargo fmt --all -- --check
step "running clippy" cargo clippy --all-targets --quiet -- -D warnings
step "building the tests" cargo test --lib --bins --tests --no-run
run_tests() { cargo test --lib --bins --tests 2>&1 | tee "${results}"; }
step "running the tests" run_tests
# The previous release against this revision's schema, and proof that the
# check catches a breaking migration.
step "compatibility check" scripts/compat_check.sh
step "compatibility check (self-test)" scripts/compat_check.sh --self-test
# Two replicas under load through a database cut, a Redis restart, an email
# API that fails and hangs, and a killed replica: no sign-up answered 200 may
# be lost (docs/fault-run.md has a full-length run).
step "fault run (short)" scripts/fault_run.sh --short
# A live service against its own contract, and proof that the fuzzer
# catches a route that breaks it.
step "fuzzing the API" scripts/fuzz_api.sh
step "fuzzing the API (self-test)" scripts/fuzz_api.sh --self-test
check_no_browsers_left "${BROWSER_TEST_DIR}"

# One closing line for the whole suite.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "${results}"
