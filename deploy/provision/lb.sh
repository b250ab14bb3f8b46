#!/usr/bin/env bash
# wsmesh 4-host lab — the lb VM: TLS on 443 (HTTP 80 redirects), backends
# app1 and app2 on their private addresses. Certificates are made here, once,
# by certs.sh (`lb gen-cert`) into /etc/wsmesh/certs/: a lab CA and a server
# certificate for the lb's address. Idempotent.
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
trap cleanup_stage EXIT
load_hosts

ensure_user
install_binaries lb
install_config lb.toml lb.toml
if [ ! -s "$ETC/certs/server.pem" ]; then
  if ! command -v openssl >/dev/null 2>&1; then # certs.sh may need it
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  fi
  install -d -m 0750 -o root -g wsmesh "$ETC/certs"
  LB_BIN=/usr/local/bin/lb bash "$STAGE/deploy/provision/certs.sh" "$ETC/certs" "$LB_ADDR"
  chgrp wsmesh "$ETC/certs/server.pem" "$ETC/certs/server.key"
  chmod 0640 "$ETC/certs/server.pem" "$ETC/certs/server.key"
  chmod 0600 "$ETC/certs/dev-ca.key"
  chmod 0644 "$ETC/certs/dev-ca.pem"
  log "generated certificates in $ETC/certs (trust dev-ca.pem in your browser)"
fi
/usr/local/bin/lb check-config "$ETC/lb.toml"
install_unit wsmesh-lb
start_units wsmesh-lb
