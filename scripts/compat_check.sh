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
#   --build-only (with either)           build the release's tests, run
#                                        nothing (scripts/test.sh builds
#                                        while other tests run)
#
# How: PREV_REV's files are extracted under target/compat/ and its
# migrations/ replaced by this revision's, so its tests (which migrate each
# test database with the migrations compiled into them) run on the new
# schema. Its tests of the migration history itself are skipped: they are
# about the history, not about the release's behaviour.
#
# The release builds with this checkout's Cargo.lock and keeps its
# intermediate artifacts in this checkout's target/ (cargo's build-dir), so
# the dependencies compiled for this revision are not compiled again; only
# the release's own crate is. Its package is renamed for the build (the
# crate keeps its name), so that its artifacts can never take the place of
# this revision's, and the self-test's copy has a name of its own too: both
# can be built ahead and run later, side by side. Each keeps its final
# artifacts in a directory of its own (target/compat/out-VARIANT): both have
# a binary called newsletter, which the tests start, and in a shared
# directory the copy built last would be the one both ran. A package's
# directory must stay the same from build to build: cargo keeps a test
# binary built for another directory (the binary's path compiled into it),
# so moving it takes a new package name too. The self-test runs only the
# subscription tests: a rename of a column they write fails them at once.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROOT="$PWD"
self_test=0
build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --self-test) self_test=1 ;;
    --build-only) build_only=1 ;;
    -*) die "usage: $0 [--self-test] [--build-only] [PREV_REV]" ;;
    *) break ;;
  esac
  shift
done
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

variant=previous-release
[ "${self_test}" = 1 ] && variant=previous-release-broken
TREE="${ROOT}/target/compat/${variant}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

# The tree is extracted afresh each time, but git gives every file the
# commit's time: a tree extracted again is not rebuilt.
rm -rf "${TREE}"
mkdir -p "${TREE}"
git archive "${PREV}" | tar -x -C "${TREE}"
cp Cargo.lock "${TREE}/Cargo.lock"
# The package gets a name of its own; its library keeps the crate name
# `newsletter` that its tests import. Its build profiles are this
# checkout's: a profile of its own would compile every dependency again.
python3 - "${TREE}/Cargo.toml" "newsletter-compat-${variant}" Cargo.toml <<'PY' || die "could not adapt ${PREV}'s Cargo.toml"
import re, sys
path, package, ours = sys.argv[1], sys.argv[2], sys.argv[3]
# A manifest as its sections: (header, text), the part before the first
# header under None.
def sections(text):
    parts = re.split(r'(?m)^(\[[^\]]+\])$', text)
    found = [(None, parts[0])]
    found += [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]
    return found
theirs = sections(open(path).read())
profiles = [s for s in sections(open(ours).read()) if s[0] and s[0].startswith("[profile.")]
kept = [s for s in theirs if not (s[0] and s[0].startswith("[profile."))]
text = "".join((header or "") + body for header, body in kept)
text, renamed = re.subn(r'(?m)^name = "newsletter"$', f'name = "{package}"', text, count=1)
if not renamed:
    sys.exit("no package named newsletter")
if re.search(r'(?m)^\[lib\]$', text):
    text = re.sub(r'(?m)^\[lib\]$', '[lib]\nname = "newsletter"', text, count=1)
else:
    text += '\n[lib]\nname = "newsletter"\n'
text += "\n" + "".join(header + body for header, body in profiles)
open(path, "w").write(text)
PY
rm -rf "${TREE}/migrations"
cp -rp migrations "${TREE}/migrations"
if [ "${self_test}" = 1 ]; then
  cp -p scripts/testdata/breaking_migration.sql "${TREE}/migrations/99991231000000_breaking.sql"
fi
# Adding a file dated the directory now: date it as this checkout's, so that
# the build script (which watches migrations/) sees nothing new next time.
touch -r migrations "${TREE}/migrations"

prev_cargo() {
  (
    cd "${TREE}"
    SQLX_OFFLINE=true CARGO_TARGET_DIR="${ROOT}/target/compat/out-${variant}" CARGO_BUILD_BUILD_DIR="${ROOT}/target" \
      cargo "$@" 2>&1
  )
}

if [ "${build_only}" = 1 ]; then
  log "compatibility: building ${PREV}'s API tests ($( [ "${self_test}" = 1 ] && echo "with a breaking migration" || echo "on this schema"))"
  prev_cargo test --quiet --test api --no-run >"${WORK}/build.log" || {
    cat "${WORK}/build.log" >&2
    die "${PREV}'s tests do not build"
  }
  exit 0
fi

# Tests at once: they mostly wait on Postgres and Redis.
threads="${TEST_THREADS:-$(test_threads)}"
if [ "${self_test}" = 1 ]; then
  filter=(subscriptions::)
else
  filter=(--skip migrations::)
fi
log "compatibility: ${PREV}'s API tests on this revision's schema (${threads} at once)"
set +e
prev_cargo test --quiet --test api -- --test-threads "${threads}" "${filter[@]}" >"${WORK}/tests.log"
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
    if ! prev_cargo test --quiet --test api -- --exact "${name}" >"${WORK}/again.log"; then
      tail -n 30 "${WORK}/again.log" >&2
      die "${PREV} fails on this revision's schema: a release still running during the rollout would break"
    fi
  done
  log "compatibility: the tests that failed beside the others pass alone"
fi
grep -E "^test result" "${WORK}/tests.log" | tail -n 1
log "compatibility: ${PREV} works on this revision's schema"
