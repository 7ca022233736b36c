#!/usr/bin/env bash
# The million-device benchmark (issue 13): a release `coapgate serve` on a
# SQLite store holding N devices and N PSK records. Measures the time from
# process start to the CoAP socket answering a ping, the server's RSS, the
# CPU per request of a 5 s load run over 64 of the devices, and the admin
# API's device listing (first, middle and last page of 1000). Runs a
# reference pass with REF devices (default 64) first, so that
#
#   RSS per registered device = (RSS_N − RSS_REF) / (N − REF).
#
#   cargo build --release -p coapgate -p coapgate-load
#   nice bins/coapgate-load/million.sh [N=1000000]
#
# REF=0 skips the reference pass; LOAD_S (default 5) is the load run's
# length; KEEP=1 keeps the run directory (stores, configurations, server
# logs, responses). Prints one JSON line per pass, then a short summary.
#
# The store: a release `coapgate serve` on an empty file migrates the schema
# once (PRAGMA user_version as coapgate leaves it); each pass copies that file
# and fills it with the sqlite3 CLI, one transaction, a recursive CTE.
# Device i (0-based) has ICCID FIRST_ICCID + i (bins/coapgate-load/src/
# devices.rs), IMSI 901280000000000 + i, status ACTIVE, no name, and a
# STRING PSK `coapgate-load-<ICCID>` (what `coapgate-load --dtls` uses);
# devices 0–63 are at 127.0.0.2 upward, as `coapgate-load --devices 64`
# sends from, the others at 10.x.y.z (x.y.z: i in base 256).
#
# Everything listens on 127.0.0.1 only (free ports); each server is stopped
# by its PID; every wait is bounded.
set -euo pipefail

n=${1:-1000000}
ref=${REF:-64}
load_s=${LOAD_S:-5}
[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 16000000 ]] || { echo "N: 1 to 16000000" >&2; exit 2; }
[[ $ref =~ ^[0-9]+$ && $ref -lt $n ]] || { echo "REF: 0 to N-1" >&2; exit 2; }

root=$(cd "$(dirname "$0")/../.." && pwd)
for b in coapgate coapgate-load; do
    [[ -x $root/target/release/$b ]] || { echo "missing target/release/$b: cargo build --release -p coapgate -p coapgate-load" >&2; exit 2; }
done
command -v sqlite3 >/dev/null || { echo "needs the sqlite3 CLI" >&2; exit 2; }
dir=$(mktemp -d /tmp/coapgate-million.XXXXXX)
# free_port, `bin`, and the EXIT trap that stops $server_pid and removes $dir.
# shellcheck source=measure-common.sh
source "$(dirname "$0")/measure-common.sh"

token=million-bench-token
first_iccid=$(sed -n 's/^pub const FIRST_ICCID: u64 = \([0-9_]*\);/\1/p' "$root/bins/coapgate-load/src/devices.rs" | tr -d _)
[[ -n $first_iccid ]] || { echo "FIRST_ICCID not found in devices.rs" >&2; exit 1; }

# write_config NAME DB: $dir/NAME.toml for a server on the SQLite file DB,
# on fresh free ports (coap_port, admin_port).
write_config() {
    coap_port=$(free_port)
    admin_port=$(free_port)
    local mqtt_port
    mqtt_port=$(free_port)
    printf '[coap]\nbind = "127.0.0.1:%s"\n[coaps]\nbind = "127.0.0.1:0"\n[admin]\nbind = "127.0.0.1:%s"\ntoken = "%s"\n[store]\nurl = "sqlite://%s"\n[mqtt]\nembedded_bind = "127.0.0.1:%s"\n' \
        "$coap_port" "$admin_port" "$token" "$2" "$mqtt_port" >"$dir/$1.toml"
}

# start NAME: a release server on $dir/NAME.toml (log $dir/NAME.log);
# sets server_pid and t_start (EPOCHREALTIME just before the fork).
start() {
    t_start=$EPOCHREALTIME
    (cd "$dir" && RUST_LOG=warn exec "$bin/coapgate" serve --config "$dir/$1.toml" >"$dir/$1.log" 2>&1) &
    server_pid=$!
}

