#!/bin/sh
# Verbs over soft-RoCE (needs the InfiniBand test guest, images/test-guest-ib): creates
# the rxe links of vmckpt.rxe=NAME@NETDEV[,NAME@NETDEV...] (default rxe0@eth0), then runs
# a verbs program with the arguments of vmckpt.ib=ARGS (commas for spaces):
# vmckpt-ib-workload by default, vmckpt-ib-perf with vmckpt.ibtool=perf. With
# vmckpt.ibpreload=1 it runs under the interposer (LD_PRELOAD=libvmckpt-ib.so), which
# registers with the agent as the plugin "ib". vmckpt.ibnet=NAME@LOWER/MTU/ADDR/PREFIX
# first creates a macvlan netdev NAME on LOWER with that MTU and address (another netdev,
# MAC, GID and MTU for a second rxe link to restart on). Several runs, one after the other: ARGS
# separated by '+'; a run whose ARGS start with "@pre," runs under the interposer, one
# starting with "@native," without it, whatever vmckpt.ibpreload says. Prints
# "ibverbs: link NAME on NETDEV" for each link, then for each run "ibverbs: run K native"
# (or "preload"), the program's own output and "ibverbs: exit STATUS".
lib=/usr/lib/x86_64-linux-gnu/libvmckpt-ib.so
if [ ! -x /bin/rdma ] || [ ! -e "$lib" ]; then
    echo "ibverbs: rdma-core or libvmckpt-ib.so is not in this image (the InfiniBand test guest has them)"
    exit 1
fi
links=rxe0@eth0
ibnet=
args=
tool=workload
preload=0
read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
    case $arg in
        vmckpt.rxe=*) links=${arg#vmckpt.rxe=} ;;
        vmckpt.ibnet=*) ibnet=${arg#vmckpt.ibnet=} ;;
        vmckpt.ib=*) args=${arg#vmckpt.ib=} ;;
        vmckpt.ibtool=*) tool=${arg#vmckpt.ibtool=} ;;
        vmckpt.ibpreload=*) preload=${arg#vmckpt.ibpreload=} ;;
    esac
done
if [ -n "$ibnet" ]; then
    name=${ibnet%%@*}
    rest=${ibnet#*@}
    lower=${rest%%/*}
    rest=${rest#*/}
    mtu=${rest%%/*}
    addr=${rest#*/}
    if out=$({ ip link add "$name" link "$lower" type macvlan mode bridge &&
               ip link set "$name" mtu "$mtu" && ip addr add "$addr" dev "$name" &&
               ip link set "$name" up; } 2>&1); then
        echo "ibverbs: netdev $name on $lower, mtu $mtu, $addr"
    else
        echo "ibverbs: creating netdev $name on $lower failed: $out"
        exit 1
    fi
fi
IFS=,
for link in $links; do
    name=${link%@*}
    dev=${link#*@}
    if out=$(rdma link add "$name" type rxe netdev "$dev" 2>&1); then
        echo "ibverbs: link $name on $dev"
    else
        echo "ibverbs: rdma link add $name on $dev failed: $out"
        exit 1
    fi
done
unset IFS
set +f
case $tool in
    workload | perf) program=/bin/vmckpt-ib-$tool ;;
    *) echo "ibverbs: unknown tool '$tool'"; exit 1 ;;
esac
status=0
k=0
set -f
IFS=+
for run in $args; do
    unset IFS
    k=$((k + 1))
    mode=$preload
    case $run in
        @pre,*) mode=1; run=${run#@pre,} ;;
        @native,*) mode=0; run=${run#@native,} ;;
    esac
    IFS=,
    # shellcheck disable=SC2086 # split on the commas on purpose
    set -- $run
    unset IFS
    if [ "$mode" = 1 ]; then
        echo "ibverbs: run $k preload"
        LD_PRELOAD=$lib "$program" "$@"
    else
        echo "ibverbs: run $k native"
        "$program" "$@"
    fi
    status=$?
    echo "ibverbs: exit $status"
    IFS=+
done
unset IFS
exit $status
