#!/usr/bin/env bash
# What the InfiniBand teardown and rebuild cost a group: two TCG guests run
# vmckpt-ib-workload under libvmckpt-ib.so on rxe0; each cycle takes a group snapshot
# mid-traffic (the plugins drain, then close their devices before the capture, then
# rebuild and reconnect through the host's agent rounds after the resume), kills both
# QEMUs and restores the group. Cycles alternate: a restore that moves the job to the
# other rxe link (--map ib=rxe1, then back to rxe0) and, as the baseline in the same run,
# one that rebuilds on the link the job is on (no map).
#
#   bench/ib_rebuild.sh [--build DIR] [--cycles N] [--out DIR]
#
# N (default 6, even, 2..20) cycles, half of each kind. Reports medians: the group
# snapshot's pause (first stop to last resume) and its agent rounds after the resume
# (exchange_ms), the restore's total (total_ms) and its three agent rounds, and each
# process's rebuild (the plugin's "rebuilt on ... in N ms" line). Writes
# DIR/<UTC time>.ib-rebuild.json (default bench/results). Needs the InfiniBand test guest
# (make) and root; uses a private store in a temporary directory and removes it. Under
# TCG every figure is slow in absolute terms; the ratio is the move's share.
set -euo pipefail

build=build cycles=6 out=bench/results
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --cycles) cycles=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "ib_rebuild.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
vmckpt=$build/bin/vmckpt
img=$build/images/test-guest-ib
for f in "$vmckpt" "$img/kernel" "$img/initrd"; do
    [ -e "$f" ] || { echo "ib_rebuild.sh: $f not found; build first (make)" >&2; exit 1; }
done
[ "$cycles" -ge 2 ] && [ "$cycles" -le 20 ] && [ $((cycles % 2)) = 0 ] ||
    { echo "ib_rebuild.sh: --cycles must be even, 2..20" >&2; exit 2; }

