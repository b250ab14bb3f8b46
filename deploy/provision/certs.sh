#!/usr/bin/env bash
# wsmesh lab — the lab CA and the lbs' server certificate, made once on the
# host for both lbs and the VIP (the Vagrantfile, into .vagrant/wsmesh-certs/;
# `lab netns` and deploy/provision-test.sh run this same script). Files, as
# `lb gen-cert` names them:
#   dev-ca.pem (trust this one), dev-ca.key, server.pem (leaf + CA), server.key
# The certificate must be valid for the addresses clients use: the lb's own,
# and the virtual IP on an lb pair. `lb gen-cert --host` adds them when the
# lb has that option; otherwise openssl makes the same four files.
# Usage: certs.sh DIR ADDRESS...   (LB_BIN: the lb binary, default /usr/local/bin/lb)
set -euo pipefail
dir="${1:?usage: certs.sh DIR ADDRESS...}"
: "${2:?usage: certs.sh DIR ADDRESS...}"
shift
addrs=("$@")
lb="${LB_BIN:-/usr/local/bin/lb}"
mkdir -p "$dir"
if [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ] && [ -s "$dir/dev-ca.pem" ]; then
  echo "certs.sh: $dir already holds certificates"
  exit 0
fi
if "$lb" gen-cert --help 2>/dev/null | grep -q -- "--host"; then
  hosts=()
  for a in "${addrs[@]}"; do hosts+=(--host "$a"); done
  "$lb" gen-cert --dir "$dir" "${hosts[@]}" --force
  exit 0
fi
echo "certs.sh: $lb gen-cert cannot add ${addrs[*]}; using openssl"
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$dir/dev-ca.key" -out "$dir/dev-ca.pem" -days 3650 \
  -subj "/CN=wsmesh lab CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$dir/server.key" -out "$tmp/server.csr" -subj "/CN=wsmesh lab lb" 2>/dev/null
printf '%s\n' \
  "subjectAltName=$(printf 'IP:%s,' "${addrs[@]}")DNS:localhost,IP:127.0.0.1" \
  "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" \
  "authorityKeyIdentifier=keyid,issuer" > "$tmp/ext.cnf"
openssl x509 -req -in "$tmp/server.csr" -CA "$dir/dev-ca.pem" -CAkey "$dir/dev-ca.key" \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days 397 -sha256 \
  -extfile "$tmp/ext.cnf" -out "$tmp/server.crt" 2>/dev/null
cat "$tmp/server.crt" "$dir/dev-ca.pem" > "$dir/server.pem"
chmod 0644 "$dir/dev-ca.pem" "$dir/server.pem"
echo "certs.sh: wrote $dir/{dev-ca.pem,dev-ca.key,server.pem,server.key} for ${addrs[*]}"
