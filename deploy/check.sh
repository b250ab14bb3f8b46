#!/usr/bin/env bash
# Static checks of the lab (deploy/, configs/vagrant/, the Vagrantfile) and of
# every committed config, run by `make test` after the binaries are built (so
# it uses the real parsers):
#   1. `ruby -c Vagrantfile` (installs ruby with apt when missing, as root)
#   2. bash -n on the provisioning and keepalived scripts
#   3. `systemd-analyze verify` on the units in deploy/systemd/, and on
#      Debian's keepalived, redis-server and redis-sentinel units with the
#      lab's drop-ins. The units
#      name /usr/local/bin/{lb,app,subscriber} as on the VMs; verify needs
#      those to exist, so it checks copies whose ExecStart/ExecStartPre point
#      at the binaries built in $WSMESH_BIN_DIR (default target/debug) and
#      nothing else changed. Any warning fails the check (unknown keys,
#      bad values, missing binaries).
#   4. `<bin> check-config` on every file in configs/ (app*, subscriber*,
#      lb*). configs/vagrant/ files are checked as installed on the VMs:
#      /etc/wsmesh/ standing for a directory with the secrets the
#      provisioning writes there (internal-token, redis-password) and the
#      units' environment (WSMESH_INTERNAL_TOKEN, deploy/provision/common.sh);
#      lb.toml next to certificates made by deploy/provision/certs.sh, as on
#      the lb VMs; other lb configs as copies in the repository's layout
#      next to certificates from `lb gen-cert`.
#   4b. The Redis and Sentinel configs of each Redis host (redis, app1,
#      app2: configs/vagrant/redis.conf or sentinel.conf followed by what
#      deploy/provision/redis-lines.sh prints for that host) load for real:
#      redis-server and redis-sentinel started with each on a loopback port
#      in a temporary directory, asked for the settings that matter
#      (min-replicas-*, replicaof, the Sentinels' quorum and timing), shut.
#   5. Every 192.168.56.x address in configs/vagrant/ is a host of
#      configs/vagrant/hosts.env, and each app listens on its own host's;
#      the lb's check timeout is above the apps' redis.command_timeout.
#   6. As root: deploy/provision-test.sh runs the provisioning scripts for
#      real (redis, app1, lb1 with keepalived), each host in a throwaway
#      network + mount namespace, and checks the result.
#   7. The lb pair (deploy/keepalived/): `keepalived --config-test` on the
#      config rendered for lb1 and for lb2 (and on a broken one, which must
#      fail), their addresses against hosts.env, and check-lb.sh run against
#      a small HTTP server on loopback that plays the lb's admin API:
#      healthy, 503, no server up or reachable, every server answering 503
#      (healthy: a Redis failover must not move the VIP), wrong token,
#      nothing listening.
#      Installs keepalived and jq with apt when missing, as for ruby.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT="$PWD"
BIN_DIR="${WSMESH_BIN_DIR:-$ROOT/target/debug}"
passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Installs the Debian package PACKAGE when COMMAND is missing: as root, or
# through sudo; quietly does nothing otherwise (the check then says what is
# missing).
ensure_command() { # COMMAND PACKAGE WHAT-FOR
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 0
    sudo=(sudo)
  fi
  echo "installing $2 (for $3)"
  { "${sudo[@]}" apt-get install -y -qq "$2" || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "$2"; }; } >/dev/null 2>&1
}

# 1. Vagrantfile syntax.
ensure_command ruby ruby "ruby -c Vagrantfile"
if ! command -v ruby >/dev/null 2>&1; then
  bad "ruby -c Vagrantfile: ruby is missing and could not be installed (apt-get install -y ruby)"
elif out="$(ruby -c Vagrantfile 2>&1)"; then
  ok "ruby -c Vagrantfile: $out"
else
  bad "ruby -c Vagrantfile: $out"
fi

# 1b. The Vagrantfile, loaded for real (a copy in a temporary root, since
# loading it generates secrets): five VMs with the addresses of hosts.env,
# and the 192.168.33 layout through WSMESH_LAB_NET.
if command -v ruby >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  . configs/vagrant/hosts.env
  mkdir -p "$tmp/vf/configs/vagrant"
  cp Vagrantfile "$tmp/vf/"
  cp configs/vagrant/hosts.env "$tmp/vf/configs/vagrant/"
  for net in "$LAB_NET" 192.168.33; do
    want="$(printf '%s\n' "redis $net.$HOST_REDIS" "app1 $net.$HOST_APP1" "app2 $net.$HOST_APP2" "lb1 $net.$HOST_LB1" "lb2 $net.$HOST_LB2")"
    got="$(cd "$tmp/vf" && WSMESH_LAB_NET="$net" ruby "$ROOT/deploy/vagrantfile-check.rb" 2>&1)"
    if [ "$got" = "$want" ]; then
      ok "Vagrantfile loads: redis, app1, app2, lb1, lb2 on $net.x as in hosts.env"
    else
      bad "Vagrantfile with WSMESH_LAB_NET=$net: got [$got], want [$want]"
    fi
  done
