#!/usr/bin/env bash
# wsmesh 4-host lab — the lb VM: TLS on 443 (HTTP 80 redirects), backends
# app1 and app2 on their private addresses. Certificates are made here, once,
# by certs.sh (`lb gen-cert`) into /etc/wsmesh/certs/: a lab CA and a server
# certificate for the lb's address. Idempotent.
# Usage: lb.sh lb NAME   (NAME = lb: the single lb; lb1 | lb2: one of the lb
# pair on the virtual IP, which also runs keepalived.sh, and whose
# certificate names the VIP too)
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
trap cleanup_stage EXIT
name="${2:-lb}"
load_hosts
case "$name" in
  lb) cert_addrs=("$LB_ADDR") ;;
  lb1) cert_addrs=("$LB_ADDR" "$VIP_ADDR") ;;
  lb2) cert_addrs=("$LB2_ADDR" "$VIP_ADDR") ;;
  *) log "unknown lb host $name"; exit 1 ;;
esac

ensure_user
install_binaries lb
install_config lb.toml lb.toml
if [ ! -s "$ETC/certs/server.pem" ]; then
  apt_ensure openssl # certs.sh may need it
  install -d -m 0750 -o root -g wsmesh "$ETC/certs"
  LB_BIN=/usr/local/bin/lb bash "$STAGE/deploy/provision/certs.sh" "$ETC/certs" "${cert_addrs[@]}"
  chgrp wsmesh "$ETC/certs/server.pem" "$ETC/certs/server.key"
  chmod 0640 "$ETC/certs/server.pem" "$ETC/certs/server.key"
  chmod 0600 "$ETC/certs/dev-ca.key"
  chmod 0644 "$ETC/certs/dev-ca.pem"
  log "generated certificates in $ETC/certs (trust dev-ca.pem in your browser)"
fi
/usr/local/bin/lb check-config "$ETC/lb.toml"
install_unit wsmesh-lb
start_units wsmesh-lb
case "$name" in
  lb1|lb2) bash "$STAGE/deploy/provision/keepalived.sh" keepalived "$name" ;;
esac
