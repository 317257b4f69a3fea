// The three ways the store captures a VM's live directory, and which one a filesystem allows.
#pragma once

#include <string>

#include "common/error.hpp"

namespace vmckpt::vmm::store {

enum class StoreMode {
  btrfs,    // live/ is a subvolume; a snapshot is one read-only subvolume snapshot (one ioctl)
  reflink,  // FICLONE per file (XFS, or Btrfs without subvolume rights)
  copy,     // sparse copy per file: correct everywhere, slow (the VM stays paused while it copies)
};

std::string_view storeModeName(StoreMode m);
Result<StoreMode> parseStoreMode(std::string_view s);  // "btrfs" | "reflink" | "copy"

struct StoreCapabilities {
  std::string filesystem;     // "btrfs", "xfs", "ext4", ...
  bool reflink = false;       // FICLONE works in the directory
  bool subvolumes = false;    // can create and delete btrfs subvolumes there
  std::string reflinkWhy;     // why not, when not
  std::string subvolumesWhy;
  StoreMode best() const;
};

// Probes `dir` with scratch files and a scratch subvolume (removed again).
StoreCapabilities probeStore(const std::string& dir);

// True when `path` is the root of a btrfs subvolume.
bool isSubvolume(const std::string& path);

}  // namespace vmckpt::vmm::store
