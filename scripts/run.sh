#!/usr/bin/env bash
# Runs coapgate on a fresh machine: installs the system libraries its build
# needs (OpenSSL 3 headers and pkg-config, with apt-get, as root or through
# sudo) if they are missing, then builds and starts the server. Without
# arguments it runs on the embedded defaults (SQLite ./coapgate.db, embedded
# MQTT broker on 127.0.0.1:1883, CoAP :5683, CoAPS :5684); arguments go to
# `coapgate serve`, e.g. `./scripts/run.sh --config coapgate.toml`.
set -euo pipefail
# Stay in the caller's directory: relative paths (--config, sqlite://coapgate.db)
# are the caller's.
repo="$(cd "$(dirname "$0")/.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) for: $*" >&2; return 1; fi
}

need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi

exec cargo run --release --locked --manifest-path "$repo/Cargo.toml" -p coapgate -- serve "$@"