fi

# 2. Provisioning scripts parse.
for s in deploy/provision/*.sh deploy/keepalived/*.sh deploy/check.sh deploy/provision-test.sh; do
  if out="$(bash -n "$s" 2>&1)"; then ok "bash -n $s"; else bad "bash -n $s: $out"; fi
done

# 3. systemd units.
missing=""
for b in lb app subscriber; do [ -x "$BIN_DIR/$b" ] || missing="$missing $b"; done
if [ -n "$missing" ]; then
  bad "binaries missing in $BIN_DIR:$missing (cargo build -p lb -p app -p subscriber)"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  bad "systemd-analyze is missing (apt-get install -y systemd)"
else
  mkdir -p "$tmp/units"
  for u in deploy/systemd/*.service; do
    sed "s|/usr/local/bin/|$BIN_DIR/|g" "$u" > "$tmp/units/$(basename "$u")"
  done
  for u in "$tmp"/units/*.service; do
    name="deploy/systemd/$(basename "$u")"
    out="$(systemd-analyze verify "$u" 2>&1)"
    rc=$?
    if [ $rc = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $name"; else bad "systemd-analyze verify $name: $out"; fi
  done
  # The lab's drop-ins, on Debian's units (verify reads the drop-in
  # directory next to the unit it is given).
  ensure_command keepalived keepalived "keepalived --config-test"
  ensure_command redis-sentinel redis-sentinel "the Sentinel configs"
  for unit in keepalived redis-server redis-sentinel; do
    debian_unit="/lib/systemd/system/$unit.service"
    dropin="deploy/systemd/$unit.service.d/wsmesh.conf"
    if [ ! -f "$debian_unit" ]; then
      bad "systemd-analyze verify $unit.service + $dropin: no $debian_unit (apt-get install -y $unit)"
      continue
    fi
    mkdir -p "$tmp/debunits/$unit"
    cp "$debian_unit" "$tmp/debunits/$unit/"
    cp -r "deploy/systemd/$unit.service.d" "$tmp/debunits/$unit/"
    out="$(systemd-analyze verify "$tmp/debunits/$unit/$unit.service" 2>&1)"
    rc=$?
    if [ $rc = 0 ] && [ -z "$out" ]; then
      ok "systemd-analyze verify $unit.service with $dropin"
    else
      bad "systemd-analyze verify $unit.service with $dropin: $out"
    fi
  done
fi

# 4. check-config on every config.
# shellcheck disable=SC1091
. configs/vagrant/hosts.env
unit_env=("WSMESH_INTERNAL_TOKEN=check-token")
# /etc/wsmesh of an app host, as the provisioning fills it.
mkdir -p "$tmp/etc-wsmesh"
echo check-token > "$tmp/etc-wsmesh/internal-token"
echo check-password > "$tmp/etc-wsmesh/redis-password"
check_config() { # BIN FILE SHOWN-AS [ENV...]
  local bin="$1" file="$2" shown="$3" out
  shift 3
  if [ ! -x "$BIN_DIR/$bin" ]; then bad "$bin check-config $shown: no $BIN_DIR/$bin"; return; fi
  if out="$(env -u WSMESH_REDIS_URL -u WSMESH_INTERNAL_TOKEN -u WSMESH_ADMIN_TOKEN "$@" "$BIN_DIR/$bin" check-config "$file" 2>&1)"; then
    ok "$bin check-config $shown"
  else
    bad "$bin check-config $shown: $out"
  fi
}
for f in configs/*/*.toml; do
  base="$(basename "$f")"
  dir="$(basename "$(dirname "$f")")"
  case "$base" in
    app*.toml) bin=app ;;
    subscriber*.toml) bin=subscriber ;;
    lb*.toml) bin=lb ;;
    *) bad "$f: no binary checks this file"; continue ;;
  esac
  if [ "$dir" = vagrant ] && [ "$bin" = lb ]; then
    # As on the lb VM: /etc/wsmesh/lb.toml next to certs/ made by lb gen-cert.
    mkdir -p "$tmp/lb/certs"
    cp "$f" "$tmp/lb/$base"
    if [ -x "$BIN_DIR/lb" ] && out="$(LB_BIN="$BIN_DIR/lb" bash deploy/provision/certs.sh "$tmp/lb/certs" "$LAB_NET.$HOST_LB1" 2>&1)"; then
      check_config lb "$tmp/lb/$base" "$f (next to certs.sh certificates)"
    else
      bad "lb gen-cert for $f: ${out:-no lb binary}"
    fi
  elif [ "$bin" = lb ]; then
    # Other lb configs name certificates relative to the repository (e.g.
    # ../../certs/, made by `make up`): check a copy in the same layout under
    # a temporary root, with certificates from `lb gen-cert`, so the check
    # neither needs nor touches the repository's certs/.
    mkdir -p "$tmp/$dir/configs/$dir"
    cp "$f" "$tmp/$dir/configs/$dir/$base"
    if [ -x "$BIN_DIR/lb" ] && out="$("$BIN_DIR/lb" gen-cert --dir "$tmp/$dir/certs" 2>&1)"; then
      check_config lb "$tmp/$dir/configs/$dir/$base" "$f (next to lb gen-cert certificates)"
    else
      bad "lb gen-cert for $f: ${out:-no lb binary}"
    fi
  elif [ "$dir" = vagrant ]; then
    sed "s|/etc/wsmesh/|$tmp/etc-wsmesh/|g" "$f" > "$tmp/etc-wsmesh/$base"
    check_config "$bin" "$tmp/etc-wsmesh/$base" "$f (as installed, with the units' environment)" "${unit_env[@]}"
  else
    check_config "$bin" "$f" "$f"
  fi
