# Shared by the scripts: logging, root commands, and making sure the services
# the project needs are running. Source it; do not run it.

DB_HOST="${APP_DATABASE__HOST:-127.0.0.1}"
DB_PORT="${APP_DATABASE__PORT:-5432}"
DB_USER="${APP_DATABASE__USERNAME:-postgres}"
DB_PASSWORD="${APP_DATABASE__PASSWORD:-password}"
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Runs a named step of a longer command and remembers how long it took;
# print_step_times lists them all (call it from an EXIT trap, so that a run
# that stops early still says where its time went).
STEP_TIMES=()
#
# The step runs in this shell (it may export what later steps use), as the
# left side of `||`, where bash ignores -e: a step that is a function of
# several commands chains them with `&&`, so that the first failure is the
# step's.
step() {
  local name=$1 started status=0
  shift
  started=$(date +%s)
  log "${name}"
  "$@" || status=$?
  note_step_time "${name}" "$(($(date +%s) - started))" "${status}"
  return "${status}"
}
note_step_time() {
  local name=$1 seconds=$2 status=$3
  STEP_TIMES+=("$(printf '%6ss  %s%s' "${seconds}" "${name}" \
    "$([ "${status}" = 0 ] || printf '  (failed, exit %s)' "${status}")")")
}

# Steps side by side: start each with step_in_background, then wait for
# them all with wait_for_background_steps, which shows each one's output
# whole, in the order they were started, and fails if any failed. For steps
# that spend their time waiting (on a timeline, a fuzzer's time limit, a
# database) rather than on the cores.
BACKGROUND_STEPS=()
step_in_background() {
  local name=$1 dir
  shift
  dir="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-step-XXXXXXXX")"
  log "${name} (started beside the others)"
  (
    started=$(date +%s)
    # The step runs in a shell of its own with -e on, and not as the left
    # side of `||`: there bash ignores -e for the whole of a function, so
    # a step of two commands whose first failed passed if the second did.
    set +e
    (
      set -e
      "$@"
    ) >"${dir}/output" 2>&1
    status=$?
    printf '%s %s\n' "$(($(date +%s) - started))" "${status}" >"${dir}/result"
  ) &
  BACKGROUND_STEPS+=("$!|${dir}|${name}")
}
# Ends the background steps still running, and every process they started
# (for a run that stops early): each gets SIGTERM, so the scripts among them
# clean up after themselves as they would on Ctrl-C.
stop_background_steps() {
  local entry pid
  for entry in "${BACKGROUND_STEPS[@]}"; do
    kill_tree "${entry%%|*}"
  done
}
kill_tree() {
  local pid=$1 child children
  # Listed before the signal: once a process is gone, its children are
  # someone else's.
  children=$(cat /proc/"${pid}"/task/*/children 2>/dev/null || true)
  kill -TERM "${pid}" 2>/dev/null || true
  for child in ${children}; do
    kill_tree "${child}"
  done
}
wait_for_background_steps() {
  local entry pid dir name seconds status failed=0
  for entry in "${BACKGROUND_STEPS[@]}"; do
    IFS='|' read -r pid dir name <<<"${entry}"
    wait "${pid}" || true
    read -r seconds status <"${dir}/result" 2>/dev/null || { seconds=0; status=1; }
    log "${name}: its output"
    cat "${dir}/output" >&2
    note_step_time "${name}" "${seconds}" "${status}"
    [ "${status}" = 0 ] || failed=1
    rm -rf "${dir}"
  done
  BACKGROUND_STEPS=()
  return "${failed}"
}
print_step_times() {
  [ "${#STEP_TIMES[@]}" -gt 0 ] || return 0
  printf '\ntime per step:\n' >&2
  printf '  %s\n' "${STEP_TIMES[@]}" >&2
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"
  fi
}

apt_install() {
  log "installing $* with apt-get"
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Uses a Postgres that is already listening; otherwise starts the local
# cluster, installing PostgreSQL first if needed. With USE_DOCKER=1 and a
# working Docker engine it runs a container instead.
ensure_postgres() {
  if port_open "${DB_HOST}" "${DB_PORT}"; then
    log "using the Postgres server listening on ${DB_HOST}:${DB_PORT}"
  elif [ "${USE_DOCKER:-0}" = 1 ] && docker info >/dev/null 2>&1; then
    log "starting Postgres in Docker on port ${DB_PORT}"
    docker run -d --name newsletter-postgres -e POSTGRES_PASSWORD="${DB_PASSWORD}" \
      -p "${DB_PORT}:5432" postgres:17 -N 500 >/dev/null
  else
    [ "${DB_HOST}" = 127.0.0.1 ] || [ "${DB_HOST}" = localhost ] \
      || die "no Postgres answers on ${DB_HOST}:${DB_PORT}, and it is not local"
    command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [ -n "${version}" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
    log "starting the local PostgreSQL ${version} cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "${version}" main start || true
    # A fresh Debian cluster authenticates TCP clients by password: give the
    # postgres role the one our configuration uses.
    wait_for_port "${DB_HOST}" "${DB_PORT}" Postgres
    as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD '${DB_PASSWORD}'" >/dev/null
  fi
  wait_for_port "${DB_HOST}" "${DB_PORT}" Postgres
  command -v psql >/dev/null || apt_install postgresql-client
}

# Starts a Postgres cluster of the test run's own, from the installed
# PostgreSQL's binaries (installing them if needed), on a free port, and
# points this shell and every process it starts at it (APP_DATABASE__PORT).
# Made for tests: no fsync (nothing in it outlives the run), and room for
# the connections of many tests at once, which a server's default 100 is
# not. stop_private_postgres removes it. With USE_DOCKER=1 it uses
# ensure_postgres instead.
PRIVATE_POSTGRES=""
start_private_postgres() {
  if [ "${USE_DOCKER:-0}" = 1 ]; then
    ensure_postgres
    return 0
  fi
  local bin port
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "${bin}" ]; then
    apt_install postgresql postgresql-client
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  PRIVATE_POSTGRES="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-postgres-XXXXXXXX")"
  # initdb refuses to run as root: the cluster belongs to postgres then.
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "${PRIVATE_POSTGRES}"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "${bin}/initdb" -D "${PRIVATE_POSTGRES}/data" -U "${DB_USER}" -A trust -E UTF8 \
    --no-sync >"${PRIVATE_POSTGRES}/initdb.log" 2>&1 \
    || die "initdb failed: $(cat "${PRIVATE_POSTGRES}/initdb.log")"
  port="$(free_port)"
  "${as[@]}" "${bin}/pg_ctl" -D "${PRIVATE_POSTGRES}/data" -l "${PRIVATE_POSTGRES}/server.log" -w \
    -o "-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${PRIVATE_POSTGRES}" \
    -o "-c max_connections=500 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || die "the test run's Postgres did not start: $(tail -n 20 "${PRIVATE_POSTGRES}/server.log")"
  DB_HOST=127.0.0.1
  DB_PORT="${port}"
  export APP_DATABASE__HOST=127.0.0.1 APP_DATABASE__PORT="${port}"
  log "the test run's own Postgres listens on 127.0.0.1:${port} (${PRIVATE_POSTGRES})"
}
stop_private_postgres() {
  [ -n "${PRIVATE_POSTGRES}" ] || return 0
  local bin as=()
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "${bin}/pg_ctl" -D "${PRIVATE_POSTGRES}/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "${PRIVATE_POSTGRES}"
  PRIVATE_POSTGRES=""
}

# Uses a Redis that is already listening on 127.0.0.1:6379; otherwise starts
# one, installing redis-server first if needed. It keeps nothing on disk: the
# service stores only expiring rate-limit counters there.
ensure_redis() {
  if port_open "${REDIS_HOST}" "${REDIS_PORT}"; then
    log "using the Redis server listening on ${REDIS_HOST}:${REDIS_PORT}"
    return 0
  fi
  if [ "${USE_DOCKER:-0}" = 1 ] && docker info >/dev/null 2>&1; then
    log "starting Redis in Docker on port ${REDIS_PORT}"
    docker run -d --name newsletter-redis -p "${REDIS_PORT}:6379" redis:7 >/dev/null
  else
    command -v redis-server >/dev/null || apt_install redis-server
    # The package may have started a server of its own.
    if ! port_open "${REDIS_HOST}" "${REDIS_PORT}"; then
      log "starting Redis on ${REDIS_HOST}:${REDIS_PORT}"
      redis-server --daemonize yes --bind "${REDIS_HOST}" --port "${REDIS_PORT}" \
        --save "" --appendonly no --dir /tmp --logfile /tmp/newsletter-redis.log
    fi
  fi
  wait_for_port "${REDIS_HOST}" "${REDIS_PORT}" Redis
}

# The browser tests drive Debian's Chromium through its chromedriver.
ensure_chromium() {
  if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then
    log "using $("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null)"
    return 0
  fi
  apt_install chromium chromium-driver
}

# The SMTP provider's tests and benchmark run tests/smtp_server.py on
# aiosmtpd. Debian's package installs it for Debian's own python3, and the
# first python3 on PATH may be another one (pyenv, a virtualenv) that does
# not see it: SMTP_TEST_PYTHON names the interpreter, for the tests too.
SMTP_TEST_PYTHON="${SMTP_TEST_PYTHON:-/usr/bin/python3}"
export SMTP_TEST_PYTHON
ensure_smtp_test_server() {
  # The TLS tests make a self-signed certificate for it.
  command -v openssl >/dev/null || apt_install openssl
  if "${SMTP_TEST_PYTHON}" -c 'import aiosmtpd' 2>/dev/null; then
    log "using aiosmtpd $("${SMTP_TEST_PYTHON}" -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
    return 0
  fi
  apt_install python3-aiosmtpd
}

# The archive's feed test parses /feed.xml with a real feed reader's parser,
# Python's feedparser, from Debian's python3-feedparser, which goes into the
# system's Python: FEED_TEST_PYTHON names that interpreter, for the tests too.
FEED_TEST_PYTHON="${FEED_TEST_PYTHON:-/usr/bin/python3}"
export FEED_TEST_PYTHON
ensure_feed_parser() {
  if "${FEED_TEST_PYTHON}" -c 'import feedparser' 2>/dev/null; then
    log "using feedparser $("${FEED_TEST_PYTHON}" -c 'import feedparser; print(feedparser.__version__)')"
    return 0
  fi
  apt_install python3-feedparser
}

# Prints "pid command line" for each process whose command line names the
# directory $1. Reads /proc itself: a fresh Debian may lack procps's pgrep.
processes_naming() {
  local dir=$1 entry args
  for entry in /proc/[0-9]*; do
    # A process that has exited since the listing has no command line.
    mapfile -d '' -t args 2>/dev/null <"${entry}/cmdline" || continue
    if [[ "${args[*]}" == *"${dir}/"* ]]; then
      printf '%s %s\n' "${entry#/proc/}" "${args[*]}"
    fi
  done
}

# Fails the run if a process of a browser the tests started is still
# running. Every browser the tests start keeps its files in a directory under
# $1 (their BROWSER_TEST_DIR), and each of its processes, chromedriver and
# Chromium's helpers included, names that directory on its command line; a
# browser started by anything else (another run, a person) does not. The
# survivors are listed and then ended, so that a leak fails this run instead
# of running for as long as the machine stays up. Removes $1; calling it
# again finds nothing.
check_no_browsers_left() {
  local dir=$1 left
  left=$(processes_naming "${dir}")
  if [ -n "${left}" ]; then
    printf 'still running after the tests:\n' >&2
    cut -c1-160 <<<"${left}" | sed 's/^/  /' >&2
    # shellcheck disable=SC2046 # one pid a word
    kill -KILL $(cut -d' ' -f1 <<<"${left}") 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(processes_naming "${dir}")" ] && break
      sleep 0.1
    done
  fi
  rm -rf "${dir}"
  [ -z "${left}" ] \
    || die "the browser tests left $(wc -l <<<"${left}") processes running (listed above, now ended)"
}

# Settings for the service under a load test on this machine: its own
# database and Redis keys, the email API stand-in on $3, no per-IP limits
# (every request of the load comes from 127.0.0.1), and a metrics listener
# on a free port, since several processes share the machine.
export_load_test_settings() {
  local database=$1 key_prefix=$2 stub_port=$3
  export APP_ENVIRONMENT=local
  export APP_DATABASE__DATABASE_NAME="${database}"
  # Both names: scripts/bench_compare.sh runs builds from before
  # `providers` replaced `backend` too.
  export APP_EMAIL_CLIENT__PROVIDERS=postmark APP_EMAIL_CLIENT__BACKEND=postmark
  export APP_EMAIL_CLIENT__BASE_URL="http://127.0.0.1:${stub_port}"
  export APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN=load-test
  export APP_RATE_LIMIT__KEY_PREFIX="${key_prefix}"
  export APP_RATE_LIMIT__PER_IP__BURST=1000000000
  export APP_RATE_LIMIT__PER_IP__PER_PERIOD=1000000000
  # Confirmation clicks have a budget of their own (older builds, which
  # counted them in PER_IP, ignore it).
  export APP_RATE_LIMIT__CONFIRM_PER_IP__BURST=1000000000
  export APP_RATE_LIMIT__CONFIRM_PER_IP__PER_PERIOD=1000000000
  export APP_METRICS__PORT=0
}

# Deletes the Redis keys a load run made under its key prefix: a long run
# leaves millions, which slow Redis down for whatever runs next.
delete_redis_keys() {
  local prefix=$1
  redis-cli -h "${REDIS_HOST}" -p "${REDIS_PORT}" --scan --pattern "${prefix}*" 2>/dev/null \
    | xargs -r -n 1000 redis-cli -h "${REDIS_HOST}" -p "${REDIS_PORT}" del >/dev/null 2>&1 || true
}

wait_for_port() {
  local host=$1 port=$2 what=$3
  for _ in $(seq 1 60); do
    port_open "${host}" "${port}" && return 0
    sleep 0.5
  done
  die "${what} did not start listening on ${host}:${port}"
}

ensure_rust() {
  command -v cargo >/dev/null \
    || die "cargo is missing: install Rust (https://rustup.rs) and run this again"
  cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 \
    || die "rustfmt and clippy are missing: rustup component add rustfmt clippy"
}

# Runs a cargo command with clippy's lints on this workspace's crates,
# warnings denied: what `cargo clippy -- -D warnings` does, but for a build.
# `cargo clippy` is `cargo check` with clippy-driver in place of rustc for
# the workspace (RUSTC_WORKSPACE_WRAPPER), its arguments passed on in
# CLIPPY_ARGS. A check's dependencies are compiled to metadata only, which a
# build cannot use, so clippy beside a build compiled every dependency a
# second time and type-checked this crate a second time; linting the build
# itself does each once. Dependencies are built as by a plain build (the
# wrapper is for workspace crates only), so other builds still share them.
clippy_driver() {
  local driver
  driver="$(rustc --print sysroot)/bin/clippy-driver"
  [ -x "${driver}" ] || die "clippy-driver is missing from ${driver%/*}: rustup component add clippy"
  echo "${driver}"
}
linted() {
  local driver
  # Without a driver the wrapper would be empty: a build with no lints.
  driver="$(clippy_driver)" || exit 1
  RUSTC_WORKSPACE_WRAPPER="${driver}" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" "$@"
}
# Proof that linted fails on a warning: a clippy that read its arguments
# some other way would otherwise let every lint through as a mere warning.
lints_deny_warnings() {
  local dir status=0
  dir="$(mktemp -d)"
  printf 'pub fn nothing_in(v: &[u8]) -> bool {\n    v.len() == 0\n}\n' >"${dir}/probe.rs"
  linted "$(clippy_driver)" rustc --edition 2021 --crate-type lib --emit metadata \
    --out-dir "${dir}" "${dir}/probe.rs" >"${dir}/log" 2>&1 || status=$?
  if [ "${status}" = 0 ] || ! grep -q 'clippy::len_zero' "${dir}/log"; then
    cat "${dir}/log" >&2
    rm -rf "${dir}"
    die "clippy-driver let a lint warning through: the build's lints would check nothing"
  fi
  rm -rf "${dir}"
}

# The test runner: cargo-nextest runs every test in a process of its own and
# the tests of all binaries in one pool (.config/nextest.toml). Installed
# from crates.io when missing, which takes a few minutes once.
ensure_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    log "using $(cargo nextest --version 2>/dev/null | head -n 1)"
    return 0
  fi
  log "installing cargo-nextest from crates.io (once; a few minutes)"
  cargo install --locked cargo-nextest
}

# Lists the N slowest tests of the last nextest run, from its JUnit report:
# where to look first when the suite grows slow.
slowest_tests() {
  local report=target/nextest/default/junit.xml
  [ -f "${report}" ] || return 0
  printf '\nslowest tests:\n' >&2
  python3 - "${report}" "$1" <<'PY' >&2
import sys, xml.etree.ElementTree as tree
cases = tree.parse(sys.argv[1]).getroot().iter("testcase")
timed = sorted(((float(c.get("time", 0)), c.get("classname", ""), c.get("name", "")) for c in cases), reverse=True)
for seconds, binary, name in timed[: int(sys.argv[2])]:
    print(f"  {seconds:6.1f}s  {binary} {name}")
PY
}

# How many tests may run at once: a few per core, since a test mostly waits
# on Postgres, Redis or a mock API, but no more than Postgres has
# connections for. A test's app holds up to a dozen; ROOM_FOR_OTHERS are
# left for whatever else runs meanwhile.
test_threads() {
  local cores max_connections threads room
  cores=$(nproc)
  threads=$((cores * 4))
  max_connections=$(PGPASSWORD="${DB_PASSWORD}" psql -h "${DB_HOST}" -p "${DB_PORT}" -U "${DB_USER}" \
    -d postgres -Atc "SHOW max_connections" 2>/dev/null || echo 100)
  room=$(((max_connections - ${ROOM_FOR_OTHERS:-20}) / 12))
  [ "${room}" -lt "${threads}" ] && threads=${room}
  [ "${threads}" -ge 1 ] || threads=1
  echo "${threads}"
}

