#include "vmm/host_report.hpp"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/qemu_process.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

// Tries FICLONE between two scratch files in `dir`.
bool reflinkWorks(const std::string& dir, std::string* why) {
  std::string a = cat(dir, "/.reflink-probe-a.", ::getpid()), b = cat(dir, "/.reflink-probe-b.", ::getpid());
  UniqueFd fa(::open(a.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd fb(::open(b.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  bool ok = false;
  if (fa && fb) {
    char block[4096] = {1};
    if (::write(fa.get(), block, sizeof block) == static_cast<ssize_t>(sizeof block)) {
      ok = ::ioctl(fb.get(), FICLONE, fa.get()) == 0;
      if (!ok) *why = std::strerror(errno);
    }
  } else {
    *why = std::strerror(errno);
  }
  ::unlink(a.c_str());
  ::unlink(b.c_str());
  return ok;
}

bool btrfsSubvolumesWork(const std::string& dir, std::string* why) {
  std::string sv = cat(dir, "/.subvol-probe.", ::getpid());
  btrfs_util_error e = btrfs_util_create_subvolume(sv.c_str(), 0, nullptr, nullptr);
  if (e != BTRFS_UTIL_OK) {
    *why = btrfs_util_strerror(e);
    return false;
  }
  e = btrfs_util_delete_subvolume(sv.c_str(), 0);
  if (e != BTRFS_UTIL_OK) {
    *why = cat("created but could not delete a subvolume: ", btrfs_util_strerror(e));
    return false;
  }
  return true;
}

}  // namespace

bool HostReport::healthy() const {
  for (const auto& c : checks)
    if (c.required && !c.ok) return false;
  return true;
}

HostReport inspectHost(const std::string& home, bool reprobeKvm) {
  HostReport r;
  auto add = [&](std::string name, bool ok, bool required, std::string detail) {
    r.checks.push_back({std::move(name), ok, required, std::move(detail)});
  };

  auto qemu = findQemu();
  if (qemu) {
    r.qemuBinary = *qemu;
    auto out = runCommand({*qemu, "--version"}, Deadline::in(10s));
    if (out && out->status.success()) {
      std::string first = out->out.substr(0, out->out.find('\n'));
      auto pos = first.find("version ");
      r.qemuVersion = pos == std::string::npos ? first : first.substr(pos + 8);
      add("qemu", true, true, cat(*qemu, " ", r.qemuVersion));
    } else {
      add("qemu", false, true, cat(*qemu, " --version failed"));
    }
  } else {
    add("qemu", false, true, qemu.error().message());
  }
  auto img = findExecutable("qemu-img");
  add("qemu-img", img.has_value(), false, img ? *img : "not found in PATH (install qemu-utils)");

  if (qemu) {
    r.kvm = probeKvm(home, *qemu, {}, reprobeKvm);
    std::string detail = r.kvm.bootsLinux ? cat("usable: ", r.kvm.reason)
                                          : cat("not used (auto falls back to TCG): ", r.kvm.reason);
    add("kvm", r.kvm.bootsLinux, false, detail);
  }

  auto fsType = fs::filesystemType(home);
  r.storeFs = fsType ? *fsType : "unknown";
  struct statvfs sv{};
  std::string space;
  if (::statvfs(home.c_str(), &sv) == 0)
    space = cat(", ", formatSize(static_cast<unsigned long long>(sv.f_bavail) * sv.f_frsize), " free");
  add("store", fsType.has_value(), true, cat(home, " on ", r.storeFs, space));

  std::string why;
  r.reflink = reflinkWorks(home, &why);
  add("reflink", r.reflink, false, r.reflink ? "FICLONE works in the store" : cat("FICLONE: ", why));
  if (r.storeFs == "btrfs") {
    why.clear();
    r.btrfsSubvolumes = btrfsSubvolumesWork(home, &why);
    add("btrfs-subvolumes", r.btrfsSubvolumes, false,
        r.btrfsSubvolumes ? "can create and delete subvolumes in the store" : why);
  } else {
    add("btrfs-subvolumes", false, false, cat("store is on ", r.storeFs, ", not btrfs"));
  }
  return r;
}

}  // namespace vmckpt::vmm
