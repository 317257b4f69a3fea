// What this host can do for vmckpt (for `vmckpt doctor`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vmm/accel.hpp"

namespace vmckpt::vmm {

struct HostCheck {
  std::string name;
  bool ok = false;
  bool required = false;  // the tool cannot work without it
  std::string detail;
};

struct HostReport {
  std::vector<HostCheck> checks;
  KvmProbe kvm;
  std::string qemuBinary, qemuVersion;
  std::string storeFs;
  bool reflink = false, btrfsSubvolumes = false;
  std::string storeMode;  // what snapshots use here: btrfs, reflink or copy
  bool healthy() const;  // every required check passed
};

// Runs every check. `reprobeKvm` ignores the cached KVM probe; `guestRamBytes` is the RAM
// of the store's VMs (for the writeback check).
HostReport inspectHost(const std::string& home, bool reprobeKvm, std::uint64_t guestRamBytes);

}  // namespace vmckpt::vmm
