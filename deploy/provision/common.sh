#!/usr/bin/env bash
# wsmesh lab — shared provisioning steps, sourced by app.sh, lb.sh,
# redis.sh and keepalived.sh. Every step is idempotent: `vagrant provision`
# may run it again.
#
# Inputs (set by the Vagrantfile):
#   WSMESH_STAGE    where the file provisioners uploaded deploy/, configs/
#                   (configs/vagrant), secrets/ (.vagrant/wsmesh-secrets),
#                   certs/ (lb hosts) and bin/ (app and lb hosts)
#   WSMESH_LAB_NET  network prefix, e.g. 192.168.56 (default: hosts.env)
set -euo pipefail

: "${WSMESH_STAGE:?WSMESH_STAGE is not set (run through the Vagrantfile)}"
STAGE="$WSMESH_STAGE"
ETC=/etc/wsmesh

log() { echo "wsmesh-provision: $*"; }

# The address table shared with the Vagrantfile and `lab netns`.
load_hosts() {
  # shellcheck disable=SC1091
  . "$STAGE/configs/hosts.env"
  CONFIG_NET="$LAB_NET"
  NET="${WSMESH_LAB_NET:-$LAB_NET}"
  LB1_ADDR="$NET.$HOST_LB1"
  LB2_ADDR="$NET.$HOST_LB2"
  VIP_ADDR="$NET.$HOST_VIP"
  APP1_ADDR="$NET.$HOST_APP1"
  APP2_ADDR="$NET.$HOST_APP2"
  REDIS_ADDR="$NET.$HOST_REDIS"
  export CONFIG_NET NET LB1_ADDR LB2_ADDR VIP_ADDR APP1_ADDR APP2_ADDR REDIS_ADDR REDIS_PORT SENTINEL_PORT
}

# The private address of host NAME (redis, app1, app2, lb1, lb2).
host_addr() { # NAME
  case "$1" in
    redis) echo "$REDIS_ADDR" ;;
    app1) echo "$APP1_ADDR" ;;
    app2) echo "$APP2_ADDR" ;;
    lb1) echo "$LB1_ADDR" ;;
    lb2) echo "$LB2_ADDR" ;;
    *) log "unknown host $1"; exit 1 ;;
  esac
}

# Reads one generated secret; refuses an empty one.
secret() {
  local value
  value="$(tr -d '[:space:]' < "$STAGE/secrets/$1")"
  [ -n "$value" ] || { log "secret $1 is empty"; exit 1; }
  printf '%s' "$value"
}

# Installs a file only when its content changed; prints "changed" if it did.
install_if_changed() { # SRC DEST MODE OWNER:GROUP
  local src="$1" dest="$2" mode="$3" owner="$4"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"; chown "$owner" "$dest"
    return 0
  fi
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dest"
  echo changed
}

# The service user: no shell, no home, owns nothing but what it must read.
ensure_user() {
  if ! getent passwd wsmesh >/dev/null; then
    useradd --system --no-create-home --no-log-init --home-dir /nonexistent --shell /usr/sbin/nologin wsmesh
    log "created user wsmesh"
  fi
  install -d -m 0750 -o root -g wsmesh "$ETC"
}

# Installs the Debian packages that are missing.
apt_ensure() { # PACKAGE...
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Release binaries built on the host (`make release`).
install_binaries() { # NAME...
  local b
  for b in "$@"; do
    install -m 0755 -o root -g root "$STAGE/bin/$b" "/usr/local/bin/$b"
  done
}

# A file of configs/vagrant on stdout, with the network prefix rewritten
# when the lab runs on another one (WSMESH_LAB_NET).
lab_config() { # SRC-NAME
  sed "s/${CONFIG_NET//./\\.}\./$NET./g" "$STAGE/configs/$1"
}

# A config from configs/vagrant installed into /etc/wsmesh.
install_config() { # SRC-NAME DEST-NAME
  local tmp
  tmp="$(mktemp)"
  lab_config "$1" > "$tmp"
  install_if_changed "$tmp" "$ETC/$2" 0640 root:wsmesh >/dev/null
  rm -f "$tmp"
}

# The token of the internal API for the units
# (EnvironmentFile=/etc/wsmesh/wsmesh.env) and for check-config by hand
# (token_file = /etc/wsmesh/internal-token), and the Redis password the
# configs name (redis.password_file, redis.sentinel_password_file).
install_secrets() {
  local tmp
  tmp="$(mktemp)"
  secret internal-token > "$tmp"; echo >> "$tmp"
  install_if_changed "$tmp" "$ETC/internal-token" 0640 root:wsmesh >/dev/null
  secret redis-password > "$tmp"; echo >> "$tmp"
  install_if_changed "$tmp" "$ETC/redis-password" 0640 root:wsmesh >/dev/null
  {
    echo "# Written by deploy/provision/common.sh; secrets: do not copy around."
    echo "WSMESH_INTERNAL_TOKEN=$(secret internal-token)"
  } > "$tmp"
  install_if_changed "$tmp" "$ETC/wsmesh.env" 0640 root:wsmesh >/dev/null
  rm -f "$tmp"
}

install_unit() { # NAME
  install -m 0644 -o root -g root "$STAGE/deploy/systemd/$1.service" "/etc/systemd/system/$1.service"
}

# Enables and (re)starts units after daemon-reload. A Type=simple unit is
# "active" as soon as it forked, so a unit counts as started only when it is
# still active, without restarts, a few seconds later.
start_units() { # NAME...
  local u restarts
  systemctl daemon-reload
  for u in "$@"; do
    systemctl enable "$u" >/dev/null 2>&1
    systemctl restart "$u"
  done
  sleep 3
  for u in "$@"; do
    restarts="$(systemctl show -p NRestarts --value "$u" 2>/dev/null || true)"
    if ! systemctl is-active --quiet "$u" || [ "${restarts:-0}" != 0 ]; then
      log "$u did not start (restarts: ${restarts:-?}):"
      journalctl -u "$u" -n 30 --no-pager || true
      exit 1
    fi
    log "$u is active"
  done
}

# The staging directory holds secrets: the script the Vagrantfile runs
# removes it whatever happens; the steps it runs (run_step) leave it.
own_stage() {
  [ -n "${WSMESH_STEP:-}" ] || trap 'rm -rf "$STAGE"' EXIT
}

# Runs another provisioning script of this host as a step of this one.
run_step() { # SCRIPT ARGS...
  local script="$1"
  shift
  WSMESH_STEP=1 bash "$STAGE/deploy/provision/$script" "$@"
}