# ready_after PORT: seconds from t_start until the CoAP port answers a ping
# (empty CON → RST), polled every 20 ms for at most 180 s; fails when the
# server exits or the time runs out.
ready_after() {
    python3 - "$1" "$t_start" "$server_pid" <<'PY'
import os, socket, sys, time
port, t0, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    tick = time.monotonic()
    try:
        s.settimeout(0.02)
        s.send(b"\x40\x00\x00\x01")
        data = s.recv(16)
        if len(data) >= 4 and data[0] >> 4 == 0x7 and data[2:4] == b"\x00\x01":
            print(f"{time.time() - t0:.3f}")
            sys.exit(0)
    except (socket.timeout, ConnectionRefusedError, OSError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                sys.exit("the server exited before its CoAP port answered")
    except FileNotFoundError:
        sys.exit("the server exited before its CoAP port answered")
    time.sleep(max(0.0, 0.02 - (time.monotonic() - tick)))
sys.exit("the CoAP port did not answer within 180 s")
PY
}

# stop: SIGTERM the server, wait at most 20 s, then SIGKILL; clears server_pid.
stop() {
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 200); do
        [[ -r /proc/$server_pid/stat && $(awk '{ print $3 }' "/proc/$server_pid/stat") != Z ]] || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    stop_rc=0
    wait "$server_pid" 2>/dev/null || stop_rc=$?
    server_pid=
}

status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$server_pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
ticks=$(getconf CLK_TCK)

# The migrated, empty store every pass starts from.
write_config migrate "$dir/empty.db"
start migrate
ready_after "$coap_port" >/dev/null || { cat "$dir/migrate.log" >&2; exit 1; }
stop
sqlite3 "$dir/empty.db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
schema_version=$(sqlite3 "$dir/empty.db" 'PRAGMA user_version;')
for t in devices psks; do
    [[ $(sqlite3 "$dir/empty.db" "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '$t';") == 1 ]] ||
        { echo "the migrated store has no table $t" >&2; exit 1; }
done

# seed COUNT DB: COUNT devices and PSK records into a copy of the empty store.
seed() {
    cp "$dir/empty.db" "$2"
    sqlite3 "$2" >/dev/null <<SQL
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
BEGIN;
INSERT INTO devices (iccid, imsi, ip, status, name)
WITH RECURSIVE i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k + 1 < $1)
SELECT CAST($first_iccid + k AS TEXT),
       CAST(901280000000000 + k AS TEXT),
       CASE WHEN k < 64 THEN '127.0.' || ((k + 2) / 256) || '.' || ((k + 2) % 256)
            ELSE '10.' || (k / 65536 % 256) || '.' || (k / 256 % 256) || '.' || (k % 256) END,
       'ACTIVE', NULL
FROM i;
INSERT INTO psks (iccid, secret, origin, last_bootstrap_ms, updated_ms)
SELECT iccid, 'coapgate-load-' || iccid, 'STRING', NULL, $(date +%s%3N)
FROM devices;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
    local got
    got=$(sqlite3 "$2" 'SELECT (SELECT count(*) FROM devices) || " " || (SELECT count(*) FROM psks);')
    [[ $got == "$1 $1" ]] || { echo "seeded $got, expected $1 $1" >&2; exit 1; }
}

