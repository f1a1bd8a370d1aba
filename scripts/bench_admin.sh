#!/usr/bin/env bash
# Admin pages benchmark on loopback. Fills a scratch database with N
# subscribers (realistic addresses and names, signed up over a year, most
# confirmed, some pending, some gone), starts the service (release build),
# signs an admin in through the sign-in form, and prints one table: the
# median time of several requests for the dashboard, the list's first page
# and deep pages, the status filter, searches by part of an address and of
# a name (rare and common terms), the CSV export of the whole list, and the
# service's peak RSS. The subscribers are spread over LISTS lists (the
# default one and LISTS-1 more, each reader on about a tenth of the
# others) and carry four custom attributes; the table then also has the
# page of lists, one list's readers first and deep, and a segment's count.
#   scripts/bench_admin.sh                  a million subscribers
#   LISTS=5 scripts/bench_admin.sh          fewer lists (default 20)
#   N=100000 scripts/bench_admin.sh         a quick run
#   SPREAD_DAYS=30 scripts/bench_admin.sh   everyone signed up in the last
#                                           30 days (default 365)
#   REPEAT=9 scripts/bench_admin.sh         requests per measure (default 7)
#   TIMEOUT=900 scripts/bench_admin.sh      gives up 900 s after the build
#                                           (default 600)
#   NEWSLETTER_BIN=path/to/newsletter scripts/bench_admin.sh   that build
#   ONLY_EXPORT=1 scripts/bench_admin.sh    the exports and the RSS only
#   DB=bench_admin_kept KEEP_DB=1 scripts/bench_admin.sh   fills that
#       database once and keeps it; later runs with the same DB (and N,
#       SPREAD_DAYS, LISTS) skip the fill
# Everything else it makes (the database bench_admin_<time>, the Redis keys under
# its prefix, the service, its files) is removed when it ends, however it
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N="${N:-1000000}"
SPREAD_DAYS="${SPREAD_DAYS:-365}"
REPEAT="${REPEAT:-7}"
LISTS="${LISTS:-20}"
TIMEOUT="${TIMEOUT:-600}"
RUN="$(date +%s)"
DB="${DB:-bench_admin_${RUN}}"
KEEP_DB="${KEEP_DB:-}"
KEY_PREFIX="bench-admin:${RUN}:"
WORK="$(mktemp -d)"
SERVICE_LOG="${WORK}/service.log"
PASSWORD="bench-admin-${DB}"

