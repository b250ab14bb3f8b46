#!/usr/bin/env bash
# wsmesh lab — an lb host (lb1 or lb2): TLS on 443 (HTTP 80 redirects),
# backends app1 and app2 on their private addresses, then keepalived
# (keepalived.sh), which puts the virtual IP on one lb of the pair.
# The certificates come from the host (the Vagrantfile makes them once with
# certs.sh for lb1, lb2 and the VIP, so both lbs present the same one and a
# client trusts whichever holds the VIP): $WSMESH_STAGE/certs/ holds
# server.pem, server.key and dev-ca.pem; the CA's key stays on the host.
# Idempotent.
# Usage: lb.sh lb NAME   (NAME = lb1 | lb2)
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
own_stage
name="${2:?usage: lb.sh lb lb1|lb2}"
load_hosts
case "$name" in lb1|lb2) ;; *) log "unknown lb host $name"; exit 1 ;; esac

ensure_user
install_binaries lb
install_config lb.toml lb.toml
install -d -m 0750 -o root -g wsmesh "$ETC/certs"
for f in server.pem server.key dev-ca.pem; do
  [ -s "$STAGE/certs/$f" ] || { log "$STAGE/certs/$f is missing (the Vagrantfile makes it)"; exit 1; }
done
install_if_changed "$STAGE/certs/server.pem" "$ETC/certs/server.pem" 0640 root:wsmesh >/dev/null
install_if_changed "$STAGE/certs/server.key" "$ETC/certs/server.key" 0640 root:wsmesh >/dev/null
install_if_changed "$STAGE/certs/dev-ca.pem" "$ETC/certs/dev-ca.pem" 0644 root:root >/dev/null
/usr/local/bin/lb check-config "$ETC/lb.toml"
install_unit wsmesh-lb
start_units wsmesh-lb
run_step keepalived.sh keepalived "$name"
