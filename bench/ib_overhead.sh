#!/usr/bin/env bash
# The InfiniBand interposer's runtime cost: RC SEND/RECV latency and RDMA WRITE bandwidth
# (vmckpt-ib-perf) between two TCG guests on soft-RoCE, with and without libvmckpt-ib.so
# preloaded. Both guests boot once; runs alternate (native, interposed, native, ...) so
# that drift hits both alike. The result is the median of each and their ratio, per
# test and message size.
#
#   bench/ib_overhead.sh [--build DIR] [--runs N] [--out DIR]
#
# Writes DIR/<UTC time>.ib-overhead.json (default bench/results) and prints a summary.
# Needs the InfiniBand test guest (make; build/images/test-guest-ib) and root for QEMU's
# loopback multicast; uses a private store in a temporary directory and removes it.
# Under TCG both the guests' CPUs and rxe (software RoCE in the guest kernel) are
# emulated: the absolute figures say nothing about hardware, the ratio is the interposer's
# cost relative to a slow data path.
set -euo pipefail

build=build runs=3 out=bench/results
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "ib_overhead.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
vmckpt=$build/bin/vmckpt
img=$build/images/test-guest-ib
for f in "$vmckpt" "$img/kernel" "$img/initrd"; do
    [ -e "$f" ] || { echo "ib_overhead.sh: $f not found; build first (make)" >&2; exit 1; }
done
[ "$runs" -ge 1 ] && [ "$runs" -le 5 ] || { echo "ib_overhead.sh: --runs must be 1..5 (the kernel command line is short)" >&2; exit 2; }

home=$(mktemp -d /tmp/vmckpt-ib-bench.XXXXXX)
export VMCKPT_HOME=$home
cleanup() {
    for vm in ibb1 ibb2; do "$vmckpt" delete --force "$vm" >/dev/null 2>&1 || true; done
    rm -rf "$home"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lat="--test,lat,--size,8:4096:65536,--iters,1000"
bw="--test,bw,--size,4096:65536:262144,--iters,200,--window,4"
server= client=
for ((i = 1; i <= runs; i++)); do
    for mode in native pre; do
        for t in "$lat" "$bw"; do
            server+="+@$mode,--server,7000"
            client+="+@$mode,--client,10.77.0.1:7000,$t,--json"
        done
    done
done
server=${server#+} client=${client#+}
group="239.255.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)):$((20000 + RANDOM % 20000))"
for i in 1 2; do
    if [ $i = 1 ]; then args=$server; else args=$client; fi
    "$vmckpt" create "ibb$i" --memory 512M --kernel "$img/kernel" --initrd "$img/initrd" --accel tcg \
        --net "socket-mcast,group=$group" --no-agent \
        --append "console=ttyS0 quiet no_timer_check vmckpt.workload=ibverbs vmckpt.ibtool=perf vmckpt.ip=10.77.0.$i/24 vmckpt.ib=$args" >/dev/null
done
"$vmckpt" start ibb1 >/dev/null
"$vmckpt" start ibb2 >/dev/null
total=$((runs * 4))
echo "ib_overhead.sh: 2 TCG guests, $runs runs of each test native and interposed ($total runs)"
deadline=$((SECONDS + 600))
while :; do
    log=$("$vmckpt" logs ibb2 --raw 2>/dev/null || true)
    done_runs=$(grep -c '^ibverbs: exit' <<< "$log" || true)
    if grep -q '^ibverbs: exit [1-9]' <<< "$log" || grep -q 'ibverbs: rdma link add' <<< "$log"; then
        echo "ib_overhead.sh: a run failed:" >&2
        grep -E '^(ibverbs|ib-perf|vmckpt-ib)' <<< "$log" | tail -20 >&2
        echo "ib_overhead.sh: the server's side:" >&2
        "$vmckpt" logs ibb1 --raw 2>/dev/null | grep -E '^(ibverbs|ib-perf|vmckpt-ib)' | tail -20 >&2
        exit 1
    fi
    [ "$done_runs" -ge "$total" ] && break
    [ $SECONDS -lt $deadline ] || { echo "ib_overhead.sh: timed out after 600 s ($done_runs of $total runs)" >&2; exit 1; }
    sleep 2
done

mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
result=$out/$stamp.ib-overhead.json
logfile=$home/client.log
tr -d '\r' <<< "$log" > "$logfile"
python3 - "$result" "$runs" "$logfile" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
lines = open(sys.argv[3]).read().splitlines()
mode = None
samples = {}  # (test, size, mode) -> [value]
for line in lines:
    line = line.strip()
    if line.startswith("ibverbs: run "):
        mode = line.split()[-1]
    elif line.startswith("{") and mode:
        r = json.loads(line)
        test = r.get("test")
        value = r.get("median_us") if test == "lat" else r.get("MBps", r.get("mbps"))
        if value is None:
            sys.exit("ib_overhead.sh: unexpected perf line: " + line)
        samples.setdefault((test, r["size"], mode), []).append(float(value))
rows = []
for (test, size, m) in sorted(samples):
    if m != "native":
        continue
    nat = samples[(test, size, "native")]
    pre = samples.get((test, size, "preload"), [])
    if len(nat) != runs or len(pre) != runs:
        sys.exit(f"ib_overhead.sh: {test} size {size}: {len(nat)} native and {len(pre)} interposed samples, expected {runs}")
    mn, mp = statistics.median(nat), statistics.median(pre)
    # Cost as a fraction: latency grows, bandwidth shrinks.
    cost = (mp / mn - 1) if test == "lat" else (1 - mp / mn)
    rows.append({"test": test, "size": size, "unit": "us (median one-way)" if test == "lat" else "MB/s",
                 "native": nat, "interposed": pre, "native_median": mn, "interposed_median": mp,
                 "cost_percent": round(100 * cost, 2)})
json.dump({"bench": "ib-overhead", "runs": runs, "rows": rows}, open(out, "w"), indent=1)
for r in rows:
    print(f"{r['test']:3} {r['size']:>8} B: native {r['native_median']:10.2f}  interposed {r['interposed_median']:10.2f} {r['unit']}  cost {r['cost_percent']:+.2f} %")
PY
echo "ib_overhead.sh: wrote $result"
