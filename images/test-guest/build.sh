#!/usr/bin/env bash
# Build the vmckpt test guest: OUTDIR/kernel and OUTDIR/initrd.
#
#   images/test-guest/build.sh OUTDIR
#
# The kernel is the host's Debian kernel (newest /boot/vmlinuz-<ver> that has a
# /lib/modules/<ver>); the initramfs holds static busybox, /init, the modules named
# in modules.list (plus their dependencies), workloads/*.sh and the test tools:
# tools/NAME.c is compiled with `gcc -static` into /bin/vmckpt-NAME (needs gcc and
# libc6-dev).
#
# Environment (all optional):
#   VMCKPT_GUEST_KERNEL_VERSION  kernel version to use instead of the newest one
#   VMCKPT_GUEST_KERNEL_FORMAT   bzimage (default): OUTDIR/kernel is /boot/vmlinuz-<ver>;
#                                pvh: OUTDIR/kernel is the uncompressed ELF vmlinux taken out
#                                of it, which QEMU boots through its PVH entry point with no
#                                in-guest decompression (about 3.5 s faster under TCG here,
#                                but 66 MiB instead of 8 and ~10 ms more per QEMU start)
#   VMCKPT_GUEST_BOOT_DIR        where vmlinuz-<ver> lives (default /boot)
#   VMCKPT_GUEST_MODULES_ROOT    where <ver>/modules.dep lives (default /lib/modules)
#   VMCKPT_GUEST_BUSYBOX         static busybox binary (default /bin/busybox)
#   VMCKPT_GUEST_OVERLAY         directory copied over the initramfs root last
#   VMCKPT_GUEST_INITRD_COMPRESSION  gzip (default, gzip -1), zstd (zstd -3) or none (a
#                                plain cpio archive: nothing to decompress at boot, which
#                                under TCG is the fastest for a big initramfs)
#   SOURCE_DATE_EPOCH            timestamp given to every file in the initramfs (default 0)
#
# Outputs are replaced atomically (written to a temp file in OUTDIR, then renamed) and
# only when their content changed, so an unchanged rebuild keeps their mtimes.
set -euo pipefail

prog=test-guest/build.sh
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
outdir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

boot_dir=${VMCKPT_GUEST_BOOT_DIR:-/boot}
mod_root=${VMCKPT_GUEST_MODULES_ROOT:-/lib/modules}
busybox=${VMCKPT_GUEST_BUSYBOX:-/bin/busybox}
overlay=${VMCKPT_GUEST_OVERLAY:-}
epoch=${SOURCE_DATE_EPOCH:-0}
kformat=${VMCKPT_GUEST_KERNEL_FORMAT:-bzimage}
case $kformat in
    bzimage | pvh) ;;
    *) die "VMCKPT_GUEST_KERNEL_FORMAT must be bzimage or pvh, not '$kformat'" ;;
esac
compression=${VMCKPT_GUEST_INITRD_COMPRESSION:-gzip}
case $compression in
    gzip) compress() { gzip -1 -n; } ;;
    zstd) compress() { zstd -3 -q; } ;;
    none) compress() { cat; } ;;
    *) die "VMCKPT_GUEST_INITRD_COMPRESSION must be gzip, zstd or none, not '$compression'" ;;
esac

export LC_ALL=C
umask 022

for tool in cpio gzip modinfo find sort cmp; do
    command -v "$tool" >/dev/null || die "'$tool' not found (Debian: apt-get install cpio gzip kmod)"
done
if [ "$compression" = zstd ]; then
    command -v zstd >/dev/null || die "'zstd' not found for VMCKPT_GUEST_INITRD_COMPRESSION=zstd (Debian: apt-get install zstd)"
