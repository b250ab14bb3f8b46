#!/usr/bin/env bash
# Start Redis and two instances of each benchmark peer on loopback, run
# smoke.mjs against each peer, stop everything this script started.
#
#   bash lab/bench/peers/smoke.sh            # both peers
#   bash lab/bench/peers/smoke.sh node       # only one: seed-python | node
#
# Ports (override with env): REDIS_PORT=6404, seed-python public 19501/19502
# + internal 19511/19512, node 19521/19522. Logs in lab/bench/peers/logs/.
# Run install.sh first. Exits non-zero when any smoke run fails.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
REDIS_PORT="${REDIS_PORT:-6404}"
REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
PY="$here/seed-python/.venv/bin/python"
logs="$here/logs"
mkdir -p "$logs"
peers="${1:-seed-python node}"

pids=()       # peers of the current run
redis_pid=""  # set only when this script started Redis
stop_pids() { # pid…: SIGTERM, up to 5 s, then SIGKILL
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "$@"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "pid $pid ignored SIGTERM" >&2; kill -KILL "$pid"; fi
  done
}
cleanup() {
  [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
  pids=()
}
trap 'cleanup; [ -n "$redis_pid" ] && stop_pids "$redis_pid"' EXIT
trap 'exit 130' INT TERM

start() { # name, command…
  local name="$1"; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
}

wait_http() { # url: up to 10 s
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not healthy: $1" >&2
  return 1
}

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "redis: using the one already on port $REDIS_PORT"
else
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$logs/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "redis did not start" >&2; exit 1; }
fi

status=0
for peer in $peers; do
  case "$peer" in
    seed-python)
      for i in 1 2; do
        start "py$i" "$PY" "$here/seed-python/app.py" --port "1950$i" --internal-port "1951$i" \
          --instance "py$i" --redis "$REDIS_URL"
        start "py$i-subscriber" "$PY" "$here/seed-python/subscriber.py" --redis "$REDIS_URL" \
          --app "http://127.0.0.1:1951$i"
      done
      urls=(ws://127.0.0.1:19501/ws ws://127.0.0.1:19502/ws)
      channel=bench:seed-python:chat
      ;;
    node)
      for i in 1 2; do
        start "node$i" node "$here/node/server.mjs" --port "1952$i" --instance "node$i" --redis "$REDIS_URL"
      done
      urls=(ws://127.0.0.1:19521/ws ws://127.0.0.1:19522/ws)
      channel=bench:node:chat
      ;;
    *) echo "unknown peer: $peer" >&2; exit 2 ;;
  esac
  for u in "${urls[@]}"; do
    h="${u/ws:/http:}"; wait_http "${h%/ws}/healthz" || status=1
  done
  # Both subscriptions (subscriber.py / server.mjs) must be in place first.
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub "$channel" | tail -1)" -ge 2 ] && break
    sleep 0.1
  done
  echo "== $peer"
  node "$here/smoke.mjs" --url "${urls[0]}" --url "${urls[1]}" --clients 6 --messages 60 || status=1
  cleanup
done
exit $status
