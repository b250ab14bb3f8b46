#!/bin/sh
# Real-browser tests of the chat page. Installs what is missing (Debian's chromium via
# apt, playwright-core via `npm ci`), then runs one of:
#
#   lab/browser/run.sh mock        the page against the in-memory mock (no cluster needed):
#                                  two_pages.mjs, failover.mjs and page_edges.mjs,
#                                  mock on 127.0.0.1:19031/19032 (MOCK_PORTS)
#   lab/browser/run.sh cluster     starts a throwaway cluster from the built binaries on
#                                  scratch ports (cluster.sh): two_pages.mjs on the apps
#                                  directly and through the TLS lb, then failover.mjs
#                                  through the lb (SIGTERM of page A's instance)
#   lab/browser/run.sh two_pages   against WSMESH_URL_A / WSMESH_URL_B (a running cluster)
#   lab/browser/run.sh failover    same, plus WSMESH_KILL_CMD_<INSTANCE> (see failover.mjs)
#
# Every test prints `N passed, M failed` last and exits non-zero on a failure; `mock` and
# `cluster` end with one such line for all their tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ ! -x "${WSMESH_CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing chromium (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium missing: run apt-get install -y chromium (as root)" >&2
    exit 1
  fi
fi
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# Runs one test (env assignments first, then the script), echoing its output but its
# last line, which is kept in $tallies; a failure sets rc=1.
rc=0
tallies=""
one() {
  log=$(mktemp)
  env "$@" >"$log" 2>&1 || rc=1
  sed '$d' "$log"
  tallies="$tallies
$(tail -n 1 "$log")"
  rm -f "$log"
}
# One closing line for all: "N passed, M failed".
total() {
  printf '%s\n' "$tallies" | awk '/passed, [0-9]+ failed/ { p += $1; f += $3; n++ } END { printf "%d passed, %d failed\n", p, f + 0 }'
}

case "${1:-mock}" in
  mock)
    ports=${MOCK_PORTS:-19031,19032}
    node mock_server.mjs &
    mock=$!
    trap 'kill $mock 2>/dev/null || true' EXIT INT TERM
    a=http://127.0.0.1:${ports%,*}/
    b=http://127.0.0.1:${ports#*,}/
    i=0
    until curl -fsS -o /dev/null "$a" 2>/dev/null; do
      i=$((i + 1)); [ $i -le 50 ] || { echo "mock did not start" >&2; exit 1; }; sleep 0.1
    done
    kill -0 $mock 2>/dev/null || { echo "mock did not start (ports ${ports} taken?)" >&2; exit 1; }
    one WSMESH_URL_A=$a WSMESH_URL_B=$b node two_pages.mjs
    one WSMESH_URL_A=$a WSMESH_URL_B=$b \
      WSMESH_KILL_CMD_APP1="curl -fsS -X POST ${a}mock/down" WSMESH_RESTART_CMD_APP1="curl -fsS -X POST ${a}mock/up" \
      node failover.mjs
    kill $mock 2>/dev/null || true
    wait $mock 2>/dev/null || true
    # page_edges.mjs starts the mock itself, once per scenario, with its faults.
    one node page_edges.mjs
    total
    exit $rc
    ;;
  cluster)
    exec ./cluster.sh ./run.sh cluster-tests
    ;;
  cluster-tests) # inside cluster.sh
    : "${WSMESH_LB_URL:?run through cluster.sh}"
    shots=${WSMESH_SCREENSHOT_DIR:-$here/../../target/browser}
    one WSMESH_SCREENSHOT_DIR="$shots/apps" WSMESH_URL_A="$WSMESH_APP1_URL" WSMESH_URL_B="$WSMESH_APP2_URL" node two_pages.mjs
    one WSMESH_SCREENSHOT_DIR="$shots/lb" WSMESH_URL_A="$WSMESH_LB_URL" WSMESH_URL_B="$WSMESH_LB_URL" WSMESH_CA_IGNORE=1 node two_pages.mjs
    one WSMESH_SCREENSHOT_DIR="$shots/lb" WSMESH_URL_A="$WSMESH_LB_URL" WSMESH_URL_B="$WSMESH_LB_URL" WSMESH_CA_IGNORE=1 \
      WSMESH_KILL_CMD_APP1="kill -TERM \$(cat $WSMESH_APP1_PID_FILE)" \
      WSMESH_KILL_CMD_APP2="kill -TERM \$(cat $WSMESH_APP2_PID_FILE)" \
      node failover.mjs
    total
    exit $rc
    ;;
  two_pages) exec node two_pages.mjs ;;
  failover) exec node failover.mjs ;;
  *) echo "usage: $0 [mock|cluster|two_pages|failover]" >&2; exit 2 ;;
esac
