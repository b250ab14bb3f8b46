#!/usr/bin/env bash
# `keepalived --config-test` on FILE, with a verdict that holds on Debian 12:
# its keepalived 2.2.7 ends a successful test of a config with scripts by
# SIGTERM (exit 143; fixed in keepalived 2.2.8), so a file passes when the
# test prints nothing and exits 0 or 143. Any warning fails it.
# Usage: config-test.sh FILE   (prints keepalived's complaints; exits 1 on any)
set -uo pipefail
file="${1:?usage: config-test.sh FILE}"
out="$(keepalived --config-test -f "$file" 2>&1)"
rc=$?
if [ -n "$out" ] || { [ "$rc" != 0 ] && [ "$rc" != 143 ]; }; then
  echo "keepalived --config-test -f $file (exit $rc): $out"
  exit 1
fi
