#!/usr/bin/env bash
# One CoAPS (DTLS 1.2 PSK) measurement on loopback, as in docs/performance.md
# "CoAPS (DTLS)": a release `coapgate serve` (embedded broker or Mosquitto)
# or libcoap's `coap-server-openssl`, driven by the same `coapgate-load
# --dtls` client. Prints the generator's JSON report, which carries the
# server's CPU time per handshake and per request and its RSS with the
# sessions open (`--server-pid`), plus the generator's own CPU time.
#
#   cargo build --release -p coapgate -p coapgate-load
#   bins/coapgate-load/measure-dtls.sh SERVER MODE DEVICES CONCURRENCY COUNT [extra coapgate-load args…]
#
#   SERVER  embedded | mosquitto | libcoap
#   MODE    handshakes: COUNT fresh full handshakes, DEVICES at a time
#                       (CONCURRENCY is ignored)
#           requests:   one session per device, then COUNT CON POSTs,
#                       CONCURRENCY outstanding per device
#
# libcoap gets `-k coapgate-load-psk` and the client `--psk coapgate-load-psk`
# (it accepts any identity); coapgate gets one key per device from
# `coapgate-load --print-config --dtls`. KEEP=1 keeps the run directory
# (configuration, server log). MOSQUITTO_EXTRA adds lines to
# mosquitto.conf (`set_tcp_nodelay true`, as in the plain runs).
#
# Everything listens on 127.0.0.1 only; the servers are stopped by their
# PIDs at the end.
set -euo pipefail

server=${1:-embedded}
mode=${2:-handshakes}
devices=${3:-16}
concurrency=${4:-1}
count=${5:-5000}
shift $(($# < 5 ? $# : 5))

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/coapgate-measure-dtls.XXXXXX)
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"
coap_port=$(free_pair)
coaps_port=$((coap_port + 1))
mqtt_port=$(free_port)
libcoap_key=coapgate-load-psk

case $mode in
handshakes) load_args=(--handshakes "$count") ;;
requests) load_args=(--concurrency "$concurrency" --requests "$count" --payload-size 100) ;;
*) echo "MODE is handshakes or requests" >&2; exit 2 ;;
esac

case $server in
embedded | mosquitto)
    start_coapgate "$server" "$coap_port" "$coaps_port" "$mqtt_port" --dtls --devices "$devices"
    key_args=()
    ;;
libcoap)
    coap-server-openssl -A 127.0.0.1 -p "$coap_port" -k "$libcoap_key" -v 0 >"$dir/server.log" 2>&1 &
    server_pid=$!
    key_args=(--psk "$libcoap_key")
    ;;
*) echo "SERVER is embedded, mosquitto or libcoap" >&2; exit 2 ;;
esac

wait_ready "$coap_port"
sleep 0.2

before_broker=$(broker_ticks)
/usr/bin/time -f '%U %S' -o "$dir/load.time" \
    "$bin/coapgate-load" --dtls --target "127.0.0.1:$coaps_port" --devices "$devices" \
    "${load_args[@]}" "${key_args[@]}" --server-pid "$server_pid" \
    --duration 120 --json "$@" >"$dir/report.json"
broker_cpu=$(($(broker_ticks) - before_broker))

python3 - "$dir/report.json" "$dir/load.time" "$broker_cpu" "$server" "$mode" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
report["load_cpu_s"] = round(user + system, 2)
if int(sys.argv[3]):
    report["mosquitto_cpu_s"] = int(sys.argv[3]) / 100
report["run"] = {"server": sys.argv[4], "mode": sys.argv[5]}
print(json.dumps(report))
EOF
