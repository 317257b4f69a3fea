#include "vmm/store/store_mode.hpp"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm::store {

std::string_view storeModeName(StoreMode m) {
  switch (m) {
    case StoreMode::btrfs: return "btrfs";
    case StoreMode::reflink: return "reflink";
    case StoreMode::copy: return "copy";
  }
  return "?";
}

Result<StoreMode> parseStoreMode(std::string_view s) {
  if (s == "btrfs") return StoreMode::btrfs;
  if (s == "reflink") return StoreMode::reflink;
  if (s == "copy") return StoreMode::copy;
  return fail(Errc::invalidArgument, cat("store mode '", s, "' is not one of auto, btrfs, reflink, copy"));
}

StoreMode StoreCapabilities::best() const {
  if (subvolumes) return StoreMode::btrfs;
  if (reflink) return StoreMode::reflink;
  return StoreMode::copy;
}

bool isSubvolume(const std::string& path) { return btrfs_util_is_subvolume(path.c_str()) == BTRFS_UTIL_OK; }

StoreCapabilities probeStore(const std::string& dir) {
  StoreCapabilities c;
  auto fsType = fs::filesystemType(dir);
  c.filesystem = fsType ? *fsType : "unknown";

  std::string a = cat(dir, "/.reflink-probe-a.", ::getpid()), b = cat(dir, "/.reflink-probe-b.", ::getpid());
  {
    UniqueFd fa(::open(a.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    UniqueFd fb(::open(b.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    char block[4096] = {1};
    if (!fa || !fb) c.reflinkWhy = std::strerror(errno);
    else if (::write(fa.get(), block, sizeof block) != static_cast<ssize_t>(sizeof block)) c.reflinkWhy = std::strerror(errno);
    else if (::ioctl(fb.get(), FICLONE, fa.get()) == 0) c.reflink = true;
    else c.reflinkWhy = cat("FICLONE: ", std::strerror(errno));
  }
  ::unlink(a.c_str());
  ::unlink(b.c_str());

  if (c.filesystem != "btrfs") {
    c.subvolumesWhy = cat("store is on ", c.filesystem, ", not btrfs");
    return c;
  }
  std::string sv = cat(dir, "/.subvol-probe.", ::getpid());
  btrfs_util_error e = btrfs_util_create_subvolume(sv.c_str(), 0, nullptr, nullptr);
  if (e != BTRFS_UTIL_OK) {
    c.subvolumesWhy = cat("create subvolume: ", btrfs_util_strerror(e));
    return c;
  }
  e = btrfs_util_delete_subvolume(sv.c_str(), 0);
  if (e != BTRFS_UTIL_OK) {
    c.subvolumesWhy = cat("delete subvolume (needs root or user_subvol_rm_allowed): ", btrfs_util_strerror(e));
    ::rmdir(sv.c_str());
    return c;
  }
  c.subvolumes = true;
  return c;
}

}  // namespace vmckpt::vmm::store
