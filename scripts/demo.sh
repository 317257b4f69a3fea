#!/usr/bin/env bash
# The vmckpt demo: boot a VM whose guest wrote a pattern over most of its RAM and counts
# once a second, snapshot it, kill it, restore it, and show it continues where it was
# with its memory intact. Runs on Btrfs: when the build directory is not on Btrfs, it
# makes a loop-mounted Btrfs under the build directory (removed again at the end).
set -euo pipefail
BUILD_DIR=${1:-build}
V="$(pwd)/$BUILD_DIR/bin/vmckpt"
GUEST="$(pwd)/$BUILD_DIR/images/test-guest"
NAME=demo
MNT=
LOOPDEV=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
console() { "$V" logs "$NAME" | tr -d '\r'; }
# Output after the last restore marker (or all of it).
since_restore() { console | awk '/\[vmckpt: restored from snapshot/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}'; }
last_counter() { console | grep '^counter ' | tail -n 1 | cut -d' ' -f2; }
wait_for() {  # wait_for TEXT SECONDS [since-restore]
    for _ in $(seq 1 $(($2 * 5))); do
        if [ "${3:-}" = since-restore ]; then since_restore | grep -q "$1" && return 0
        else console | grep -q "$1" && return 0; fi
        sleep 0.2
    done
    echo "demo: the guest did not print '$1' within $2 s" >&2
    return 1
}
type_into_guest() { "$V" console "$NAME" --send "$1"; }  # the guest's memtest reads commands there
cleanup() {
    "$V" delete --force "$NAME" >/dev/null 2>&1 || true
    if [ -n "$MNT" ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; fi
    if [ -n "$LOOPDEV" ]; then losetup -d "$LOOPDEV" 2>/dev/null || true; fi
    [ -n "$MNT" ] && rm -rf "$(dirname "$MNT")"
}
trap cleanup EXIT

if [ -z "${VMCKPT_HOME:-}" ]; then
    if [ "$(stat -f -c %T "$BUILD_DIR")" = btrfs ]; then
        export VMCKPT_HOME="$(pwd)/$BUILD_DIR/demo-home"
    else
        step "Making a Btrfs store on a loop device (the build directory is not on Btrfs)"
        work="$(pwd)/$BUILD_DIR/demo-btrfs"
        rm -rf "$work"; mkdir -p "$work/mnt"
        truncate -s 8G "$work/image"
        mkfs.btrfs -q "$work/image"
        LOOPDEV=$(losetup --find --show "$work/image")
        MNT="$work/mnt"
        mount "$LOOPDEV" "$MNT"
        export VMCKPT_HOME="$MNT/vmckpt"
        echo "store: $VMCKPT_HOME on $LOOPDEV"
    fi
fi
"$V" delete --force "$NAME" >/dev/null 2>&1 || true

step "What this host can do"
run "$V" doctor || true

step "Create and boot a 1 GiB VM; its guest writes a pattern over 600 MiB of RAM and counts"
run "$V" create "$NAME" --memory 1G --kernel "$GUEST/kernel" --initrd "$GUEST/initrd" \
    --append "console=ttyS0 quiet vmckpt.workload=memtest vmckpt.memtest=--mib,600"
run "$V" start "$NAME"
wait_for "memtest: filled" 180
wait_for "counter 3" 60
console | grep -E '^memtest: filled|^counter' | tail -n 3

step "Snapshot it while it runs (the pause is what the guest notices)"
type_into_guest "dirty 64"; sleep 1
run "$V" snapshot "$NAME" --tag demo
at=$(last_counter)
echo "guest counter at the snapshot: $at"
wait_for "counter $((at + 4))" 60
echo "it keeps running: counter now $(last_counter)"

step "Kill it (QEMU gone, as after a crash)"
run "$V" stop --force "$NAME"
run "$V" status "$NAME"

step "Restore it: RAM is mapped from the snapshot, not read in first"
run "$V" restore "$NAME" demo
wait_for "^counter " 60 since-restore
first=$(since_restore | grep '^counter ' | head -n 1 | cut -d' ' -f2)
echo "first counter after the restore: $first (the snapshot was taken at $at)"
[ "$first" -ge "$at" ] && [ "$first" -le $((at + 2)) ] || { echo "demo: the guest did not continue from the snapshot" >&2; exit 1; }

step "Ask the guest to check every byte of its 600 MiB pattern"
type_into_guest "verify"
wait_for "memtest: verify" 120 since-restore
since_restore | grep '^memtest: verify'
since_restore | grep -q '^memtest: verify ok' || { echo "demo: memory damaged" >&2; exit 1; }

step "The snapshot catalog"
run "$V" snapshots "$NAME"

step "Clean up"
run "$V" delete --force "$NAME"
echo
echo "demo: done."
