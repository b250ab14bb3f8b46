#!/usr/bin/env bash
# Runs the lab's provisioning for real — deploy/provision/redis.sh, app.sh
# app1, lb.sh, then app.sh app1 again (idempotence) — as root, inside a
# throwaway network namespace that holds the redis, app1 and lb addresses of
# configs/vagrant/hosts.env, and inside the private mount namespace that
# `ip netns exec` gives it, where /etc, /usr/local/bin and Redis' directories
# are temporary copies. So useradd, /etc/wsmesh, the units in
# /etc/systemd/system and /etc/redis change only there, and no packet leaves
# the namespace. systemd is not running here: a small `systemctl` stand-in
# starts what the installed unit says (EnvironmentFile, User, ExecStartPre,
# ExecStart, AmbientCapabilities), so the units' lines are exercised too;
# `systemd-analyze verify` (deploy/check.sh) covers their syntax.
# Then it checks: https through the lb with the generated CA reaches app1,
# http redirects, the lb sees app1 up, every service runs as its own
# unprivileged user, redis needs the password and has AOF on.
#
# Usage: deploy/provision-test.sh [BIN_DIR]   (default target/debug)
# Needs root, iproute2, redis-server, curl, openssl; prints "skipped: …" and
# exits 0 without root. Removes the namespace, its processes and the
# temporary files on every exit (EXIT trap; INT/TERM exit through it).
set -euo pipefail

if [ "${1:-}" = --inside ]; then
  # ---- inside the namespace (and its private mount namespace) ----
  WORK="$2"
  BIN_DIR="$3"
  REPO="$4"
  mkdir -p "$WORK"/{state,usrlocalbin,varlibredis,varlogredis,runredis,shim,secrets}
  cp -a /etc "$WORK/etc"
  mount --bind "$WORK/etc" /etc
  mount --bind "$WORK/usrlocalbin" /usr/local/bin
  # Only directories that exist: creating one would change the real
  # filesystem (the mounts are private, the filesystem is not).
  for d in /var/lib/redis:varlibredis /var/log/redis:varlogredis /run/redis:runredis; do
    [ -d "${d%%:*}" ] || continue
    mount --bind "$WORK/${d##*:}" "${d%%:*}"
    chown redis:redis "$WORK/${d##*:}"
  done
  cat > "$WORK/shim/systemctl" <<'SHIM'
#!/usr/bin/env bash
# systemctl stand-in for deploy/provision-test.sh: starts what a unit says.
state="$WSMESH_TEST_STATE"
case "$1" in
  daemon-reload|enable) exit 0 ;;
  show) echo 0 ;;
  is-active) [ "$2" = --quiet ] && shift; [ -f "$state/$2.pid" ] && kill -0 "$(cat "$state/$2.pid")" 2>/dev/null ;;
  restart)
    u="$2"
    if [ -f "$state/$u.pid" ]; then
      pid="$(cat "$state/$u.pid")"; kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ "$u" = redis-server ]; then # as Debian's unit: /etc/redis/redis.conf as user redis
      setpriv --reuid=redis --regid=redis --init-groups redis-server /etc/redis/redis.conf \
        --daemonize no --supervised no --logfile "" >> "$state/$u.log" 2>&1 &
      echo $! > "$state/$u.pid"; exit 0
    fi
    f="/etc/systemd/system/$u.service"
    env_file="$(sed -n 's/^EnvironmentFile=//p' "$f")"
    pre="$(sed -n 's/^ExecStartPre=//p' "$f")"
    start="$(sed -n 's/^ExecStart=//p' "$f")"
    user="$(sed -n 's/^User=//p' "$f")"
    caps=()
    if grep -q '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' "$f"; then
      caps=(--inh-caps +net_bind_service --ambient-caps +net_bind_service)
    fi
    as_user=(setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs "${caps[@]}")
    (
      exec >> "$state/$u.log" 2>&1
      set -a
      if [ -n "$env_file" ]; then . "$env_file"; fi
      set +a
      # shellcheck disable=SC2086 # the unit's command lines, split as systemd does here
      if [ -n "$pre" ]; then "${as_user[@]}" $pre || exit 1; fi
      # shellcheck disable=SC2086
      exec "${as_user[@]}" $start
    ) &
    echo $! > "$state/$u.pid" ;;
  *) echo "systemctl stand-in: $*" >&2 ;;
