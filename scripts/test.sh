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
# Every browser the tests start keeps its files in a directory under this
# one: the check at the end tells the browsers this run left running from
# anyone else's. The trap runs it too when the run stops early (a test
# binary that crashed never ends its browsers).
BROWSER_TEST_DIR="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-browsers-XXXXXXXXXX")"
export BROWSER_TEST_DIR
finish() {
  stop_background_steps
  stop_private_postgres
  print_step_times
  printf '  %6ss  in all\n' "$(($(date +%s) - started_at))" >&2
  check_no_browsers_left "${BROWSER_TEST_DIR}"
}
trap finish EXIT

check_tools() {
  ensure_rust &&
    ensure_smtp_test_server &&
    ensure_feed_parser
}
step "checking the tools" check_tools
step "starting Postgres" start_private_postgres
step "starting Redis" ensure_redis
step "installing Chromium" ensure_chromium
step "installing cargo-nextest" ensure_nextest

# Compile against the committed query metadata: a query changed without
# running scripts/prepare_sqlx.sh fails here instead of in a Docker build.
export SQLX_OFFLINE=true
# Tests at once: most of a test's time is spent waiting on Postgres, Redis
# or a mock API, so more of them than there are cores.
TEST_THREADS="${TEST_THREADS:-$(test_threads)}"
export TEST_THREADS

lint_migrations() {
  scripts/lint_migrations.sh --self-test &&
    scripts/lint_migrations.sh
}
step "linting migrations" lint_migrations
step "checking formatting" cargo fmt --all -- --check

# Clippy's lints, denied as warnings, are proved to fail a build before the
# build relies on them (linted, in scripts/lib.sh).
step "checking that the lints deny warnings" lints_deny_warnings

# Everything this revision's checks run, built once: the tests (listed for
# nextest, which then runs them without calling cargo again), the service,
# the load and fault tools, and the benchmarks. Clippy lints each of these
# while it compiles: every target `cargo clippy --all-targets` would check.
build_all() {
  mkdir -p target &&
    linted cargo nextest list --lib --bins --tests --list-type binaries-only \
      --message-format json >target/nextest-binaries.json &&
    cargo metadata --format-version 1 >target/nextest-cargo-metadata.json &&
    linted cargo build --bins --examples --benches
}
step "building, with clippy's lints" build_all
export NEWSLETTER_BUILT=1

# The tests mostly wait on Postgres, Redis and mock APIs, which leaves a
# core for the builds the compatibility check needs: the previous release's
# tests, and their copy with a breaking migration for its self-test.
run_tests() {
  cargo nextest run --binaries-metadata target/nextest-binaries.json \
    --cargo-metadata target/nextest-cargo-metadata.json --test-threads "${TEST_THREADS}"
}
step_in_background "running the tests" run_tests
build_for_later_checks() {
  scripts/compat_check.sh --build-only
  scripts/compat_check.sh --self-test --build-only
}
step_in_background "building the previous release's tests" build_for_later_checks
wait_for_background_steps

# The checks below spend most of their time on a timeline (the fault run's
# load), a time limit (the fuzzer) or a database (the previous release's
# tests), not on the cores: they run side by side.
#
# A live service against its own contract, and proof that the fuzzer
# catches a route that breaks it.
fuzz() {
  scripts/fuzz_api.sh
  scripts/fuzz_api.sh --self-test
}
step_in_background "fuzzing the API" fuzz
# Two replicas under load through a database cut, a Redis restart, an email
# API that fails and hangs, and a killed replica: no sign-up answered 200 may
# be lost (docs/fault-run.md has a full-length run).
step_in_background "fault run (short)" scripts/fault_run.sh --short
# The previous release against this revision's schema, and proof that the
# check catches a breaking migration: both built beside the tests, each with
# a database per test of its own, so they run side by side.
step_in_background "compatibility check" scripts/compat_check.sh
step_in_background "compatibility check's self-test" scripts/compat_check.sh --self-test
wait_for_background_steps
check_no_browsers_left "${BROWSER_TEST_DIR}"
slowest_tests 10
