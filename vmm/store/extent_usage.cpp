#include "vmm/store/extent_usage.hpp"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm::store {
namespace {

constexpr std::uint32_t kBatch = 512;  // extents per FIEMAP call

// Flags meaning fe_physical does not name where the data lies.
constexpr std::uint32_t kNoPhysical =
    FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL;

bool hasPhysical(const fiemap_extent& e) {
  if (e.fe_flags & kNoPhysical) return false;
  // NOT_ALIGNED alone is fine (e.g. encrypted data); with no address it is packed metadata.
  if ((e.fe_flags & FIEMAP_EXTENT_NOT_ALIGNED) && e.fe_physical == 0) return false;
  return true;
}

// Appends the physical extents of one file to `out`, adding unplaceable bytes to `unmapped`.
Status appendFileExtents(const std::string& path, std::vector<Extent>& out, std::uint64_t& unmapped) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return fail(Errc::notFound, cat(path, ": no such file"), err);
    return failErrno(cat("open ", path), err);
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return failErrno(cat("stat ", path), errno);
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalidArgument, cat(path, ": not a regular file"));

  // struct fiemap ends in a flexible array of extents; allocate room for a batch.
  std::vector<std::uint64_t> storage(
      (sizeof(fiemap) + kBatch * sizeof(fiemap_extent) + sizeof(std::uint64_t) - 1) / sizeof(std::uint64_t));
  auto* fm = reinterpret_cast<fiemap*>(storage.data());
  std::uint64_t start = 0;
  for (;;) {
    std::memset(storage.data(), 0, storage.size() * sizeof(std::uint64_t));
    fm->fm_start = start;
    fm->fm_length = FIEMAP_MAX_OFFSET - start;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, fm) != 0) {
      int err = errno;
      if (err == EOPNOTSUPP || err == ENOTTY)
        return fail(Errc::unsupported, cat(path, ": the filesystem cannot report extents (FIEMAP)"), err);
      return failErrno(cat("ioctl FS_IOC_FIEMAP ", path), err);
    }
    if (fm->fm_mapped_extents == 0) return {};
    bool last = false;
    std::uint64_t batchStart = start;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      if (hasPhysical(e))
        out.push_back({e.fe_physical, e.fe_length});
      else
        unmapped += e.fe_length;
      start = e.fe_logical + e.fe_length;
      last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
    }
    if (last || start >= FIEMAP_MAX_OFFSET) return {};
    if (start <= batchStart)
      return fail(Errc::internal, cat(path, ": FIEMAP made no progress at offset ", batchStart));
  }
}

}  // namespace

ExtentMap ExtentMap::fromExtents(std::vector<Extent> raw, std::uint64_t unmappedBytes) {
  std::sort(raw.begin(), raw.end(), [](const Extent& x, const Extent& y) { return x.physical < y.physical; });
  ExtentMap m;
  m.unmapped_ = unmappedBytes;
  for (const Extent& e : raw) {
    if (e.length == 0) continue;
    if (!m.extents_.empty()) {
      Extent& back = m.extents_.back();
      std::uint64_t backEnd = back.physical + back.length;
      if (e.physical <= backEnd) {
        back.length = std::max(backEnd, e.physical + e.length) - back.physical;
        continue;
      }
    }
    m.extents_.push_back(e);
  }
  return m;
}

std::uint64_t ExtentMap::totalBytes() const {
  std::uint64_t sum = 0;
  for (const Extent& e : extents_) sum += e.length;
  return sum;
}

Result<ExtentMap> mapExtents(const std::vector<std::string>& files) {
  std::vector<Extent> raw;
  std::uint64_t unmapped = 0;
  for (const std::string& f : files) VMCKPT_TRY(appendFileExtents(f, raw, unmapped));
  return ExtentMap::fromExtents(std::move(raw), unmapped);
}

std::uint64_t overlapBytes(const ExtentMap& a, const ExtentMap& b) {
  // Both lists are sorted and disjoint: one sweep, advancing whichever range ends first.
  const auto& x = a.extents();
  const auto& y = b.extents();
  std::uint64_t shared = 0;
  size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    std::uint64_t xEnd = x[i].physical + x[i].length;
    std::uint64_t yEnd = y[j].physical + y[j].length;
    std::uint64_t lo = std::max(x[i].physical, y[j].physical);
    std::uint64_t hi = std::min(xEnd, yEnd);
    if (lo < hi) shared += hi - lo;
    if (xEnd <= yEnd)
      ++i;
    else
      ++j;
  }
  return shared;
}

std::uint64_t exclusiveBytes(const ExtentMap& snapshot, const ExtentMap& parent) {
  return snapshot.totalBytes() - overlapBytes(snapshot, parent);
}

}  // namespace vmckpt::vmm::store