fi
shopt -s nullglob
tool_sources=("$here"/tools/*.c)
shopt -u nullglob
if [ ${#tool_sources[@]} -gt 0 ]; then
    command -v gcc >/dev/null || die "'gcc' not found; it builds the guest tools (Debian: apt-get install gcc libc6-dev)"
    [ "$(gcc -print-file-name=libc.a)" != libc.a ] ||
        die "gcc has no static C library for -static (Debian: apt-get install libc6-dev)"
fi

# --- kernel ---------------------------------------------------------------------------
if [ -n "${VMCKPT_GUEST_KERNEL_VERSION:-}" ]; then
    kver=$VMCKPT_GUEST_KERNEL_VERSION
    [ -e "$boot_dir/vmlinuz-$kver" ] || die "VMCKPT_GUEST_KERNEL_VERSION=$kver but $boot_dir/vmlinuz-$kver does not exist"
    [ -d "$mod_root/$kver" ] || die "VMCKPT_GUEST_KERNEL_VERSION=$kver but $mod_root/$kver does not exist"
else
    kver=$(
        for f in "$boot_dir"/vmlinuz-*; do
            [ -e "$f" ] || continue
            v=${f##*/vmlinuz-}
            if [ -d "$mod_root/$v" ]; then echo "$v"; fi
        done | sort -V | tail -n 1
    )
    [ -n "$kver" ] || die "no $boot_dir/vmlinuz-<ver> with a matching $mod_root/<ver> (Debian: apt-get install linux-image-amd64)"
fi
vmlinuz=$boot_dir/vmlinuz-$kver
moddir=$mod_root/$kver
[ -r "$vmlinuz" ] || die "cannot read $vmlinuz (Debian installs it mode 0600 root: run as root or make it readable)"
[ -r "$moddir/modules.dep" ] || die "cannot read $moddir/modules.dep (run depmod $kver)"

# --- busybox --------------------------------------------------------------------------
[ -x "$busybox" ] || die "no busybox at $busybox (Debian: apt-get install busybox-static)"
if command -v file >/dev/null && file -L "$busybox" | grep -q 'dynamically linked'; then
    die "$busybox is dynamically linked; the guest needs a static one (Debian: busybox-static)"
fi

# --- staging --------------------------------------------------------------------------
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd) # absolute: the tools are compiled from another directory
staging=$(mktemp -d "$outdir/.staging.XXXXXX")
tmp_initrd=$outdir/.initrd.tmp.$$
tmp_kernel=$outdir/.kernel.tmp.$$
cleanup() { rm -rf "$staging"; rm -f "$tmp_initrd" "$tmp_kernel"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$staging/root
mkdir -p "$root"
chmod 0755 "$root"
(cd "$root" && mkdir -p bin sbin usr/bin usr/sbin etc lib/modules proc sys tmp run root mnt var workloads)
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

# --- modules --------------------------------------------------------------------------
# Module names are normalised to use '_' (modules.dep file names may use '-').
declare -A modpath=() builtin=() state=()
order=()
n_builtin=0

while IFS= read -r line; do
    p=${line%%:*}
    b=${p##*/}; b=${b%%.ko*}; b=${b//-/_}
    modpath[$b]=$p
done < "$moddir/modules.dep"

if [ -r "$moddir/modules.builtin" ]; then
    while IFS= read -r p; do
        b=${p##*/}; b=${b%%.ko*}; b=${b//-/_}
        builtin[$b]=1
    done < "$moddir/modules.builtin"
else
    warn "no $moddir/modules.builtin; assuming no module is built in"
fi

extract_module() { # SRC DST: copy a module, decompressing it if needed
    local src=$1 dst=$2
    case $src in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) command -v xz >/dev/null || die "xz needed to unpack $src"; xz -dc "$src" > "$dst" ;;
        *.ko.zst) command -v zstd >/dev/null || die "zstd needed to unpack $src"; zstd -dcq "$src" > "$dst" ;;
        *.ko.gz) gzip -dc "$src" > "$dst" ;;
        *) die "unknown module format: $src" ;;
    esac
    chmod 0644 "$dst"
}

