#!/usr/bin/env bash
# Build the GL test guest: the test guest of ../test-guest/build.sh plus Mesa's software
# OpenGL (llvmpipe through surfaceless EGL, libglvnd), libvmckpt.so.1, libvmckpt-gl.so
# and vmckpt-gl-scene, all taken from the host.
#
#   images/test-guest-gl/build.sh OUTDIR AGENT SCENE LIBVMCKPT LIBVMCKPT_GL
#
# AGENT (static vmckpt-agent) goes to /bin, SCENE (vmckpt-gl-scene) to /bin,
# LIBVMCKPT (libvmckpt.so.1) and LIBVMCKPT_GL (libvmckpt-gl.so) to
# /usr/lib/x86_64-linux-gnu; all four stripped. The libraries they, libEGL_mesa.so.0 and
# dri/swrast_dri.so need (ldd, which resolves them transitively) are copied to the same
# paths as on the host (Debian 12 merges /lib into /usr/lib, so to
# /usr/lib/<multiarch>), the dynamic loader to its PT_INTERP path, plus libglvnd's EGL
# vendor file and Mesa's drirc defaults: about 204 MiB, most of it libLLVM-15 (112 MiB).
#
# Output: OUTDIR/kernel, OUTDIR/initrd (uncompressed cpio by default: under TCG that boots
# faster than decompressing it, see images/README.md) and OUTDIR/stamp. When the host
# lacks something the image needs (Mesa's EGL or DRI driver, a library they need), the
# script writes the reason to OUTDIR/UNAVAILABLE, removes the other outputs and exits 0:
# the GL integration test then reports SKIPPED with that reason. Any other failure is an
# error (exit 1).
#
# Environment (all optional):
#   VMCKPT_GL_HOST_LIBDIR       where libEGL_mesa.so.0 and dri/ live (default
#                               /usr/lib/<gcc -print-multiarch>)
#   VMCKPT_GL_VENDOR_JSON       libglvnd EGL vendor file (default
#                               /usr/share/glvnd/egl_vendor.d/50_mesa.json)
#   STRIP                       strip program (default strip)
#   VMCKPT_GUEST_INITRD_COMPRESSION  passed on to test-guest/build.sh (default here: none)
#   and everything else test-guest/build.sh reads.
set -euo pipefail

prog=test-guest-gl/build.sh
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

if [ $# -ne 5 ]; then
    echo "usage: $0 OUTDIR AGENT SCENE LIBVMCKPT LIBVMCKPT_GL" >&2
    exit 2
fi
outdir=$1 agent=$2 scene=$3 libvmckpt=$4 libgl=$5
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
strip=${STRIP:-strip}
export LC_ALL=C

for f in "$agent" "$scene" "$libvmckpt" "$libgl"; do
    [ -f "$f" ] || die "$f does not exist (build it first)"
done
for tool in ldd "$strip"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
rm -f "$outdir/stamp" "$outdir/UNAVAILABLE"

# The host lacks something: say why, leave no image, succeed (the test skips).
unavailable() {
    printf '%s\n' "$*" > "$outdir/UNAVAILABLE"
    rm -f "$outdir/kernel" "$outdir/initrd"
    printf '%s: GL guest image not built: %s\n' "$prog" "$*" >&2
    exit 0
}

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=x86_64-linux-gnu
host_libdir=${VMCKPT_GL_HOST_LIBDIR:-/usr/lib/$multiarch}
vendor_json=${VMCKPT_GL_VENDOR_JSON:-/usr/share/glvnd/egl_vendor.d/50_mesa.json}
egl_mesa=$host_libdir/libEGL_mesa.so.0
swrast=$host_libdir/dri/swrast_dri.so
drirc=/usr/share/drirc.d/00-mesa-defaults.conf
[ -e "$egl_mesa" ] || unavailable "no $egl_mesa (Debian: apt-get install libegl-mesa0)"
[ -e "$swrast" ] || unavailable "no $swrast (Debian: apt-get install libgl1-mesa-dri)"
[ -e "$vendor_json" ] || unavailable "no $vendor_json (Debian: apt-get install libegl-mesa0)"

staging=$(mktemp -d "$outdir/.overlay.XXXXXX")
trap 'rm -rf "$staging"' EXIT
trap 'exit 130' INT TERM
ov=$staging/root
guest_libdir=/usr/lib/$multiarch
mkdir -p "$ov/bin" "$ov$guest_libdir/dri" "$ov/usr/share/glvnd/egl_vendor.d"

"$strip" -o "$ov/bin/vmckpt-agent" "$agent"
"$strip" -o "$ov/bin/vmckpt-gl-scene" "$scene"
"$strip" -o "$ov$guest_libdir/libvmckpt.so.1" "$libvmckpt"
"$strip" -o "$ov$guest_libdir/libvmckpt-gl.so" "$libgl"
cp -L "$swrast" "$ov$guest_libdir/dri/swrast_dri.so"
cp -L "$egl_mesa" "$ov$guest_libdir/libEGL_mesa.so.0"
cp -L "$vendor_json" "$ov/usr/share/glvnd/egl_vendor.d/${vendor_json##*/}"
if [ -e "$drirc" ]; then
    mkdir -p "$ov/usr/share/drirc.d"
    cp -L "$drirc" "$ov/usr/share/drirc.d/"
fi

# Every library the seeds load, resolved the way the guest will: our stripped
# libvmckpt.so.1 first, the host's for everything else.
# shellcheck source=../host-libs.sh
. "$here/../host-libs.sh"
copy_closure "$ov" "$guest_libdir" "$ov/bin/vmckpt-gl-scene" "$ov$guest_libdir/libvmckpt-gl.so" \
    "$ov$guest_libdir/libvmckpt.so.1" "$ov$guest_libdir/libEGL_mesa.so.0" "$ov$guest_libdir/dri/swrast_dri.so"
[ -e "$ov/lib64/ld-linux-x86-64.so.2" ] || [ "$multiarch" != x86_64-linux-gnu ] ||
    die "ldd named no dynamic loader for vmckpt-gl-scene"
chmod 0755 "$ov/bin/"* "$ov$guest_libdir/"*.so* "$ov$guest_libdir/dri/"*

size=$(du -sb "$ov" | cut -f1)
printf 'test-guest-gl: overlay %d MiB (%d libraries from the host)\n' $((size >> 20)) "$n_libs"

VMCKPT_GUEST_OVERLAY=$ov VMCKPT_GUEST_INITRD_COMPRESSION=${VMCKPT_GUEST_INITRD_COMPRESSION:-none} \
    bash "$here/../test-guest/build.sh" "$outdir"
touch "$outdir/stamp"
