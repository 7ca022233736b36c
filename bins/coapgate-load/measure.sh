#!/usr/bin/env bash
# One load measurement of a release `coapgate serve` on loopback, as in
# docs/performance.md. Prints the load generator's JSON report plus the
# server's CPU time, peak RSS and the host's UDP receive-buffer drops.
#
#   cargo build --release -p coapgate -p coapgate-load
#   bins/coapgate-load/measure.sh [embedded|mosquitto] DEVICES CONCURRENCY REQUESTS [PAYLOAD] [extra coapgate-load args…]
#
# MOSQUITTO_EXTRA="set_tcp_nodelay true" adds lines to mosquitto.conf; KEEP=1
# keeps the run directory (configuration, server log).
#
# Everything listens on 127.0.0.1 only; the server and the broker are
# stopped by their PIDs at the end.
set -euo pipefail

broker=${1:-embedded}
devices=${2:-50}
concurrency=${3:-4}
requests=${4:-20000}
payload=${5:-100}
shift $(($# < 5 ? $# : 5))

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/coapgate-measure.XXXXXX)
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"
coap_port=$(free_port)
mqtt_port=$(free_port)

start_coapgate "$broker" "$coap_port" 0 "$mqtt_port" --devices "$devices"
wait_ready "$coap_port"

rcvbuf_errors() { awk '/^Udp:/ { if (n++) print $6 }' /proc/net/snmp; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
ticks=$(getconf CLK_TCK)
thread_ticks() { for t in /proc/"$server_pid"/task/*; do printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat")"; done; }
thread_ticks >"$dir/threads.before"
before_err=$(rcvbuf_errors)
before_broker=$(broker_ticks)
before_cpu=$(cpu_ticks)
/usr/bin/time -f '%U %S' -o "$dir/load.time" \
    "$bin/coapgate-load" --target "127.0.0.1:$coap_port" --devices "$devices" \
    --concurrency "$concurrency" --requests "$requests" --payload-size "$payload" \
    --duration 120 --json "$@" >"$dir/report.json"
after_cpu=$(cpu_ticks)
after_err=$(rcvbuf_errors)
thread_ticks >"$dir/threads.after"
broker_cpu=$(( $(broker_ticks) - before_broker ))
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$server_pid/status")

python3 - "$dir/report.json" "$before_cpu" "$after_cpu" "$ticks" "$hwm" "$before_err" "$after_err" "$dir/load.time" "$dir/threads.before" "$dir/threads.after" "$broker_cpu" <<'EOF'
import collections, json, sys
report = json.load(open(sys.argv[1]))
cpu_s = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
load_user, load_sys = map(float, open(sys.argv[8]).read().split()[-2:])
answered = max(report["answered"], 1)
report["server"] = {
    "cpu_s": cpu_s,
    "cpu_us_per_request": round(cpu_s * 1e6 / answered, 1),
    "vm_hwm_kib": int(sys.argv[5]),
}
def threads(path):
    ticks = collections.Counter()
    for line in open(path):
        name, t = line.split()
        ticks[name] += int(t)
    return ticks
busy = threads(sys.argv[10])
busy.subtract(threads(sys.argv[9]))
report["server"]["threads_cpu_s"] = {k: v / int(sys.argv[4]) for k, v in busy.items() if v > 0}
broker_s = int(sys.argv[11]) / int(sys.argv[4])
if broker_s:
    report["mosquitto_cpu_s"] = broker_s
report["load_cpu_s"] = round(load_user + load_sys, 2)
report["rcvbuf_errors"] = int(sys.argv[7]) - int(sys.argv[6])
print(json.dumps(report))
EOF
