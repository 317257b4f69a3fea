// Which parts of a snapshot's file an incremental export must read (btrfs send -p
// semantics): where the file and its parent's file of that name map the same logical
// range to the same physical extent (Btrfs snapshots, reflinks), or are both holes, the
// bytes are identical and nothing needs reading. FIEMAP tells; where a filesystem cannot
// (tmpfs, ...), everything is compared, as without this.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm::transfer {

// One FIEMAP extent, as the kernel reports it (fiemap_extent).
struct FileExtent {
  std::uint64_t logical = 0;
  std::uint64_t physical = 0;
  std::uint64_t length = 0;
  std::uint32_t flags = 0;  // FIEMAP_EXTENT_*
};

enum class SegmentKind {
  compare,  // may differ: read both files and compare
  shared,   // the same physical bytes in both files: identical, unread
  holes,    // a hole in both files: zeros in both, unread
};

struct Segment {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  SegmentKind kind = SegmentKind::compare;
  bool operator==(const Segment&) const = default;
};

// Classifies [from, to) of a file of curSize bytes against its parent of parentSize bytes,
// from both files' extents (any order; ones outside the range are ignored). A range is
// shared only where both extents are flagged SHARED, have a plain physical address (not
// encoded, inline, delayed, unknown, unaligned or encrypted) and map each byte to the same
// physical byte, and only below both sizes (past its end the parent reads as zeros).
// Compare segments are widened to multiples of `align` from offset 0 (not past `to`), so
// that a block-wise comparison sees whole blocks; from must be a multiple of align and
// to <= curSize. Adjacent segments of one kind are merged; together they cover [from, to).
std::vector<Segment> classifyRange(std::span<const FileExtent> cur, std::uint64_t curSize,
                                   std::span<const FileExtent> parent, std::uint64_t parentSize, std::uint64_t from,
                                   std::uint64_t to, std::uint64_t align);

// The extents of [from, to) of an open file (FIEMAP, without FIEMAP_FLAG_SYNC: snapshot
// files are read-only). Errc::unsupported where the filesystem has no FIEMAP.
Result<std::vector<FileExtent>> fileExtents(int fd, const std::string& path, std::uint64_t from, std::uint64_t to);

}  // namespace vmckpt::vmm::transfer