# list PAGE: "HTTP_CODE SECONDS ITEMS" of GET /v1/devices?pageSize=1000&page=PAGE.
list() {
    local out code_time
    out=$dir/page.json
    code_time=$(curl -s --max-time 120 -o "$out" -w '%{http_code} %{time_total}' \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port/v1/devices?pageSize=1000&page=$1") || code_time="000 -1"
    printf '%s %s\n' "$code_time" "$(python3 -c 'import json,sys
try: print(len(json.load(open(sys.argv[1]))))
except Exception: print(-1)' "$out")"
}

# pass COUNT: one measurement; prints its JSON line, appends it to $dir/passes.
pass() {
    local count=$1 db=$dir/store-$1.db name=pass-$1
    local t0 seed_s ready_s rss_ready hwm_ready rss_start hwm_start start_cpu load_devices
    t0=$EPOCHREALTIME
    seed "$count" "$db"
    seed_s=$(python3 -c "print(round($EPOCHREALTIME - $t0, 2))")

    write_config "$name" "$db"
    start "$name"
    ready_s=$(ready_after "$coap_port") || { cat "$dir/$name.log" >&2; exit 1; }
    rss_ready=$(status_kib VmRSS)
    hwm_ready=$(status_kib VmHWM)
    start_cpu=$(cpu_ticks)
    sleep 1
    rss_start=$(status_kib VmRSS)
    hwm_start=$(status_kib VmHWM)

    load_devices=$((count < 64 ? count : 64))
    "$bin/coapgate-load" --target "127.0.0.1:$coap_port" --devices "$load_devices" \
        --concurrency 1 --payload-size 64 --requests 1000000000 --duration "$load_s" \
        --server-pid "$server_pid" --json >"$dir/$name.load.json" || echo "coapgate-load exited $?" >&2

    # The admin API: healthz (bounded wait), then pages 1, the middle, the last.
    for _ in $(seq 100); do
        curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$admin_port/healthz" && break
        sleep 0.1
    done
    local last=$(((count + 999) / 1000)) mid
    mid=$(((last + 1) / 2))
    : >"$dir/$name.pages"
    for _ in 1 2 3; do
        printf 'first 1 %s\n' "$(list 1)" >>"$dir/$name.pages"
        printf 'middle %s %s\n' "$mid" "$(list "$mid")" >>"$dir/$name.pages"
        printf 'last %s %s\n' "$last" "$(list "$last")" >>"$dir/$name.pages"
    done
    local rss_end hwm_end
    rss_end=$(status_kib VmRSS)
    hwm_end=$(status_kib VmHWM)
    stop
    python3 - "$count" "$seed_s" "$ready_s" "$rss_ready" "$hwm_ready" "$rss_start" "$hwm_start" \
        "$rss_end" "$hwm_end" "$start_cpu" "$ticks" "$dir/$name.load.json" "$dir/$name.pages" \
        "$stop_rc" "$(stat -c %s "$db")" "$schema_version" "$dir/$name.log" <<'PY' | tee -a "$dir/passes"
import json, sys
a = sys.argv
try:
    load = json.load(open(a[12]))
except Exception:
    load = {}
server = load.get("server", {})
pages = {}
for line in open(a[13]):
    which, page, code, secs, items = line.split()
    pages.setdefault(which, (int(page), []))[1].append((code, float(secs), int(items)))
def page(which):
    p, runs = pages.get(which, (None, []))
    return {"page": p, "codes": sorted({c for c, _, _ in runs}), "items": runs[0][2] if runs else None,
            "ms": [round(s * 1000, 1) for _, s, _ in runs]}
log = open(a[17], errors="replace").read().splitlines()
print(json.dumps({
    "devices": int(a[1]), "psks": int(a[1]), "schema_version": int(a[16]),
    "db_bytes": int(a[15]), "seed_s": float(a[2]),
    "start_to_socket_s": float(a[3]),
    "start_cpu_s": round(int(a[10]) / int(a[11]), 2),
    "rss_kib_ready": int(a[4]), "hwm_kib_ready": int(a[5]),
    "rss_kib_start": int(a[6]), "hwm_kib_start": int(a[7]),
    "load": {"answered": load.get("answered"), "responses": load.get("responses"),
             "timeouts": load.get("timeouts"), "answers_per_s": load.get("throughput_per_s"),
             "latency_us": load.get("latency_us"),
             "server_cpu_us_per_answer": server.get("cpu_us_per_request")},
    "list": {"first": page("first"), "middle": page("middle"), "last": page("last")},
    "rss_kib_end": int(a[8]), "hwm_kib_end": int(a[9]),
    "server_exit": int(a[14]),
    "server_log_warnings": sum(1 for l in log if " WARN " in l or " ERROR " in l or "panicked" in l),
}))
PY
}

[[ $ref -gt 0 ]] && pass "$ref"
pass "$n"

python3 - "$dir/passes" "$n" "$ref" <<'PY'
import json, sys
passes = {p["devices"]: p for p in map(json.loads, open(sys.argv[1]))}
n, ref = int(sys.argv[2]), int(sys.argv[3])
big = passes[n]
print(f"\n{n} devices + PSKs: seeded in {big['seed_s']} s ({big['db_bytes'] / 2**20:.0f} MiB), "
      f"CoAP socket answers {big['start_to_socket_s']} s after start ({big['start_cpu_s']} s CPU)")
for p in sorted(passes):
    q = passes[p]
    print(f"  {p:>8} devices: RSS {q['rss_kib_start'] / 1024:.1f} MiB (HWM {q['hwm_kib_start'] / 1024:.1f}), "
          f"{q['load']['answers_per_s'] or 0:.0f} answers/s, {q['load']['server_cpu_us_per_answer'] or 0:.1f} µs server CPU/answer, "
          f"list first/middle/last {min(q['list']['first']['ms'])}/{min(q['list']['middle']['ms'])}/"
          f"{min(q['list']['last']['ms'])} ms (best of 3), RSS after {q['rss_kib_end'] / 1024:.1f} MiB")
if ref in passes:
    r = passes[ref]
    per = (big["rss_kib_start"] - r["rss_kib_start"]) * 1024 / (n - ref)
    per_hwm = (big["hwm_kib_start"] - r["hwm_kib_start"]) * 1024 / (n - ref)
    print(f"  RSS per registered device: {per:.0f} B (HWM: {per_hwm:.0f} B); target ≤ 150 B, start < 2 s")
PY
