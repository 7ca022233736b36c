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
bin=$root/target/release
dir=$(mktemp -d /tmp/coapgate-measure-dtls.XXXXXX)
# A free port whose successor is free too (libcoap serves DTLS on port + 1).
free_pair() {
    python3 - <<'EOF'
import socket
for _ in range(100):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    a.close()
    if port >= 65535:
        continue
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    print(port); break
EOF
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
coap_port=$(free_pair)
coaps_port=$((coap_port + 1))
mqtt_port=$(free_port)
libcoap_key=coapgate-load-psk

server_pid=
broker_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    [[ -n ${KEEP:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT

case $mode in
handshakes) load_args=(--handshakes "$count") ;;
requests) load_args=(--concurrency "$concurrency" --requests "$count" --payload-size 100) ;;
*) echo "MODE is handshakes or requests" >&2; exit 2 ;;
esac

case $server in
embedded | mosquitto)
    {
        printf '[coap]\nbind = "127.0.0.1:%s"\n[coaps]\nbind = "127.0.0.1:%s"\n[admin]\nbind = "127.0.0.1:0"\n[store]\nurl = "sqlite::memory:"\n[mqtt]\n' "$coap_port" "$coaps_port"
        if [[ $server == mosquitto ]]; then
            printf 'url = "mqtt://127.0.0.1:%s"\n' "$mqtt_port"
        else
            printf 'embedded_bind = "127.0.0.1:%s"\n' "$mqtt_port"
        fi
        "$bin/coapgate-load" --print-config --dtls --devices "$devices"
    } >"$dir/coapgate.toml"
    if [[ $server == mosquitto ]]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 100000\n' "$mqtt_port" >"$dir/mosquitto.conf"
        [[ -n ${MOSQUITTO_EXTRA:-} ]] && printf '%s\n' "$MOSQUITTO_EXTRA" >>"$dir/mosquitto.conf"
        mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
        broker_pid=$!
        sleep 0.5
    fi
    RUST_LOG=warn "$bin/coapgate" serve --config "$dir/coapgate.toml" >"$dir/server.log" 2>&1 &
    server_pid=$!
    key_args=()
    ;;
libcoap)
    coap-server-openssl -A 127.0.0.1 -p "$coap_port" -k "$libcoap_key" -v 0 >"$dir/server.log" 2>&1 &
    server_pid=$!
    key_args=(--psk "$libcoap_key")
    ;;
*) echo "SERVER is embedded, mosquitto or libcoap" >&2; exit 2 ;;
esac

# Ready when the plain CoAP port answers a ping (empty CON → RST), at most 10 s.
for _ in $(seq 100); do
    if python3 - "$coap_port" <<'EOF' 2>/dev/null; then break; fi
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
s.sendto(b"\x40\x00\x00\x01", ("127.0.0.1", int(sys.argv[1])))
s.recvfrom(16)
EOF
    sleep 0.1
done
sleep 0.2

broker_ticks() { if [[ -n $broker_pid ]]; then awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"; else echo 0; fi; }
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
