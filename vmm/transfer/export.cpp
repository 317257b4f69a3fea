// VmManager::exportSnapshot: one snapshot as a stream (stream.hpp). With a parent, each
// file travels as the 64 KiB blocks that differ from the parent's file of that name, so
// an increment costs what the guest dirtied; without, holes are skipped (sparse). Where
// the store shares extents between a snapshot and its parent (Btrfs, reflinks), only the
// ranges that do not share them are read (extents.hpp): reading, too, costs what changed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/store/manifest.hpp"
#include "vmm/transfer/extents.hpp"
#include "vmm/transfer/stream.hpp"

namespace vmckpt::vmm {
namespace {

constexpr std::uint64_t kChunk = 1 << 20;   // read unit
constexpr std::uint64_t kBlock = 64 << 10;  // compare unit: what an increment sends for one dirty page
constexpr std::uint64_t kWindow = 256ull << 20;  // extents are mapped this much at a time (bounds memory)
static_assert(kChunk % kBlock == 0 && kChunk <= transfer::kMaxDataBytes && kWindow % kBlock == 0);

struct OpenFile {
  UniqueFd fd;
  std::uint64_t size = 0;
  std::string path;  // for error messages
};

// A snapshot file opened for reading, checked to be what the manifest says. Holding the
// descriptor keeps the bytes readable even if the snapshot is deleted meanwhile.
Result<OpenFile> openSnapshotFile(const store::SnapshotEntry& s, const store::ManifestFile& f) {
  std::string path = s.dataDir() + "/" + f.name;
  OpenFile o;
  o.path = path;
  o.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!o.fd) return failErrno(cat("open ", path), errno);
  struct stat st{};
  if (::fstat(o.fd.get(), &st) != 0) return failErrno(cat("stat ", path), errno);
  if (!S_ISREG(st.st_mode)) return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", f.name, " is not a regular file"));
  o.size = static_cast<std::uint64_t>(st.st_size);
  if (o.size != f.size)
    return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", f.name, " has size ", o.size, ", manifest says ", f.size));
  return o;
}

// Reads [at, at+len) of f into buf, counting what it read; past the file's size (or a
// short read at EOF) it is zeros.
Status readRange(const OpenFile& f, std::uint64_t at, std::uint8_t* buf, std::uint64_t len, std::uint64_t& counted) {
  std::uint64_t got = 0;
  while (got < len && at + got < f.size) {
    ssize_t n = ::pread(f.fd.get(), buf + got, static_cast<size_t>(std::min(len - got, f.size - at - got)),
                        static_cast<off_t>(at + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return failErrno(cat("read ", f.path), errno);
    }
    if (n == 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  counted += got;
  std::memset(buf + got, 0, static_cast<size_t>(len - got));
  return {};
}

// Coalesces changed blocks into data records and zeroed blocks into zero records.
class RangeSender {
 public:
  explicit RangeSender(transfer::StreamWriter& w) : w_(w) {}
  Status dataBlock(std::uint64_t at, const std::uint8_t* p, std::uint64_t len) {
    VMCKPT_TRY(flushZero());
    if (!data_.empty() && (dataAt_ + data_.size() != at || data_.size() + len > transfer::kMaxDataBytes)) VMCKPT_TRY(flushData());
    if (data_.empty()) dataAt_ = at;
    data_.insert(data_.end(), p, p + len);
    return {};
  }
  Status zeroBlock(std::uint64_t at, std::uint64_t len) {
    VMCKPT_TRY(flushData());
    if (zeroLen_ && zeroAt_ + zeroLen_ != at) VMCKPT_TRY(flushZero());
    if (!zeroLen_) zeroAt_ = at;
    zeroLen_ += len;
    return {};
  }
  Status flush() {
    VMCKPT_TRY(flushData());
    return flushZero();
  }

 private:
  Status flushData() {
    if (data_.empty()) return {};
    VMCKPT_TRY(w_.data(dataAt_, data_));
    data_.clear();
    return {};
  }
  Status flushZero() {
    if (!zeroLen_) return {};
    VMCKPT_TRY(w_.zero(zeroAt_, zeroLen_));
    zeroLen_ = 0;
    return {};
  }
  transfer::StreamWriter& w_;
  std::vector<std::uint8_t> data_;
  std::uint64_t dataAt_ = 0, zeroAt_ = 0, zeroLen_ = 0;
};

struct Progress {
  std::uint64_t done = 0, total = 0;
  std::uint64_t read = 0;  // bytes read from either snapshot's files
  const std::function<void(std::uint64_t, std::uint64_t)>* fn = nullptr;
  void add(std::uint64_t n) {
    done += n;
    if (fn && *fn) (*fn)(done, total);
  }
};

// What one file's ranges say about its content.
struct SentFile {
  std::string sha256;  // of the whole resulting file; empty where ranges were skipped unread
};

// A whole file (no parent): holes are skipped without reading; a new file starts as zeros.
Result<SentFile> sendWhole(transfer::StreamWriter& w, const OpenFile& f, Progress& progress) {
  static const std::array<std::uint8_t, kChunk> zeros{};
  std::vector<std::uint8_t> cur(kChunk);
  Sha256 sum;
  RangeSender out(w);
  for (std::uint64_t at = 0; at < f.size; at += kChunk) {
    std::uint64_t len = std::min(kChunk, f.size - at);
    off_t data = ::lseek(f.fd.get(), static_cast<off_t>(at), SEEK_DATA);
    if ((data < 0 && errno == ENXIO) || (data >= 0 && static_cast<std::uint64_t>(data) >= at + len)) {
      sum.update(zeros.data(), len);
      progress.add(len);
      continue;
    }
    VMCKPT_TRY(readRange(f, at, cur.data(), len, progress.read));
    sum.update(cur.data(), len);
    for (std::uint64_t b = 0; b < len; b += kBlock) {
      std::uint64_t n = std::min(kBlock, len - b);
      if (std::memcmp(cur.data() + b, zeros.data(), n) == 0)
        VMCKPT_TRY(out.flush());
      else
        VMCKPT_TRY(out.dataBlock(at + b, cur.data() + b, n));
    }
    progress.add(len);
  }
  VMCKPT_TRY(out.flush());
  return SentFile{sum.hexDigest()};
}

// [from, to) of f classified against its parent by their extents; all "compare" where
// the filesystem cannot say (the full comparison: the same stream).
Result<std::vector<transfer::Segment>> segmentsOf(const OpenFile& f, const OpenFile& parent, std::uint64_t from,
                                                  std::uint64_t to) {
  const std::vector<transfer::Segment> all = {{from, to - from, transfer::SegmentKind::compare}};
  auto mine = transfer::fileExtents(f.fd.get(), f.path, from, to);
  if (!mine) return mine.error().code() == Errc::unsupported ? all : Result<std::vector<transfer::Segment>>(fail(mine.error()));
  auto theirs = transfer::fileExtents(parent.fd.get(), parent.path, from, std::max(from, std::min(to, parent.size)));
  if (!theirs)
    return theirs.error().code() == Errc::unsupported ? all : Result<std::vector<transfer::Segment>>(fail(theirs.error()));
  return transfer::classifyRange(*mine, f.size, *theirs, parent.size, from, to, kBlock);
}

// A file against its parent's file of that name: only the 64 KiB blocks that differ
// travel (data, or zero where they became zeros). Ranges where both files share extents
// or are both holes are identical and not compared; shared ones are not even read unless
// the file is small enough to carry its SHA-256 (store::kChecksumLimit).
Result<SentFile> sendChanges(transfer::StreamWriter& w, const OpenFile& f, const OpenFile& parent, Progress& progress) {
  static const std::array<std::uint8_t, kChunk> zeros{};
  std::vector<std::uint8_t> cur(kChunk), old(kChunk);
  const bool mustSum = f.size <= store::kChecksumLimit;
  Sha256 sum;
  bool summed = true;  // sum covers every byte so far
  RangeSender out(w);
  auto hashZeros = [&](std::uint64_t len) {
    for (std::uint64_t n; summed && len; len -= n) {
      n = std::min(len, kChunk);
      sum.update(zeros.data(), n);
    }
  };
  auto hashOnly = [&](const transfer::Segment& s) -> Status {
    for (std::uint64_t at = s.offset, len; at < s.offset + s.length; at += len) {
      len = std::min(kChunk, s.offset + s.length - at);
      VMCKPT_TRY(readRange(f, at, cur.data(), len, progress.read));
      sum.update(cur.data(), len);
    }
    return {};
  };
  auto compare = [&](const transfer::Segment& s) -> Status {
    for (std::uint64_t at = s.offset, len; at < s.offset + s.length; at += len) {
      len = std::min(kChunk, s.offset + s.length - at);
      VMCKPT_TRY(readRange(f, at, cur.data(), len, progress.read));
      VMCKPT_TRY(readRange(parent, at, old.data(), len, progress.read));
      if (summed) sum.update(cur.data(), len);
      for (std::uint64_t b = 0; b < len; b += kBlock) {
        std::uint64_t n = std::min(kBlock, len - b);
        const std::uint8_t* p = cur.data() + b;
        if (std::memcmp(p, old.data() + b, n) == 0)
          VMCKPT_TRY(out.flush());
        else if (std::memcmp(p, zeros.data(), n) == 0)
          VMCKPT_TRY(out.zeroBlock(at + b, n));
        else
          VMCKPT_TRY(out.dataBlock(at + b, p, n));
      }
    }
    return {};
  };
  for (std::uint64_t window = 0; window < f.size; window += kWindow) {
    auto segments = segmentsOf(f, parent, window, std::min(f.size, window + kWindow));
    if (!segments) return fail(segments.error());
    for (const transfer::Segment& s : *segments) {
      switch (s.kind) {
        case transfer::SegmentKind::compare:
          VMCKPT_TRY(compare(s));
          break;
        case transfer::SegmentKind::holes:  // identical zeros
          VMCKPT_TRY(out.flush());
          hashZeros(s.length);
          break;
        case transfer::SegmentKind::shared:  // identical bytes
          VMCKPT_TRY(out.flush());
          if (mustSum)
            VMCKPT_TRY(hashOnly(s));
          else
            summed = false;
          break;
      }
      progress.add(s.length);
    }
  }
  VMCKPT_TRY(out.flush());
  return SentFile{summed ? sum.hexDigest() : std::string()};
}

}  // namespace

Result<ExportResult> VmManager::exportSnapshot(const std::string& name, const std::string& ref, const ExportOptions& opts,
                                               int outFd) {
  auto ctx = [&](const Error& e) { return fail(e.context(cat("export ", name))); };
  auto snap = findSnapshot(name, ref);
  if (!snap) return ctx(snap.error());
  std::optional<store::SnapshotEntry> parent;
  if (!opts.parent.empty()) {
    auto ps = findSnapshot(name, opts.parent);
    if (!ps) return ctx(ps.error().context("--parent"));
    if (ps->manifest.id == snap->manifest.id)
      return ctx(Error(Errc::invalidArgument, "--parent is the exported snapshot itself"));
    parent = std::move(*ps);
  }
  const store::Manifest& m = snap->manifest;

  // Open everything first: the export then reads what was checked, whatever happens to
  // the snapshots meanwhile (the VM is not locked; it may keep snapshotting).
  std::vector<OpenFile> files;
  std::map<std::string, OpenFile> parentFiles;
  Progress progress{.fn = &opts.progress};
  for (const auto& f : m.files) {
    auto o = openSnapshotFile(*snap, f);
    if (!o) return ctx(o.error());
    progress.total += o->size;
    files.push_back(std::move(*o));
  }
  if (parent)
    for (const auto& f : parent->manifest.files) {
      if (!m.file(f.name)) continue;
      auto o = openSnapshotFile(*parent, f);
      if (!o) return ctx(o.error().context("--parent"));
      parentFiles.emplace(f.name, std::move(*o));
    }

  transfer::StreamWriter w(outFd);
  VMCKPT_TRY(w.begin());
  Json header = {{"format", {{"major", transfer::kFormatMajor}, {"minor", transfer::kFormatMinor}}},
                 {"vm", name},
                 {"snapshot", m.id},
                 {"parent", parent ? Json(parent->manifest.id) : Json(nullptr)},
                 {"manifest", m.toJson()},
                 {"data_bytes", progress.total},
                 {"vmckpt_version", VMCKPT_VERSION}};
  if (auto s = w.json(transfer::RecordType::header, header); !s) return ctx(s.error());
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& fname = m.files[i].name;
    auto pf = parentFiles.find(fname);
    const OpenFile* base = pf == parentFiles.end() ? nullptr : &pf->second;
    Json fj = {{"name", fname}, {"size", files[i].size}, {"base", base ? "parent" : "empty"}};
    if (auto s = w.json(transfer::RecordType::file, fj); !s) return ctx(s.error());
    auto sent = base ? sendChanges(w, files[i], *base, progress) : sendWhole(w, files[i], progress);
    if (!sent) return ctx(sent.error().context(fname));
    Json end = {{"name", fname}, {"sha256", sent->sha256}};
    if (sent->sha256.empty()) end["verified"] = "size";  // ranges were skipped unread: see stream.hpp
    if (auto s = w.json(transfer::RecordType::fileEnd, end); !s) return ctx(s.error());
  }
  if (auto s = w.end(); !s) return ctx(s.error());
  return ExportResult{name, m.id, parent ? parent->manifest.id : std::string(), w.bytes(), progress.total,
                      progress.read};
}

}  // namespace vmckpt::vmm
