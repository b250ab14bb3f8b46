#!/usr/bin/env bash
# Renders deploy/keepalived/keepalived.conf.in for one lb of the pair from
# configs/vagrant/hosts.env, on stdout. deploy/provision/keepalived.sh
# installs the result; deploy/check.sh runs `keepalived --config-test` on it.
# Usage: render.sh lb1|lb2 HOSTS_ENV INTERFACE [NET] [CHECK_SCRIPT]
#   NET           network prefix (default: LAB_NET of HOSTS_ENV)
#   CHECK_SCRIPT  where check-lb.sh is installed (default /etc/keepalived/check-lb.sh)
set -euo pipefail
name="${1:?usage: render.sh lb1|lb2 HOSTS_ENV INTERFACE [NET] [CHECK_SCRIPT]}"
hosts_env="${2:?usage: render.sh lb1|lb2 HOSTS_ENV INTERFACE [NET] [CHECK_SCRIPT]}"
interface="${3:?usage: render.sh lb1|lb2 HOSTS_ENV INTERFACE [NET] [CHECK_SCRIPT]}"
# shellcheck disable=SC1090
. "$hosts_env"
net="${4:-$LAB_NET}"
check_script="${5:-/etc/keepalived/check-lb.sh}"
# The VRRP group of the pair: unique among the VRRP groups of the network.
router_id=51
# lb1 wins a cold start (both come up at once); with nopreempt the
# priorities never move the VIP afterwards.
case "$name" in
  lb1) self="$net.$HOST_LB1"; peer="$net.$HOST_LB2"; priority=150 ;;
  lb2) self="$net.$HOST_LB2"; peer="$net.$HOST_LB1"; priority=100 ;;
  *) echo "render.sh: unknown lb $name (lb1 or lb2)" >&2; exit 1 ;;
esac
sed -e "s|@NAME@|wsmesh-$name|g" \
    -e "s|@CHECK_SCRIPT@|$check_script|g" \
    -e "s|@ADMIN@|127.0.0.1:8404|g" \
    -e "s|@PRIORITY@|$priority|g" \
    -e "s|@INTERFACE@|$interface|g" \
    -e "s|@ROUTER_ID@|$router_id|g" \
    -e "s|@SELF@|$self|g" \
    -e "s|@PEER@|$peer|g" \
    -e "s|@VIP@|$net.$HOST_VIP|g" \
    "$(dirname "$0")/keepalived.conf.in"
