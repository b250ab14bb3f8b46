#!/usr/bin/env bash
# Runs the lab's provisioning for real — deploy/provision/redis.sh on the
# redis host, app.sh on app1 (its Redis replica and Sentinel, the app and the
# subscriber), lb.sh on lb1 (the lb and keepalived), then app.sh on app1
# again (idempotence) — as root, each host in a network namespace of its own
# with the address of configs/vagrant/hosts.env, joined by a bridge in a
# namespace of its own, and in the private mount namespace `ip netns exec`
# gives it, where /etc, /usr/local/bin, /run and Redis' directories are the
# host's own temporary copies. So useradd, /etc/wsmesh, the units and
# drop-ins in /etc/systemd/system, /etc/redis and /etc/keepalived change only
# there, and no packet leaves the namespaces. systemd is not running here: a
# small `systemctl` stand-in starts what the installed unit and its drop-ins
# say (EnvironmentFile, User, RuntimeDirectory, ExecStartPre, ExecStart,
# AmbientCapabilities), so the units' lines are exercised too;
# `systemd-analyze verify` (deploy/check.sh) covers their syntax.
# Then it checks: https through the lb and through the VIP (keepalived put
# it on lb1) with the lab CA reaches app1, http redirects, the lb sees app1
# up, app1's node replicates the redis host's master and its Sentinel names
# that master, every service runs as its own user, Redis needs the password
# and has AOF and min-replicas-to-write on.
#
# Usage: deploy/provision-test.sh [BIN_DIR]   (default target/debug)
# Needs root, iproute2, redis-server, redis-sentinel, keepalived, curl, jq,
# openssl; prints "skipped: …" and exits 0 without root. Removes the
# namespaces, their processes and the temporary files on every exit (EXIT
# trap; INT/TERM exit through it).
set -euo pipefail

# The hosts this test provisions (the Vagrantfile's names).
HOSTS=(redis app1 lb1)

if [ "${1:-}" = --step ]; then
  # ---- inside one host's namespace (and its private mount namespace) ----
  HOST="$2" WORK="$3" BIN_DIR="$4" REPO="$5" ROLE="$6"
  H="$WORK/$HOST"
  if [ ! -d "$H/etc" ]; then
    mkdir -p "$H"/{state,usrlocalbin,varlibredis,varlogredis,run}
    cp -a /etc "$H/etc"
    # keepalived (Debian's unit passes DAEMON_ARGS) logs to its log file
    # here, not to the machine's syslog.
    echo 'DAEMON_ARGS="--log-console --log-detail --no-syslog"' > "$H/etc/default/keepalived"
  fi
  mount --bind "$H/etc" /etc
  mount --bind "$H/usrlocalbin" /usr/local/bin
  mount --bind "$H/run" /run
  # Only directories that exist: creating one would change the real
  # filesystem (the mounts are private, the filesystem is not).
  for d in /var/lib/redis:varlibredis /var/log/redis:varlogredis; do
    [ -d "${d%%:*}" ] || continue
    mount --bind "$H/${d##*:}" "${d%%:*}"
    chown redis:redis "$H/${d##*:}"
  done
  export PATH="$WORK/shim:$PATH" WSMESH_TEST_STATE="$H/state"
  export WSMESH_STAGE="$WORK/stage-$HOST"
  # What the Vagrantfile's file provisioners upload.
  rm -rf "$WSMESH_STAGE"; mkdir -p "$WSMESH_STAGE/bin"
  cp -r "$REPO/deploy" "$WSMESH_STAGE/deploy"
  cp -r "$REPO/configs/vagrant" "$WSMESH_STAGE/configs"
  cp -r "$WORK/secrets" "$WSMESH_STAGE/secrets"
  cp -r "$WORK/certs-lb" "$WSMESH_STAGE/certs"
  cp "$BIN_DIR"/{lb,app,subscriber} "$WSMESH_STAGE/bin/"
  echo "--- deploy/provision/$ROLE.sh $ROLE $HOST"
  bash "$REPO/deploy/provision/$ROLE.sh" "$ROLE" "$HOST"
  [ ! -e "$WSMESH_STAGE" ] || { echo "FAIL the stage (with secrets) was left behind"; exit 1; }
  exit 0
fi