# Depth-first: a module is appended to $order after everything it depends on.
add_module() { # NAME [WANTED_BY]
    local n=${1//-/_} by=${2:-modules.list}
    case ${state[$n]:-} in
        ok) return 0 ;;
        busy) die "module dependency cycle through $n" ;;
    esac
    if [ -n "${builtin[$n]:-}" ]; then
        state[$n]=ok
        n_builtin=$((n_builtin + 1))
        return 0
    fi
    local rel=${modpath[$n]:-}
    [ -n "$rel" ] || die "module '$n' (wanted by $by) is not in $moddir/modules.dep"
    [ -e "$moddir/$rel" ] || die "module file $moddir/$rel is missing"
    state[$n]=busy
    local ko=$root/lib/modules/$n.ko
    extract_module "$moddir/$rel" "$ko"

    local deps soft d mode=""
    deps=$(modinfo -F depends "$ko")
    for d in ${deps//,/ }; do
        add_module "$d" "$n"
    done
    # "softdep pre:" modules must be loaded first too (modprobe would do so).
    soft=$(modinfo -F softdep "$ko")
    for d in $soft; do
        case $d in
            pre:) mode=pre ;;
            post:) mode=post ;;
            *)
                if [ "$mode" = pre ]; then
                    local dn=${d//-/_}
                    if [ -n "${modpath[$dn]:-}" ] || [ -n "${builtin[$dn]:-}" ]; then
                        add_module "$dn" "$n"
                    else
                        warn "softdep $d of $n not found; skipped"
                    fi
                fi
                ;;
        esac
    done
    state[$n]=ok
    order+=("$n")
}

[ -r "$here/modules.list" ] || die "missing $here/modules.list"
while IFS= read -r line; do
    line=${line%%#*}
    for name in $line; do
        add_module "$name"
    done
done < "$here/modules.list"

if [ ${#order[@]} -gt 0 ]; then
    printf '%s\n' "${order[@]}" > "$root/etc/modules.order"
else
    : > "$root/etc/modules.order"
fi

# --- userland -------------------------------------------------------------------------
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    case $applet in
        bin/busybox | linuxrc | */linuxrc) continue ;;
    esac
    mkdir -p "$root/${applet%/*}"
    ln -sfn /bin/busybox "$root/$applet"
done

cp "$here/init" "$root/init"
chmod 0755 "$root/init"

shopt -s nullglob
workloads=("$here"/workloads/*.sh)
shopt -u nullglob
[ ${#workloads[@]} -gt 0 ] || die "no workloads in $here/workloads"
for w in "${workloads[@]}"; do
    cp "$w" "$root/workloads/${w##*/}"
    chmod 0755 "$root/workloads/${w##*/}"
done
cp "$here/run-tool.sh" "$root/bin/vmckpt-run-tool"
chmod 0755 "$root/bin/vmckpt-run-tool"

# Static and stripped, and compiled from a fixed file name in a fixed directory, so the
# same source gives the same bytes (the initrd is replaced only when its content changes).
for src in "${tool_sources[@]}"; do
    name=${src##*/}
    name=${name%.c}
    case $name in
        *[!A-Za-z0-9_-]* | '') die "tool source name '${src##*/}' may use only A-Z a-z 0-9 _ -" ;;
    esac
    (cd "$here/tools" && gcc -static -O2 -Wall -Wextra -Werror -s -o "$root/bin/vmckpt-$name" "$name.c") ||
        die "compiling tools/$name.c failed (gcc's messages above)"
    chmod 0755 "$root/bin/vmckpt-$name"
done

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'vmckpt-guest\n' > "$root/etc/hostname"
printf '%s\n' "$kver" > "$root/etc/vmckpt-kernel-version"

if [ -n "$overlay" ]; then
    [ -d "$overlay" ] || die "VMCKPT_GUEST_OVERLAY=$overlay is not a directory"
    cp -a "$overlay/." "$root/"
fi

find "$root" -exec touch -h -d "@$epoch" {} +

# --- kernel image -----------------------------------------------------------------
# bzImage layout (Documentation/x86/boot.rst): setup_sects at 0x1f1, the protected-mode
# part starts at (setup_sects + 1) * 512, and payload_offset/payload_length (0x248/0x24c)
# locate the compressed vmlinux in it. The build appends the 4-byte uncompressed size to
# the payload, hence the second try without the last 4 bytes.
le_u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
extract_vmlinux() { # BZIMAGE OUT
    local bz=$1 out=$2 sects start poff plen magic dec len
    sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
    [ "$sects" -ne 0 ] || sects=4
    start=$(((sects + 1) * 512))
    poff=$(le_u32 "$bz" $((0x248)))
    plen=$(le_u32 "$bz" $((0x24c)))
    if [ "$poff" -eq 0 ] || [ "$plen" -le 4 ]; then
        die "$bz: no payload in the bzImage header"
    fi
    magic=$(od -An -tx1 -j $((start + poff)) -N6 "$bz" | tr -d ' \n')
    case $magic in
        fd377a585a00) dec="xz -dc --single-stream" ;;
        1f8b*) dec="gzip -dc" ;;
        28b52ffd*) dec="zstd -dcq" ;;
        *) die "$bz: payload compression with magic $magic is not supported for pvh" ;;
    esac
    command -v "${dec%% *}" >/dev/null || die "${dec%% *} needed to unpack $bz"
    for len in $((plen - 4)) "$plen"; do
        if dd if="$bz" bs=1M iflag=skip_bytes,count_bytes skip=$((start + poff)) count="$len" status=none \
            | $dec > "$out" 2>/dev/null && [ "$(od -An -tx1 -N4 "$out" | tr -d ' \n')" = 7f454c46 ]; then
            break
        fi
        : > "$out"
    done
    [ -s "$out" ] || die "$bz: could not unpack the vmlinux payload"
    if command -v readelf >/dev/null; then
        readelf -n "$out" | grep -q 'Unknown note type: (0x00000012)\|XEN_ELFNOTE_PHYS32_ENTRY' ||
            die "$bz: kernel has no PVH entry point (CONFIG_PVH); use VMCKPT_GUEST_KERNEL_FORMAT=bzimage"
    fi
}

