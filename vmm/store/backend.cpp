#include "vmm/store/backend.hpp"

#include <btrfsutil.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/fs.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm::store {
namespace {

Error btrfsError(std::string_view what, const std::string& path, btrfs_util_error e) {
  return Error(Errc::io, cat(what, " ", path, ": ", btrfs_util_strerror(e)), errno);
}

Result<std::vector<std::string>> regularFiles(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return failErrno(cat("opendir ", dir), errno);
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    struct stat st{};
    if (::lstat((dir + "/" + n).c_str(), &st) == 0 && S_ISREG(st.st_mode)) names.push_back(n);
  }
  ::closedir(d);
  return names;
}

// Snapshot files are the owner's alone (0600): QEMU creates some of what it writes with
// its own umask (027 once daemonized), and a btrfs snapshot keeps the modes it finds.
Status makeFilesPrivate(const std::string& dir) {
  auto files = regularFiles(dir);
  if (!files) return fail(files.error());
  for (const auto& f : *files) {
    std::string path = dir + "/" + f;
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return failErrno(cat("stat ", path), errno);
    if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), st.st_mode & 0700) != 0)
      return failErrno(cat("chmod ", path), errno);
  }
  return {};
}

class BtrfsBackend final : public Backend {
 public:
  StoreMode mode() const override { return StoreMode::btrfs; }
  Status createLiveDir(const std::string& path) const override {
    if (auto e = btrfs_util_create_subvolume(path.c_str(), 0, nullptr, nullptr); e != BTRFS_UTIL_OK)
      return fail(btrfsError("create subvolume", path, e));
    if (::chmod(path.c_str(), 0700) != 0) return failErrno(cat("chmod ", path), errno);
    return {};
  }
  Status settle(const std::string& live) const override {
    if (auto e = btrfs_util_sync(live.c_str()); e != BTRFS_UTIL_OK) return fail(btrfsError("sync", live, e));
    return {};
  }
  Status capture(const std::string& live, const std::string& dest) const override {
    // One ioctl: RAM file and disks together. Btrfs writes back the source's dirty pages
    // first, which is why the caller pre-flushes while running. Creating a snapshot
    // commits a transaction: the capture is durable when the ioctl returns.
    auto e = btrfs_util_create_snapshot(live.c_str(), dest.c_str(), 0, nullptr, nullptr);
    if (e != BTRFS_UTIL_OK) return fail(btrfsError("snapshot subvolume", live, e));
    return {};
  }
  Status seal(const std::string& captured) const override {
    VMCKPT_TRY(makeFilesPrivate(captured));
    VMCKPT_TRY(fs::syncFilesIn(captured));  // what was added after the capture
    auto e = btrfs_util_set_subvolume_read_only(captured.c_str(), true);
    if (e != BTRFS_UTIL_OK) return fail(btrfsError("make read-only", captured, e));
    return {};
  }
  Status cloneWritable(const std::string& captured, const std::string& dest) const override {
    auto e = btrfs_util_create_snapshot(captured.c_str(), dest.c_str(), 0, nullptr, nullptr);
    if (e != BTRFS_UTIL_OK) return fail(btrfsError("snapshot subvolume", captured, e));
    return {};
  }
};

// reflink and copy: the same per-file walk with a different copy method.
class FileBackend final : public Backend {
 public:
  explicit FileBackend(StoreMode m) : mode_(m) {}
  StoreMode mode() const override { return mode_; }
  Status createLiveDir(const std::string& path) const override { return fs::makeDirs(path, 0700); }
  Status settle(const std::string& live) const override {
    if (mode_ == StoreMode::copy) return {};  // the copy reads; nothing to write back first
    return fs::syncFilesystem(live);  // XFS: FICLONE would otherwise force the log
  }
  Status capture(const std::string& live, const std::string& dest) const override {
    return copyAll(live, dest, 0400, fs::Sync::later);  // read-only, like a btrfs read-only snapshot
  }
  Status seal(const std::string& captured) const override {
    VMCKPT_TRY(makeFilesPrivate(captured));
    return fs::syncFilesIn(captured);
  }
  Status cloneWritable(const std::string& captured, const std::string& dest) const override {
    return copyAll(captured, dest, 0600, fs::Sync::now);
  }

 private:
  Status copyAll(const std::string& from, const std::string& to, mode_t fileMode, fs::Sync sync) const {
    auto files = regularFiles(from);
    if (!files) return fail(files.error());
    if (::mkdir(to.c_str(), 0700) != 0) return failErrno(cat("mkdir ", to), errno);
    auto method = mode_ == StoreMode::reflink ? fs::CopyMethod::reflinkOnly : fs::CopyMethod::copyOnly;
    for (const auto& f : *files) VMCKPT_TRY(fs::copyFile(from + "/" + f, to + "/" + f, method, fileMode, sync));
    return {};
  }
  StoreMode mode_;
};

}  // namespace

std::unique_ptr<Backend> makeBackend(StoreMode mode) {
  if (mode == StoreMode::btrfs) return std::make_unique<BtrfsBackend>();
  return std::make_unique<FileBackend>(mode);
}

Status removeStoreTree(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return failErrno(cat("stat ", path), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return failErrno(cat("unlink ", path), errno);
    return {};
  }
  if (isSubvolume(path)) {
    auto e = btrfs_util_delete_subvolume(path.c_str(), BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE);
    if (e != BTRFS_UTIL_OK) return fail(btrfsError("delete subvolume", path, e));
    return {};
  }
  std::vector<std::string> children;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") children.push_back(path + "/" + n);
    }
    ::closedir(d);
  } else {
    return failErrno(cat("opendir ", path), errno);
  }
  for (const auto& c : children) VMCKPT_TRY(removeStoreTree(c));
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return failErrno(cat("rmdir ", path), errno);
  return {};
}

std::vector<std::string> removeStaleStagingDirs(const std::string& dir, std::string_view prefix,
                                                const std::function<void(const std::string&)>& beforeRemove) {
  std::vector<std::string> removed;
  for (const auto& n : fs::entriesWithPrefix(dir, prefix)) {
    long pid = 0;
    for (char ch : std::string_view(n).substr(n.rfind('-') + 1))
      pid = (ch >= '0' && ch <= '9' && pid < (1L << 30)) ? pid * 10 + (ch - '0') : -1;
    if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    if (beforeRemove) beforeRemove(dir + "/" + n);
    if (removeStoreTree(dir + "/" + n)) removed.push_back(n);
  }
  return removed;
}

}  // namespace vmckpt::vmm::store
