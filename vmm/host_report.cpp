#include "vmm/host_report.hpp"

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
#include "vmm/store/store_mode.hpp"
#include "vmm/writeback.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

}  // namespace

bool HostReport::healthy() const {
  for (const auto& c : checks)
    if (c.required && !c.ok) return false;
  return true;
}

HostReport inspectHost(const std::string& home, bool reprobeKvm, std::uint64_t guestRamBytes) {
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

  store::StoreCapabilities caps = store::probeStore(home);
  r.reflink = caps.reflink;
  r.btrfsSubvolumes = caps.subvolumes;
  r.storeMode = std::string(store::storeModeName(caps.best()));
  add("reflink", r.reflink, false, r.reflink ? "FICLONE works in the store" : caps.reflinkWhy);
  add("btrfs-subvolumes", r.btrfsSubvolumes, false,
      r.btrfsSubvolumes ? "can create and delete subvolumes in the store" : caps.subvolumesWhy);
  if (auto w = readWriteback()) r.checks.push_back(writebackCheck(*w, guestRamBytes));
  else add("writeback", false, false, w.error().message());
  return r;
}

}  // namespace vmckpt::vmm
