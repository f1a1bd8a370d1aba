#!/usr/bin/env bash
# Import benchmark on loopback. Generates a CSV file of N subscribers (a
# million by default), migrates a scratch database and imports the file
# twice through `newsletter import` (release build), printing for each run
# the wall time, the rows per second and the importing process's peak RSS
# (from /usr/bin/time -v):
#   1. not attested: every reader pending, a confirmation token each, and N
#      confirmation emails queued on the broadcast stream;
#   2. another N readers, attested (--consent-attested): confirmed at once,
#      no email.
# Then the same first file again, which must change nothing.
#   scripts/bench_import.sh                 a million rows per file
#   N=100000 scripts/bench_import.sh        a quick run
#   TIMEOUT=900 scripts/bench_import.sh     gives up 900 s after the build
#                                           (default 600)
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench_import.sh   that build
# Everything it makes (the database bench_import_<time>, its files) is
# removed when it ends, however it ends. Nothing is sent: no delivery runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N="${N:-1000000}"
TIMEOUT="${TIMEOUT:-600}"
RUN="$(date +%s)"
DB="bench_import_${RUN}"
WORK="$(mktemp -d)"

[[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of rows, not '${N}'"
[[ "${TIMEOUT}" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds"
[ -x /usr/bin/time ] || apt_install time

ensure_postgres

NEWSLETTER_BIN="${NEWSLETTER_BIN:-}"
if [ -z "${NEWSLETTER_BIN}" ]; then
  log "building the release binary"
  SQLX_OFFLINE=true cargo build --release --bin newsletter
  NEWSLETTER_BIN=target/release/newsletter
fi

export_load_test_settings "${DB}" "bench-import:${RUN}:" "$(free_port)"
export RUST_LOG="${RUST_LOG:-warn}"

DEADLINE=$(( SECONDS + TIMEOUT ))
remaining() { echo $(( DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1 )); }

cleanup() {
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "${WORK}"
  print_step_times
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sql() {
  PGPASSWORD="${DB_PASSWORD}" timeout "$(remaining)" \
    psql -X -Atq -v ON_ERROR_STOP=1 -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${DB}" "$@"
}

migrate() { timeout "$(remaining)" "${NEWSLETTER_BIN}" migrate >"${WORK}/migrate.log" 2>&1; }
step "migrating a scratch database, ${DB}" migrate \
  || { cat "${WORK}/migrate.log" >&2; die "migration failed"; }

# Mailchimp's column names, a time per row, addresses unique per file.
generate() {
  local file=$1 prefix=$2
  python3 - "${file}" "${prefix}" "${N}" <<'PY'
import sys
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
first = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
last = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
with open(path, "w", encoding="utf-8", newline="") as f:
    f.write("Email Address,First Name,Last Name,OPTIN_TIME\r\n")
    for i in range(n):
        a, b = first[i % 8], last[(i // 8) % 8]
        f.write(f"{prefix}{i}.{a.lower()}@example.com,{a},{b},2024-01-02 03:04:05\r\n")
PY
}
generate_both() { generate "${WORK}/pending.csv" reader && generate "${WORK}/attested.csv" member; }
step "generating two files of ${N} rows" generate_both || die "could not generate the files"

# One import, timed; prints "seconds peak_kib".
timed_import() {
  local file=$1; shift
  local start end
  start=$(date +%s.%N)
  timeout "$(remaining)" /usr/bin/time -v -o "${WORK}/time.txt" \
    "${NEWSLETTER_BIN}" import "${file}" --list Newsletter "$@" >"${WORK}/import.log" 2>"${WORK}/progress.log" \
    || { cat "${WORK}/import.log" "${WORK}/progress.log" "${WORK}/time.txt" >&2; die "the import failed"; }
  end=$(date +%s.%N)
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "${WORK}/time.txt")
  echo "$(echo "${end} - ${start}" | bc) ${rss}"
}

report() {
  local what=$1 seconds=$2 rss=$3
  printf '%-44s %8.1f s %10.0f rows/s %8.1f MB peak RSS\n' \
    "${what}" "${seconds}" "$(echo "${N} / ${seconds}" | bc -l)" "$(echo "${rss} / 1024" | bc -l)"
}

read -r pending_s pending_rss < <(timed_import "${WORK}/pending.csv")
grep -q "${N} new subscribers" "${WORK}/import.log" || { cat "${WORK}/import.log" >&2; die "not every row was imported"; }
read -r attested_s attested_rss < <(timed_import "${WORK}/attested.csv" --consent-attested "bench")
grep -q "${N} new subscribers" "${WORK}/import.log" || { cat "${WORK}/import.log" >&2; die "not every row was imported"; }
read -r again_s again_rss < <(timed_import "${WORK}/pending.csv")
grep -q "Already imported" "${WORK}/import.log" || { cat "${WORK}/import.log" >&2; die "the second run changed something"; }

queued=$(sql -c "SELECT count(*) FROM email_outbox")
echo
echo "Importing ${N} rows with newsletter import ($(nproc) cores, Postgres on loopback):"
report "pending, with confirmation emails" "${pending_s}" "${pending_rss}"
report "attested (confirmed, no email)" "${attested_s}" "${attested_rss}"
report "the first file again (already imported)" "${again_s}" "${again_rss}"
echo "confirmation emails queued: ${queued}"
