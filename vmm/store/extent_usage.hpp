// How many on-disk bytes a set of files shares with another set, from their physical
// extents (FIEMAP): what a snapshot really added on top of its parent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm::store {

// A byte range on the device (for Btrfs: in its logical address space).
struct Extent {
  std::uint64_t physical = 0;
  std::uint64_t length = 0;
  bool operator==(const Extent&) const = default;
};

// A sorted set of disjoint, non-adjacent physical ranges. Bytes referenced by several
// files (or several times by one file) are counted once.
class ExtentMap {
 public:
  ExtentMap() = default;
  // Sorts and merges overlapping or touching ranges; zero-length ranges are dropped.
  static ExtentMap fromExtents(std::vector<Extent> raw, std::uint64_t unmappedBytes = 0);

  const std::vector<Extent>& extents() const { return extents_; }
  std::uint64_t totalBytes() const;
  // Data bytes whose physical place could not be known (inline, delayed allocation,
  // unknown location); they are in no range and so count as neither shared nor exclusive.
  std::uint64_t unmappedBytes() const { return unmapped_; }

 private:
  std::vector<Extent> extents_;
  std::uint64_t unmapped_ = 0;
};

// Physical extents of all the files, flushed first (FIEMAP_FLAG_SYNC). Holes count
// nothing. Preallocated (unwritten) extents count: they hold disk space. Compressed
// extents count their uncompressed length. Fails with Errc::unsupported where the
// filesystem has no FIEMAP (tmpfs, ...).
Result<ExtentMap> mapExtents(const std::vector<std::string>& files);

// Bytes in both sets.
std::uint64_t overlapBytes(const ExtentMap& a, const ExtentMap& b);

// What `snapshot` holds that `parent` does not: total(snapshot) - overlap(snapshot, parent).
// On Btrfs and reflinked XFS, clones share extents; on a plain copy everything is exclusive.
std::uint64_t exclusiveBytes(const ExtentMap& snapshot, const ExtentMap& parent);

}  // namespace vmckpt::vmm::store