done

# 4b. The Redis and Sentinel configs of each Redis host load.
redis_config_check() { # KIND(server|sentinel) HOST ADDRESS [MASTER PORT]
  local kind="$1" host="$2" addr="$3" dir="$tmp/redis-$1-$2" port pid out shared=redis.conf program=redis-server
  [ "$kind" = sentinel ] && shared=sentinel.conf program=redis-sentinel
  mkdir -p "$dir"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  {
    cat "configs/vagrant/$shared"
    bash deploy/provision/redis-lines.sh "$kind" "$addr" "$tmp/etc-wsmesh/redis-password" "${@:4}"
    # Here, not on the host: loopback only, a free port, this directory.
    printf 'bind 127.0.0.1\nport %s\ndir %s\nlogfile %s/log\ndaemonize no\n' "$port" "$dir" "$dir"
  } > "$dir/conf"
  "$program" "$dir/conf" > /dev/null 2>&1 &
  pid=$!
  ask() { REDISCLI_AUTH=check-password redis-cli -p "$port" "$@" 2>/dev/null; }
  for _ in $(seq 1 50); do ask PING | grep -q PONG && break; sleep 0.1; done
  if [ "$kind" = server ]; then
    out="$(ask CONFIG GET min-replicas-to-write; ask CONFIG GET min-replicas-max-lag; ask CONFIG GET replicaof; ask CONFIG GET replica-announce-ip; ask CONFIG GET appendonly)"
    want="$(printf '%s\n' min-replicas-to-write 1 min-replicas-max-lag 10 replicaof "${4:+$4 $5}" replica-announce-ip "$addr" appendonly yes)"
  else
    out="$(ask SENTINEL master wsmesh | paste -sd ' ' | grep -oE '(^| )(ip|port|quorum|down-after-milliseconds|failover-timeout) [^ ]+' | sed 's/^ //')"
    want="$(printf '%s\n' "ip $LAB_NET.$HOST_REDIS" "port $REDIS_PORT" "down-after-milliseconds 3000" "quorum 2" "failover-timeout 20000")"
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ "$out" = "$want" ]; then
    ok "$program loads configs/vagrant/$shared + redis-lines.sh $kind for $host"
  else
    bad "$program with configs/vagrant/$shared for $host: got [$out], want [$want] (log: $(tail -n 3 "$dir/log" 2>/dev/null))"
  fi
}
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
  bad "redis-server, redis-sentinel or python3 is missing (apt-get install -y redis-server redis-sentinel python3)"
