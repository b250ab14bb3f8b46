#!/usr/bin/env bash
# wsmesh lab — an app host (app1 or app2): its Redis replica and Sentinel
# (redis.sh), then the chat server and its subscriber, each a systemd unit
# under the wsmesh user, finding the master through the Sentinels.
# Idempotent.
# Usage: app.sh app NAME   (NAME = app1 | app2; the first argument is the role)
set -euo pipefail
# shellcheck disable=SC1091
. "$WSMESH_STAGE/deploy/provision/common.sh"
own_stage
name="${2:?usage: app.sh app app1|app2}"
case "$name" in app1) n=1 ;; app2) n=2 ;; *) log "unknown app host $name"; exit 1 ;; esac
load_hosts

run_step redis.sh redis "$name"
ensure_user
install_binaries app subscriber
install_secrets
install_config "app$n.toml" app.toml
install_config "subscriber$n.toml" subscriber.toml
/usr/local/bin/app check-config "$ETC/app.toml"
/usr/local/bin/subscriber check-config "$ETC/subscriber.toml"
install_unit wsmesh-app
install_unit wsmesh-subscriber
start_units wsmesh-app wsmesh-subscriber
