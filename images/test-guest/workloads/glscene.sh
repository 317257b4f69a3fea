#!/bin/sh
# Software OpenGL under the GL plugin (needs the GL test guest, images/test-guest-gl):
# starts vmckpt-gl-scene --loop in the background with libvmckpt-gl.so preloaded, which
# registers with the agent as the plugin "gl"; Mesa's llvmpipe renders through
# surfaceless EGL. The scene's arguments come from vmckpt.glscene=ARGS, commas for spaces
# (default --scene,core,--size,32,--crc-every,10). Its output (stdout and stderr) reaches
# the console as "gl-loop: <line>", ending with "gl-loop: exit <status>".
# Console commands:
#   reference M   render the same scene for M frames natively (no LD_PRELOAD), printing
#                 "gl-ref: start M", "gl-ref: <line>"... and "gl-ref: exit <status>": the
#                 CRCs of an uninterrupted run, to compare with the loop's
#   stop          SIGTERM to the loop
#   mem           "glscene: MemTotal N kB MemAvailable N kB" (from /proc/meminfo)
scene=/bin/vmckpt-gl-scene
lib=/usr/lib/x86_64-linux-gnu/libvmckpt-gl.so
if [ ! -x "$scene" ] || [ ! -e "$lib" ]; then
    echo "glscene: vmckpt-gl-scene or libvmckpt-gl.so is not in this image (the GL test guest has them)"
    exit 1
fi
export EGL_PLATFORM=surfaceless LP_NUM_THREADS=1
stty -echo 2>/dev/null # typed commands would land in the middle of the scene's lines

args="--scene,core,--size,32,--crc-every,10"
read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
    case $arg in
        vmckpt.glscene=*) args=${arg#vmckpt.glscene=} ;;
    esac
done
IFS=,
# shellcheck disable=SC2086 # split on the commas on purpose
set -- $args
unset IFS
set +f

prefix() { # TAG: copy stdin to stdout, each line prefixed
    while IFS= read -r line; do
        echo "$1: $line"
    done
}

pidfile=/run/glscene-loop.pid
(
    LD_PRELOAD=$lib sh -c 'echo $$ > '"$pidfile"'; exec "$0" --loop "$@"' "$scene" "$@" 2>&1
    echo "exit $?"
) | prefix gl-loop &

while read -r cmd m; do
    case $cmd in
        reference)
            case $m in
                '' | *[!0-9]*) echo "glscene: reference needs a frame count" ;;
                *)
                    echo "gl-ref: start $m"
                    (
                        "$scene" "$@" --frames "$m" 2>&1
                        echo "exit $?"
                    ) | prefix gl-ref
                    ;;
            esac
            ;;
        stop)
            [ -s "$pidfile" ] && kill "$(cat "$pidfile")"
            ;;
        mem)
            mem=$(grep -E '^Mem(Total|Available):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')
            echo "glscene: ${mem% }"
            ;;
        '') ;;
        *) echo "glscene: unknown command $cmd" ;;
    esac
done
wait
