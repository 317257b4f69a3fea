#include "vmm/store_root.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <thread>

#include "common/deadline.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

VmPaths::VmPaths(std::string vmDir)
    : dir(std::move(vmDir)),
      spec(dir + "/spec.json"),
      lifecycle(dir + "/lifecycle.json"),
      live(dir + "/live"),
      mem(live + "/mem"),
      kernel(live + "/kernel"),
      initrd(live + "/initrd"),
      devstate(live + "/devstate"),
      snapshots(dir + "/snapshots"),
      run(dir + "/run"),
      pidFile(run + "/qemu.pid"),
      qmpSocket(run + "/qmp.sock"),
      agentSocket(run + "/agent.sock"),
      console(run + "/console.sock"),
      serialLog(run + "/serial.log"),
      qemuLog(run + "/qemu.log"),
      lock(dir + "/lock"),
      journal(dir + "/journal.json") {}

std::string StoreRoot::defaultHome() {
  if (const char* h = std::getenv("VMCKPT_HOME"); h && *h) return fs::absolute(h);
  if (::geteuid() == 0) return "/var/lib/vmckpt";
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return cat(x, "/vmckpt");
  if (const char* home = std::getenv("HOME"); home && *home) return cat(home, "/.local/share/vmckpt");
  return "/tmp/vmckpt-" + std::to_string(::geteuid());
}

Result<StoreRoot> StoreRoot::open(const std::string& home) {
  std::string abs = fs::absolute(home);
  if (!fs::isDirectory(abs)) {
    if (auto s = fs::makeDirs(abs, 0700); !s) return fail(s.error().context("store"));
  }
  if (!fs::isDirectory(abs + "/vms")) {
    if (auto s = fs::makeDirs(abs + "/vms", 0700); !s) return fail(s.error().context("store"));
  }
  return StoreRoot(abs);
}

bool StoreRoot::vmExists(const std::string& name) const { return fs::exists(vm(name).spec); }

Result<std::vector<std::string>> StoreRoot::vmNames() const {
  std::vector<std::string> names;
  DIR* d = ::opendir(vmsDir().c_str());
  if (!d) return failErrno(cat("opendir ", vmsDir()), errno);
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (!validateVmName(n)) continue;  // skips ".", "..", staging directories
    if (vmExists(n)) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::optional<VmLock>> VmLock::tryAcquire(const VmPaths& paths) {
  UniqueFd fd(::open(paths.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return failErrno(cat("open ", paths.lock), errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK || errno == EINTR) return std::optional<VmLock>();
    return failErrno(cat("flock ", paths.lock), errno);
  }
  return std::optional<VmLock>(VmLock(std::move(fd)));
}

Result<VmLock> VmLock::acquire(const VmPaths& paths, const std::string& name) {
  return acquireAt(paths.lock, cat("VM ", name));
}

Result<VmLock> VmLock::acquireAt(const std::string& lockFile, const std::string& what) {
  UniqueFd fd(::open(lockFile.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return failErrno(cat("open ", lockFile), errno);
  // Another vmckpt command on the same VM: wait a little, then say who holds it.
  auto deadline = Deadline::in(std::chrono::seconds(10));
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return failErrno(cat("flock ", lockFile), errno);
    if (deadline.expired())
      return fail(Errc::wrongState, cat(what, " is busy: another vmckpt command holds its lock"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return VmLock(std::move(fd));
}

}  // namespace vmckpt::vmm
