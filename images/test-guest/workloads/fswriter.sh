#!/bin/sh
# Mounts the first virtio disk (ext4, made by the host) on /mnt and writes one small file
# every 0.2 s, each with fsync (dd conv=fsync); "fswriter: ack N" is printed only after
# that fsync returned, and N is kept in /run (guest RAM). Console command "check": every
# acknowledged file must be there with its content ("fswriter: check ok N" or
# "fswriter: check FAILED ..."). The fsfreeze test snapshots it while it writes.
mkdir -p /mnt
if ! mount -t ext4 /dev/vda /mnt; then
    echo "fswriter: mount /dev/vda failed"
    exit 1
fi
echo "fswriter: mounted"
echo 0 > /run/fswriter.acked
(
    n=0
    while :; do
        n=$((n + 1))
        if echo "data $n" | dd of="/mnt/f$n" conv=fsync 2>/dev/null; then
            echo "$n" > /run/fswriter.acked
            echo "fswriter: ack $n"
        else
            echo "fswriter: write f$n failed"
        fi
        sleep 0.2
    done
) &
while read -r cmd; do
    case $cmd in
        check)
            acked=$(cat /run/fswriter.acked)
            bad=0
            i=1
            while [ "$i" -le "$acked" ]; do
                if [ "$(cat "/mnt/f$i" 2>/dev/null)" != "data $i" ]; then
                    bad=$((bad + 1))
                    [ "$bad" -le 3 ] && echo "fswriter: MISSING f$i"
                fi
                i=$((i + 1))
            done
            if [ "$bad" -eq 0 ]; then echo "fswriter: check ok $acked"; else echo "fswriter: check FAILED $bad of $acked"; fi
            ;;
        '') ;;
        *) echo "fswriter: unknown command $cmd" ;;
    esac
done
# No console input any more: keep the writer going.
wait