[[ "${N}" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of subscribers, not '${N}'"
[[ "${SPREAD_DAYS}" =~ ^[1-9][0-9]*$ ]] || die "SPREAD_DAYS must be a positive number of days"
[[ "${REPEAT}" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number of requests"
[[ "${LISTS}" =~ ^[1-9][0-9]*$ ]] || die "LISTS must be a positive number of lists"

ensure_postgres
ensure_redis
command -v curl >/dev/null || apt_install curl
command -v jq >/dev/null || apt_install jq

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
  if [ -z "${KEEP_DB}" ]; then
    PGPASSWORD="${DB_PASSWORD}" psql -q -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" -d postgres \
      -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  fi
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
INSERT INTO attribute_definitions (name, kind)
VALUES ('plan', 'text'), ('score', 'number'), ('renews_on', 'date'), ('vip', 'boolean');
INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at, unsubscribed_at,
                           attributes)
SELECT gen_random_uuid(),
       lower(replace(first, ' ', '')) || '.' || lower(replace(last, ' ', '')) || g || '@' || domain,
       first || ' ' || last,
       at,
       status,
       CASE WHEN status <> 'pending_confirmation' THEN at + interval '2 hours' END,
       CASE WHEN status = 'unsubscribed' THEN at + interval '3 hours' END,
       -- A plan for everyone, a score for nine in ten, a renewal date for
       -- half, vip for one in twenty.
       jsonb_strip_nulls(jsonb_build_object(
         'plan', (ARRAY['free', 'pro', 'team'])[1 + (hashint4(g + 31) & 2147483647) % 3],
         'score', CASE WHEN g % 10 <> 0 THEN (hashint4(g + 37) & 2147483647) % 1000 END,
         'renews_on', CASE WHEN g % 2 = 0
                      THEN to_char(date '2027-01-01' + (hashint4(g + 41) & 2147483647) % 365,
                                   'YYYY-MM-DD') END,
         'vip', CASE WHEN g % 20 = 0 THEN true END))
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
  # Every insert above joined the default list (the trigger kept for the
  # release before lists). The other lists each take about a tenth of the
  # readers, at their status, and one in ten of those left it since.
  sql -v lists="${LISTS}" <<'SQL'
INSERT INTO lists (name, description, public, double_opt_in)
SELECT 'List ' || k, 'Benchmark list ' || k, k % 4 <> 0, k % 3 <> 0
FROM generate_series(2, :lists) AS k;
INSERT INTO memberships (list_id, subscriber_id, status, joined_at, confirmed_at, unsubscribed_at)
SELECT l.id, s.id,
       CASE WHEN s.status = 'unsubscribed' OR dice = 0 THEN 'unsubscribed'
            WHEN s.status = 'confirmed' THEN 'confirmed' ELSE 'pending' END,
       s.subscribed_at, s.confirmed_at,
       CASE WHEN s.status = 'unsubscribed' OR dice = 0 THEN s.subscribed_at + interval '1 day' END
FROM (SELECT id, row_number() OVER (ORDER BY name) AS k FROM lists WHERE NOT is_default) AS l
JOIN subscriptions AS s ON (hashtext(s.id::text || l.k) & 2147483647) % 10 = 0,
LATERAL (SELECT (hashtext(l.k || s.id::text) & 2147483647) % 10 AS dice) AS drawn;
SQL
  # A long-lived database has statistics, a visibility map and merged
  # trigram entries; a fresh one gets them here.
  sql -c "VACUUM ANALYZE subscriptions" -c "VACUUM ANALYZE memberships"
}
if [ -n "${KEEP_DB}" ] && [ "$(sql -c "SELECT count(*) FROM subscriptions")" -gt 0 ]; then
  log "keeping the subscribers already in ${DB}"
else
  step "recording ${N} subscribers signed up over ${SPREAD_DAYS} days, on ${LISTS} lists" fill
fi

if [ "$(sql -c "SELECT count(*) FROM admins WHERE username = 'bench-admin'")" = 0 ]; then
  printf '%s\n' "${PASSWORD}" | timeout "$(remaining)" "${NEWSLETTER_BIN}" admin create \
    --username bench-admin >/dev/null
fi
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
# With a second argument, a form POST of that body, whose answer must hold
# the text of the third.
request_seconds() {
  local path=$1 form=${2:-} expected=${3:-} answer
  local post=()
  [ -n "${form}" ] && post=(--data "${form}")
  answer=$(curl -s -o "${WORK}/answer.html" --max-time "$(remaining)" -b "session=${SESSION}" \
    -H 'Accept: text/html' "${post[@]}" -w '%{http_code} %{time_total}' "${BASE}${path}")
  [ "${answer%% *}" = 200 ] || die "${form:+POST}${form:-GET} ${path} answered ${answer%% *}"
  [ -z "${expected}" ] || grep -qF "${expected}" "${WORK}/answer.html" \
    || die "${path} answered without '${expected}'"
  echo "${answer#* }"
}

# The median of REPEAT requests, in milliseconds, after one unmeasured
# request (the first one of a statement on a connection plans it).
median_ms() {
  local i
  request_seconds "$@" >/dev/null
  for (( i = 0; i < REPEAT; i++ )); do request_seconds "$@"; done \
    | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", 1000 * v[int((NR + 1) / 2)] }'
}

ROWS=()
# A row of the table: what, the measured value, its unit, the target in
# the same unit (empty: none).
row() { ROWS+=("$1|$2|$3|${4:-}"); }
# A measure whose requests failed (its reason printed) is a row that
# missed its target: 100 ms, or TARGET_MS.
measure() {
  local what=$1 value
  shift
  if value=$(median_ms "$@"); then
    row "${what}" "${value}" ms "${TARGET_MS:-100}"
  else
    row "${what}" failed "" "${TARGET_MS:-100}"
  fi
}

# A page's address starting after the row at `offset` in the list's order
# (of the status, if one is given): what following that many rows' worth
# of `after` links leads to.
# On a list, the status is the reader's there.
after_row() {
  local offset=$1 status=${2:-} list=${3:-}
  sql -v offset="${offset}" -v status="${status}" -v list="${list}" <<'SQL'
SELECT (extract(epoch FROM s.subscribed_at) * 1000000)::bigint || '_' || s.id
FROM subscriptions AS s
LEFT JOIN memberships AS m ON m.subscriber_id = s.id AND m.list_id::text = :'list'
WHERE (:'list' = '' OR m.list_id IS NOT NULL)
  AND (:'status' = '' OR coalesce(m.status, s.status) = :'status')
ORDER BY s.subscribed_at DESC, s.id DESC OFFSET :offset LIMIT 1;
SQL
}

# A rare address: one subscriber's, from the middle of the list, without
# its domain.
rare_address=$(sql -c "SELECT split_part(email, '@', 1) || '@' FROM subscriptions WHERE email ~ '^[a-z0-9.@-]+$' \
  ORDER BY subscribed_at DESC, id DESC OFFSET $(( N / 2 )) LIMIT 1")

if [ -z "${ONLY_EXPORT:-}" ]; then
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

# Lists and segments. A list of the middle of the order (a tenth of the
# readers), its first page and half-way down; a segment mixing a list, an
# attribute and a date, counted as its form's "Count" button does.
measure "page of the ${LISTS} lists, with their counts" "/admin/lists"
list_id=$(sql -c "SELECT id FROM lists WHERE NOT is_default ORDER BY name OFFSET $(( LISTS / 2 - 1 < 0 ? 0 : LISTS / 2 - 1 )) LIMIT 1")
[ -n "${list_id}" ] || list_id=$(sql -c "SELECT id FROM lists WHERE is_default")
list_size=$(sql -c "SELECT count(*) FROM memberships WHERE list_id = '${list_id}'")
measure "one list's readers (${list_size}), first page" "/admin/subscribers?list=${list_id}"
measure "one list's readers, halfway down" \
  "/admin/subscribers?list=${list_id}&after=$(after_row $(( list_size / 2 )) "" "${list_id}")"
measure "one list's readers, search (Grace)" "/admin/subscribers?list=${list_id}&q=Grace"
segment_token="$(curl -s -b "session=${SESSION}" -H 'Accept: text/html' "${BASE}/admin/segments" \
  | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -n 1)"
[ -n "${segment_token}" ] || die "the segments page shows no CSRF token"
segment='{"any": [{"all": [{"list": {"id": "'"${list_id}"'", "status": "confirmed"}},
                           {"attribute": {"name": "plan", "op": "eq", "value": "pro"}}]},
                  {"all": [{"attribute": {"name": "score", "op": "gt", "value": 990}},
                           {"confirmed": {"after": "2026-01-01"}}]}]}'
segment_form="csrf_token=$(printf '%s' "${segment_token}" | jq -sRr @uri)&name=bench&action=count&filter_json=$(printf '%s' "${segment}" | jq -sRr @uri)"
# The compose page and the segment's page wait a second for a count.
TARGET_MS=1000 measure "segment count (a list and an attribute, or a score and a date)" \
  /admin/segments "${segment_form}" "confirmed readers match"

fi

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
    if [[ "${value}" =~ ^[0-9.]+$ ]] && awk -v v="${value}" -v t="${target}" 'BEGIN { exit !(v < t) }'; then
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
