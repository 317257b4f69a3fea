#!/usr/bin/env bash
# Build the InfiniBand test guest: the test guest of ../test-guest/build.sh plus rdma-core
# userspace for soft-RoCE (libibverbs, the rxe provider and its driver file, iproute2's
# `rdma` to create rxe links), the verbs workloads and the interposer, all taken from the
# host. The kernel side (rdma_rxe, ib_uverbs) is already in the test guest's modules.list.
#
#   images/test-guest-ib/build.sh OUTDIR AGENT LIBVMCKPT LIBVMCKPT_IB WORKLOAD PERF
#
# AGENT (static vmckpt-agent), WORKLOAD (vmckpt-ib-workload) and PERF (vmckpt-ib-perf) go
# to /bin; LIBVMCKPT (libvmckpt.so.1) and LIBVMCKPT_IB (libvmckpt-ib.so) to
# /usr/lib/<multiarch>; all stripped. ibv_devinfo and ibv_rc_pingpong (ibverbs-utils)
# come along for debugging by hand. Libraries are copied with their closure
# (../host-libs.sh).
#
# Output: OUTDIR/kernel (PVH), OUTDIR/initrd (uncompressed cpio) and OUTDIR/stamp. When the
# host lacks rdma-core's pieces, the script writes the reason to OUTDIR/UNAVAILABLE, removes
# the other outputs and exits 0: the ib tests then report SKIPPED with that reason.
#
# Environment (all optional):
#   VMCKPT_IB_HOST_LIBDIR   where libibverbs/ (the providers) lives (default
#                           /usr/lib/<gcc -print-multiarch>)
#   STRIP                   strip program (default strip)
#   and everything test-guest/build.sh reads.
set -euo pipefail

prog=test-guest-ib/build.sh
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

if [ $# -ne 6 ]; then
    echo "usage: $0 OUTDIR AGENT LIBVMCKPT LIBVMCKPT_IB WORKLOAD PERF" >&2
    exit 2
fi
outdir=$1 agent=$2 libvmckpt=$3 libib=$4 workload=$5 perf=$6
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
strip=${STRIP:-strip}
export LC_ALL=C

for f in "$agent" "$libvmckpt" "$libib" "$workload" "$perf"; do
    [ -f "$f" ] || die "$f does not exist (build it first)"
done
for tool in ldd "$strip"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
rm -f "$outdir/stamp" "$outdir/UNAVAILABLE"

unavailable() {
    printf '%s\n' "$*" > "$outdir/UNAVAILABLE"
    rm -f "$outdir/kernel" "$outdir/initrd"
    printf '%s: ib guest image not built: %s\n' "$prog" "$*" >&2
    exit 0
}

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=x86_64-linux-gnu
host_libdir=${VMCKPT_IB_HOST_LIBDIR:-/usr/lib/$multiarch}
rxe_provider=$host_libdir/libibverbs/librxe-rdmav34.so
rxe_driver=/etc/libibverbs.d/rxe.driver
[ -e "$rxe_provider" ] || unavailable "no $rxe_provider (Debian: apt-get install ibverbs-providers)"
[ -e "$rxe_driver" ] || unavailable "no $rxe_driver (Debian: apt-get install ibverbs-providers)"
rdma_tool=$(command -v rdma || true)
[ -n "$rdma_tool" ] || unavailable "no rdma tool (Debian: apt-get install iproute2)"
utils=()
for u in ibv_devinfo ibv_rc_pingpong; do
    p=$(command -v "$u" || true)
    [ -n "$p" ] || unavailable "no $u (Debian: apt-get install ibverbs-utils)"
    utils+=("$p")
done

staging=$(mktemp -d "$outdir/.overlay.XXXXXX")
trap 'rm -rf "$staging"' EXIT
trap 'exit 130' INT TERM
ov=$staging/root
guest_libdir=/usr/lib/$multiarch
mkdir -p "$ov/bin" "$ov$guest_libdir/libibverbs" "$ov/etc/libibverbs.d"

"$strip" -o "$ov/bin/vmckpt-agent" "$agent"
"$strip" -o "$ov/bin/vmckpt-ib-workload" "$workload"
"$strip" -o "$ov/bin/vmckpt-ib-perf" "$perf"
"$strip" -o "$ov$guest_libdir/libvmckpt.so.1" "$libvmckpt"
"$strip" -o "$ov$guest_libdir/libvmckpt-ib.so" "$libib"
cp -L "$rdma_tool" "$ov/bin/rdma"
for u in "${utils[@]}"; do cp -L "$u" "$ov/bin/"; done
cp -L "$rxe_provider" "$ov$guest_libdir/libibverbs/"
cp -L "$rxe_driver" "$ov/etc/libibverbs.d/"

# shellcheck source=../host-libs.sh
. "$here/../host-libs.sh"
copy_closure "$ov" "$guest_libdir" "$ov/bin/vmckpt-ib-workload" "$ov/bin/vmckpt-ib-perf" \
    "$ov$guest_libdir/libvmckpt-ib.so" "$ov$guest_libdir/libvmckpt.so.1" "$ov/bin/rdma" \
    "$ov/bin/ibv_devinfo" "$ov/bin/ibv_rc_pingpong" "$ov$guest_libdir/libibverbs/librxe-rdmav34.so"
[ -e "$ov/lib64/ld-linux-x86-64.so.2" ] || [ "$multiarch" != x86_64-linux-gnu ] ||
    die "ldd named no dynamic loader for vmckpt-ib-workload"
chmod 0755 "$ov/bin/"* "$ov$guest_libdir/"*.so* "$ov$guest_libdir/libibverbs/"*

size=$(du -sb "$ov" | cut -f1)
printf 'test-guest-ib: overlay %d MiB (%d libraries from the host)\n' $((size >> 20)) "$n_libs"

VMCKPT_GUEST_OVERLAY=$ov VMCKPT_GUEST_KERNEL_FORMAT=${VMCKPT_GUEST_KERNEL_FORMAT:-pvh} \
    VMCKPT_GUEST_INITRD_COMPRESSION=${VMCKPT_GUEST_INITRD_COMPRESSION:-none} \
    bash "$here/../test-guest/build.sh" "$outdir"
touch "$outdir/stamp"
