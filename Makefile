# wsmesh — the two commands a new user runs: `make up` and `make test`.
# Both install what is missing (redis-server via apt), so a fresh
# Debian/Ubuntu machine with a Rust toolchain needs nothing else.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# redis-tools: redis-cli, which makes the test Redis Clusters (`--cluster create`).
APT_PACKAGES_TEST := redis-server redis-sentinel redis-tools ruby iproute2 openssl curl systemd keepalived jq

.PHONY: up test release deps certs lint bench help

help:
	@echo "make up      build (release) and start the local cluster; Ctrl-C stops it"
	@echo "make test    lint, unit tests and end-to-end tests against real processes"
	@echo "make bench   benchmarks (QUICK=1 for a short run)"

# Installs the Debian packages of $(1) that are missing: as root, or via sudo;
# otherwise prints the exact command and fails.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing — run: apt-get install -y$$missing (as root)"; exit 1; \
	  fi; \
	fi
endef

## Install the system packages the cluster and the tests need, if missing.
deps:
	$(call apt_install,$(APT_PACKAGES_TEST))

release:
	$(CARGO) build --release --workspace --bins

## Dev CA and server certificate for 127.0.0.1/localhost (kept if present).
certs: release
	target/release/lb gen-cert --dir certs

up: deps release certs
	exec target/release/lab up

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint
	$(CARGO) build --workspace --bins
	bash deploy/check.sh
	$(CARGO) test --workspace -- --test-threads=2
	if [ "$$(id -u)" = 0 ]; then $(CARGO) test -p lab --test integration netns:: -- --ignored; else echo "lab/tests/integration/netns.rs: ignored (needs root)"; fi
	lab/browser/run.sh mock
	lab/browser/run.sh cluster

## Benchmarks (lab bench): lb vs HAProxy vs direct, wsmesh vs seed-python vs
## node. Installs haproxy, h2load (nghttp2-client) and redis (apt) and the
## peers' Python/Node packages, builds in release, writes
## target/bench/report.md, report.json and SVG charts.
## QUICK=1: about two minutes. BENCH_ONLY="1 7": only those scenarios.
APT_PACKAGES_BENCH := haproxy nghttp2-client redis-server
BENCH_FLAGS := $(if $(QUICK),--quick,) $(foreach s,$(BENCH_ONLY),--only $(s))
bench:
	$(call apt_install,$(APT_PACKAGES_BENCH))
	bash lab/bench/peers/install.sh
	$(CARGO) build --release -p lab -p lb -p app -p subscriber
	target/release/lab bench $(BENCH_FLAGS) --out target/bench
