// VmManager::importSnapshot: reads one stream (stream.hpp) into this store. Everything is
// built in hidden staging directories (the snapshot's, and the VM's when the store did not
// have it) and renamed into place only after the trailer and every file's SHA-256 (or,
// for a large file of an increment, its size: stream.hpp, format 1.1) check out; any
// failure removes the staging directories, so nothing half-imported is visible.
// The stream is untrusted input: names come from its manifest only after validation, and
// every range is checked against its file's size.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <set>
#include <vector>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/sha256.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/store/extent_usage.hpp"
#include "vmm/transfer/stream.hpp"

namespace vmckpt::vmm {
namespace {

constexpr std::uint64_t kMaxFileBytes = 64ull << 40;  // no VM file is larger; bounds ftruncate

// A member of a JSON object of the given kind, or null: the stream's JSON is untrusted.
const Json* member(const Json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}
std::string stringMember(const Json& j, const char* key) {
  const Json* v = member(j, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

struct Header {
  store::Manifest manifest;
  std::string parent;  // the snapshot the ranges are relative to; empty for a full stream
  int minor = 0;       // format 1.minor
};

Result<Header> parseHeader(const transfer::Record& rec) {
  if (rec.type != transfer::RecordType::header)
    return fail(Errc::corrupt, cat("stream starts with a ", transfer::recordTypeName(rec.type), " record, not a header"));
  const Json& j = rec.json;
  const Json* fmt = member(j, "format");
  const Json* major = fmt && fmt->is_object() ? member(*fmt, "major") : nullptr;
  if (!major || !major->is_number_integer() || major->get<long long>() != transfer::kFormatMajor)
    return fail(Errc::corrupt, "stream header has no format this vmckpt reads (major 1)");
  Header h;
  if (const Json* minor = member(*fmt, "minor")) {  // absent: 1.0
    if (!minor->is_number_unsigned()) return fail(Errc::corrupt, "stream header's format minor is not a number");
    if (minor->get<std::uint64_t>() > static_cast<std::uint64_t>(transfer::kFormatMinor))
      return fail(Errc::corrupt, cat("stream format 1.", minor->get<std::uint64_t>(), " is newer than this vmckpt reads (1.",
                                     transfer::kFormatMinor, "): upgrade vmckpt here"));
    h.minor = minor->get<int>();
  }
  const Json* mj = member(j, "manifest");
  auto man = mj ? store::Manifest::fromJson(*mj) : Result<store::Manifest>(fail(Errc::corrupt, "no manifest"));
  if (!man) return fail(man.error().context("stream header's manifest"));
  h.manifest = std::move(*man);
  if (const Json* p = member(j, "parent"); p && !p->is_null()) {
    if (!p->is_string()) return fail(Errc::corrupt, "stream header's parent is not a string");
    h.parent = p->get<std::string>();
    VMCKPT_TRY(validateVmName(h.parent));  // snapshot ids follow the same rules as names
  }
  if (auto v = validateVmName(h.manifest.id); !v) return fail(Errc::corrupt, cat("stream's snapshot id: ", v.error().message()));
  if (h.parent == h.manifest.id) return fail(Errc::corrupt, "stream's snapshot is its own parent");
  for (const auto& f : h.manifest.files)
    if (f.size > kMaxFileBytes) return fail(Errc::corrupt, cat("stream's file ", f.name, " claims ", f.size, " bytes"));
  return h;
}

// Exact id, not prefix or tag: what the stream names must be that very snapshot.
std::optional<store::SnapshotEntry> findById(const std::vector<store::SnapshotEntry>& all, const std::string& id) {
  for (const auto& s : all)
    if (s.manifest.id == id) return s;
  return std::nullopt;
}

store::StoreMode modeFor(const VmPaths& p) {
  if (store::isSubvolume(p.live)) return store::StoreMode::btrfs;
  return store::probeStore(p.dir).reflink ? store::StoreMode::reflink : store::StoreMode::copy;
}

// Applies the records of one file to data/<name>.
class FileWriter {
 public:
  FileWriter(std::string path, std::string name, std::uint64_t size, bool onParent)
      : path_(std::move(path)), name_(std::move(name)), size_(size), onParent_(onParent) {}
  // base: the parent's file (cloned, then changed in place), or empty for a new sparse file.
  Status open(const std::string& base) {
    if (!base.empty()) VMCKPT_TRY(fs::copyFile(base, path_, fs::CopyMethod::reflinkOrCopy, 0600, fs::Sync::later));
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | (base.empty() ? O_CREAT | O_EXCL : 0), 0600));
    if (!fd_) return failErrno(cat("open ", path_), errno);
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) return failErrno(cat("resize ", path_), errno);
    return {};
  }
  Status data(std::uint64_t at, std::span<const std::uint8_t> bytes) {
    VMCKPT_TRY(inside(at, bytes.size(), "data"));
    while (!bytes.empty()) {
      ssize_t n = ::pwrite(fd_.get(), bytes.data(), bytes.size(), static_cast<off_t>(at));
      if (n < 0) {
        if (errno == EINTR) continue;
        return failErrno(cat("write ", path_), errno);
      }
      bytes = bytes.subspan(static_cast<size_t>(n));
      at += static_cast<std::uint64_t>(n);
    }
    return {};
  }
  Status zero(std::uint64_t at, std::uint64_t len) {
    VMCKPT_TRY(inside(at, len, "zero"));
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(at), static_cast<off_t>(len)) == 0)
      return {};
    static const std::vector<std::uint8_t> zeros(transfer::kMaxDataBytes);
    for (std::uint64_t done = 0; done < len;) {
      std::uint64_t n = std::min<std::uint64_t>(zeros.size(), len - done);
      VMCKPT_TRY(data(at + done, std::span(zeros).first(static_cast<size_t>(n))));
      done += n;
    }
    return {};
  }
  Status finish(const std::string& expectSha, const std::string& manifestSha) {
    auto sum = sha256Fd(fd_.get(), path_);
    if (!sum) return fail(sum.error());
    if (*sum != expectSha)
      return fail(Errc::corrupt, cat("file ", name_, " fails its SHA-256 check after import (damaged stream, or the parent "
                                     "snapshot here differs from the exporter's)"));
    if (!manifestSha.empty() && manifestSha != expectSha)
      return fail(Errc::corrupt, cat("file ", name_, ": the stream's SHA-256 differs from its manifest's"));
    fd_.reset();
    return {};
  }
  // For a file the exporter did not read whole (stream.hpp, 1.1): its size, which the
  // writes cannot have changed (every range was checked to lie inside it).
  Status finishBySize() {
    struct stat st{};
    if (::fstat(fd_.get(), &st) != 0) return failErrno(cat("stat ", path_), errno);
    if (static_cast<std::uint64_t>(st.st_size) != size_)
      return fail(Errc::corrupt, cat("file ", name_, " has ", st.st_size, " bytes after import, not ", size_));
    fd_.reset();
    return {};
  }
  const std::string& name() const { return name_; }
  bool onParent() const { return onParent_; }

 private:
  Status inside(std::uint64_t at, std::uint64_t len, std::string_view what) const {
    if (at > size_ || len > size_ - at)
      return fail(Errc::corrupt, cat(what, " range [", at, ", +", len, ") lies outside file ", name_, " (", size_, " bytes)"));
    return {};
  }
  std::string path_, name_;
  std::uint64_t size_;
  bool onParent_;  // base "parent": the parent's file, changed in place
  UniqueFd fd_;
};

}  // namespace

