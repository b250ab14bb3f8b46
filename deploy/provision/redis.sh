#!/usr/bin/env bash
# wsmesh lab — the Redis part of a host: a data node and a Sentinel, both
# Debian's (redis-server, redis-sentinel) under their packages' units.
#   redis        the master at a cold start (and the third Sentinel)
#   app1, app2   a replica of the redis host's node (and a Sentinel each);
#                app.sh runs this step first
# Idempotent.
#
# The data node runs /etc/redis/wsmesh.conf (a drop-in of redis-server.service
# names it): Debian's /etc/redis/redis.conf included first for its paths,
# then configs/vagrant/redis.conf and this host's lines
# (deploy/provision/redis-lines.sh). Redis and the Sentinels rewrite that
# file when they change the node's role (CONFIG REWRITE), so provisioning
# rewrites it only when what it generates changed (it keeps a copy in
# /etc/redis/wsmesh.provisioned), and then with the node's current role:
# a provisioning run after a failover never demotes the new master.
#
# The Sentinel runs /etc/redis/wsmesh-sentinel.conf (configs/vagrant/
# sentinel.conf and this host's lines), written once: from then on it is the
# Sentinel's own record of the master, the replicas and the other Sentinels.
# To apply a changed sentinel.conf, remove the file and provision again.
# Usage: redis.sh redis NAME   (NAME = redis | app1 | app2)
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
own_stage
name="${2:?usage: redis.sh redis redis|app1|app2}"
load_hosts
self="$(host_addr "$name")"
case "$name" in redis|app1|app2) ;; *) log "no Redis on host $name"; exit 1 ;; esac

apt_ensure redis-server redis-sentinel
password_file="$STAGE/secrets/redis-password"
cli() { REDISCLI_AUTH="$(secret redis-password)" redis-cli -h "$self" -p "$1" "${@:2}"; }

# The node's role now: "MASTER-HOST MASTER-PORT" for a replica, empty for a
# master. Asked of the running node; at the first run the lab's cold-start
# layout; otherwise what the file says (the node is down).
current_master() {
  local role
  if role="$(cli "$REDIS_PORT" ROLE 2>/dev/null)" && [ -n "$role" ]; then
    case "$(head -n 1 <<< "$role")" in
      master) return 0 ;;
      slave) sed -n '2,3p' <<< "$role" | paste -sd ' ' ; return 0 ;;
    esac
  fi
  if [ -f /etc/redis/wsmesh.conf ]; then
    sed -n 's/^replicaof \([^ ]*\) \([0-9]*\)$/\1 \2/p' /etc/redis/wsmesh.conf | tail -n 1
  elif [ "$name" != redis ]; then
    echo "$REDIS_ADDR $REDIS_PORT"
  fi
}

tmp="$(mktemp)"
{
  echo "# Written by deploy/provision/redis.sh for $name; Redis and the Sentinels rewrite it."
  echo "include /etc/redis/redis.conf"
  lab_config redis.conf
  bash "$STAGE/deploy/provision/redis-lines.sh" server "$self" "$password_file"
} > "$tmp"
changed="$(install_if_changed "$tmp" /etc/redis/wsmesh.provisioned 0640 redis:redis)"
if [ -n "$changed" ] || [ ! -f /etc/redis/wsmesh.conf ]; then
  master="$(current_master)"
  if [ -n "$master" ]; then
    echo "replicaof $master" >> "$tmp"
  fi
  install -m 0640 -o redis -g redis "$tmp" /etc/redis/wsmesh.conf
  log "wrote /etc/redis/wsmesh.conf (${master:+a replica of }${master:-the master})"
fi
rm -f "$tmp"

# The Sentinel's file, once.
if [ ! -f /etc/redis/wsmesh-sentinel.conf ]; then
  tmp="$(mktemp)"
  {
    echo "# Written once by deploy/provision/redis.sh for $name; the Sentinel keeps it up to date."
    lab_config sentinel.conf
    bash "$STAGE/deploy/provision/redis-lines.sh" sentinel "$self" "$password_file"
    echo "# Debian's paths, as in its sentinel.conf."
    echo "dir /var/lib/redis"
    echo "logfile /var/log/redis/redis-sentinel.log"
    echo "pidfile /run/sentinel/redis-sentinel.pid"
  } > "$tmp"
  install -m 0640 -o redis -g redis "$tmp" /etc/redis/wsmesh-sentinel.conf
  rm -f "$tmp"
  changed=changed
  log "wrote /etc/redis/wsmesh-sentinel.conf"
fi

# The units run our files instead of Debian's.
units=""
for unit in redis-server redis-sentinel; do
  units="$units$(install_if_changed "$STAGE/deploy/systemd/$unit.service.d/wsmesh.conf" \
    "/etc/systemd/system/$unit.service.d/wsmesh.conf" 0644 root:root)"
done
[ -z "$units" ] || systemctl daemon-reload
for unit in redis-server redis-sentinel; do
  systemctl enable "$unit" >/dev/null 2>&1
  if [ -n "$changed$units" ] || ! systemctl is-active --quiet "$unit"; then
    systemctl restart "$unit"
  fi
done
for port in "$REDIS_PORT" "$SENTINEL_PORT"; do
  for _ in $(seq 1 30); do
    cli "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 1
  done
  cli "$port" ping | grep -q PONG
done
log "redis-server on $self:$REDIS_PORT ($(cli "$REDIS_PORT" ROLE | head -n 1)), redis-sentinel on $self:$SENTINEL_PORT (master $(cli "$SENTINEL_PORT" SENTINEL get-master-addr-by-name wsmesh | paste -sd :))"
