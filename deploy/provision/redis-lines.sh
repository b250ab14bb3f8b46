#!/usr/bin/env bash
# Prints the host-specific lines of one Redis process of the lab, to follow
# the shared settings: configs/vagrant/redis.conf for a data node,
# configs/vagrant/sentinel.conf for a Sentinel. deploy/provision/redis.sh
# writes them on the VMs and `lab netns` in its namespaces, so both run the
# same configuration.
# Usage: redis-lines.sh server|sentinel ADDRESS PASSWORD_FILE [MASTER_ADDRESS MASTER_PORT]
#   server    bind, replica-announce-ip, requirepass and masterauth (every
#             node may become master or replica); with MASTER_*: replicaof
#   sentinel  bind, sentinel announce-ip, requirepass and sentinel
#             sentinel-pass (clients and the other Sentinels authenticate),
#             sentinel auth-pass wsmesh (it talks to the data nodes)
# Every process listens on the host's lab address and on loopback (redis-cli
# on the host), and announces the lab address, so what the master and the
# Sentinels tell each other is what the apps can reach.
set -euo pipefail
usage="usage: redis-lines.sh server|sentinel ADDRESS PASSWORD_FILE [MASTER_ADDRESS MASTER_PORT]"
kind="${1:?$usage}"
addr="${2:?$usage}"
password_file="${3:?$usage}"
password="$(tr -d '[:space:]' < "$password_file")"
[ -n "$password" ] || { echo "redis-lines.sh: $password_file is empty" >&2; exit 1; }
echo "# Host-specific (deploy/provision/redis-lines.sh): this host's address and the lab's password."
echo "bind $addr 127.0.0.1"
echo "requirepass $password"
case "$kind" in
  server)
    echo "replica-announce-ip $addr"
    echo "masterauth $password"
    if [ -n "${4:-}" ]; then
      echo "# The role at the first start; the Sentinels change it on failover."
      echo "replicaof $4 ${5:?$usage}"
    fi
    ;;
  sentinel)
    echo "sentinel announce-ip $addr"
    echo "sentinel sentinel-pass $password"
    echo "sentinel auth-pass wsmesh $password"
    ;;
  *) echo "$usage" >&2; exit 1 ;;
esac
