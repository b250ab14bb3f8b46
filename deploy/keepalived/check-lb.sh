#!/usr/bin/env bash
# keepalived's health check of the local lb (vrrp_script lb_healthy in
# keepalived.conf): exits 0 only when the lb's admin API answers 200 within
# 1 s and lists at least one server whose state is "up". So the VIP leaves a
# host whose lb died, hangs, or reaches no app.
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
jq -e 'any(.backends[].servers[]; .state == "up")' <<< "$body" > /dev/null
