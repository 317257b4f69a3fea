// Disk images a VM is created with: format detection and import into the VM's live directory.
#pragma once

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

}  // namespace vmckpt::vmm
