#!/usr/bin/env bash
# Admin pages benchmark on loopback. Fills a scratch database with N
# subscribers (realistic addresses and names, signed up over a year, most
# confirmed, some pending, some gone), starts the service (release build),
# signs an admin in through the sign-in form, and prints one table: the
# median time of several requests for the dashboard, the list's first page
# and deep pages, the status filter, searches by part of an address and of
# a name (rare and common terms), the CSV export of the whole list, and the
# service's peak RSS.
#   scripts/bench_admin.sh                  a million subscribers
#   N=100000 scripts/bench_admin.sh         a quick run
#   SPREAD_DAYS=30 scripts/bench_admin.sh   everyone signed up in the last
#                                           30 days (default 365)
#   REPEAT=9 scripts/bench_admin.sh         requests per measure (default 7)
#   TIMEOUT=900 scripts/bench_admin.sh      gives up 900 s after the build
#                                           (default 600)
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench_admin.sh   that build
# Everything it makes (the database bench_admin_<time>, the Redis keys under
# its prefix, the service, its files) is removed when it ends, however it
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N="${N:-1000000}"
SPREAD_DAYS="${SPREAD_DAYS:-365}"
REPEAT="${REPEAT:-7}"
TIMEOUT="${TIMEOUT:-600}"
RUN="$(date +%s)"
DB="bench_admin_${RUN}"
KEY_PREFIX="bench-admin:${RUN}:"
WORK="$(mktemp -d)"
SERVICE_LOG="${WORK}/service.log"
PASSWORD="bench-admin-${RUN}"

