#!/bin/sh
# Real-browser tests of the chat page. Installs what is missing (Debian's chromium and
# libnss3-tools via apt, playwright-core via `npm ci`), then runs one of:
#
#   lab/browser/run.sh mock        the page against the in-memory mock (no cluster needed):
#                                  two_pages.mjs, failover.mjs and page_edges.mjs,
#                                  mock on 127.0.0.1:19031/19032 (MOCK_PORTS)
#   lab/browser/run.sh cluster     runs `lab up --port-offset 10000` (WSMESH_PORT_OFFSET)
#                                  from the built binaries (target/debug or WSMESH_BIN_DIR),
#                                  takes the URLs from its `ready` line: two_pages.mjs on
#                                  the apps directly, h2_socket.mjs and two_pages.mjs
#                                  through the TLS lb, then
#                                  failover.mjs through the lb (kill -9 of page A's
#                                  instance, pid from `lab up --pid-dir`); then the same
#                                  ports again as `lab up --auth` (jwt mode) for
#                                  auth_page.mjs through the lb; SIGTERMs `lab up` on
#                                  every exit path, which stops the rest
#   lab/browser/run.sh two_pages   against WSMESH_URL_A / WSMESH_URL_B (a running cluster)
#   lab/browser/run.sh failover    same, plus WSMESH_KILL_CMD_<INSTANCE> (see failover.mjs)
#   lab/browser/run.sh h2_socket   against the lb at WSMESH_URL_A, its admin at WSMESH_LB_ADMIN
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
# certutil: the throwaway NSS database through which Chromium trusts the dev CA (lib.mjs).
if ! command -v certutil >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing libnss3-tools (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnss3-tools >/dev/null
  else
    echo "certutil missing: run apt-get install -y libnss3-tools (as root)" >&2
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
    root=$(cd "$here/../.." && pwd)
    bin=${WSMESH_BIN_DIR:-$root/target/debug}
    case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
    for b in lab app subscriber lb; do
      [ -x "$bin/$b" ] || { echo "missing $bin/$b: run cargo build -p app -p subscriber -p lb -p lab first" >&2; exit 1; }
    done
    # The lb config names the dev certificate in certs/ (as `make certs`; kept if present).
    [ -f "$root/certs/server.pem" ] || "$bin/lb" gen-cert --dir "$root/certs" >/dev/null
    work=$(mktemp -d "${TMPDIR:-/tmp}/wsmesh-browser.XXXXXX")
    up=""
    # SIGTERM to `lab up` stops its processes in order (up to 8 s each for apps, then
    # Redis) and removes its temporary configs; SIGKILL after 30 s as a last resort.
    halt_up() {
      if [ -n "$up" ]; then
        kill -TERM "$up" 2>/dev/null || true
        i=0
        while kill -0 "$up" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$up" 2>/dev/null; then
          echo "lab up did not stop within 30 s; SIGKILL (its children die with it)" >&2
          kill -KILL "$up" 2>/dev/null || true
        fi
        wait "$up" 2>/dev/null || true
        up=""
      fi
    }
    stop_up() {
      halt_up
      [ $rc -eq 0 ] || { echo "# lab up log (last 40 lines):" >&2; tail -n 40 "$work/up.log" >&2; }
      rm -rf "$work"
    }
    # Starts `lab up` with the given extra flags (log in $work/up.log) and waits for its
    # ready line, kept in $ready.
    start_up() {
      WSMESH_BIN_DIR=$bin "$bin/lab" up --configs "$root/configs/local" \
        --port-offset "${WSMESH_PORT_OFFSET:-10000}" --pid-dir "$work/pids" "$@" >"$work/up.log" 2>&1 &
      up=$!
      i=0
      until ready=$(grep -s -m 1 '^ready: ' "$work/up.log"); do
        kill -0 "$up" 2>/dev/null || { echo "lab up exited before it was ready" >&2; rc=1; exit 1; }
        i=$((i + 1))
        [ $i -le 600 ] || { echo "lab up not ready within 60 s" >&2; rc=1; exit 1; }
        sleep 0.1
      done
      echo "# lab up $* $ready"
    }
    trap 'stop_up' EXIT
    trap 'rc=1; exit 130' INT TERM
    start_up
    # "ready: lb https://127.0.0.1:18443  app1 http://… app2 http://…" → the word after NAME.
    url_of() { printf '%s\n' "$ready" | tr -s ' ' '\n' | awk -v n="$1" 'prev == n { print; exit } { prev = $0 }'; }
    lb=$(url_of lb)/ app1=$(url_of app1)/ app2=$(url_of app2)/
    for u in "$lb" "$app1" "$app2"; do
      [ "$u" != / ] || { echo "no lb/app1/app2 URL in: $ready" >&2; rc=1; exit 1; }
    done
    shots=${WSMESH_SCREENSHOT_DIR:-$root/target/browser}
    # The lb's admin listener: the committed config's port, moved like the others.
    admin_port=$(sed -n '/^\[admin\]/,/^\[/ s/^listen = "127\.0\.0\.1:\([0-9][0-9]*\)"/\1/p' "$root/configs/local/lb.toml")
    [ -n "$admin_port" ] || { echo "no admin listen in configs/local/lb.toml" >&2; rc=1; exit 1; }
    admin=http://127.0.0.1:$((admin_port + ${WSMESH_PORT_OFFSET:-10000}))/
    one WSMESH_SCREENSHOT_DIR="$shots/apps" WSMESH_URL_A="$app1" WSMESH_URL_B="$app2" node two_pages.mjs
    one WSMESH_SCREENSHOT_DIR="$shots/lb" WSMESH_URL_A="$lb" WSMESH_LB_ADMIN="$admin" WSMESH_CA_FILE="$root/certs/dev-ca.pem" node h2_socket.mjs
    one WSMESH_SCREENSHOT_DIR="$shots/lb" WSMESH_URL_A="$lb" WSMESH_URL_B="$lb" WSMESH_CA_FILE="$root/certs/dev-ca.pem" node two_pages.mjs
    one WSMESH_SCREENSHOT_DIR="$shots/lb" WSMESH_URL_A="$lb" WSMESH_URL_B="$lb" WSMESH_CA_FILE="$root/certs/dev-ca.pem" \
      WSMESH_KILL_CMD_APP1="kill -9 \$(cat $work/pids/app1.pid)" \
      WSMESH_KILL_CMD_APP2="kill -9 \$(cat $work/pids/app2.pid)" \
      node failover.mjs
    # What `lab up` saw of the fault (it never restarts a process: "app1 exited (signal: 9 …)").
    grep ' exited (' "$work/up.log" | sed 's/^/# lab up: /' || true
    # The same cluster in jwt mode: the ready line's chat URL carries a token, the line
    # before it names the config `lab token` mints more from.
    halt_up
    start_up --auth
    chat=$(url_of chat)
    auth_config=$(tr -s ' ' '\n' <"$work/up.log" | awk 'prev == "--config" { print; exit } { prev = $0 }')
    one WSMESH_SCREENSHOT_DIR="$shots/auth" WSMESH_URL_A="$lb" WSMESH_URL_B="$lb" WSMESH_CA_FILE="$root/certs/dev-ca.pem" \
      WSMESH_CHAT_URL="$chat" WSMESH_LAB="$bin/lab" WSMESH_AUTH_CONFIG="$auth_config" node auth_page.mjs
    total
    exit $rc
    ;;
  two_pages) exec node two_pages.mjs ;;
  failover) exec node failover.mjs ;;
  h2_socket) exec node h2_socket.mjs ;;
  auth_page) exec node auth_page.mjs ;;
  *) echo "usage: $0 [mock|cluster|two_pages|failover|h2_socket|auth_page]" >&2; exit 2 ;;
esac
