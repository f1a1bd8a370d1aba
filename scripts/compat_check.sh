#!/usr/bin/env bash
# Schema compatibility check: the previous release's API tests, run against
# databases migrated to this revision's schema. During a rollout the previous
# release keeps serving on the new schema; a migration that breaks it fails
# here, before it ships.
#
#   scripts/compat_check.sh [PREV_REV]   PREV_REV defaults to the revision
#                                        before the newest schema change
#   scripts/compat_check.sh --self-test  adds a deliberately breaking
#                                        migration and expects a failure
#
# How: PREV_REV is checked out into a temporary directory and its migrations/
# replaced by this revision's, so its tests (which migrate each test database
# with the migrations compiled into them) run on the new schema. Its tests of
# the migration history itself are skipped: they are about the history, not
# about the release's behaviour.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROOT="$PWD"
self_test=0
if [ "${1:-}" = "--self-test" ]; then
  self_test=1
  shift
fi
# The release that serves while this schema rolls out is the one from before
# the newest change to migrations/, however many commits came after it.
# (HEAD~1 would find nothing to check whenever the last commit left the
# schema alone.)
default_prev() {
  local changed
  changed="$(git log -1 --format=%H -- migrations/)"
  git rev-parse --verify --quiet "${changed}~1" || git rev-parse HEAD~1
}
PREV="$(git rev-parse --short "${1:-$(default_prev)}")"

if [ "${self_test}" = 0 ] && git diff --quiet "${PREV}" HEAD -- migrations/; then
  log "compatibility: the schema has not changed since ${PREV}, nothing to check"
  exit 0
fi

WORK="$(mktemp -d)"
cleanup() {
  git worktree remove --force "${WORK}/prev" >/dev/null 2>&1 || true
  git worktree prune
  rm -rf "${WORK}"
}
trap cleanup EXIT

git worktree add --quiet --detach "${WORK}/prev" "${PREV}"
rm -rf "${WORK}/prev/migrations"
cp -r migrations "${WORK}/prev/migrations"
if [ "${self_test}" = 1 ]; then
  cp scripts/testdata/breaking_migration.sql "${WORK}/prev/migrations/99991231000000_breaking.sql"
fi

log "compatibility: ${PREV}'s API tests on this revision's schema"
set +e
(
  cd "${WORK}/prev"
  SQLX_OFFLINE=true CARGO_TARGET_DIR="${ROOT}/target/compat" \
    cargo test --quiet --test api -- --skip migrations:: 2>&1
) >"${WORK}/tests.log"
result=$?
set -e

if [ "${self_test}" = 1 ]; then
  if [ "${result}" = 0 ]; then
    die "a deliberately breaking migration passed the compatibility check"
  fi
  grep -q "^test result: FAILED" "${WORK}/tests.log" \
    || die "the self-test failed without any test failing: $(tail -n 20 "${WORK}/tests.log")" 
  log "compatibility: a deliberately breaking migration fails the check, as it should"
  exit 0
fi
# A schema that breaks the release fails its tests every time; a test that
# only ran out of time beside the others passes alone. Each failed test gets
# one run of its own before the check gives its verdict.
if [ "${result}" != 0 ]; then
  grep -E "^(test .* FAILED|failures:|    [a-z_:]+$|test result)" "${WORK}/tests.log" >&2 || true
  failed="$(awk '/^failures:$/ { listing = 1; next } listing && /^    [a-z_:]+$/ { print $1 } /^test result/ { listing = 0 }' "${WORK}/tests.log" | sort -u)"
  [ -n "${failed}" ] || die "${PREV}'s tests failed on this revision's schema without naming a test"
  for name in ${failed}; do
    log "compatibility: running ${name} again, alone"
    if ! (
      cd "${WORK}/prev"
      SQLX_OFFLINE=true CARGO_TARGET_DIR="${ROOT}/target/compat" \
        cargo test --quiet --test api -- --exact "${name}" 2>&1
    ) >"${WORK}/again.log"; then
      tail -n 30 "${WORK}/again.log" >&2
      die "${PREV} fails on this revision's schema: a release still running during the rollout would break"
    fi
  done
  log "compatibility: the tests that failed beside the others pass alone"
fi
grep -E "^test result" "${WORK}/tests.log" | tail -n 1
log "compatibility: ${PREV} works on this revision's schema"
