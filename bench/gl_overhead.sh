#!/usr/bin/env bash
# The GL interposer's runtime cost: frames per second of the call-heavy scene
# (vmckpt-gl-scene --scene heavy: 2000 draws per frame, each after glUniform4f,
# glUniform2f and glBindTexture) with and without libvmckpt-gl.so preloaded. Runs
# alternate (native, interposed, native, ...) so that drift hits both alike; the result
# is the median of each and their ratio.
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
export EGL_PLATFORM=surfaceless VMCKPT_GL_NO_AGENT=1
unset GALLIUM_DRIVER LD_PRELOAD

fps() {  # fps [preload]
    local line
    if [ "${1:-}" = preload ]; then
        line=$(LD_PRELOAD=$lib "$scene" --scene heavy --frames "$frames" --fps)
    else
        line=$("$scene" --scene heavy --frames "$frames" --fps)
    fi
    line=$(printf '%s\n' "$line" | sed -n 's/^fps: //p')
    [ -n "$line" ] || { echo "gl_overhead.sh: the scene printed no fps" >&2; exit 1; }
    printf '%s\n' "$line"
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

native=() interposed=()
"$scene" --scene heavy --frames 5 >/dev/null  # warm the page cache and the shader cache
for ((i = 1; i <= runs; i++)); do
    native+=("$(fps)")
    interposed+=("$(fps preload)")
    printf 'run %d/%d: native %s fps, interposed %s fps\n' "$i" "$runs" "${native[-1]}" "${interposed[-1]}"
done
mn=$(printf '%s\n' "${native[@]}" | median)
mi=$(printf '%s\n' "${interposed[@]}" | median)
ratio=$(awk -v a="$mi" -v b="$mn" 'BEGIN {printf "%.3f", a / b}')
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$out"
json=$out/$stamp.gl-overhead.json
{
    printf '{\n  "benchmark": "gl-overhead",\n  "time": "%s",\n' "$stamp"
    printf '  "host": "%s, %s cores, %s",\n' "$(uname -n)" "$(nproc)" "$(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -1)"
    printf '  "scene": "heavy (2000 draws/frame, 3 recorded calls per draw)",\n'
    printf '  "renderer": "Mesa llvmpipe, surfaceless EGL",\n  "frames_per_run": %s,\n' "$frames"
    printf '  "native_fps": [%s],\n' "$(IFS=,; echo "${native[*]}")"
    printf '  "interposed_fps": [%s],\n' "$(IFS=,; echo "${interposed[*]}")"
    printf '  "median_native_fps": %s,\n  "median_interposed_fps": %s,\n  "ratio": %s\n}\n' "$mn" "$mi" "$ratio"
} > "$json"
printf 'median native %s fps, interposed %s fps: %s of native (goal >= 0.90)\n' "$mn" "$mi" "$ratio"
printf 'wrote %s\n' "$json"
