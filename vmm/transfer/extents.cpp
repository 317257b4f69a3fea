#include "vmm/transfer/extents.hpp"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

#include "common/strings.hpp"

namespace vmckpt::vmm::transfer {
namespace {

constexpr std::uint32_t kBatch = 512;  // extents per FIEMAP call

// Flags under which fe_physical does not say, byte for byte, where the file's bytes lie.
constexpr std::uint32_t kNotPlain = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
                                    FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED |
                                    FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL;

// Part of one file's extent inside the range being classified.
struct Piece {
  std::uint64_t begin = 0, end = 0;
  std::uint64_t physical = 0;  // of `begin`
  bool sharedPlain = false;    // may be skipped if the other file has the same physical bytes
};

// The extents clipped to [from, end), sorted; none when they overlap: then nothing they
// say is trusted.
std::optional<std::vector<Piece>> clip(std::span<const FileExtent> extents, std::uint64_t from, std::uint64_t end) {
  std::vector<Piece> out;
  for (const FileExtent& e : extents) {
    std::uint64_t eEnd = e.logical + std::min(e.length, std::numeric_limits<std::uint64_t>::max() - e.logical);
    std::uint64_t b = std::max(e.logical, from), en = std::min(eEnd, end);
    if (b >= en) continue;
    bool plain = (e.flags & FIEMAP_EXTENT_SHARED) && !(e.flags & kNotPlain);
    out.push_back({b, en, e.physical + (b - e.logical), plain});
  }
  std::sort(out.begin(), out.end(), [](const Piece& x, const Piece& y) { return x.begin < y.begin; });
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i].begin < out[i - 1].end) return std::nullopt;
  return out;
}

// Appends a segment, merging it into the last one when it continues it.
void append(std::vector<Segment>& out, std::uint64_t offset, std::uint64_t length, SegmentKind kind) {
  if (length == 0) return;
  if (!out.empty() && out.back().kind == kind && out.back().offset + out.back().length == offset)
    out.back().length += length;
  else
    out.push_back({offset, length, kind});
}

// The byte-exact classification: where the two files hold the same bytes without reading.
std::vector<Segment> exactSegments(const std::vector<Piece>& cur, const std::vector<Piece>& parent, std::uint64_t from,
                                   std::uint64_t to) {
  std::vector<std::uint64_t> cuts = {from, to};
  for (const auto* list : {&cur, &parent})
    for (const Piece& p : *list) cuts.insert(cuts.end(), {p.begin, p.end});
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<Segment> out;
  size_t i = 0, j = 0;
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    std::uint64_t a = cuts[k], b = cuts[k + 1];
    while (i < cur.size() && cur[i].end <= a) ++i;
    while (j < parent.size() && parent[j].end <= a) ++j;
    const Piece* c = i < cur.size() && cur[i].begin <= a ? &cur[i] : nullptr;
    const Piece* p = j < parent.size() && parent[j].begin <= a ? &parent[j] : nullptr;
    SegmentKind kind = SegmentKind::compare;
    if (!c && !p)
      kind = SegmentKind::holes;
    else if (c && p && c->sharedPlain && p->sharedPlain && c->physical + (a - c->begin) == p->physical + (a - p->begin))
      kind = SegmentKind::shared;
    append(out, a, b - a, kind);
  }
  return out;
}

}  // namespace

std::vector<Segment> classifyRange(std::span<const FileExtent> cur, std::uint64_t curSize,
                                   std::span<const FileExtent> parent, std::uint64_t parentSize, std::uint64_t from,
                                   std::uint64_t to, std::uint64_t align) {
  if (from >= to) return {};
  auto c = clip(cur, from, std::min(to, curSize));
  auto p = clip(parent, from, std::min(to, parentSize));
  if (!c || !p || align == 0) return {{from, to - from, SegmentKind::compare}};
  std::vector<Segment> exact = exactSegments(*c, *p, from, to);

  // Whole blocks around every compare segment, merged.
  std::vector<Segment> blocks;
  for (const Segment& s : exact) {
    if (s.kind != SegmentKind::compare) continue;
    std::uint64_t b = s.offset / align * align;
    std::uint64_t e = std::min(to, (s.offset + s.length + align - 1) / align * align);
    if (!blocks.empty() && b <= blocks.back().offset + blocks.back().length)
      blocks.back().length = std::max(blocks.back().offset + blocks.back().length, e) - blocks.back().offset;
    else
      blocks.push_back({b, e - b, SegmentKind::compare});
  }
  // The exact segments, with the widened blocks painted over them.
  std::vector<Segment> out;
  size_t k = 0;
  for (const Segment& s : exact) {
    std::uint64_t a = s.offset, end = s.offset + s.length;
    while (a < end) {
      while (k < blocks.size() && blocks[k].offset + blocks[k].length <= a) ++k;
      if (k < blocks.size() && blocks[k].offset <= a) {
        std::uint64_t e = std::min(end, blocks[k].offset + blocks[k].length);
        append(out, a, e - a, SegmentKind::compare);
        a = e;
      } else {
        std::uint64_t e = k < blocks.size() ? std::min(end, blocks[k].offset) : end;
        append(out, a, e - a, s.kind);
        a = e;
      }
    }
  }
  return out;
}

Result<std::vector<FileExtent>> fileExtents(int fd, const std::string& path, std::uint64_t from, std::uint64_t to) {
  std::vector<FileExtent> out;
  // struct fiemap ends in a flexible array of extents; room for a batch, 8-byte aligned.
  std::vector<std::uint64_t> storage(
      (sizeof(fiemap) + kBatch * sizeof(fiemap_extent) + sizeof(std::uint64_t) - 1) / sizeof(std::uint64_t));
  auto* fm = reinterpret_cast<fiemap*>(storage.data());
  for (std::uint64_t start = from; start < to;) {
    std::memset(storage.data(), 0, storage.size() * sizeof(std::uint64_t));
    fm->fm_start = start;
    fm->fm_length = to - start;
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
      int err = errno;
      if (err == EOPNOTSUPP || err == ENOTTY)
        return fail(Errc::unsupported, cat(path, ": the filesystem cannot report extents (FIEMAP)"), err);
      return failErrno(cat("ioctl FS_IOC_FIEMAP ", path), err);
    }
    std::uint64_t next = start;
    bool last = fm->fm_mapped_extents < kBatch;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      out.push_back({e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
      next = std::max<std::uint64_t>(next, e.fe_logical + e.fe_length);
      last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
    }
    if (last) break;
    if (next <= start) return fail(Errc::internal, cat(path, ": FIEMAP made no progress at offset ", start));
    start = next;
  }
  return out;
}

}  // namespace vmckpt::vmm::transfer
