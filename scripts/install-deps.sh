#!/usr/bin/env bash
# Installs the Debian 12 packages vmckpt needs to build, test and run its demo.
# Idempotent: skips apt entirely when every package is already installed.
set -euo pipefail

PKGS=(
  build-essential cmake g++ pkg-config make
  nlohmann-json3-dev libcli11-dev libgtest-dev googletest
  qemu-system-x86 qemu-utils
  busybox-static linux-image-amd64 cpio gzip xz-utils zstd kmod
  btrfs-progs libbtrfsutil-dev xfsprogs
  libssl-dev
  libvirt-daemon-system libvirt-dev libvirt-clients libxml2-dev
  procps util-linux iproute2
  clang-14 libclang-rt-14-dev
  gnuplot-nox
  python3 khronos-api libegl-dev libgl-dev libopengl-dev libegl-mesa0 libgl1-mesa-dri
  rdma-core ibverbs-providers libibverbs-dev ibverbs-utils
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root or install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
