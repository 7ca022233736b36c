#!/usr/bin/env bash
# Where a release `coapgate serve` spends its CPU under the benchmark's
# plain load (docs/performance.md, "Where the time goes"): `perf record`
# on the server only, sampling its CPU clock, while `coapgate-load` drives
# it, then the top entries of `perf report` by self time, and the same
# grouped by shared object (kernel, libc, coapgate); then a second run of
# the same load under `perf stat` on the syscall tracepoints, for the
# server's system calls per answer by kind.
#
#   cargo build --release -p coapgate -p coapgate-load
#   bins/coapgate-load/profile.sh [mosquitto|embedded] [DEVICES] [CONCURRENCY] [SECONDS]
#
# Defaults: mosquitto 64 1 10. The generator runs on GEN_CPUS (1), the
# server and Mosquitto on SERVER_CPUS (0). OUT keeps perf.data and the
# reports in a directory of your choice. Needs `perf` (Debian: linux-perf);
# hardware counters are not needed (the cpu-clock software event).
set -euo pipefail

broker=${1:-mosquitto}
devices=${2:-64}
concurrency=${3:-1}
seconds=${4:-10}
gen_cpus=${GEN_CPUS:-1}
server_cpus=${SERVER_CPUS:-0}

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/coapgate-profile.XXXXXX)}
mkdir -p "$out"
dir=$(mktemp -d /tmp/coapgate-profile-run.XXXXXX)
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"
command -v perf >/dev/null || { echo "profile.sh needs perf (apt-get install linux-perf)" >&2; exit 2; }

coap_port=$(free_port)
mqtt_port=$(free_port)
start_coapgate "$broker" "$coap_port" 0 "$mqtt_port" --devices "$devices"
wait_ready "$coap_port"
pin_servers "$server_cpus"
sleep 0.3

perf record -e cpu-clock -F 1999 -p "$server_pid" -o "$out/perf.data" -- sleep "$seconds" 2>"$out/perf-record.log" &
perf_pid=$!
taskset -c "$gen_cpus" "$bin/coapgate-load" --target "127.0.0.1:$coap_port" --devices "$devices" \
    --concurrency "$concurrency" --requests 100000000 --payload-size 64 \
    --server-pid "$server_pid" --duration "$seconds" --json >"$out/report.json"
wait "$perf_pid" || true

report() {
    perf report -i "$out/perf.data" --no-children --stdio "$@" 2>/dev/null |
        grep -v '^#' | sed -e 's/ *$//' -e 's/ \+- \+-$//' | grep -v '^$'
}
report --sort symbol --percent-limit 0.8 >"$out/symbols.txt"
report --sort dso >"$out/dso.txt"
# The second run: system calls by kind (no sampling, so the counts are
# exact and the run is not slowed by the profiler).
calls=(recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg read write writev epoll_wait futex)
events=$(printf 'syscalls:sys_enter_%s,' "${calls[@]}")raw_syscalls:sys_enter
perf stat -x, -e "$events" -p "$server_pid" -o "$out/syscalls.csv" -- sleep "$seconds" &
stat_pid=$!
taskset -c "$gen_cpus" "$bin/coapgate-load" --target "127.0.0.1:$coap_port" --devices "$devices" \
    --concurrency "$concurrency" --requests 100000000 --payload-size 64 \
    --server-pid "$server_pid" --duration "$seconds" --json >"$out/report-syscalls.json"
wait "$stat_pid" || true

python3 - "$out/report.json" "$out/report-syscalls.json" "$out/syscalls.csv" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f'load (profiled): {r["answered"]} answered, {r["throughput_per_s"]:.0f}/s, '
      f'server {r["server"]["cpu_us_per_request"]:.1f} µs CPU per answer, p99 {r["latency_us"]["p99"]} µs')
r = json.load(open(sys.argv[2]))
answered = max(r["answered"], 1)
print(f'load (counted):  {r["answered"]} answered, {r["throughput_per_s"]:.0f}/s, '
      f'server {r["server"]["cpu_us_per_request"]:.1f} µs CPU per answer')
counts = []
for line in open(sys.argv[3]):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].replace(".", "").isdigit():
        name = fields[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all")
        counts.append((name, int(float(fields[0]))))
print("system calls per answer: " + ", ".join(f"{n} {c / answered:.2f}" for n, c in counts if c))
EOF
echo "== by shared object"
head -12 "$out/dso.txt"
echo "== top symbols (self)"
head -40 "$out/symbols.txt"
echo "(perf.data and the full reports: $out)"
