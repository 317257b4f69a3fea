// Disk images a VM is created with: format detection, the size the guest sees, and empty
// images of a given size (the destination of a migrated disk).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

struct DiskArg {
  std::string path;
  std::optional<DiskFormat> format;  // detected when not given
};

// "PATH" or "PATH,format=raw|qcow2".
Result<DiskArg> parseDiskArg(std::string_view s);

// Reads the image header: qcow2 by its magic, else raw. A qcow2 with a backing file is
// refused (the VM must own all of its disk to snapshot it).
Result<DiskFormat> detectDiskFormat(const std::string& path);

// The size the guest sees: a raw file's length, a qcow2's header field.
Result<std::uint64_t> diskVirtualSize(const std::string& path, DiskFormat format);

// A new, empty image (sparse raw file, or `qemu-img create` qcow2); `path` must not exist.
Status createEmptyDisk(const std::string& path, DiskFormat format, std::uint64_t virtualSize);

}  // namespace vmckpt::vmm
