#!/bin/sh
# A throwaway wsmesh cluster on scratch loopback ports, for the browser tests:
# redis-server, app1/app2, subscriber1/subscriber2 and the TLS lb, started from the built
# binaries with copies of configs/local/*.toml whose ports are moved. It runs the given
# command with WSMESH_APP1_URL, WSMESH_APP2_URL, WSMESH_LB_URL and the pid files exported,
# then stops everything (also on failure or Ctrl-C) and exits with the command's status.
#
#   lab/browser/cluster.sh node lab/browser/two_pages.mjs      (see run.sh cluster)
#
# Ports (override with the variables): redis 6403, apps 19021/19022 (internal 19121/19122),
# subscribers' health 19221/19222, lb https 19443, http 19080, admin 19404.
# Binaries from WSMESH_BIN_DIR (default target/debug); build them first.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${WSMESH_BIN_DIR:-$root/target/debug}
case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
REDIS_PORT=${REDIS_PORT:-6403}
APP1_PORT=${APP1_PORT:-19021}; APP2_PORT=${APP2_PORT:-19022}
INT1_PORT=${INT1_PORT:-19121}; INT2_PORT=${INT2_PORT:-19122}
SUB1_PORT=${SUB1_PORT:-19221}; SUB2_PORT=${SUB2_PORT:-19222}
LB_PORT=${LB_PORT:-19443}; LB_HTTP_PORT=${LB_HTTP_PORT:-19080}; LB_ADMIN_PORT=${LB_ADMIN_PORT:-19404}

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
for b in app subscriber lb; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: run cargo build --workspace --bins first" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "missing redis-server: apt-get install -y redis-server" >&2; exit 1; }
for p in $REDIS_PORT $APP1_PORT $APP2_PORT $INT1_PORT $INT2_PORT $SUB1_PORT $SUB2_PORT $LB_PORT $LB_HTTP_PORT $LB_ADMIN_PORT; do
  rc=0; curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/" 2>/dev/null || rc=$?
  # 7: nothing listens there.
  [ $rc -eq 7 ] || { echo "port $p is already in use; set the *_PORT variables" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/wsmesh-browser.XXXXXX")
pids=""
stop() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  i=0
  while [ $i -lt 100 ]; do
    alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1; i=$((i + 1))
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap 'stop' EXIT
trap 'exit 130' INT TERM

cfg=$root/configs/local
for i in 1 2; do
  eval app=\$APP${i}_PORT int=\$INT${i}_PORT sub=\$SUB${i}_PORT
  sed -e "s/127.0.0.1:900$i\"/127.0.0.1:$app\"/; s/127.0.0.1:910$i\"/127.0.0.1:$int\"/; s#redis://127.0.0.1:6390/#redis://127.0.0.1:$REDIS_PORT/#" \
    "$cfg/app$i.toml" >"$dir/app$i.toml"
  sed -e "s#http://127.0.0.1:910$i\"#http://127.0.0.1:$int\"#; s/127.0.0.1:920$i\"/127.0.0.1:$sub\"/; s#redis://127.0.0.1:6390/#redis://127.0.0.1:$REDIS_PORT/#" \
    "$cfg/subscriber$i.toml" >"$dir/subscriber$i.toml"
done
sed -e "s/127.0.0.1:8404\"/127.0.0.1:$LB_ADMIN_PORT\"/; s/127.0.0.1:8443\"/127.0.0.1:$LB_PORT\"/; s/127.0.0.1:8080\"/127.0.0.1:$LB_HTTP_PORT\"/" \
    -e "s/redirect_https_port = 8443/redirect_https_port = $LB_PORT/; s/127.0.0.1:9001\"/127.0.0.1:$APP1_PORT\"/; s/127.0.0.1:9002\"/127.0.0.1:$APP2_PORT\"/" \
    -e "s#\"\.\./\.\./certs/#\"$dir/certs/#" \
    "$cfg/lb.toml" >"$dir/lb.toml"
if grep -n "127.0.0.1:\(6390\|90[0-9][0-9]\|91[0-9][0-9]\|92[0-9][0-9]\|8443\|8080\|8404\)" "$dir"/*.toml; then
  echo "a config still names a port of the real local cluster (above); not starting" >&2; exit 1
fi
"$bin/lb" gen-cert --dir "$dir/certs" >/dev/null

start() { # name, command…
  name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids="$pids $!"
  echo $! >"$dir/$name.pid"
}
# No WSMESH_* overrides from the caller's environment leak into the processes.
unset WSMESH_REDIS_URL WSMESH_INTERNAL_TOKEN
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
start app1 "$bin/app" --config "$dir/app1.toml"
start app2 "$bin/app" --config "$dir/app2.toml"
start subscriber1 "$bin/subscriber" --config "$dir/subscriber1.toml"
start subscriber2 "$bin/subscriber" --config "$dir/subscriber2.toml"
start lb "$bin/lb" --config "$dir/lb.toml"

# Ready: both apps healthy and the lb sees both up (bounded: 30 s).
i=0
until curl -fsS -o /dev/null "http://127.0.0.1:$APP1_PORT/healthz" 2>/dev/null \
   && curl -fsS -o /dev/null "http://127.0.0.1:$APP2_PORT/healthz" 2>/dev/null \
   && [ "$(curl -fsS "http://127.0.0.1:$LB_ADMIN_PORT/api/backends" 2>/dev/null | grep -o '"state":"up"' | wc -l)" -ge 2 ]; do
  i=$((i + 1))
  if [ $i -gt 300 ]; then
    echo "cluster not ready after 30 s; logs:" >&2
    tail -n 5 "$dir"/*.log >&2
    exit 1
  fi
  sleep 0.1
done
echo "# cluster ready: apps :$APP1_PORT :$APP2_PORT, lb https://127.0.0.1:$LB_PORT/ (logs in $dir, removed at exit)"

export WSMESH_APP1_URL="http://127.0.0.1:$APP1_PORT/"
export WSMESH_APP2_URL="http://127.0.0.1:$APP2_PORT/"
export WSMESH_LB_URL="https://127.0.0.1:$LB_PORT/"
export WSMESH_CLUSTER_DIR="$dir"
export WSMESH_APP1_PID_FILE="$dir/app1.pid" WSMESH_APP2_PID_FILE="$dir/app2.pid"
rc=0
"$@" || rc=$?
exit $rc