home=$(mktemp -d /tmp/vmckpt-ib-rebuild.XXXXXX)
export VMCKPT_HOME=$home
qemu_pids() { for vm in ibr1 ibr2; do cat "$home/vms/$vm/run/qemu.pid" 2>/dev/null || true; done; }
cleanup() {
    for vm in ibr1 ibr2; do "$vmckpt" delete --force "$vm" >/dev/null 2>&1 || true; done
    rm -rf "$home"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

group="239.255.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)):$((20000 + RANDOM % 20000))"
iters=$((400 + 300 * cycles))  # a cycle takes about 5 s; the workload must outlast them
for i in 1 2; do
    if [ $i = 1 ]; then role="--listen,7000"; else role="--connect,10.77.0.1:7000"; fi
    "$vmckpt" create "ibr$i" --memory 512M --kernel "$img/kernel" --initrd "$img/initrd" --accel tcg \
        --net "socket-mcast,group=$group" \
        --append "console=ttyS0 quiet no_timer_check vmckpt.workload=ibverbs vmckpt.ibpreload=1 vmckpt.ip=10.77.0.$i/24 vmckpt.ib=$role,--dev,rxe0,--iters,$iters,--report,5,--interval-ms,20 vmckpt.ibnet=mv0@eth0/1000/10.78.0.$i/24 vmckpt.rxe=rxe0@eth0,rxe1@mv0" >/dev/null
    "$vmckpt" start "ibr$i" >/dev/null
done

console() { "$vmckpt" logs "$1" --raw 2>/dev/null | tr -d '\r' || true; }
# The last "conn 0 iter K" since the last restore marker.
last_iter() { console "$1" | awk '/^\[vmckpt: restored/{k=0} /^ibtest: conn 0 iter /{k=$5} END{print k+0}'; }
failed() { console "$1" | grep -E '^ibtest: FAIL' || true; }
wait_iter() {
    local target=$1 deadline=$((SECONDS + 300))
    for vm in ibr1 ibr2; do
        while [ "$(last_iter $vm)" -lt "$target" ]; do
            if [ -n "$(failed $vm)" ]; then echo "ib_rebuild.sh: $vm: $(failed $vm)" >&2; exit 1; fi
            [ $SECONDS -lt $deadline ] || { echo "ib_rebuild.sh: $vm stuck below iteration $target" >&2; exit 1; }
            sleep 1
        done
    done
}

echo "ib_rebuild.sh: 2 TCG guests, $cycles cycles (group restore with a move / in place, alternating)"
results=$home/cycles.jsonl
: > "$results"
wait_iter 20
target=rxe1
for ((c = 1; c <= cycles; c++)); do
    snap=$("$vmckpt" snapshot ibr1 ibr2 --group job --agent required --json)
    for pid in $(qemu_pids); do kill -9 "$pid" 2>/dev/null || true; done
    sleep 1
    if [ $((c % 2)) = 1 ]; then
        kind=move
        r=$("$vmckpt" restore ibr1 ibr2 --group job --map "ib=$target" --json)
        [ $target = rxe1 ] && target=rxe0 || target=rxe1
    else
        kind=in-place
        r=$("$vmckpt" restore ibr1 ibr2 --group job --json)
    fi
    sleep 3  # the consoles' "rebuilt" lines
    rebuilt=$(for vm in ibr1 ibr2; do console $vm | awk '/^\[vmckpt: restored/{m=""} /^vmckpt-ib: rebuilt on/{sub(/.* in /, ""); sub(/ ms.*/, ""); m=$0} END{print m}'; done | paste -sd, -)
    python3 -c 'import json,sys; d=json.loads(sys.argv[3]); s=json.loads(sys.argv[4])
notes=[m["agent_note"] for m in d["members"] if m["agent_note"]]
notes+=[m["agent"]["note"] for m in s["snapshots"] if m["agent"]["note"]]
if notes: sys.exit("ib_rebuild.sh: " + "; ".join(notes))
print(json.dumps({"kind": sys.argv[1], "total_ms": d["total_ms"], "exchange_ms": d["exchange_ms"],
                  "snapshot_pause_ms": s["pause_ms"], "snapshot_exchange_ms": s["exchange_ms"],
                  "rebuild_ms": [float(x) for x in sys.argv[2].split(",") if x]}))' "$kind" "$rebuilt" "$r" "$snap" >> "$results"
    wait_iter $(($(last_iter ibr1) + 15))
    echo "ib_rebuild.sh: cycle $c: $(tail -1 "$results")"
done

mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
result=$out/$stamp.ib-rebuild.json
python3 - "$result" "$results" <<'PY'
import json, statistics, sys
out, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
move = [r for r in rows if r["kind"] == "move"]
here = [r for r in rows if r["kind"] == "in-place"]
med = lambda rs, k: statistics.median(r[k] for r in rs)
m, h = med(move, "total_ms"), med(here, "total_ms")
rb = [x for r in move + here for x in r["rebuild_ms"]]
summary = {"bench": "ib-rebuild", "cycles": rows, "move_total_median_ms": m, "in_place_total_median_ms": h,
           "ratio_move_to_in_place": round(m / h, 3), "restore_exchange_median_ms": med(move + here, "exchange_ms"),
           "snapshot_pause_median_ms": med(rows, "snapshot_pause_ms"),
           "snapshot_exchange_median_ms": med(rows, "snapshot_exchange_ms"),
           "rebuild_median_ms": statistics.median(rb) if rb else None}
json.dump(summary, open(out, "w"), indent=1)
print(f"group snapshot: pause median {summary['snapshot_pause_median_ms']:.0f} ms; agent rounds after the resume "
      f"(rebuild, reconnect) {summary['snapshot_exchange_median_ms']:.0f} ms")
print(f"group restore with a move: median {m:.0f} ms; in place: {h:.0f} ms   ratio {m / h:.2f}")
print(f"restore's three agent rounds: median {summary['restore_exchange_median_ms']:.0f} ms; "
      f"each process's rebuild {summary['rebuild_median_ms']} ms")
PY
echo "ib_rebuild.sh: wrote $result"