else
  redis_config_check server redis "$LAB_NET.$HOST_REDIS"
  for h in APP1 APP2; do
    var="HOST_$h"
    redis_config_check server "${h,,}" "$LAB_NET.${!var}" "$LAB_NET.$HOST_REDIS" "$REDIS_PORT"
  done
  for h in REDIS APP1 APP2; do
    var="HOST_$h"
    redis_config_check sentinel "${h,,}" "$LAB_NET.${!var}"
  done
fi

# 5. Addresses of configs/vagrant/ against hosts.env.
hosts=" $HOST_CLIENT $HOST_LB1 $HOST_LB2 $HOST_VIP $HOST_APP1 $HOST_APP2 $HOST_REDIS "
net_re="${LAB_NET//./\\.}\.[0-9]+"
for f in configs/vagrant/*.toml configs/vagrant/*.conf; do
  unknown=""
  for a in $(grep -v '^[[:space:]]*#' "$f" | grep -oE "$net_re" | sort -u); do
    case "$hosts" in *" ${a##*.} "*) ;; *) unknown="$unknown $a" ;; esac
  done
  if [ -z "$unknown" ]; then ok "addresses in $f are hosts of hosts.env"; else bad "$f names addresses not in hosts.env:$unknown"; fi
done
for n in 1 2; do
  var="HOST_APP$n"
  want="$LAB_NET.${!var}:"
  if grep -qE "^public = \"$want" "configs/vagrant/app$n.toml"; then
    ok "configs/vagrant/app$n.toml listens on app$n's address"
  else
    bad "configs/vagrant/app$n.toml: listen.public is not on $want"
  fi
done

# 5b. The lab's timings that depend on each other: the lb's check must wait
# longer than an app's Redis commands, so an app whose Redis is failing over
# answers 503 before the check gives up (an answer: marked down, tunnels
# kept) instead of looking dead (no answer: every tunnel closed).
if out="$(python3 - <<'PY' 2>&1
import re, tomllib
def secs(v):
    n, unit = re.fullmatch(r"([0-9.]+)(ms|s|m)", v).groups()
    return float(n) * {"ms": 0.001, "s": 1, "m": 60}[unit]
lb = tomllib.load(open("configs/vagrant/lb.toml", "rb"))
check = secs(lb["backend"][0]["check"]["timeout"])
for n in (1, 2):
    app = tomllib.load(open(f"configs/vagrant/app{n}.toml", "rb"))
    redis = secs(app["redis"].get("command_timeout", "2s"))
    assert check > redis, f"lb check timeout {check}s is not above app{n}'s redis.command_timeout {redis}s"
print(f"lb check timeout {check:g}s > the apps' redis.command_timeout")
PY
)"; then
  ok "configs/vagrant: $out"
else
  bad "configs/vagrant: $out"
fi

# 6. The provisioning scripts, run for real in a throwaway namespace (root only).
if [ "$(id -u)" != 0 ]; then
  echo "skip deploy/provision-test.sh: needs root"
elif out="$(bash deploy/provision-test.sh "$BIN_DIR" 2>&1)"; then
  ok "deploy/provision-test.sh: redis.sh redis, app.sh app1, lb.sh lb1 (keepalived), app.sh app1 again, each host in its own namespace; $(echo "$out" | grep -c '^ok ') checks"
else
  echo "$out" | tail -n 40
  bad "deploy/provision-test.sh"
fi

# 7. The lb pair: keepalived configs and the check script.
ensure_command keepalived keepalived "keepalived --config-test"
ensure_command jq jq "deploy/keepalived/check-lb.sh"
# The config names a real interface (keepalived checks it exists): here the
# one of the default route, else the first one that is not loopback.
iface="$(ip -o route show default 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')"
[ -n "$iface" ] || iface="$(ip -o link show 2>/dev/null | awk -F': ' '$2 != "lo" { sub(/@.*/, "", $2); print $2; exit }')"
if ! command -v keepalived >/dev/null 2>&1; then
  bad "keepalived is missing and could not be installed (apt-get install -y keepalived)"
elif [ -z "$iface" ]; then
  bad "keepalived --config-test: no network interface but lo to name in the config"