Result<ImportResult> VmManager::importSnapshot(int inFd, const ImportOptions& opts) {
  auto ctx = [](const Error& e) { return fail(e.context("import")); };
  transfer::StreamReader in(inFd);
  if (auto s = in.begin(); !s) return ctx(s.error());
  auto first = in.next();
  if (!first) return ctx(first.error());
  auto header = parseHeader(*first);
  if (!header) return ctx(header.error());
  store::Manifest m = std::move(header->manifest);
  const std::string& id = m.id;
  const std::string target = opts.asName.empty() ? m.vm : opts.asName;
  if (auto v = validateVmName(target); !v) return ctx(v.error());
  m.vm = target;
  m.spec.name = target;

  // Into an existing VM (locked), or a new one built in vms/.import-NAME-PID.
  std::optional<Held> held;
  std::optional<VmPaths> staged;
  std::optional<VmLock> stagedLock;
  std::optional<store::SnapshotEntry> parent;
  ScopeExit dropStaged([&] {
    if (staged) (void)store::removeStoreTree(staged->dir);
  });
  if (root_.vmExists(target)) {
    auto h = lockVm(target);
    if (!h) return ctx(h.error());
    held.emplace(std::move(*h));
    auto all = store::Catalog(held->paths.snapshots).list();
    if (!all) return ctx(all.error());
    if (findById(*all, id)) return ctx(Error(Errc::alreadyExists, cat("VM ", target, " already has snapshot ", id)));
    if (!header->parent.empty()) {
      parent = findById(*all, header->parent);
      if (!parent)
        return ctx(Error(Errc::notFound, cat("the stream is an increment on snapshot ", header->parent, ", which VM ", target,
                                             " does not have: import that one first")));
    }
  } else {
    if (!header->parent.empty())
      return ctx(Error(Errc::notFound, cat("the stream is an increment on snapshot ", header->parent, " of VM ", target,
                                           ", which this store does not have: import the base first")));
    for (const auto& n : store::removeStaleStagingDirs(root_.vmsDir(), ".import-"))
      log::info("removed ", n, " left by an interrupted import");
    staged.emplace(cat(root_.vmsDir(), "/.import-", target, "-", ::getpid()));
    for (const auto& d : {staged->dir, staged->run, staged->snapshots}) VMCKPT_TRY(fs::makeDirs(d, 0700));
    auto lock = VmLock::acquire(*staged, target);  // travels with the directory through the rename
    if (!lock) return ctx(lock.error());
    stagedLock.emplace(std::move(*lock));
    store::StoreCapabilities caps = store::probeStore(staged->dir);
    if (auto s = store::makeBackend(caps.best())->createLiveDir(staged->live); !s) return ctx(s.error());
  }
  const VmPaths& p = held ? held->paths : *staged;
  VmSpec spec = held ? held->spec : m.spec;
  for (const auto& [k, v] : opts.deviceMap) spec.deviceMap[k] = v;
  // A pci_ID key must name a passthrough device with a host= to replace.
  if (auto mapped = vfio::applyDeviceMap(spec.passthrough, spec.deviceMap); !mapped) return ctx(mapped.error());

  // The snapshot, in the mode of this store (the exporter's may differ).
  const store::StoreMode mode = modeFor(p);
  auto backend = store::makeBackend(mode);
  VMCKPT_TRY(fs::makeDirs(p.snapshots, 0700));
  for (const auto& n : store::removeStaleStagingDirs(p.snapshots, ".import-"))
    log::info("removed ", n, " left by an interrupted import");
  const std::string tmp = cat(p.snapshots, "/.import-", id, "-", ::getpid());
  const std::string data = tmp + "/data";
  ScopeExit dropPartial([&] { (void)store::removeStoreTree(tmp); });
  VMCKPT_TRY(fs::makeDirs(tmp, 0700));
  if (auto s = backend->createLiveDir(data); !s) return ctx(s.error());

  std::optional<FileWriter> cur;
  std::set<std::string> done;
  for (;;) {
    auto rec = in.next();
    if (!rec) return ctx(rec.error());
    if (opts.progress) opts.progress(in.bytes());
    using T = transfer::RecordType;
    auto at = [&] { return cat("record at byte ", rec->at, ": "); };
    if (rec->type == T::end) break;
    if (rec->type == T::header) return ctx(Error(Errc::corrupt, cat(at(), "a second header")));
    if (rec->type == T::file) {
      if (cur) return ctx(Error(Errc::corrupt, cat(at(), "file ", cur->name(), " was not finished")));
      const Json& j = rec->json;
      std::string name = stringMember(j, "name");
      const store::ManifestFile* mf = m.file(name);
      if (!mf || done.count(name)) return ctx(Error(Errc::corrupt, cat(at(), "file '", name, "' is not in the manifest, or sent twice")));
      const Json* size = member(j, "size");
      if (!size || !size->is_number_unsigned() || size->get<std::uint64_t>() != mf->size)
        return ctx(Error(Errc::corrupt, cat(at(), "file ", name, " has a size other than its manifest's")));
      std::string base = stringMember(j, "base");
      std::string basePath;
      if (base == "parent") {
        if (!parent || !parent->manifest.file(name))
          return ctx(Error(Errc::corrupt, cat(at(), "file ", name, " is relative to a parent that has no such file")));
        basePath = parent->dataDir() + "/" + name;
      } else if (base != "empty") {
        return ctx(Error(Errc::corrupt, cat(at(), "file ", name, " has an unknown base '", base, "'")));
      }
      cur.emplace(data + "/" + name, name, mf->size, !basePath.empty());
      if (auto s = cur->open(basePath); !s) return ctx(s.error());
    } else if (!cur) {
      return ctx(Error(Errc::corrupt, cat(at(), transfer::recordTypeName(rec->type), " record outside a file")));
    } else if (rec->type == T::data) {
      if (auto s = cur->data(rec->offset, rec->data); !s) return ctx(s.error().context(at()));
    } else if (rec->type == T::zero) {
      if (auto s = cur->zero(rec->offset, rec->length); !s) return ctx(s.error().context(at()));
    } else {  // file-end
      const Json& j = rec->json;
      std::string name = stringMember(j, "name"), sha = stringMember(j, "sha256");
      // Verified by size only: format 1.1, an increment, a file the manifest checks by size.
      bool bySize = header->minor >= 1 && sha.empty() && stringMember(j, "verified") == "size" && name == cur->name() &&
                    cur->onParent() && m.file(name)->sha256.empty();
      if (name != cur->name() || (sha.size() != 64 && !bySize))
        return ctx(Error(Errc::corrupt, cat(at(), "file-end does not close file ", cur->name(), " with a SHA-256")));
      if (auto s = bySize ? cur->finishBySize() : cur->finish(sha, m.file(name)->sha256); !s) return ctx(s.error());
      done.insert(name);
      cur.reset();
    }
  }
  if (cur) return ctx(Error(Errc::corrupt, cat("stream ended inside file ", cur->name())));
  for (const auto& f : m.files)
    if (!done.count(f.name)) return ctx(Error(Errc::corrupt, cat("stream ended without file ", f.name)));

  if (auto s = backend->seal(data); !s) return ctx(s.error().context("seal the snapshot"));
  m.mode = mode;
  {  // what this snapshot costs here, next to its parent
    std::vector<std::string> mine, theirs;
    for (const auto& f : m.files) mine.push_back(data + "/" + f.name);
    if (parent)
      for (const auto& f : parent->manifest.files) theirs.push_back(parent->dataDir() + "/" + f.name);
    auto own = store::mapExtents(mine);
    auto base = theirs.empty() ? Result<store::ExtentMap>(store::ExtentMap{}) : store::mapExtents(theirs);
    if (own && base) m.exclusiveBytes = store::exclusiveBytes(*own, *base);
  }
  if (auto s = store::writeManifest(tmp + "/manifest.json", m); !s) return ctx(s.error());
  if (staged || !opts.deviceMap.empty())
    if (auto s = fs::writeFileAtomic(p.spec, spec.toJson().dump(2) + "\n"); !s) return ctx(s.error());

  const std::string dest = cat(p.snapshots, "/", id);
  if (::rename(tmp.c_str(), dest.c_str()) != 0) return ctx(Error::fromErrno(cat("rename ", tmp, " -> ", dest), errno));
  dropPartial.cancel();
  if (staged) {
    VmPaths final = root_.vm(target);
    if (::renameat2(AT_FDCWD, staged->dir.c_str(), AT_FDCWD, final.dir.c_str(), RENAME_NOREPLACE) != 0) {
      int err = errno;
      return ctx(err == EEXIST || err == ENOTEMPTY ? Error(Errc::alreadyExists, cat("a VM named ", target, " appeared meanwhile"))
                                                   : Error::fromErrno(cat("rename ", staged->dir), err));
    }
    staged.reset();
  }
  return ImportResult{target, id, parent ? parent->manifest.id : std::string(), in.bytes(), !held};
}

}  // namespace vmckpt::vmm
