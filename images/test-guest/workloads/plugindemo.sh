#!/bin/sh
# Runs /bin/vmckpt-plugin-demo (guest-agent/demo/plugin_demo.cpp): registers the plugin
# "demo" with vmckpt-agent, prints "plugin-demo: event NAME" for each event and
# "plugin-demo: state ok|BAD" after RESUME/RESTART, and "counter N" once a second while
# not quiesced. Its arguments come from the kernel command line parameter
# vmckpt.plugindemo=ARGS, with commas for spaces, e.g. vmckpt.plugindemo=--fail-presuspend
# or vmckpt.plugindemo=--name,ib,--hang-presuspend=30.
exec /bin/vmckpt-run-tool plugindemo /bin/vmckpt-plugin-demo
