// The published snapshots of one VM: snapshots/<id>/{manifest.json,data/}. Directories
// whose name starts with '.' are in progress or being deleted and are never listed.
#pragma once

#include <string>
#include <vector>

#include "common/error.hpp"
#include "vmm/store/manifest.hpp"

namespace vmckpt::vmm::store {

struct SnapshotEntry {
  Manifest manifest;
  std::string dir;  // snapshots/<id>
  std::string dataDir() const { return dir + "/data"; }
};

class Catalog {
 public:
  explicit Catalog(std::string snapshotsDir) : dir_(std::move(snapshotsDir)) {}

  // Every published snapshot, oldest first. Unreadable ones are skipped with a warning.
  Result<std::vector<SnapshotEntry>> list() const;
  // By id, unique id prefix, or tag.
  Result<SnapshotEntry> resolve(const std::string& ref) const;
  const std::string& dir() const { return dir_; }

  // A new id: UTC time plus random bits, sortable ("20261121-193011-7f3a").
  static std::string newId();

 private:
  std::string dir_;
};

struct VerifyReport {
  bool ok = true;
  std::vector<std::string> problems;  // one line each
  std::uint64_t checkedBytes = 0;
};

// Every file of the manifest is present with its size; small files match their sha256.
VerifyReport verifySnapshot(const SnapshotEntry& s);

}  // namespace vmckpt::vmm::store
