#!/usr/bin/env bash
# Lints migrations/ with squawk for operations that would lock out live
# traffic. Exceptions are listed, with reasons, in scripts/squawk.toml.
#   scripts/lint_migrations.sh              lint the migrations
#   scripts/lint_migrations.sh --self-test  check that an unsafe migration fails
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SQUAWK_VERSION=2.70.0

# squawk-cli from PyPI ships the binary in its wheel. It goes into a virtual
# environment under target/, so the system's Python stays untouched.
ensure_squawk() {
  if command -v squawk >/dev/null && squawk --version | grep -q "${SQUAWK_VERSION}"; then
    SQUAWK=squawk
    return 0
  fi
  local venv=target/tools/squawk
  if [ ! -x "${venv}/bin/squawk" ]; then
    log "installing squawk-cli ${SQUAWK_VERSION} into ${venv}"
    python3 -m venv "${venv}" 2>/dev/null || { apt_install python3-venv && python3 -m venv "${venv}"; }
    "${venv}/bin/pip" install --quiet "squawk-cli==${SQUAWK_VERSION}"
  fi
  SQUAWK="${venv}/bin/squawk"
}

ensure_squawk
if [ "${1:-}" = "--self-test" ]; then
  if "${SQUAWK}" --config scripts/squawk.toml scripts/testdata/unsafe_migration.sql >/dev/null; then
    die "squawk let a deliberately unsafe migration through"
  fi
  log "squawk refuses a deliberately unsafe migration, as it should"
else
  log "linting migrations with squawk"
  "${SQUAWK}" --config scripts/squawk.toml migrations/*.sql
fi
