#!/usr/bin/env bash
# Install the benchmark peers' dependencies (called by `make bench`).
# Idempotent: re-running does only what is missing or out of date, and says
# what it did.
#
#   - python3-venv via apt, only when `python3 -m venv` cannot work
#   - seed-python/.venv with requirements.txt (exact pins)
#   - node/node_modules via `npm ci` from package-lock.json
#
# Env: PYTHON (default python3), the interpreter the venv is made from.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
say() { echo "install.sh: $*"; }

# --- python3-venv ----------------------------------------------------------
if "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  say "venv: $PYTHON has venv and ensurepip already"
else
  say "venv: $PYTHON lacks venv/ensurepip, installing python3-venv with apt"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
fi

# --- seed-python/.venv -----------------------------------------------------
venv="$here/seed-python/.venv"
req="$here/seed-python/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "seed-python: creating $venv"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  rm -f "$stamp"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$venv/bin/python" -c 'import tornado, redis' >/dev/null 2>&1; then
  say "seed-python: requirements already installed ($("$venv/bin/python" -c 'import tornado, redis; print("tornado", tornado.version, "redis", redis.__version__)'))"
else
  say "seed-python: pip install -r requirements.txt"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
  say "seed-python: installed $("$venv/bin/python" -c 'import tornado, redis; print("tornado", tornado.version, "redis", redis.__version__)')"
fi

# --- node/node_modules -----------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "node: node and npm are needed (Node.js >= 20) and were not found" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  say "node: Node.js >= 20 needed, found $(node --version)" >&2
  exit 1
fi
nm="$here/node/node_modules"
lockstamp="$nm/.wsmesh-lock.sha256"
want="$(sha256sum "$here/node/package-lock.json" | cut -d' ' -f1)"
if [ -f "$lockstamp" ] && [ "$(cat "$lockstamp")" = "$want" ]; then
  say "node: node_modules already matches package-lock.json"
else
  say "node: npm ci"
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$lockstamp"
  say "node: installed $(cd "$here/node" && node -p 'const r = (p) => require(p + "/package.json").version; `ws ${r("ws")} ioredis ${r("ioredis")}`')"
fi

command -v redis-server >/dev/null || say "note: redis-server is not installed (the peers need a Redis)"
say "done"
