#!/bin/sh
# Prints what the guest sees (for debugging the image), then returns.
P=vmckpt-test-guest
echo "$P: info: kernel $(uname -r), hostname $(hostname)"
echo "$P: info: modules: $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
for l in /dev/virtio-ports/*; do
    [ -e "$l" ] || continue
    echo "$P: info: virtio port ${l##*/} -> $(readlink "$l")"
done
for n in /sys/class/net/*; do
    echo "$P: info: net ${n##*/} $(cat "$n/operstate") $(cat "$n/address")"
done
ip -o addr show | while read -r _ dev fam addr _; do
    echo "$P: info: addr $dev $fam $addr"
done
for d in /sys/class/infiniband/*; do
    [ -e "$d" ] && echo "$P: info: infiniband ${d##*/}"
done
for b in /sys/block/vd*; do
    [ -e "$b" ] && echo "$P: info: disk ${b##*/} $(cat "$b/size") sectors"
done
echo "$P: info: mounts: $(awk '{print $2}' /proc/mounts | tr '\n' ' ')"
