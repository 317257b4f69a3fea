#!/usr/bin/env bash
# The vmckpt demo: create a VM from the test guest, boot it, watch it count, pause and
# resume it, stop and delete it. Uses a private store under the build directory.
set -euo pipefail
BUILD_DIR=${1:-build}
V="$BUILD_DIR/bin/vmckpt"
GUEST="$BUILD_DIR/images/test-guest"
export VMCKPT_HOME=${VMCKPT_HOME:-$(pwd)/$BUILD_DIR/demo-home}
NAME=demo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
last_counter() { "$V" logs "$NAME" | tr -d '\r' | grep '^counter ' | tail -n 1 | cut -d' ' -f2; }
wait_for() {  # wait_for TEXT SECONDS
    for _ in $(seq 1 $(($2 * 5))); do
        "$V" logs "$NAME" | grep -q "$1" && return 0
        sleep 0.2
    done
    echo "demo: the guest did not print '$1' within $2 s" >&2
    return 1
}
cleanup() { "$V" delete --force "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

step "What this host can do"
run "$V" doctor || true

step "Create and boot a 1 GiB VM (test guest: Debian kernel + busybox, counting once a second)"
run "$V" create "$NAME" --memory 1G --kernel "$GUEST/kernel" --initrd "$GUEST/initrd" \
    --append "console=ttyS0 quiet vmckpt.workload=counter"
run "$V" start "$NAME"
run "$V" status "$NAME"
wait_for "counter 3" 120
run "$V" logs "$NAME" -n 3

step "Pause: the guest's vCPUs stop (QMP STOP), the counter freezes"
run "$V" pause "$NAME"
before=$(last_counter); sleep 3; after=$(last_counter)
echo "counter before: $before, 3 s later: $after"
[ "$before" = "$after" ] || { echo "demo: the guest kept running while paused" >&2; exit 1; }

step "Resume: it continues where it was"
run "$V" resume "$NAME"
wait_for "counter $((after + 2))" 60 || exit 1
run "$V" logs "$NAME" -n 2

step "Stop (ACPI power-off) and delete"
run "$V" stop "$NAME"
run "$V" delete "$NAME"
run "$V" list
trap - EXIT
echo
echo "demo: done. Snapshot and restore are not built yet (see README, 'Status')."
