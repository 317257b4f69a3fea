// How a store mode makes a live directory, captures it, and clones a capture back into
// a writable directory. The live directory is flat: regular files only (RAM, disks,
// kernel, initrd, device state).
#pragma once

#include <memory>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "vmm/store/store_mode.hpp"

namespace vmckpt::vmm::store {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual StoreMode mode() const = 0;
  // Creates an empty live directory at `path` (a subvolume on btrfs).
  virtual Status createLiveDir(const std::string& path) const = 0;
  // Commits what the filesystem still holds dirty for `live`, while the guest runs (after
  // the caller's pre-flush of the RAM file), so that the capture within the pause has
  // little left to write. Measured on Btrfs: a snapshot that commits the pre-flush's
  // extent metadata took 5-10 ms, after a commit here 1-3 ms.
  virtual Status settle(const std::string& live) const = 0;
  // Captures `live` into `dest` (which must not exist). The caller has paused the guest,
  // so the files do not change meanwhile. The capture is not final: the caller may add
  // files (the device state) before seal() makes it read-only and durable, both after
  // the guest runs again, so that no fsync happens within the pause.
  virtual Status capture(const std::string& live, const std::string& dest) const = 0;
  virtual Status seal(const std::string& captured) const = 0;
  // Makes a writable copy of a capture at `dest` (which must not exist).
  virtual Status cloneWritable(const std::string& captured, const std::string& dest) const = 0;
};

std::unique_ptr<Backend> makeBackend(StoreMode mode);

// rm -rf that also deletes btrfs subvolumes (read-only snapshots included) inside it.
Status removeStoreTree(const std::string& path);

// Removes the directories `dir`/<prefix>...-<pid> whose process is gone: what a vmckpt
// killed while building something in a staging directory left. `beforeRemove` gets each
// one's path first (to end a process that still uses it). Returns their names.
std::vector<std::string> removeStaleStagingDirs(const std::string& dir, std::string_view prefix,
                                                const std::function<void(const std::string&)>& beforeRemove = {});

}  // namespace vmckpt::vmm::store
