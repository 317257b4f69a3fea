#!/bin/sh
# memtest (memtest.sh: RAM pattern, counter, console commands) with a disk writer beside
# it, for moving a VM and its disk together. Every 0.2 s the writer puts record N into
# sector N-1 of /dev/vda (O_DIRECT, past the guest's page cache) and the same record into
# a file in /tmp, which lives in guest RAM; every 5 records it reads the disk back and
# compares it with the file: "diskwriter: ok N" when the disk holds every record written
# so far, "diskwriter: MISMATCH N" when not. Memory and disk must arrive as one.
disk=/dev/vda
copy=/tmp/diskwriter.records
diskwriter() {
    : >"$copy"
    n=0
    while :; do
        n=$((n + 1))
        printf '%-511s\n' "diskwriter record $n" >>"$copy"
        printf '%-511s\n' "diskwriter record $n" |
            dd of="$disk" bs=512 seek=$((n - 1)) count=1 oflag=direct conv=notrunc 2>/dev/null ||
            echo "diskwriter: write $n failed"
        if [ $((n % 5)) -eq 0 ]; then
            ondisk=$(dd if="$disk" bs=512 count=$n iflag=direct 2>/dev/null | md5sum)
            inram=$(md5sum <"$copy")
            if [ "$ondisk" = "$inram" ]; then echo "diskwriter: ok $n"; else echo "diskwriter: MISMATCH $n"; fi
        fi
        sleep 0.2
    done
}
if [ -b "$disk" ]; then
    diskwriter </dev/null &
else
    echo "diskwriter: no $disk"
fi
exec sh /workloads/memtest.sh
