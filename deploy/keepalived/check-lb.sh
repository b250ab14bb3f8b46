#!/usr/bin/env bash
# keepalived's health check of the local lb (vrrp_script lb_healthy in
# keepalived.conf): exits 0 only when the lb's admin API answers 200 within
# 1 s and lists at least one server it reaches: one that is "up", or whose
# last check got through to it (an HTTP answer, even 503, or a connection
# that then timed out). So the VIP leaves a host whose lb died or hangs, or
# that is cut off from every app host (each check refused or not connected:
# L4CON, L4TOUT), but not the pair when every app answers 503 at once (a
# Redis failover): both lbs would give it up, and every tunnel with it.
# Usage: check-lb.sh [ADMIN_ADDR] [TOKEN_FILE]
#   ADMIN_ADDR  the lb's [admin] listen (default 127.0.0.1:8404)
#   TOKEN_FILE  a file holding admin.token, when the admin API has one
# Needs curl and jq.
set -euo pipefail
admin="${1:-127.0.0.1:8404}"
token_file="${2:-}"
# curl reads its options from stdin (-K -): the token never shows in ps.
body="$(
  if [ -n "$token_file" ]; then
    printf 'header = "Authorization: Bearer %s"\n' "$(tr -d '[:space:]' < "$token_file")"
  fi | curl -K - -sf --max-time 1 "http://$admin/api/backends"
)"
jq -e 'any(.backends[].servers[];
  .state == "up" or (.check.status | IN("L7OK", "L7OKC", "L7STS", "L7RSP", "L7TOUT")))' <<< "$body" > /dev/null
