#!/usr/bin/env bash
# A constant-rate soak of a release `coapgate serve` on loopback
# (docs/reliability.md, "Soak"): coapgate-load sends RATE requests/s from
# DEVICES devices for SECONDS, and every 10 s this prints one row of a
# Markdown table — the server's VmRSS, the deduplication cache's entries and
# bytes, and the requests answered so far — then the load generator's
# summary. With the RFC's 247 s EXCHANGE_LIFETIME the cache fills during
# the first ~4 minutes and must then stay level, and so must RSS.
#
#   cargo build --release -p coapgate -p coapgate-load
#   bins/coapgate-load/soak.sh [SECONDS=600] [RATE=500] [DEVICES=200]
#
# Everything listens on 127.0.0.1 only; the server is stopped at the end.
set -euo pipefail

seconds=${1:-600}
rate=${2:-500}
devices=${3:-200}

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/coapgate-soak.XXXXXX)
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"
coap_port=$(free_port)
mqtt_port=$(free_port)
ADMIN_PORT=$(free_port)

start_coapgate embedded "$coap_port" 0 "$mqtt_port" --devices "$devices"
wait_ready "$coap_port"

"$bin/coapgate-load" --target "127.0.0.1:$coap_port" --devices "$devices" \
    --concurrency 1 --requests $((rate * seconds)) --rate "$rate" \
    --duration $((seconds + 60)) --json >"$dir/report.json" &
load_pid=$!

metric() { awk -v name="$1" '$1 == name { print $2 }' <<<"$2"; }
echo "| t (s) | VmRSS (MiB) | dedup entries | dedup MiB | answered |"
echo "|---|---|---|---|---|"
start=$(date +%s)
while kill -0 "$load_pid" 2>/dev/null; do
    t=$(($(date +%s) - start))
    rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")
    text=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
    entries=$(metric coapgate_dedup_entries "$text")
    bytes=$(metric coapgate_dedup_bytes "$text")
    answered=$(awk '/^coapgate_requests_total\{/ { s += $2 } END { print s + 0 }' <<<"$text")
    printf '| %s | %s | %s | %.1f | %s |\n' "$t" "$rss" "${entries:-?}" \
        "$(awk -v b="${bytes:-0}" 'BEGIN { print b / 1048576 }')" "$answered"
    sleep 10
done
wait "$load_pid"
hwm=$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")
echo
echo "VmHWM ${hwm} MiB"
cat "$dir/report.json"