[[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of subscribers, not '${N}'"
[[ "${SPREAD_DAYS}" =~ ^[1-9][0-9]*$ ]] || die "SPREAD_DAYS must be a positive number of days"
[[ "${REPEAT}" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number of requests"

ensure_postgres
ensure_redis
command -v curl >/dev/null || apt_install curl

NEWSLETTER_BIN="${NEWSLETTER_BIN:-}"
if [ -z "${NEWSLETTER_BIN}" ]; then
  log "building the release binary"
  SQLX_OFFLINE=true cargo build --release --bin newsletter
  NEWSLETTER_BIN=target/release/newsletter
fi

APP_PORT="$(free_port)"
# Nothing here sends email; the address only has to be one nobody answers on.
export_load_test_settings "${DB}" "${KEY_PREFIX}" "$(free_port)"
export APP_APPLICATION__PORT="${APP_PORT}"
export APP_APPLICATION__BASE_URL="http://127.0.0.1:${APP_PORT}"
for limit in LOGIN_PER_IP LOGIN_PER_ACCOUNT; do
  export "APP_RATE_LIMIT__${limit}__BURST=1000000000"
  export "APP_RATE_LIMIT__${limit}__PER_PERIOD=1000000000"
done
export RUST_LOG="${RUST_LOG:-warn}"
BASE="http://127.0.0.1:${APP_PORT}"

# Everything from here on is bounded by TIMEOUT.
DEADLINE=$(( SECONDS + TIMEOUT ))
remaining() { echo $(( DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1 )); }

SERVICE_PID=""
cleanup() {
  local status=$?
  if [ -n "${SERVICE_PID}" ]; then
    kill "${SERVICE_PID}" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "${SERVICE_PID}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${SERVICE_PID}" 2>/dev/null || true
    wait "${SERVICE_PID}" 2>/dev/null || true
  fi
  if [ "${status}" -ne 0 ] && [ -s "${SERVICE_LOG}" ]; then
    printf '\nthe service'"'"'s log (last 20 lines):\n' >&2
    tail -n 20 "${SERVICE_LOG}" >&2 || true
  fi
  PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
    -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  delete_redis_keys "${KEY_PREFIX}"
  rm -rf "${WORK}"
  print_step_times
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql on the scratch database, unaligned, bounded by what is left of the
# overall time.
sql() {
  PGPASSWORD="${DB_PASSWORD}" timeout "$(remaining)" \
    psql -X -Atq -v ON_ERROR_STOP=1 -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d "${DB}" "$@"
}

migrate() { timeout "$(remaining)" "${NEWSLETTER_BIN}" migrate >"${WORK}/migrate.log" 2>&1; }
step "migrating a scratch database, ${DB}" migrate \
  || { cat "${WORK}/migrate.log" >&2; die "migration failed"; }

# Addresses and names from 30 first names, 40 surnames and 5 domains, with a
# number that makes each address unique: a common name matches about one
# subscriber in 30, a surname one in 40, a domain one in 5. Every 50,000th
# is a Zebulon Quaxley, a name rare enough to be found only through the
# index. Statuses 70 % confirmed, 20 % pending, 10 % unsubscribed, except
# that nobody is pending who signed up over 29 days ago: the retention job
# deletes such sign-ups (retention.unconfirmed_days, 30), and would do so
# in the middle of the measures. The ids at random, as sign-ups make them;
# the sign-up times spread evenly over SPREAD_DAYS, in the order the rows
# are written, as sign-ups arrive. (Written in random order instead, every
# row of a walk in time order is on another page of the table: the export
# then took 10.8 s at a million rows, against 10.3 s in time order, both
# on a busy machine.)
fill() {
  sql -v n="${N}" -v days="${SPREAD_DAYS}" <<'SQL'
INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at, unsubscribed_at)
SELECT gen_random_uuid(),
       lower(replace(first, ' ', '')) || '.' || lower(replace(last, ' ', '')) || g || '@' || domain,
       first || ' ' || last,
       at,
       status,
       CASE WHEN status <> 'pending_confirmation' THEN at + interval '2 hours' END,
       CASE WHEN status = 'unsubscribed' THEN at + interval '3 hours' END
FROM (
  SELECT g,
         CASE WHEN g % 50000 = 0 THEN 'Zebulon' ELSE
         (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Margaret','Ken','Dennis','Frances',
                'John','Mary','Linus','Guido','Bjarne','Niklaus','Radia','Leslie','Tony','Sophie',
                'Karen','Hedy','Radia','Katherine','Tim','Vint','Shafi','Juris','Ivan','Olga'])
           [1 + (hashint4(g) & 2147483647) % 30] END AS first,
         CASE WHEN g % 50000 = 0 THEN 'Quaxley' ELSE
         (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Hamilton','Thompson',
                'Ritchie','Allen','McCarthy','Shaw','Torvalds','van Rossum','Stroustrup','Wirth',
                'Perlman','Lamport','Hoare','Wilson','Jones','Lamarr','Shannon','Johnson',
                'Berners-Lee','Cerf','Goldwasser','Hartmanis','Sutherland','Ladyzhenskaya',
                'Nguyen','Smith','Garcia','Müller','Rossi','Kowalski','Dubois','Tanaka','Okafor',
                'Silva'])[1 + (hashint4(g + 7) & 2147483647) % 40] END AS last,
         (ARRAY['example.com','mail.example.org','example.net','post.example.de',
                'inbox.example.fr'])[1 + (hashint4(g + 13) & 2147483647) % 5] AS domain,
         now() - make_interval(days => :days) * (1 - g::float8 / :n) AS at,
         (hashint4(g + 23) & 2147483647) % 10 AS dice
  FROM generate_series(1, :n) AS g
) AS drawn,
LATERAL (
  SELECT CASE WHEN dice < 7 THEN 'confirmed'
              WHEN dice < 9 AND at > now() - interval '29 days' THEN 'pending_confirmation'
              WHEN dice < 9 THEN 'confirmed'
              ELSE 'unsubscribed' END AS status
) AS standing;
SQL
  # A long-lived database has statistics, a visibility map and merged
  # trigram entries; a fresh one gets them here.
  sql -c "VACUUM ANALYZE subscriptions"
}
step "recording ${N} subscribers signed up over ${SPREAD_DAYS} days" fill

printf '%s\n' "${PASSWORD}" | timeout "$(remaining)" "${NEWSLETTER_BIN}" admin create \
  --username bench-admin >/dev/null
"${NEWSLETTER_BIN}" >"${SERVICE_LOG}" 2>&1 &
SERVICE_PID=$!
wait_for_port 127.0.0.1 "${APP_PORT}" "the service"

# Signs in as a browser does: the sign-in form's pre-session cookie and CSRF
# token, then the form.
form_token="$(curl -s -c "${WORK}/login.cookies" -H 'Accept: text/html' "${BASE}/login" \
  | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -n 1)"
[ -n "${form_token}" ] || die "the sign-in form shows no CSRF token"
curl -s -o /dev/null -D "${WORK}/login.headers" -b "${WORK}/login.cookies" \
  --data-urlencode username=bench-admin --data-urlencode "password=${PASSWORD}" \
  --data-urlencode "csrf_token=${form_token}" "${BASE}/login"
SESSION="$(sed -n 's/^[Ss]et-[Cc]ookie: session=\([^;]*\);.*/\1/p' "${WORK}/login.headers" | tail -n 1)"
[ -n "${SESSION}" ] || { cat "${WORK}/login.headers" >&2; die "signing in gave no session cookie"; }

# Seconds one request takes, whole answer read; fails on anything but 200.
request_seconds() {
  local path=$1 answer
  answer=$(curl -s -o /dev/null --max-time "$(remaining)" -b "session=${SESSION}" \
    -H 'Accept: text/html' -w '%{http_code} %{time_total}' "${BASE}${path}")
  [ "${answer%% *}" = 200 ] || die "GET ${path} answered ${answer%% *}"
  echo "${answer#* }"
}

# The median of REPEAT requests, in milliseconds, after one unmeasured
# request (the first one of a statement on a connection plans it).
median_ms() {
  local path=$1 i
  request_seconds "${path}" >/dev/null
  for (( i = 0; i < REPEAT; i++ )); do request_seconds "${path}"; done \
    | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", 1000 * v[int((NR + 1) / 2)] }'
}

ROWS=()
# A row of the table: what, the measured value, its unit, the target in
# the same unit (empty: none).
row() { ROWS+=("$1|$2|$3|${4:-}"); }
measure() {
  local what=$1 path=$2
  row "${what}" "$(median_ms "${path}")" ms 100
}

# A page's address starting after the row at `offset` in the list's order
# (of the status, if one is given): what following that many rows' worth
# of `after` links leads to.
after_row() {
  local offset=$1 status=${2:-}
  sql -v offset="${offset}" -v status="${status}" <<'SQL'
SELECT (extract(epoch FROM subscribed_at) * 1000000)::bigint || '_' || id
FROM subscriptions WHERE :'status' = '' OR status = :'status'
ORDER BY subscribed_at DESC, id DESC OFFSET :offset LIMIT 1;
SQL
}

# A rare address: one subscriber's, from the middle of the list, without
# its domain.
rare_address=$(sql -c "SELECT split_part(email, '@', 1) || '@' FROM subscriptions WHERE email ~ '^[a-z0-9.@-]+$' \
  ORDER BY subscribed_at DESC, id DESC OFFSET $(( N / 2 )) LIMIT 1")

log "measuring, ${REPEAT} requests each"
measure "dashboard" "/admin/dashboard"
measure "list, first page" "/admin/subscribers"
measure "list, page 300" "/admin/subscribers?after=$(after_row $(( 299 * 50 )))"
measure "list, halfway down" "/admin/subscribers?after=$(after_row $(( N / 2 )))"
measure "status unsubscribed, first page" "/admin/subscribers?status=unsubscribed"
measure "status unsubscribed, halfway down" \
  "/admin/subscribers?status=unsubscribed&after=$(after_row $(( N / 20 )) unsubscribed)"
half_pending=$(sql -c "SELECT count(*) / 2 FROM subscriptions WHERE status = 'pending_confirmation'")
measure "status pending (rarer), halfway down" \
  "/admin/subscribers?status=pending_confirmation&after=$(after_row "${half_pending}" pending_confirmation)"
measure "search address, rare (${rare_address})" "/admin/subscribers?q=${rare_address/@/%40}"
measure "search address, common (example.net)" "/admin/subscribers?q=example.net"
measure "search name, rare (Quaxley)" "/admin/subscribers?q=Quaxley"
measure "search name, common (Grace)" "/admin/subscribers?q=Grace"
measure "search name, common, page 20 (Grace)" \
  "/admin/subscribers?q=Grace&after=$(after_row $(( 19 * 50 * 30 )))"
measure "search, no match (zzyzx)" "/admin/subscribers?q=zzyzx"
measure "search and status (hopper, unsubscribed)" "/admin/subscribers?q=hopper&status=unsubscribed"

# --- HOOK: lists, segments, attributes -------------------------------------
# When lists, segments and subscriber attributes exist, measure their pages
# here with `measure "what" "/admin/…"` (a row each: the dashboard's per-list
# counts, a list's members first and deep, a segment's count and first page,
# a search by attribute), and add their rows to the fill above.
# -----------------------------------------------------------------------------

export_csv() {
  local answer
  answer=$(curl -s -o "${WORK}/export.csv" --max-time "$(remaining)" -b "session=${SESSION}" \
    -w '%{http_code} %{time_total}' "${BASE}/admin/subscribers.csv")
  [ "${answer%% *}" = 200 ] || die "the export answered ${answer%% *}"
  local lines
  lines=$(wc -l <"${WORK}/export.csv")
  [ "${lines}" -eq $(( N + 1 )) ] || die "the export held ${lines} lines, not $(( N + 1 ))"
  echo "${answer#* }"
}
log "exporting the ${N} subscribers as CSV"
export_seconds=$(export_csv)
row "CSV export of every subscriber (${N} rows, total)" \
  "$(awk -v s="${export_seconds}" 'BEGIN { printf "%.2f", s }')" s 10
export_bytes=$(stat -c %s "${WORK}/export.csv")
rm -f "${WORK}/export.csv"
search_export_seconds=$(curl -s -o /dev/null --max-time "$(remaining)" -b "session=${SESSION}" \
  -w '%{time_total}' "${BASE}/admin/subscribers.csv?q=grace")
row "CSV export of a search (grace, total)" \
  "$(awk -v s="${search_export_seconds}" 'BEGIN { printf "%.2f", s }')" s 10

peak_rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/${SERVICE_PID}/status")
row "peak RSS of the service" "$(awk -v k="${peak_rss_kib}" 'BEGIN { printf "%.1f", k / 1024 }')" MiB

printf '\nadmin pages at %d subscribers signed up over %d days (median of %d requests; export %.0f MiB)\n\n' \
  "${N}" "${SPREAD_DAYS}" "${REPEAT}" "$(awk -v b="${export_bytes}" 'BEGIN { print b / 1048576 }')"
printf '%-52s %12s  %-10s %s\n' "measure" "value" "target" ""
missed=0
for entry in "${ROWS[@]}"; do
  IFS='|' read -r what value unit target <<<"${entry}"
  verdict=""
  if [ -n "${target}" ]; then
    if awk -v v="${value}" -v t="${target}" 'BEGIN { exit !(v < t) }'; then
      verdict=met
    else
      verdict=MISSED
      missed=1
    fi
  fi
  printf '%-52s %12s  %-10s %s\n' "${what}" "${value} ${unit}" \
    "$([ -n "${target}" ] && printf '< %s %s' "${target}" "${unit}")" "${verdict}"
done
[ "${missed}" = 0 ] || die "some measures missed their targets"
