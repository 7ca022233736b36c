#!/usr/bin/env bash
# The side-by-side benchmark of issue 13 (docs/performance.md, "Side by
# side"): every server under the same load in one run, interleaved and
# repeated, with the ratios against the targets.
#
#   cargo build --release -p coapgate -p coapgate-load
#   bins/coapgate-load/bench.sh [ROUNDS] [SECONDS]        # default 3 rounds of 5 s runs
#
# Servers: the floor (`coapgate-load --floor`: one recv and one send per
# request), libcoap's `coap-server-notls` / `coap-server-openssl` (answer,
# forward nothing), coapgate → Mosquitto (QoS 1, 2.04 after PUBACK) and
# coapgate → its embedded broker. Loads: 64 devices × 1 outstanding CON
# POST of 64 bytes and 256 × 4 (plain), the same over DTLS sessions, and
# fresh DTLS PSK handshakes (16 at a time). Within a round every run of a
# load comes in turn, so a noisy neighbour hurts all servers alike;
# the summary gives medians with min–max over the rounds.
#
# The generator runs on GEN_CPUS (default 1), servers and Mosquitto on
# SERVER_CPUS (default 0), with taskset. SETS picks what to run (default
# "plain dtls-requests dtls-handshakes"); the set `shards` (not in the
# default) runs coapgate → embedded broker with `[coap] threads` 1 and 2
# (`embedded-t1`, `embedded-t2`) and pins nothing: the shards, the broker
# and the generator share every core. OUT keeps the results (JSON lines)
# in a directory of your choice; KEEP=1 keeps the run directories.
#
# Everything listens on 127.0.0.1 only; each server is stopped by its PID
# after its run.
set -euo pipefail

rounds=${1:-3}
seconds=${2:-5}
sets=${SETS:-plain dtls-requests dtls-handshakes}
gen_cpus=${GEN_CPUS:-1}
server_cpus=${SERVER_CPUS:-0}

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/coapgate-bench.XXXXXX)}
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
dir=$(mktemp -d /tmp/coapgate-bench-run.XXXXXX)
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"
[[ -x $bin/coapgate && -x $bin/coapgate-load ]] || {
    echo "build first: cargo build --release -p coapgate -p coapgate-load" >&2
    exit 2
}
for tool in coap-server-notls coap-server-openssl mosquitto taskset; do
    command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 2; }
done

pin_server=(taskset -c "$server_cpus")
pin_gen=(taskset -c "$gen_cpus")

# run SET SERVER DEVICES CONCURRENCY: one measurement, one JSON line in
# $results with the generator's report, Mosquitto's CPU and the run's name.
run() {
    local set=$1 server=$2 devices=$3 concurrency=$4
    local coap_port coaps_port mqtt_port target load_args=() key_args=() dtls_args=()
    coap_port=$(free_pair)
    coaps_port=$((coap_port + 1))
    mqtt_port=$(free_port)
    [[ $set == plain || $set == shards ]] || dtls_args=(--dtls)
    case $server in
    floor)
        "${pin_server[@]}" "$bin/coapgate-load" --floor "127.0.0.1:$coap_port" &
        server_pid=$!
        ;;
    libcoap)
        if [[ $set == plain ]]; then
            "${pin_server[@]}" coap-server-notls -A 127.0.0.1 -p "$coap_port" -v 0 >"$dir/server.log" 2>&1 &
        else
            "${pin_server[@]}" coap-server-openssl -A 127.0.0.1 -p "$coap_port" -k bench-psk -v 0 >"$dir/server.log" 2>&1 &
            key_args=(--psk bench-psk)
        fi
        server_pid=$!
        ;;
    embedded | mosquitto)
        # start_coapgate starts Mosquitto and coapgate; pin both afterwards.
        start_coapgate "$server" "$coap_port" "$coaps_port" "$mqtt_port" "${dtls_args[@]}" --devices "$devices"
        ;;
    embedded-t*)
        THREADS=${server#embedded-t} start_coapgate embedded "$coap_port" "$coaps_port" "$mqtt_port" --devices "$devices"
        ;;
    esac
    wait_ready "$coap_port"
    [[ $set == shards ]] || pin_servers "$server_cpus"
    sleep 0.3
    case $set in
    plain | shards)
        target=127.0.0.1:$coap_port
        load_args=(--concurrency "$concurrency" --requests 100000000 --payload-size 64)
        ;;
    dtls-requests)
        target=127.0.0.1:$coaps_port
        load_args=(--concurrency "$concurrency" --requests 100000000 --payload-size 64)
        ;;
    dtls-handshakes)
        target=127.0.0.1:$coaps_port
        load_args=(--handshakes 100000000)
        ;;
    esac
    local before_broker
    before_broker=$(broker_ticks)
    local gen=("${pin_gen[@]}")
    [[ $set == shards ]] && gen=()
    "${gen[@]}" "$bin/coapgate-load" "${dtls_args[@]}" --target "$target" --devices "$devices" \
        "${load_args[@]}" "${key_args[@]}" --server-pid "$server_pid" \
        --duration "$seconds" --json >"$dir/report.json" 2>"$dir/load.err" || {
        echo "bench: $set $server ${devices}x$concurrency failed: $(cat "$dir/load.err")" >&2
        stop_servers
        return 0
    }
    local broker_ticks_used=$(($(broker_ticks) - before_broker))
    stop_servers
    python3 - "$dir/report.json" "$broker_ticks_used" "$(getconf CLK_TCK)" "$set" "$server" "$devices" "$concurrency" "$round" <<'EOF' >>"$results"
import json, sys
report = json.load(open(sys.argv[1]))
report["mosquitto_cpu_s"] = int(sys.argv[2]) / int(sys.argv[3])
report["run"] = {"set": sys.argv[4], "server": sys.argv[5], "devices": int(sys.argv[6]),
                 "concurrency": int(sys.argv[7]), "round": int(sys.argv[8])}
print(json.dumps(report))
EOF
}

echo "bench: $rounds rounds of ${seconds}s runs; results in $results" >&2
for round in $(seq "$rounds"); do
    for set in $sets; do
        case $set in
        plain) loads=("64 1" "256 4"); servers=(floor libcoap mosquitto embedded) ;;
        dtls-requests) loads=("64 1" "256 4"); servers=(libcoap mosquitto embedded) ;;
        dtls-handshakes) loads=("16 1"); servers=(libcoap embedded) ;;
        shards) loads=("64 1" "256 4"); servers=(embedded-t1 embedded-t2) ;;
        *) echo "unknown set $set" >&2; exit 2 ;;
        esac
        for load in "${loads[@]}"; do
            for server in "${servers[@]}"; do
                echo "bench: round $round $set $server ${load/ /x}" >&2
                # shellcheck disable=SC2086
                run "$set" "$server" $load
            done
        done
    done
done

python3 "$(dirname "$0")/bench-summary.py" "$results"
