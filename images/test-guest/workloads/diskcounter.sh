#!/bin/sh
# Keeps a counter in memory and writes it to the first sector of every virtio disk
# (O_DIRECT, past the guest's page cache). Before each write it reads the disks back:
# after a restore, a disk captured at the same instant as memory still holds the value
# memory last wrote, so it prints "diskcounter: ok N"; otherwise "diskcounter: MISMATCH".
n=0
disks=$(ls -d /dev/vd? 2>/dev/null)
[ -n "$disks" ] || { echo "diskcounter: no virtio disks"; exit 1; }
write_all() {
    for d in $disks; do
        printf '%-511s\n' "$1" | dd of="$d" bs=512 count=1 oflag=direct conv=notrunc 2>/dev/null ||
            echo "diskcounter: write $d failed"
    done
}
write_all 0
while :; do
    for d in $disks; do
        got=$(dd if="$d" bs=512 count=1 iflag=direct 2>/dev/null | tr -d ' \n\0')
        if [ "$got" = "$n" ]; then
            echo "diskcounter: ok $n ${d##*/}"
        else
            echo "diskcounter: MISMATCH ${d##*/} disk=$got memory=$n"
        fi
    done
    n=$((n + 1))
    write_all "$n"
    sleep 1
done
