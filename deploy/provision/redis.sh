#!/usr/bin/env bash
# wsmesh 4-host lab — the redis VM: Debian's redis-server, bound to its
# private address (and loopback for redis-cli), with a password and AOF
# persistence (configs/vagrant/redis.conf). Idempotent.
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
trap cleanup_stage EXIT
load_hosts

apt_ensure redis-server

tmp="$(mktemp)"
{
  cat "$STAGE/configs/redis.conf"
  echo
  echo "# Host-specific, from configs/vagrant/hosts.env and the lab's secret."
  echo "bind $REDIS_ADDR 127.0.0.1"
  echo "requirepass $(secret redis-password)"
} > "$tmp"
changed="$(install_if_changed "$tmp" /etc/redis/wsmesh.conf 0640 redis:redis)"
rm -f "$tmp"

# Debian's redis.conf stays as shipped apart from one include at its end
# (the last occurrence of a directive wins).
if ! grep -qx "include /etc/redis/wsmesh.conf" /etc/redis/redis.conf; then
  echo "include /etc/redis/wsmesh.conf" >> /etc/redis/redis.conf
  changed=changed
fi

systemctl enable redis-server >/dev/null 2>&1
if [ -n "$changed" ] || ! systemctl is-active --quiet redis-server; then
  systemctl restart redis-server
fi
for _ in $(seq 1 30); do
  REDISCLI_AUTH="$(secret redis-password)" redis-cli -h "$REDIS_ADDR" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  sleep 1
done
REDISCLI_AUTH="$(secret redis-password)" redis-cli -h "$REDIS_ADDR" -p "$REDIS_PORT" ping | grep -q PONG
log "redis-server answers on $REDIS_ADDR:$REDIS_PORT (appendonly $(REDISCLI_AUTH="$(secret redis-password)" redis-cli -h "$REDIS_ADDR" config get appendonly | tail -1))"