# --- initramfs ------------------------------------------------------------------------
# The kernel opens /dev/console for init before /init runs; creating that node needs
# mknod (root), so write a tiny newc archive with /dev and /dev/console by hand and
# append it to the cpio archive of the staging tree (the kernel unpacks concatenated
# archives; `cpio -t` shows the first one, i.e. everything but /dev).
newc_entry() { # INO MODE NLINK RDEVMAJOR RDEVMINOR NAME
    local namesize=$((${#6} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$1" "$2" 0 0 "$3" "$epoch" 0 0 0 "$4" "$5" "$namesize" 0
    printf '%s\0' "$6"
    local pad=$(((4 - (110 + namesize) % 4) % 4))
    if [ "$pad" -gt 0 ]; then head -c "$pad" /dev/zero; fi
}
console_archive() {
    newc_entry 1 $((8#040755)) 2 0 0 dev
    newc_entry 2 $((8#020600)) 1 5 1 dev/console
    newc_entry 3 0 1 0 0 'TRAILER!!!'
}

{
    (cd "$root" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible)
    console_archive
} | compress > "$tmp_initrd"
if [ "$kformat" = pvh ]; then
    extract_vmlinux "$vmlinuz" "$tmp_kernel"
else
    cp "$vmlinuz" "$tmp_kernel"
fi
chmod 0644 "$tmp_initrd" "$tmp_kernel"

install_output() { # TMP DEST: rename TMP over DEST unless DEST already has that content
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        rm -f "$1"
    else
        mv -f "$1" "$2"
    fi
}
install_output "$tmp_kernel" "$outdir/kernel"
install_output "$tmp_initrd" "$outdir/initrd"

size=$(stat -c %s "$outdir/initrd")
printf 'test-guest: kernel %s, %d modules (%d built in, skipped), initrd %d bytes (%d KiB) in %s\n' \
    "$kver" "${#order[@]}" "$n_builtin" "$size" $(((size + 1023) / 1024)) "$outdir"
