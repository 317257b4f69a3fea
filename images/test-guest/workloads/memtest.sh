#!/bin/sh
# Runs /bin/vmckpt-memtest (images/test-guest/tools/memtest.c): fills guest RAM with a
# known pattern, prints "counter N" once per second and takes commands (dirty MIB,
# verify, checksum) on the console. Its arguments come from the kernel command line
# parameter vmckpt.memtest=ARGS, with commas for spaces, e.g. vmckpt.memtest=--mib,300.
args=
read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
    case $arg in
        vmckpt.memtest=*) args=${arg#vmckpt.memtest=} ;;
    esac
done
IFS=,
# shellcheck disable=SC2086 # split on the commas on purpose
set -- $args
unset IFS
set +f
exec /bin/vmckpt-memtest "$@"
