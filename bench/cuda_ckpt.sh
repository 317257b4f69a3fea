#!/usr/bin/env bash
# The CUDA side on a real GPU: (1) the driver checkpoint through vmckpt-cuda-ckpt (what
# the agent runs) against the GPU memory a process holds: lock, checkpoint, restore and
# unlock times, median of --runs; (2) libvmckpt-cuda.so's cost: a kernel-heavy run
# (vmckpt-cuda-workload's rounds, 1 GiB, 4 streams) and an allocation-heavy one
# (--alloc-loop: device and managed allocations and frees) with and without it
# preloaded, runs alternating, medians and their ratio.
#
#   bench/cuda_ckpt.sh [--bin DIR] [--lib DIR] [--runs N] [--sizes "MiB ..."] [--out DIR]
#
# DIR defaults: build/bin, build/lib. Writes OUT/<UTC time>.cuda-ckpt.json (default
# bench/results) and prints a summary. Needs an NVIDIA GPU and driver 12.8+ (r570+);
# exits 77 (skip) without one.
set -euo pipefail

bin=build/bin lib=build/lib runs=5 sizes="256 1024 4096 16384" out=bench/results
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift 2 ;;
        --lib) lib=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cuda_ckpt.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
helper=$bin/vmckpt-cuda-ckpt work=$bin/vmckpt-cuda-workload pre=$lib/libvmckpt-cuda.so
for f in "$helper" "$work" "$pre"; do
    [ -e "$f" ] || { echo "cuda_ckpt.sh: $f not found; build first (make)" >&2; exit 1; }
done
if ! gpus=$("$helper" gpus); then echo "cuda_ckpt.sh: SKIP: $gpus" >&2; exit 77; fi
[ "$runs" -ge 1 ] || { echo "cuda_ckpt.sh: --runs must be >= 1" >&2; exit 2; }
mkdir -p "$out"
tmp=$(mktemp -d /tmp/vmckpt-cuda-bench.XXXXXX)
wpid=
cleanup() { [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# (1) checkpoint/restore against GPU memory held
for mib in $sizes; do
    "$work" --mib "$mib" --streams 4 --rounds 100000000 --sleep-ms 5 >"$tmp/w.out" &
    wpid=$!
    for _ in $(seq 600); do grep -q '^round 3$' "$tmp/w.out" && break; sleep 0.1; done
    for r in $(seq "$runs"); do
        "$helper" checkpoint "$wpid" >"$tmp/ckpt.$mib.$r"
        "$helper" restore "$wpid" >"$tmp/rest.$mib.$r"
        sleep 0.3
    done
    kill "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=
done

# (2) interposer overhead, alternating plain and preloaded
kernel=(--mib 1024 --streams 4 --rounds 300)
alloc=(--mib 16 --streams 1 --rounds 1 --alloc-loop 3000)
for r in $(seq "$runs"); do
    "$work" "${kernel[@]}" >"$tmp/kern.plain.$r"
    LD_PRELOAD=$pre "$work" "${kernel[@]}" >"$tmp/kern.pre.$r"
    "$work" "${alloc[@]}" >"$tmp/alloc.plain.$r"
    LD_PRELOAD=$pre "$work" "${alloc[@]}" >"$tmp/alloc.pre.$r"
done

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
python3 - "$tmp" "$runs" "$sizes" "$gpus" "$out/$stamp.cuda-ckpt.json" <<'PY'
import json, statistics, sys
tmp, runs, sizes, gpus, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), json.loads(sys.argv[4]), sys.argv[5]
med = statistics.median
def one(path):
    return json.load(open(path))["processes"][0]
def line(path, key):
    for l in open(path):
        if l.startswith(key + " "): return float(l.split()[1])
    raise SystemExit(f"{path}: no {key}")
res = {"gpus": gpus["gpus"], "driver_version": gpus["driver_version"], "runs": runs, "checkpoint": [], "overhead": {}}
print(f"GPU {gpus['gpus'][0]}, driver {gpus['driver_version']}, medians of {runs}")
print(f"{'GPU MiB':>8} {'lock ms':>8} {'ckpt ms':>8} {'restore ms':>10} {'unlock ms':>9}")
for mib in sizes:
    c = [one(f"{tmp}/ckpt.{mib}.{r}") for r in range(1, runs + 1)]
    s = [one(f"{tmp}/rest.{mib}.{r}") for r in range(1, runs + 1)]
    row = {"mib": int(mib), "lock_ms": med(x["lock_ms"] for x in c), "checkpoint_ms": med(x["checkpoint_ms"] for x in c),
           "restore_ms": med(x["restore_ms"] for x in s), "unlock_ms": med(x["unlock_ms"] for x in s)}
    res["checkpoint"].append(row)
    print(f"{mib:>8} {row['lock_ms']:8.1f} {row['checkpoint_ms']:8.1f} {row['restore_ms']:10.1f} {row['unlock_ms']:9.2f}")
for name, key in (("kernel", "elapsed_ms"), ("alloc", "alloc_loop_ms")):
    stem = "kern" if name == "kernel" else "alloc"
    plain = [line(f"{tmp}/{stem}.plain.{r}", key) for r in range(1, runs + 1)]
    pre = [line(f"{tmp}/{stem}.pre.{r}", key) for r in range(1, runs + 1)]
    res["overhead"][name] = {"plain_ms": med(plain), "preloaded_ms": med(pre), "ratio": med(pre) / med(plain),
                             "plain_all": plain, "preloaded_all": pre}
    print(f"{name}-heavy: plain {med(plain):.1f} ms, preloaded {med(pre):.1f} ms, ratio {med(pre)/med(plain):.4f}")
json.dump(res, open(dest, "w"), indent=1)
print("wrote", dest)
PY
