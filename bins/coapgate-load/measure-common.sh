# shellcheck shell=bash
# What measure.sh and measure-dtls.sh share; sourced by them, not run.
# Needs `root` (the workspace) and `dir` (the run directory) set; gives
# `bin`, free_port, free_pair, start_coapgate, wait_ready, pin_servers,
# stop_servers and broker_ticks, and on exit
# stops the server and the broker by their PIDs (`server_pid`,
# `broker_pid`) and removes `dir` unless KEEP is set.

bin=$root/target/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

server_pid=
broker_pid=
# Stops the server and the broker, if running, and forgets them.
stop_servers() {
    local pid
    for pid in $server_pid $broker_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    server_pid='' broker_pid=''
}
# pin_servers CPUS: the server's and the broker's threads onto CPUS (a
# server that already died is left to its load run to report).
pin_servers() {
    local pid
    for pid in $server_pid $broker_pid; do taskset -a -p -c "$1" "$pid" >/dev/null || true; done
}
cleanup() {
    stop_servers
    [[ -n ${KEEP:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT

# start_coapgate BROKER COAP_PORT COAPS_PORT MQTT_PORT [--print-config args…]
# Writes $dir/coapgate.toml (CoAP and CoAPS on 127.0.0.1, COAPS_PORT 0 for
# any, THREADS shards (default 1: the scripts pin the server to one core),
# the admin API on ADMIN_PORT (0: any), the in-memory store, the embedded broker or Mosquitto on MQTT_PORT,
# and the devices of `coapgate-load --print-config ARGS…`), starts
# Mosquitto when BROKER is `mosquitto` (MOSQUITTO_EXTRA: more lines for
# mosquitto.conf; MQTT_EXTRA: more lines for [mqtt]), then a release
# `coapgate serve` in $dir (so a relative spool_path lands there).
start_coapgate() {
    local broker=$1 coap_port=$2 coaps_port=$3 mqtt_port=$4
    shift 4
    {
        printf '[coap]\nbind = "127.0.0.1:%s"\nthreads = %s\n[coaps]\nbind = "127.0.0.1:%s"\n[admin]\nbind = "127.0.0.1:%s"\n[store]\nurl = "sqlite::memory:"\n[mqtt]\n' "$coap_port" "${THREADS:-1}" "$coaps_port" "${ADMIN_PORT:-0}"
        if [[ $broker == mosquitto ]]; then
            printf 'url = "mqtt://127.0.0.1:%s"\n' "$mqtt_port"
        else
            printf 'embedded_bind = "127.0.0.1:%s"\n' "$mqtt_port"
        fi
        # MQTT_EXTRA: more [mqtt] lines, e.g. 'ack = "spool"'.
        [[ -n ${MQTT_EXTRA:-} ]] && printf '%s\n' "$MQTT_EXTRA"
        "$bin/coapgate-load" --print-config "$@"
    } >"$dir/coapgate.toml"
    if [[ $broker == mosquitto ]]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 100000\n' "$mqtt_port" >"$dir/mosquitto.conf"
        [[ -n ${MOSQUITTO_EXTRA:-} ]] && printf '%s\n' "$MOSQUITTO_EXTRA" >>"$dir/mosquitto.conf"
        mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
        broker_pid=$!
        sleep 0.5
    fi
    (cd "$dir" && RUST_LOG=warn exec "$bin/coapgate" serve --config "$dir/coapgate.toml" >"$dir/server.log" 2>&1) &
    server_pid=$!
}

# wait_ready PORT: until the plain CoAP port answers a ping (empty CON →
# RST), at most 10 s.
wait_ready() {
    for _ in $(seq 100); do
        if python3 - "$1" <<'PY' 2>/dev/null; then return; fi
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
s.sendto(b"\x40\x00\x00\x01", ("127.0.0.1", int(sys.argv[1])))
s.recvfrom(16)
PY
        sleep 0.1
    done
}

# The broker's CPU ticks so far (0 without Mosquitto).
broker_ticks() { if [[ -n $broker_pid ]]; then awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"; else echo 0; fi; }