if [ "${1:-}" = --check ]; then
  # ---- inside lb1's namespace: what an operator would look at ----
  export WORK="$2" REPO="$3"
  # shellcheck disable=SC1091
  . "$REPO/configs/vagrant/hosts.env"
  lb="$LAB_NET.$HOST_LB1" vip="$LAB_NET.$HOST_VIP" redis="$LAB_NET.$HOST_REDIS" app1="$LAB_NET.$HOST_APP1"
  ca="$WORK/lb1/etc/wsmesh/certs/dev-ca.pem"
  failed=0
  check() { # DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; failed=1; fi
  }
  # app1's state in /api/backends, read as JSON (not by key order, which grows).
  up() {
    curl -s --max-time 2 127.0.0.1:8404/api/backends |
      jq -e 'any(.backends[].servers[]; .name == "app1" and .state == "up")'
  }
  vip_here() { ip -4 -o addr show dev eth0 | grep -q " $vip/"; }
  for _ in $(seq 1 40); do up >/dev/null 2>&1 && vip_here && break; sleep 0.5; done
  ask() { REDISCLI_AUTH="$(cat "$WORK/secrets/redis-password")" redis-cli "$@"; }
  check "lb sees app1 up (/api/backends on the lb's loopback)" up
  check "keepalived put the VIP $vip on lb1" vip_here
  check "https://$lb/healthz through the lb, trusting the lab CA" \
    curl -sf --max-time 3 --cacert "$ca" "https://$lb/healthz"
  check "https://$vip/healthz through the VIP, trusting the lab CA" \
    curl -sf --max-time 3 --cacert "$ca" "https://$vip/healthz"
  check "http://$vip/ redirects to https" \
    bash -c "curl -s --max-time 3 -o /dev/null -w '%{http_code}' http://$vip/ | grep -qx 301"
  check "redis refuses commands without the password" \
    bash -c "redis-cli -h $redis ping 2>&1 | grep -q NOAUTH"
  check "redis has appendonly yes" bash -c "$(declare -f ask); ask -h $redis config get appendonly | grep -qx yes"
  check "redis has min-replicas-to-write 1" \
    bash -c "$(declare -f ask); ask -h $redis config get min-replicas-to-write | tail -n 1 | grep -qx 1"
  check "app1's node is a replica of the redis host's, in sync" \
    bash -c "$(declare -f ask); ask -h $app1 info replication | tr -d '\r' | grep -qx 'master_link_status:up'"
  check "app1's Sentinel names $redis:$REDIS_PORT as master" \
    bash -c "$(declare -f ask); ask -h $app1 -p $SENTINEL_PORT sentinel get-master-addr-by-name wsmesh | paste -sd : | grep -qx $redis:$REDIS_PORT"
  runs_as() { # HOST UNIT USER COMMAND-NAME: the unit's process is COMMAND-NAME as USER
    # USER as that host's /etc/passwd has it (this namespace sees the real one).
    local uid
    uid="$(awk -F: -v u="$3" '$1 == u { print $3 }' "$WORK/$1/etc/passwd")"
    [ -n "$uid" ] && [ "$(ps -o uid=,comm= -p "$(cat "$WORK/$1/state/$2.pid")" | tr -s ' ' | sed 's/^ //')" = "$uid $4" ]
  }
  for svc in app subscriber; do
    check "wsmesh-$svc runs $svc as user wsmesh" runs_as app1 "wsmesh-$svc" wsmesh "$svc"
  done
  check "wsmesh-lb runs lb as user wsmesh" runs_as lb1 wsmesh-lb wsmesh lb
  check "keepalived runs as root" runs_as lb1 keepalived root keepalived
  for h in redis app1; do
    check "redis-server on $h runs as user redis" runs_as "$h" redis-server redis redis-server
    check "redis-sentinel on $h runs as user redis" runs_as "$h" redis-sentinel redis redis-sentinel
  done
  check "/etc/wsmesh/wsmesh.env is not world-readable" bash -c "stat -c %a $WORK/app1/etc/wsmesh/wsmesh.env | grep -qx 640"
  check "/etc/wsmesh/redis-password is not world-readable" bash -c "stat -c %a $WORK/app1/etc/wsmesh/redis-password | grep -qx 640"
  check "the CA's key never reaches an lb" test ! -e "$WORK/lb1/etc/wsmesh/certs/dev-ca.key"
  if [ "$failed" != 0 ]; then
    echo "--- service logs"
    tail -n 15 "$WORK"/*/state/*.log | sed 's/\x1b\[[0-9;]*m//g'
  fi
  exit "$failed"
fi

# ---- outside: make the namespaces, run the steps and the checks, clean up ----
cd "$(dirname "$0")/.."
REPO="$PWD"
BIN_DIR="$(cd "${1:-target/debug}" && pwd)"
if [ "$(id -u)" != 0 ]; then echo "skipped: deploy/provision-test.sh needs root"; exit 0; fi
for tool in ip redis-server redis-sentinel redis-cli keepalived curl jq openssl setpriv; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL $tool is missing"; exit 1; }
done
getent passwd redis >/dev/null || { echo "FAIL no redis user (apt-get install redis-server)"; exit 1; }
# Namespaces are wsmp-<pid>-<host>; leftovers of killed runs are removed.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^wsmp-[0-9]+-[a-z0-9]+$' || true); do
  pid="${ns#wsmp-}"; pid="${pid%%-*}"
  if ! kill -0 "$pid" 2>/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
done
ns() { echo "wsmp-$$-$1"; }
WORK="$(mktemp -d /tmp/wsmesh-prov-XXXXXX)"
chmod 0755 "$WORK"
cleanup() {
  for h in "${HOSTS[@]}" hub; do
    for p in $(ip netns pids "$(ns "$h")" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do ip netns del "$(ns "$h")" 2>/dev/null && break; [ -e "/run/netns/$(ns "$h")" ] || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# systemctl stand-in: starts what a unit and its drop-ins say.
mkdir -p "$WORK/shim" "$WORK/secrets"
cat > "$WORK/shim/systemctl" <<'SHIM'
#!/usr/bin/env bash
# systemctl stand-in for deploy/provision-test.sh: starts what a unit says.
state="$WSMESH_TEST_STATE"
# The last value of KEY in the unit and its drop-ins ("KEY=" resets it).
field() { # UNIT KEY
  local f files=() value=""
  for f in "/lib/systemd/system/$1.service" "/etc/systemd/system/$1.service" /etc/systemd/system/"$1".service.d/*.conf; do
    [ -f "$f" ] && files+=("$f")
  done
  while IFS= read -r line; do value="${line#*=}"; done < <(grep -h "^$2=" "${files[@]}")
  printf '%s' "$value"
}
# $NAME references of a command line replaced by their values, as systemd does.
expand() { # TEXT
  local s="$1" out="" name
  while [[ $s =~ ^([^\$]*)\$([A-Za-z_][A-Za-z0-9_]*)(.*)$ ]]; do
    name="${BASH_REMATCH[2]}"
    out+="${BASH_REMATCH[1]}${!name:-}"
    s="${BASH_REMATCH[3]}"
  done
  printf '%s' "$out$s"
}
stop() {
  [ -f "$state/$1.pid" ] || return 0
  local pid; pid="$(cat "$state/$1.pid")"; kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
case "$1" in
  daemon-reload|enable) exit 0 ;;
  show) echo 0 ;;
  is-active) [ "$2" = --quiet ] && shift; [ -f "$state/$2.pid" ] && kill -0 "$(cat "$state/$2.pid")" 2>/dev/null ;;
  reload) kill -HUP "$(cat "$state/$2.pid")" ;;
  restart)
    u="$2"
    stop "$u"
    env_file="$(field "$u" EnvironmentFile)"; env_file="${env_file#-}"
    pre="$(field "$u" ExecStartPre)"
    start="$(field "$u" ExecStart)"
    user="$(field "$u" User)"; user="${user:-root}"
    rundir="$(field "$u" RuntimeDirectory)"
    if [ -n "$rundir" ]; then install -d -o "$user" -g "$user" "/run/$rundir"; fi
    caps=()
    if [ "$(field "$u" AmbientCapabilities)" = CAP_NET_BIND_SERVICE ]; then
      caps=(--inh-caps +net_bind_service --ambient-caps +net_bind_service)
    fi
    as_user=(setpriv --reuid="$user" --regid="$user" --init-groups "${caps[@]}")
    [ "$user" = root ] || as_user+=(--no-new-privs)
    (
      exec >> "$state/$u.log" 2>&1
      set -a
      if [ -n "$env_file" ] && [ -f "$env_file" ]; then . "$env_file"; fi
      set +a
      # The unit's command lines, variables expanded and split as systemd does here.
      pre="$(expand "$pre")"
      start="$(expand "$start")"
      # shellcheck disable=SC2086
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
openssl rand -hex 32 > "$WORK/secrets/internal-token"
openssl rand -hex 32 > "$WORK/secrets/redis-password"

# The network: one namespace per host on a bridge, as in `lab netns`.
# shellcheck disable=SC1091
. configs/vagrant/hosts.env
ip netns add "$(ns hub)"
ip -n "$(ns hub)" link add br0 type bridge
ip -n "$(ns hub)" link set br0 up
for h in "${HOSTS[@]}"; do
  var="HOST_${h^^}"
  ip netns add "$(ns "$h")"
  ip -n "$(ns "$h")" link set lo up
  ip -n "$(ns hub)" link add "v-$h" type veth peer name eth0 netns "$(ns "$h")"
  ip -n "$(ns hub)" link set "v-$h" master br0 up
  ip -n "$(ns "$h")" addr add "$LAB_NET.${!var}/24" dev eth0
  ip -n "$(ns "$h")" link set eth0 up
done
# The certificate the Vagrantfile makes on the host; the lbs get all but the CA's key.
LB_BIN="$BIN_DIR/lb" bash deploy/provision/certs.sh "$WORK/certs" "$LAB_NET.$HOST_LB1" "$LAB_NET.$HOST_LB2" "$LAB_NET.$HOST_VIP" >/dev/null
mkdir -p "$WORK/certs-lb"
cp "$WORK/certs"/{server.pem,server.key,dev-ca.pem} "$WORK/certs-lb/"

for step in "redis redis" "app app1" "lb lb1" "app app1"; do
  set -- $step
  timeout 300 ip netns exec "$(ns "$2")" bash "$REPO/deploy/provision-test.sh" --step "$2" "$WORK" "$BIN_DIR" "$REPO" "$1"
done
timeout 120 ip netns exec "$(ns lb1)" bash "$REPO/deploy/provision-test.sh" --check "$WORK" "$REPO"