esac
SHIM
  printf '#!/usr/bin/env bash\ntail -n 30 "$WSMESH_TEST_STATE"/*.log\n' > "$WORK/shim/journalctl"
  chmod +x "$WORK/shim/"*
  export PATH="$WORK/shim:$PATH" WSMESH_TEST_STATE="$WORK/state"
  openssl rand -hex 32 > "$WORK/secrets/internal-token"
  openssl rand -hex 32 > "$WORK/secrets/redis-password"
  export WSMESH_STAGE="$WORK/stage"
  for step in "redis redis" "app app1" "lb lb" "app app1"; do
    set -- $step
    echo "--- deploy/provision/$1.sh $1 $2"
    # What the Vagrantfile's file provisioners upload.
    rm -rf "$WSMESH_STAGE"; mkdir -p "$WSMESH_STAGE/bin"
    cp -r "$REPO/deploy" "$WSMESH_STAGE/deploy"
    cp -r "$REPO/configs/vagrant" "$WSMESH_STAGE/configs"
    cp -r "$WORK/secrets" "$WSMESH_STAGE/secrets"
    cp "$BIN_DIR"/{lb,app,subscriber} "$WSMESH_STAGE/bin/"
    bash "$REPO/deploy/provision/$1.sh" "$1" "$2"
    [ ! -e "$WSMESH_STAGE" ] || { echo "FAIL the stage (with secrets) was left behind"; exit 1; }
  done

  # shellcheck disable=SC1091
  . "$REPO/configs/vagrant/hosts.env"
  lb="$LAB_NET.$HOST_LB1"
  redis="$LAB_NET.$HOST_REDIS"
  failed=0
  check() { # DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; failed=1; fi
  }
  # app1's state in /api/backends, read as JSON (not by key order, which grows).
  up() {
    curl -s --max-time 2 127.0.0.1:8404/api/backends | python3 -c '
import json, sys
servers = [s for b in json.load(sys.stdin)["backends"] for s in b["servers"]]
sys.exit(0 if any(s["name"] == "app1" and s["state"] == "up" for s in servers) else 1)'
  }
  for _ in $(seq 1 20); do up && break; sleep 0.5; done
  check "lb sees app1 up (/api/backends on the lb's loopback)" up
  check "https://$lb/healthz through the lb, trusting /etc/wsmesh/certs/dev-ca.pem" \
    curl -sf --max-time 3 --cacert /etc/wsmesh/certs/dev-ca.pem "https://$lb/healthz"
  check "http://$lb/ redirects to https" \
    bash -c "curl -s --max-time 3 -o /dev/null -w '%{http_code}' http://$lb/ | grep -qx 301"
  check "redis refuses commands without the password" \
    bash -c "redis-cli -h $redis ping 2>&1 | grep -q NOAUTH"
  check "redis has appendonly yes" \
    bash -c "REDISCLI_AUTH=\$(cat $WORK/secrets/redis-password) redis-cli -h $redis config get appendonly | grep -qx yes"
  runs_as() { # UNIT USER COMMAND-NAME: the unit's process is COMMAND-NAME as USER
    [ "$(ps -o user=,comm= -p "$(cat "$WORK/state/$1.pid")" | tr -s ' ')" = "$2 $3" ]
  }
  for svc in lb app subscriber; do
    check "wsmesh-$svc runs $svc as user wsmesh" runs_as "wsmesh-$svc" wsmesh "$svc"
  done
  check "redis-server runs as user redis" runs_as redis-server redis redis-server
  check "/etc/wsmesh/wsmesh.env is not world-readable" bash -c "stat -c %a /etc/wsmesh/wsmesh.env | grep -qx 640"
  check "the lb's CA key stays root's" bash -c "stat -c %U:%a /etc/wsmesh/certs/dev-ca.key | grep -qx root:600"
  if [ "$failed" != 0 ]; then
    echo "--- service logs"
    tail -n 15 "$WORK"/state/*.log | sed 's/\x1b\[[0-9;]*m//g'
  fi
  exit "$failed"
fi

# ---- outside: make the namespace, run the inside part, clean up ----
cd "$(dirname "$0")/.."
REPO="$PWD"
BIN_DIR="$(cd "${1:-target/debug}" && pwd)"
if [ "$(id -u)" != 0 ]; then echo "skipped: deploy/provision-test.sh needs root"; exit 0; fi
for tool in ip redis-server redis-cli curl openssl setpriv; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL $tool is missing"; exit 1; }
done
getent passwd redis >/dev/null || { echo "FAIL no redis user (apt-get install redis-server)"; exit 1; }
# Leftovers of killed runs: wsm-<pid>-prov whose pid is gone.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^wsm-[0-9]+-prov$' || true); do
  pid="${ns#wsm-}"; pid="${pid%-prov}"
  if ! kill -0 "$pid" 2>/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
done
NS="wsm-$$-prov"
WORK="$(mktemp -d /tmp/wsmesh-prov-XXXXXX)"
chmod 0755 "$WORK"
cleanup() {
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do ip netns del "$NS" 2>/dev/null && break; sleep 0.1; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck disable=SC1091
. configs/vagrant/hosts.env
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
for h in "$HOST_LB1" "$HOST_APP1" "$HOST_REDIS"; do ip -n "$NS" addr add "$LAB_NET.$h/24" dev eth0; done
ip -n "$NS" link set eth1 up
ip -n "$NS" link set eth0 up
timeout 300 ip netns exec "$NS" bash "$REPO/deploy/provision-test.sh" --inside "$WORK" "$BIN_DIR" "$REPO"
