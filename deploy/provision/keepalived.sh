#!/usr/bin/env bash
# wsmesh lab — keepalived on one host of the lb pair: the two lbs share
# the virtual IP of configs/vagrant/hosts.env (HOST_VIP) through VRRP, and
# the VIP leaves a host whose lb is unhealthy (deploy/keepalived/check-lb.sh)
# or that is gone. Run by lb.sh lb lb1|lb2 after the lb is up. Idempotent:
# an unchanged config leaves keepalived (and the VIP) alone, a changed one is
# reloaded, not restarted, so the VIP does not move.
# Usage: keepalived.sh keepalived NAME   (NAME = lb1 | lb2)
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
own_stage
name="${2:?usage: keepalived.sh keepalived lb1|lb2}"
load_hosts
case "$name" in lb1|lb2) ;; *) log "unknown lb host $name"; exit 1 ;; esac
self="$(host_addr "$name")"

apt_ensure keepalived curl jq

# VRRP runs on the interface that holds this host's private address.
interface="$(ip -o -4 addr show | awk -v a="$self" '{ split($4, p, "/"); if (p[1] == a) print $2 }' | head -n 1)"
[ -n "$interface" ] || { log "no interface holds $self"; exit 1; }

# keepalived runs the check as `nobody` and refuses a script that anyone but
# root could rewrite: root-owned, in a root-owned directory.
install -D -m 0755 -o root -g root "$STAGE/deploy/keepalived/check-lb.sh" /etc/keepalived/check-lb.sh
tmp="$(mktemp)"
bash "$STAGE/deploy/keepalived/render.sh" "$name" "$STAGE/configs/hosts.env" "$interface" "$NET" /etc/keepalived/check-lb.sh > "$tmp"
out="$(bash "$STAGE/deploy/keepalived/config-test.sh" "$tmp")" || { log "$out"; rm -f "$tmp"; exit 1; }
changed="$(install_if_changed "$tmp" /etc/keepalived/keepalived.conf 0644 root:root)"
rm -f "$tmp"
# Restart=on-failure, and start after the lb (deploy/systemd/keepalived.service.d/).
dropin="$(install_if_changed "$STAGE/deploy/systemd/keepalived.service.d/wsmesh.conf" \
  /etc/systemd/system/keepalived.service.d/wsmesh.conf 0644 root:root)"
[ -z "$dropin" ] || systemctl daemon-reload

systemctl enable keepalived >/dev/null 2>&1
if ! systemctl is-active --quiet keepalived; then
  systemctl restart keepalived
elif [ -n "$changed" ]; then
  systemctl reload keepalived
fi
sleep 3
systemctl is-active --quiet keepalived || { log "keepalived did not start:"; journalctl -u keepalived -n 30 --no-pager || true; exit 1; }
if ip -o -4 addr show dev "$interface" | grep -q " $VIP_ADDR/"; then
  log "keepalived is active on $interface; this host ($name) holds the VIP $VIP_ADDR"
else
  log "keepalived is active on $interface; the VIP $VIP_ADDR is on the peer (or this lb is not healthy yet)"
fi
