#!/bin/sh
# run-tool PARAM PROGRAM: runs PROGRAM with the arguments of the kernel command line
# parameter vmckpt.PARAM=ARGS, commas standing for spaces (vmckpt.memtest=--mib,300).
# Installed as /bin/vmckpt-run-tool; workloads that wrap a test tool exec it.
param=$1
program=$2
if [ -z "$param" ] || [ -z "$program" ]; then
    echo "usage: vmckpt-run-tool PARAM PROGRAM" >&2
    exit 2
fi
if [ ! -x "$program" ]; then
    echo "vmckpt-run-tool: $program is not in this image" >&2
    exit 1
fi
args=
read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
    case $arg in
        "vmckpt.$param="*) args=${arg#"vmckpt.$param="} ;;
    esac
done
IFS=,
# shellcheck disable=SC2086 # split on the commas on purpose
set -- $args
unset IFS
set +f
exec "$program" "$@"
