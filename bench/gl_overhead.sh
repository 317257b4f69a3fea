#!/usr/bin/env bash
# The GL interposer's runtime cost: frames per second of the call-heavy scene
# (vmckpt-gl-scene --scene heavy: 2000 draws per frame, each after glUniform4f,
# glUniform2f and glBindTexture) with and without libvmckpt-gl.so preloaded. Runs
# alternate (native, interposed, native, ...) so that drift hits both alike; the result
# is the median of each and their ratio, by wall clock and per CPU second (see fps()).
#
#   bench/gl_overhead.sh [--build DIR] [--runs N] [--frames N] [--out DIR]
#
# Writes DIR/<UTC time>.gl-overhead.json (default bench/results) and prints a summary.
# Software rendering (Mesa llvmpipe, EGL_PLATFORM=surfaceless); no GPU needed.
set -euo pipefail

build=build runs=7 frames=100 out=bench/results
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gl_overhead.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
scene=$build/bin/vmckpt-gl-scene
lib=$build/lib/libvmckpt-gl.so
for f in "$scene" "$lib"; do
    [ -e "$f" ] || { echo "gl_overhead.sh: $f not found; build first (make)" >&2; exit 1; }
done
export EGL_PLATFORM=surfaceless VMCKPT_GL_NO_AGENT=1 LP_NUM_THREADS=${LP_NUM_THREADS:-0}
unset GALLIUM_DRIVER LD_PRELOAD

# One run: prints "<wall fps> <fps per CPU second>". The second figure divides the frames
# by the user+system time of the process, which time stolen from this (virtual) host does
# not inflate; with LP_NUM_THREADS=0 llvmpipe renders on the calling thread, so it is all
# of the rendering's CPU.
fps() {  # fps [preload]
    local out cpu
    local TIMEFORMAT='%U %S'
    if [ "${1:-}" = preload ]; then
        { cpu=$( { time LD_PRELOAD=$lib "$scene" --scene heavy --frames "$frames" --fps > "$tmp"; } 2>&1 ); }
    else
        { cpu=$( { time "$scene" --scene heavy --frames "$frames" --fps > "$tmp"; } 2>&1 ); }
    fi
    out=$(sed -n 's/^fps: //p' "$tmp")
    [ -n "$out" ] || { echo "gl_overhead.sh: the scene printed no fps" >&2; exit 1; }
    printf '%s %s\n' "$out" "$(awk -v f="$frames" -v c="$cpu" 'BEGIN {split(c, t, " "); printf "%.2f", f / (t[1] + t[2])}')"
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
native=() interposed=() native_cpu=() interposed_cpu=()
"$scene" --scene heavy --frames 5 >/dev/null  # warm the page cache and the shader cache
for ((i = 1; i <= runs; i++)); do
    read -r w c < <(fps); native+=("$w"); native_cpu+=("$c")
    read -r w c < <(fps preload); interposed+=("$w"); interposed_cpu+=("$c")
    printf 'run %d/%d: native %s fps (%s per CPU s), interposed %s fps (%s per CPU s)\n' "$i" "$runs" \
        "${native[-1]}" "${native_cpu[-1]}" "${interposed[-1]}" "${interposed_cpu[-1]}"
done
mn=$(printf '%s\n' "${native[@]}" | median)
mi=$(printf '%s\n' "${interposed[@]}" | median)
mnc=$(printf '%s\n' "${native_cpu[@]}" | median)
mic=$(printf '%s\n' "${interposed_cpu[@]}" | median)
ratio_cpu=$(awk -v a="$mic" -v b="$mnc" 'BEGIN {printf "%.3f", a / b}')
ratio=$(awk -v a="$mi" -v b="$mn" 'BEGIN {printf "%.3f", a / b}')
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$out"
json=$out/$stamp.gl-overhead.json
{
    printf '{\n  "benchmark": "gl-overhead",\n  "time": "%s",\n' "$stamp"
    printf '  "host": "%s, %s cores, %s",\n' "$(uname -n)" "$(nproc)" "$(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -1)"
    printf '  "scene": "heavy (2000 draws/frame, 3 recorded calls per draw)",\n'
    printf '  "renderer": "Mesa llvmpipe, surfaceless EGL, LP_NUM_THREADS=%s",\n  "frames_per_run": %s,\n' "${LP_NUM_THREADS:-default}" "$frames"
    printf '  "native_fps": [%s],\n' "$(IFS=,; echo "${native[*]}")"
    printf '  "interposed_fps": [%s],\n' "$(IFS=,; echo "${interposed[*]}")"
    printf '  "native_fps_per_cpu_second": [%s],\n' "$(IFS=,; echo "${native_cpu[*]}")"
    printf '  "interposed_fps_per_cpu_second": [%s],\n' "$(IFS=,; echo "${interposed_cpu[*]}")"
    printf '  "median_native_fps": %s,\n  "median_interposed_fps": %s,\n  "ratio": %s,\n' "$mn" "$mi" "$ratio"
    printf '  "median_native_fps_per_cpu_second": %s,\n  "median_interposed_fps_per_cpu_second": %s,\n' "$mnc" "$mic"
    printf '  "ratio_cpu": %s\n}\n' "$ratio_cpu"
} > "$json"
printf 'median native %s fps, interposed %s fps: %s of native (wall clock)\n' "$mn" "$mi" "$ratio"
printf 'median per CPU second: native %s, interposed %s: %s of native (goal >= 0.90)\n' "$mnc" "$mic" "$ratio_cpu"
printf 'wrote %s\n' "$json"
