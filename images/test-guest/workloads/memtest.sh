#!/bin/sh
# Runs /bin/vmckpt-memtest (images/test-guest/tools/memtest.c): fills guest RAM with a
# known pattern, prints "counter N" once per second and takes commands (dirty MIB,
# verify, checksum) on the console. Its arguments come from the kernel command line
# parameter vmckpt.memtest=ARGS, with commas for spaces, e.g. vmckpt.memtest=--mib,300.
exec /bin/vmckpt-run-tool memtest /bin/vmckpt-memtest