else
  for n in 1 2; do
    conf="$tmp/keepalived-lb$n.conf"
    if ! out="$(bash deploy/keepalived/render.sh "lb$n" configs/vagrant/hosts.env "$iface" "" "$ROOT/deploy/keepalived/check-lb.sh" 2>&1 > "$conf")"; then
      bad "deploy/keepalived/render.sh lb$n: $out"
      continue
    fi
    if out="$(bash deploy/keepalived/config-test.sh "$conf")"; then
      ok "keepalived --config-test on the config rendered for lb$n"
    else
      bad "$out"
    fi
    if [ "$n" = 1 ]; then self="$HOST_LB1" peer="$HOST_LB2" prio=150; else self="$HOST_LB2" peer="$HOST_LB1" prio=100; fi
    want="$(printf '%s\n' "state BACKUP" "nopreempt" "priority $prio" "unicast_src_ip $LAB_NET.$self" "$LAB_NET.$peer" "$LAB_NET.$HOST_VIP/24 dev $iface")"
    got="$(grep -oE "unicast_src_ip [0-9.]+|^ +$LAB_NET\.[0-9]+\$|[0-9.]+/24 dev [^ ]+|priority [0-9]+|^ *nopreempt|state [A-Z]+" "$conf" | sed 's/^ *//')"
    if [ "$got" = "$want" ]; then
      ok "keepalived config of lb$n: itself $LAB_NET.$self, peer $LAB_NET.$peer, VIP $LAB_NET.$HOST_VIP, priority $prio, BACKUP + nopreempt"
    else
      bad "keepalived config of lb$n: got [$got], want [$want]"
    fi
  done
  # A broken config must fail the same test (the pass above is not vacuous).
  sed 's/^\( *\)priority /\1priorty /' "$tmp/keepalived-lb1.conf" > "$tmp/keepalived-broken.conf"
  if bash deploy/keepalived/config-test.sh "$tmp/keepalived-broken.conf" >/dev/null; then
    bad "keepalived --config-test passes a config with a misspelt keyword"
  else
    ok "keepalived --config-test fails a config with a misspelt keyword"
  fi
fi

# check-lb.sh against a stand-in for the lb's admin API on loopback; the
# answer is read from $tmp/admin-mode at each request.
if ! command -v jq >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
  bad "check-lb.sh: jq or python3 is missing (apt-get install -y jq python3)"
else
  cat > "$tmp/admin.py" <<'PY'
import http.server, json, sys
mode_file = sys.argv[1]
def servers(*states):
    return json.dumps({"backends": [{"name": "apps", "servers": [
        {"name": f"app{i + 1}", "state": s, "check": {"status": c}}
        for i, (s, c) in enumerate(states)]}]}).encode()
class Admin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mode = open(mode_file).read().strip()
        status, body = 200, servers(("down", "L4CON"), ("up", "L7OK"))
        if self.path != "/api/backends":
            status, body = 404, b'{"error":"not found"}'
        elif mode == "503":
            status, body = 503, b'{"error":"unavailable"}'
        elif mode == "all-down":
            body = servers(("down", "L4TOUT"), ("maint", "L4CON"))
        elif mode == "all-503":
            body = servers(("down", "L7STS"), ("down", "L7STS"))
        elif mode == "token" and self.headers.get("Authorization") != "Bearer check-admin-token":
            status, body = 401, b'{"error":"missing or wrong bearer token"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Admin)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
  echo healthy > "$tmp/admin-mode"
  echo check-admin-token > "$tmp/admin-token"
  python3 "$tmp/admin.py" "$tmp/admin-mode" > "$tmp/admin-port" 2>&1 &
  admin_pid=$!
  for _ in $(seq 1 50); do [ -s "$tmp/admin-port" ] && break; sleep 0.1; done
  port="$(head -n 1 "$tmp/admin-port")"
  check_lb() { # EXPECT(pass|fail) MODE DESCRIPTION [TOKEN_FILE]
    local want="$1" mode="$2" what="$3" got=fail
    echo "$mode" > "$tmp/admin-mode"
    if bash deploy/keepalived/check-lb.sh "127.0.0.1:$port" "${4:-}" >/dev/null 2>&1; then got=pass; fi
    if [ "$got" = "$want" ]; then ok "check-lb.sh: $what"; else bad "check-lb.sh: $what (it answered $got)"; fi
  }
  check_lb pass healthy "healthy when the admin API lists a server up"
  check_lb fail 503 "unhealthy when the admin API answers 503"
  check_lb fail all-down "unhealthy when no server is up or reachable (L4CON, L4TOUT)"
  check_lb pass all-503 "healthy when every server is down but answers (503 during a Redis failover)"
  check_lb pass token "healthy with the admin token from its file" "$tmp/admin-token"
  check_lb fail token "unhealthy without the admin token the lb wants"
  kill "$admin_pid" 2>/dev/null
  wait "$admin_pid" 2>/dev/null
  check_lb fail healthy "unhealthy when nothing listens"
fi

echo "deploy/check.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]
