#!/bin/sh
# Prints "counter N" once per second forever, N = 1, 2, 3, ... Tests read it from the
# serial console to see that a guest makes progress and keeps counting after a restore.
n=1
while :; do
    echo "counter $n"
    n=$((n + 1))
    sleep 1
done
