# Sourced by the image scripts that take host programs into a guest (test-guest-gl,
# test-guest-ib): copies the shared libraries of programs into an overlay.
#
#   copy_closure OVERLAY GUEST_LIBDIR SEED...
#
# For each SEED (a file inside OVERLAY), ldd lists every library it loads (the whole
# closure); each is copied to OVERLAY/GUEST_LIBDIR/<name>, the dynamic loader to its
# PT_INTERP path. Libraries already in the overlay win (ldd resolves with OVERLAY's
# GUEST_LIBDIR first). Sets n_libs to the number copied. A library the host lacks calls
# `unavailable MESSAGE`, which the caller defines; any other problem calls `die MESSAGE`.
copy_closure() {
    local ov=$1 guest_libdir=$2 seed listing line name path dest
    shift 2
    n_libs=0
    for seed in "$@"; do
        listing=$(LD_LIBRARY_PATH=$ov$guest_libdir ldd "$seed" 2>&1) || die "ldd $seed failed: $listing"
        while read -r line; do
            case $line in
                *"=> not found"*) unavailable "${seed##*/} needs ${line%% *}, which the host does not have" ;;
                linux-vdso* | linux-gate* | '' | *"statically linked"*) continue ;;
                *"=> "*)
                    name=${line%% *}
                    path=${line#*=> }
                    path=${path%% (*}
                    ;;
                /*)
                    # The dynamic loader, by its PT_INTERP path.
                    name=
                    path=${line%% (*}
                    ;;
                *) die "ldd $seed: unexpected line '$line'" ;;
            esac
            if [ -z "$name" ]; then
                dest=$ov$path
            else
                dest=$ov$guest_libdir/$name
            fi
            [ -e "$dest" ] && continue
            [ -e "$path" ] || die "ldd $seed names $path, which does not exist"
            mkdir -p "${dest%/*}"
            cp -L "$path" "$dest"
            chmod 0755 "$dest"
            n_libs=$((n_libs + 1))
        done <<< "$listing"
    done
}
