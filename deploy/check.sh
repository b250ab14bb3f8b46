#!/usr/bin/env bash
# Static checks of the 4-host lab and of every committed config, run by
# `make test` after the binaries are built (so it uses the real parsers):
#   1. `ruby -c Vagrantfile` (installs ruby with apt when missing, as root)
#   2. bash -n on the provisioning scripts
#   3. `systemd-analyze verify` on the units in deploy/systemd/. The units
#      name /usr/local/bin/{lb,app,subscriber} as on the VMs; verify needs
#      those to exist, so it checks copies whose ExecStart/ExecStartPre point
#      at the binaries built in $WSMESH_BIN_DIR (default target/debug) and
#      nothing else changed. Any warning fails the check (unknown keys,
#      bad values, missing binaries).
#   4. `<bin> check-config` on every file in configs/ (app*, subscriber*,
#      lb*). configs/vagrant/ files are checked with the environment the
#      units give them (WSMESH_REDIS_URL, WSMESH_INTERNAL_TOKEN, as written by
#      deploy/provision/common.sh); lb.toml next to certificates made by
#      deploy/provision/certs.sh, as on the lb VM; other lb configs as copies
#      in the repository's layout next to certificates from `lb gen-cert`.
#   5. Every 192.168.56.x address in configs/vagrant/ is a host of
#      configs/vagrant/hosts.env, and each app listens on its own host's.
#   6. As root: deploy/provision-test.sh runs the provisioning scripts for
#      real in a throwaway network + mount namespace and checks the result.
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

# 1. Vagrantfile syntax.
if ! command -v ruby >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ruby (for ruby -c Vagrantfile)"
    { apt-get install -y -qq ruby || { apt-get update -qq && apt-get install -y -qq ruby; }; } >/dev/null 2>&1
  elif command -v sudo >/dev/null 2>&1; then
    { sudo apt-get install -y -qq ruby || { sudo apt-get update -qq && sudo apt-get install -y -qq ruby; }; } >/dev/null 2>&1
  fi
fi
if ! command -v ruby >/dev/null 2>&1; then
  bad "ruby -c Vagrantfile: ruby is missing and could not be installed (apt-get install -y ruby)"
elif out="$(ruby -c Vagrantfile 2>&1)"; then
  ok "ruby -c Vagrantfile: $out"
else
  bad "ruby -c Vagrantfile: $out"
fi

# 1b. The Vagrantfile, loaded for real (a copy in a temporary root, since
# loading it generates secrets): four VMs with the addresses of hosts.env,
# and the 192.168.33 layout through WSMESH_LAB_NET.
if command -v ruby >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  . configs/vagrant/hosts.env
  mkdir -p "$tmp/vf/configs/vagrant"
  cp Vagrantfile "$tmp/vf/"
  cp configs/vagrant/hosts.env "$tmp/vf/configs/vagrant/"
  for net in "$LAB_NET" 192.168.33; do
    want="$(printf '%s\n' "redis $net.$HOST_REDIS" "app1 $net.$HOST_APP1" "app2 $net.$HOST_APP2" "lb $net.$HOST_LB")"
    got="$(cd "$tmp/vf" && WSMESH_LAB_NET="$net" ruby "$ROOT/deploy/vagrantfile-check.rb" 2>&1)"
    if [ "$got" = "$want" ]; then
      ok "Vagrantfile loads: redis, app1, app2, lb on $net.x as in hosts.env"
    else
      bad "Vagrantfile with WSMESH_LAB_NET=$net: got [$got], want [$want]"
    fi
  done
fi

# 2. Provisioning scripts parse.
for s in deploy/provision/*.sh deploy/check.sh deploy/provision-test.sh; do
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
fi

# 4. check-config on every config.
# shellcheck disable=SC1091
. configs/vagrant/hosts.env
unit_env=(
  "WSMESH_REDIS_URL=redis://:check-password@$LAB_NET.$HOST_REDIS:$REDIS_PORT/"
  "WSMESH_INTERNAL_TOKEN=check-token"
)
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
    if [ -x "$BIN_DIR/lb" ] && out="$(LB_BIN="$BIN_DIR/lb" bash deploy/provision/certs.sh "$tmp/lb/certs" "$LAB_NET.$HOST_LB" 2>&1)"; then
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
    check_config "$bin" "$f" "$f (with the units' environment)" "${unit_env[@]}"
  else
    check_config "$bin" "$f" "$f"
  fi
done

# 5. Addresses of configs/vagrant/ against hosts.env.
hosts=" $HOST_CLIENT $HOST_LB $HOST_APP1 $HOST_APP2 $HOST_REDIS "
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

# 6. The provisioning scripts, run for real in a throwaway namespace (root only).
if [ "$(id -u)" != 0 ]; then
  echo "skip deploy/provision-test.sh: needs root"
elif out="$(bash deploy/provision-test.sh "$BIN_DIR" 2>&1)"; then
  ok "deploy/provision-test.sh: redis.sh, app.sh app1, lb.sh, app.sh app1 again; $(echo "$out" | grep -c '^ok ') checks"
else
  echo "$out" | tail -n 40
  bad "deploy/provision-test.sh"
fi

echo "deploy/check.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]
