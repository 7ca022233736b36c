#!/usr/bin/env python3
"""Summarises bench.sh's results (one JSON report per line): a table of
medians with min–max over the rounds, then each target of issue 13 as a
ratio of medians measured in the same run.

    bins/coapgate-load/bench-summary.py RESULTS.jsonl
"""

import collections
import json
import statistics
import sys


def load(path):
    runs = collections.defaultdict(list)
    for line in open(path):
        report = json.loads(line)
        r = report["run"]
        runs[(r["set"], r["server"], f'{r["devices"]}x{r["concurrency"]}')].append(report)
    return runs


def metrics(report):
    """What one run measured; None where it does not apply."""
    server = report.get("server") or {}
    dtls = report.get("dtls") or {}
    answered = report.get("answered") or 0
    handshakes = dtls.get("handshakes") or 0
    m = {
        "answers/s": report.get("throughput_per_s") if answered else None,
        "cpu µs/answer": server.get("cpu_us_per_request") if answered else None,
        "p99 ms": (report.get("latency_us") or {}).get("p99"),
        "peak RSS MiB": (server.get("hwm_kib_end") or 0) / 1024 or None,
        "broker µs/answer": (report["mosquitto_cpu_s"] * 1e6 / answered)
        if answered and report.get("mosquitto_cpu_s")
        else None,
        # The handshake benchmark only (not the session set-up before requests).
        "handshakes/s": dtls.get("handshakes_per_s") if handshakes and not answered else None,
        "cpu µs/handshake": server.get("cpu_us_per_handshake") if handshakes and not answered else None,
        # Requests given up after MAX_RETRANSMIT (the ones still in flight
        # when a timed run ends are not counted).
        "timeouts": report.get("timeouts") or 0,
    }
    if m["p99 ms"] is not None:
        m["p99 ms"] /= 1000
    return m


def median(runs, name):
    values = [v for v in (metrics(r)[name] for r in runs) if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def fmt(value):
    if value is None:
        return "–"
    if float(value).is_integer() and value < 1000:
        return str(int(value))
    if value >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


COLUMNS = ["answers/s", "cpu µs/answer", "p99 ms", "broker µs/answer", "peak RSS MiB",
           "handshakes/s", "cpu µs/handshake", "timeouts"]


def table(runs):
    print("| set | server | load | rounds | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|" + "---|" * len(COLUMNS))
    for (set_, server, load_), reports in sorted(runs.items()):
        cells = []
        for column in COLUMNS:
            mid, lo, hi = median(reports, column)
            if mid is None:
                cells.append("–")
            elif column == "timeouts" or lo == hi:
                cells.append(fmt(mid))
            else:
                cells.append(f"{fmt(mid)} ({fmt(lo)}–{fmt(hi)})")
        print(f"| {set_} | {server} | {load_} | {len(reports)} | " + " | ".join(cells) + " |")


# (what, numerator run, denominator run, metric, bound, "≥" or "≤")
TARGETS = [
    ("answers/s, coapgate → Mosquitto ÷ libcoap", ("plain", "mosquitto"), ("plain", "libcoap"), "answers/s", 0.7, "≥"),
    ("CPU per answer, coapgate → Mosquitto ÷ floor", ("plain", "mosquitto"), ("plain", "floor"), "cpu µs/answer", 2.0, "≤"),
    ("answers/s, coapgate → embedded ÷ libcoap", ("plain", "embedded"), ("plain", "libcoap"), "answers/s", 1.0, "≥"),
    ("CPU per answer, coapgate → embedded ÷ floor", ("plain", "embedded"), ("plain", "floor"), "cpu µs/answer", 2.0, "≤"),
    ("p99, coapgate → Mosquitto ÷ libcoap", ("plain", "mosquitto"), ("plain", "libcoap"), "p99 ms", 2.0, "≤"),
    ("new DTLS sessions/s, coapgate ÷ libcoap-openssl", ("dtls-handshakes", "embedded"), ("dtls-handshakes", "libcoap"), "handshakes/s", 1.5, "≥"),
    ("CPU per handshake, coapgate ÷ libcoap-openssl", ("dtls-handshakes", "embedded"), ("dtls-handshakes", "libcoap"), "cpu µs/handshake", 1.0, "≤"),
    ("CPU per request, DTLS ÷ plain (coapgate → Mosquitto)", ("dtls-requests", "mosquitto"), ("plain", "mosquitto"), "cpu µs/answer", 1.15, "≤"),
    ("CPU per request, DTLS ÷ plain (coapgate → embedded)", ("dtls-requests", "embedded"), ("plain", "embedded"), "cpu µs/answer", 1.15, "≤"),
    # Not a target of the issue: what a second shard brings on shared cores.
    ("answers/s, 2 shards ÷ 1 (→ embedded, unpinned)", ("shards", "embedded-t2"), ("shards", "embedded-t1"), "answers/s", 1.0, "≥"),
]


def targets(runs):
    loads = sorted({load_ for (_, _, load_) in runs})
    print("\n| target | load | ratio of medians | bound | met |")
    print("|---|---|---|---|---|")
    for what, (set_a, server_a), (set_b, server_b), column, bound, sense in TARGETS:
        for load_ in loads:
            if set_a == "dtls-handshakes" and load_ != "16x1":
                continue
            if set_a != "dtls-handshakes" and load_ == "16x1":
                continue
            a = median(runs.get((set_a, server_a, load_), []), column)[0]
            b = median(runs.get((set_b, server_b, load_), []), column)[0]
            if a is None or b is None or b == 0:
                continue
            ratio = a / b
            met = ratio >= bound if sense == "≥" else ratio <= bound
            print(f"| {what} | {load_} | {ratio:.2f} | {sense} {bound} | {'yes' if met else '**no**'} |")


def main():
    runs = load(sys.argv[1])
    if not runs:
        sys.exit("no results")
    table(runs)
    targets(runs)


if __name__ == "__main__":
    main()
