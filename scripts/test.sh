#!/usr/bin/env bash
# Runs every check and test of coapgate on a fresh machine: installs the real
# peers the integration tests talk to (Mosquitto, libcoap's coap-client),
# promtool for the deployment files' checks, and cargo-fuzz, then formatting,
# lints, a short run of every fuzz target, and the whole test suite.
#
#   ./scripts/test.sh              everything
#   FUZZ_SECONDS=0 ./scripts/test.sh   skip the fuzz smoke runs
#
# Under CI=true a missing peer fails the tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-20}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) for: $*" >&2; return 1; fi
}

# 1. Peers: Mosquitto (broker, mosquitto_sub/_pub), libcoap's clients,
# OpenSSL's s_client, the sqlite3 shell, PostgreSQL's server binaries.
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v coap-client-notls >/dev/null || need+=(libcoap3-bin)
command -v openssl >/dev/null || need+=(openssl)
# The store tests hold a lock on a database file from another process.
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v pkg-config >/dev/null || need+=(pkg-config)
# The store tests run on PostgreSQL too: initdb/pg_ctl/psql from Debian's
# /usr/lib/postgresql/N/bin (coapgate-testkit's Postgres starts its own).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
# promtool (Debian's `prometheus` package) checks and unit-tests the alerting
# rules in deploy/prometheus (crates/coapgate-testkit/tests/deploy.rs). Without
# recommends: they would add node-exporter and its collectors.
if ! command -v promtool >/dev/null; then
  echo "== installing prometheus (for promtool)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
fi
# Packaged services may start with their packages: a mosquitto on 1883 (the
# embedded broker's default port), a prometheus on 9090, a PostgreSQL
# cluster on 5432. The tests start their own on free ports and want no
# shared state, so stop them.
for service in mosquitto prometheus postgresql; do
  if command -v service >/dev/null && service "$service" status >/dev/null 2>&1; then
    as_root service "$service" stop >/dev/null 2>&1 || true
  fi
done
# Larger UDP receive buffers (docs/configuration.md); best effort.
as_root sysctl -q -w net.core.rmem_max=8388608 >/dev/null 2>&1 || true

# 2. Formatting and lints.
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every publishable crate packages (in dependency order, path dependencies
# resolved against each other; ~15 s). Dev-dependencies without a version
# (coapgate-testkit, a crate's own `fuzzing` feature) are left out of the
# packages by cargo.
echo "== cargo package"
cargo package --workspace --exclude coapgate-testkit --exclude coapgate-examples \
  --exclude coapgate-load --no-verify --allow-dirty --locked --quiet

# 3. Fuzz targets, briefly, on stable (no sanitizer).
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
  fi
  for target in $(cd fuzz && cargo fuzz list); do
    echo "== fuzz $target for ${FUZZ_SECONDS}s"
    # Work on a copy so new inputs found here do not pile up in the repository.
    work=$(mktemp -d)
    cp -r "fuzz/corpus/$target/." "$work/" 2>/dev/null || true
    (cd fuzz && cargo fuzz run --sanitizer none "$target" "$work" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 | tail -n 12)
    rm -rf "$work"
  done
fi

# 4. Every test (unit, property, corpus replays, integration with real peers).
# Built together, the workspace has coapgate-mqtt's `embedded-broker`
# feature on (through the `coapgate` binary), so its tests/embedded.rs runs.
echo "== cargo test"
cargo test --workspace --locked
