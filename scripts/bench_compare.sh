#!/usr/bin/env bash
# Measures two builds of the service side by side, in one run on one
# machine: this machine is noisy, so figures taken at different times do not
# compare. Builds the release binary of each revision, then runs
# scripts/bench.sh (the service only, no pgbench) against them in turns,
# BEFORE, AFTER, BEFORE, AFTER, ..., and prints the subscribe figures of
# every turn in one table. Then, unless CAMPAIGN_N=0, the campaign
# benchmark (scripts/bench_campaign.sh, CAMPAIGN_N subscribers, a million by
# default) the same way: deliveries per second and the worker's peak RSS.
#   scripts/bench_compare.sh BEFORE            BEFORE against the work tree
#   scripts/bench_compare.sh BEFORE AFTER      two revisions
#   ROUNDS=3 DURATION=15 scripts/bench_compare.sh a60833f
#   ROUNDS=0 scripts/bench_compare.sh a60833f  only build
#   CAMPAIGN_N=0 scripts/bench_compare.sh a60833f  subscribe only
#   SUBSCRIBE=0 scripts/bench_compare.sh a60833f   campaign fan-out only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

[ $# -ge 1 ] || die "usage: scripts/bench_compare.sh BEFORE [AFTER]"
ROUNDS="${ROUNDS:-2}"
CAMPAIGN_N="${CAMPAIGN_N:-1000000}"
SUBSCRIBE="${SUBSCRIBE:-1}"
export DURATION="${DURATION:-15}"
BUILDS=target/bench-builds
ROOT=$PWD
mkdir -p "${BUILDS}"

ensure_rust

# Builds revision $1 (or the work tree for "work-tree") into
# $BUILDS/<name>/newsletter and prints that path. The revision is checked
# out in a worktree of its own but built into this tree's target directory,
# so that the dependencies are compiled once for both.
build() {
  local revision=$1 name out
  if [ "${revision}" = work-tree ]; then
    name=work-tree
    log "building the work tree"
    SQLX_OFFLINE=true cargo build --release --bin newsletter --example email_api_stub >&2
  else
    name=$(git rev-parse --short "${revision}")
    # A revision's build never changes: keep it between runs.
    if [ -x "${BUILDS}/${name}/newsletter" ]; then
      printf '%s\n' "${BUILDS}/${name}/newsletter"
      return 0
    fi
    local checkout="${BUILDS}/src-${name}"
    log "building ${revision} (${name})"
    rm -rf "${checkout}"
    git worktree add --force --detach "${checkout}" "${revision}" >/dev/null 2>&1
    # The same targets as the work tree's build: built alone, the binary's
    # dependencies get other features, and every one of them is compiled
    # again (twenty minutes on two busy cores).
    (cd "${checkout}" && SQLX_OFFLINE=true CARGO_TARGET_DIR="${ROOT}/target" \
      cargo build --release --bin newsletter --example email_api_stub >&2)
    git worktree remove --force "${checkout}"
  fi
  out="${BUILDS}/${name}"
  mkdir -p "${out}"
  # The process keeps its name, which the bench's CPU figures go by.
  cp target/release/newsletter "${out}/newsletter"
  printf '%s\n' "${out}/newsletter"
}

before=$(build "$1")
after=$(build "${2:-work-tree}")
# The email API stand-in comes from the work tree either way.
SQLX_OFFLINE=true cargo build --release --example email_api_stub >&2
[ "${ROUNDS}" -gt 0 ] || exit 0

results=()
for round in $(seq 1 "$(( SUBSCRIBE == 0 ? 0 : ROUNDS ))"); do
  for side in before after; do
    bin=${before}
    [ "${side}" = after ] && bin=${after}
    log "round ${round}: ${side} (${bin})"
    out=$(NEWSLETTER_BIN="${bin}" SKIP_PGBENCH=1 scripts/bench.sh)
    printf '%s\n' "${out}"
    while read -r name connections rps p50 p99 errors _; do
      [ "${name}" = subscribe ] && results+=("${round}|${side}|${connections}|${rps}|${p50}|${p99}|${errors}")
    done <<<"${out}"
  done
done

if [ "${#results[@]}" -gt 0 ]; then
  printf '\nsubscribe, %s s per run: before = %s, after = %s\n' "${DURATION}" "$1" "${2:-the work tree}"
  printf '%-6s %-7s %6s %10s %9s %9s %7s\n' round build conns "req/s" p50 p99 errors
  for row in "${results[@]}"; do
    IFS='|' read -r round side connections rps p50 p99 errors <<<"${row}"
    printf '%-6s %-7s %6s %10s %9s %9s %7s\n' "${round}" "${side}" "${connections}" "${rps}" "${p50}" "${p99}" "${errors}"
  done
  # Mean throughput per build and connection count, and after / before.
  printf '%s\n' "${results[@]}" | awk -F'|' '
    { sum[$2 "|" $3] += $4; n[$2 "|" $3]++ }
    END {
      for (c = 32; c <= 64; c *= 2) {
        b = sum["before|" c] / n["before|" c]; a = sum["after|" c] / n["after|" c]
        printf "mean at %d connections: before %.0f req/s, after %.0f req/s, after/before %.2f\n", c, b, a, a / b
      }
    }'
fi

[ "${CAMPAIGN_N}" -gt 0 ] || exit 0
campaigns=()
for round in $(seq 1 "${ROUNDS}"); do
  for side in before after; do
    bin=${before}
    [ "${side}" = after ] && bin=${after}
    log "campaign round ${round}: ${side} (${bin}), ${CAMPAIGN_N} subscribers"
    out=$(NEWSLETTER_BIN="${bin}" N="${CAMPAIGN_N}" scripts/bench_campaign.sh)
    printf '%s\n' "${out}"
    rate=$(awk '/^deliveries\/s, end to end/ {print $5}' <<<"${out}")
    sustained=$(awk '/^deliveries\/s, sustained/ {print $5}' <<<"${out}")
    rss=$(awk '/^peak RSS of the worker/ {print $6}' <<<"${out}")
    campaigns+=("${round}|${side}|${rate}|${sustained}|${rss}")
  done
done
printf '\ncampaign fan-out to %s: before = %s, after = %s\n' "${CAMPAIGN_N}" "$1" "${2:-the work tree}"
printf '%-6s %-7s %14s %14s %14s\n' round build "end to end/s" "sustained/s" "peak RSS MiB"
for row in "${campaigns[@]}"; do
  IFS='|' read -r round side rate sustained rss <<<"${row}"
  printf '%-6s %-7s %14s %14s %14s\n' "${round}" "${side}" "${rate}" "${sustained}" "${rss}"
done
printf '%s\n' "${campaigns[@]}" | awk -F'|' '
  { sum[$2] += $3; n[$2]++; if ($5 > rss[$2]) rss[$2] = $5 }
  END {
    printf "mean end to end: before %.0f/s, after %.0f/s, after/before %.2f; highest peak RSS: before %s MiB, after %s MiB\n",
      sum["before"] / n["before"], sum["after"] / n["after"], (sum["after"] / n["after"]) / (sum["before"] / n["before"]), rss["before"], rss["after"]
  }'
