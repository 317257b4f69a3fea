// VmManager::exportSnapshot: one snapshot as a stream (stream.hpp). With a parent, each
// file travels as the 64 KiB blocks that differ from the parent's file of that name, so
// an increment costs what the guest dirtied; without, holes are skipped (sparse).
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
#include "vmm/transfer/stream.hpp"

namespace vmckpt::vmm {
namespace {

constexpr std::uint64_t kChunk = 1 << 20;   // read unit
constexpr std::uint64_t kBlock = 64 << 10;  // compare unit: what an increment sends for one dirty page
static_assert(kChunk % kBlock == 0 && kChunk <= transfer::kMaxDataBytes);

struct OpenFile {
  UniqueFd fd;
  std::uint64_t size = 0;
};

// A snapshot file opened for reading, checked to be what the manifest says. Holding the
// descriptor keeps the bytes readable even if the snapshot is deleted meanwhile.
Result<OpenFile> openSnapshotFile(const store::SnapshotEntry& s, const store::ManifestFile& f) {
  std::string path = s.dataDir() + "/" + f.name;
  OpenFile o;
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

// Reads [at, at+len) of fd into buf; past `size` (or a short read at EOF) it is zeros.
Status readRange(int fd, std::uint64_t size, std::uint64_t at, std::uint8_t* buf, std::uint64_t len) {
  std::uint64_t got = 0;
  while (got < len && at + got < size) {
    ssize_t n = ::pread(fd, buf + got, static_cast<size_t>(std::min(len - got, size - at - got)), static_cast<off_t>(at + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return failErrno("read a snapshot file", errno);
    }
    if (n == 0) break;
    got += static_cast<std::uint64_t>(n);
  }
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
  const std::function<void(std::uint64_t, std::uint64_t)>* fn = nullptr;
  void add(std::uint64_t n) {
    done += n;
    if (fn && *fn) (*fn)(done, total);
  }
};

// One file's ranges; returns the SHA-256 of its whole content.
Result<std::string> sendFile(transfer::StreamWriter& w, const OpenFile& f, const OpenFile* parent, Progress& progress) {
  static const std::array<std::uint8_t, kChunk> zeros{};
  std::vector<std::uint8_t> cur(kChunk), old(parent ? kChunk : 0);
  Sha256 sum;
  RangeSender out(w);
  for (std::uint64_t at = 0; at < f.size; at += kChunk) {
    std::uint64_t len = std::min(kChunk, f.size - at);
    if (!parent) {  // skip holes without reading them
      off_t data = ::lseek(f.fd.get(), static_cast<off_t>(at), SEEK_DATA);
      if ((data < 0 && errno == ENXIO) || (data >= 0 && static_cast<std::uint64_t>(data) >= at + len)) {
        sum.update(zeros.data(), len);
        progress.add(len);
        continue;
      }
    }
    VMCKPT_TRY(readRange(f.fd.get(), f.size, at, cur.data(), len));
    if (parent) VMCKPT_TRY(readRange(parent->fd.get(), parent->size, at, old.data(), len));
    sum.update(cur.data(), len);
    for (std::uint64_t b = 0; b < len; b += kBlock) {
      std::uint64_t n = std::min(kBlock, len - b);
      const std::uint8_t* p = cur.data() + b;
      if (parent && std::memcmp(p, old.data() + b, n) == 0) {
        VMCKPT_TRY(out.flush());
        continue;
      }
      if (std::memcmp(p, zeros.data(), n) == 0) {
        if (parent) VMCKPT_TRY(out.zeroBlock(at + b, n));
        else VMCKPT_TRY(out.flush());  // implicit: a new file starts as zeros
        continue;
      }
      VMCKPT_TRY(out.dataBlock(at + b, p, n));
    }
    progress.add(len);
  }
  VMCKPT_TRY(out.flush());
  return sum.hexDigest();
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
  Progress progress{0, 0, &opts.progress};
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
  Json header = {{"format", {{"major", 1}, {"minor", 0}}},
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
    auto sum = sendFile(w, files[i], base, progress);
    if (!sum) return ctx(sum.error().context(fname));
    if (auto s = w.json(transfer::RecordType::fileEnd, {{"name", fname}, {"sha256", *sum}}); !s) return ctx(s.error());
  }
  if (auto s = w.end(); !s) return ctx(s.error());
  return ExportResult{name, m.id, parent ? parent->manifest.id : std::string(), w.bytes(), progress.total};
}

}  // namespace vmckpt::vmm
