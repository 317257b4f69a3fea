#!/bin/sh
# Does nothing: returns at once, so init just sleeps (or powers off with vmckpt.poweroff=1).
echo "vmckpt-test-guest: idle"
