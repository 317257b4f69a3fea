#include "loop_fs.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::test {
namespace {

using namespace std::chrono_literals;

// mkfs and losetup live in /usr/sbin, which a non-login PATH may lack.
Result<std::string> locateTool(const std::string& name) {
  if (auto p = findExecutable(name)) return p;
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string cand = dir + name;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return fail(Errc::notFound, cat(name, ": not found"));
}

std::string mkfsTool(const std::string& fsType) { return "mkfs." + fsType; }

// Runs a tool to completion; a non-zero exit becomes an error carrying its stderr.
Result<std::string> runTool(std::vector<std::string> argv, std::chrono::milliseconds limit) {
  auto exe = locateTool(argv[0]);
  if (!exe) return fail(exe.error());
  std::string shown = argv[0];
  argv[0] = *exe;
  auto r = runCommand(argv, Deadline::in(limit));
  if (!r) return fail(r.error().context(shown));
  if (!r->status.success()) {
    // The first line says why; mkfs follows it with its whole usage text.
    std::string why(trim(r->err));
    why = why.substr(0, why.find('\n'));
    return fail(Errc::processFailed, cat(shown, ": ", r->status.describe(), ": ", why));
  }
  return r->out;
}

bool kernelHasFilesystem(const std::string& fsType) {
  auto text = fs::readFile("/proc/filesystems");
  if (!text) return false;
  for (const auto& line : split(*text, '\n')) {
    // Lines are "nodev\tproc" or "\tbtrfs".
    auto fields = split(trim(line), '\t');
    if (!fields.empty() && trim(fields.back()) == fsType) return true;
  }
  return false;
}

}  // namespace

std::optional<std::string> LoopFs::unavailable(const std::string& fsType) {
  if (fsType != "btrfs" && fsType != "xfs") return cat("unsupported filesystem type ", fsType);
  if (::geteuid() != 0) return std::string("needs root (losetup, mount)");
  if (!fs::exists("/dev/loop-control")) return std::string("no /dev/loop-control (no loop device support)");
  if (!locateTool("losetup")) return std::string("losetup not installed (util-linux)");
  if (!locateTool(mkfsTool(fsType)))
    return cat(mkfsTool(fsType), " not installed (", fsType == "xfs" ? "xfsprogs" : "btrfs-progs", ")");
  if (!kernelHasFilesystem(fsType)) {
    // A module not loaded yet is not listed; load it before concluding it is absent.
    (void)runTool({"modprobe", fsType}, 10s);
    if (!kernelHasFilesystem(fsType)) return cat("kernel has no ", fsType, " (not in /proc/filesystems)");
  }
  return std::nullopt;
}

Result<std::unique_ptr<LoopFs>> LoopFs::create(const std::string& fsType, std::uint64_t sizeBytes) {
  if (fsType != "btrfs" && fsType != "xfs")
    return fail(Errc::invalidArgument, cat("unsupported filesystem type ", fsType));
  std::unique_ptr<LoopFs> lfs(new LoopFs());
  lfs->fsType_ = fsType;
  // On failure the unique_ptr's destructor undoes the steps already done.
  if (auto s = lfs->setUp(sizeBytes); !s) return fail(s.error().context(cat("loop ", fsType)));
  return lfs;
}

Status LoopFs::setUp(std::uint64_t sizeBytes) {
  char tmpl[] = "/tmp/vmckpt-loopfs-XXXXXX";
  if (!::mkdtemp(tmpl)) return failErrno("mkdtemp /tmp/vmckpt-loopfs-XXXXXX", errno);
  dir_ = tmpl;

  std::string image = dir_ + "/image";
  UniqueFd fd(::open(image.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return failErrno(cat("open ", image), errno);
  image_ = image;
  if (::ftruncate(fd.get(), static_cast<off_t>(sizeBytes)) != 0) return failErrno(cat("ftruncate ", image), errno);
  fd.reset();

  std::string mnt = dir_ + "/mnt";
  if (::mkdir(mnt.c_str(), 0700) != 0) return failErrno(cat("mkdir ", mnt), errno);
  mountPoint_ = mnt;

  std::vector<std::string> mkfs = {mkfsTool(fsType_), "-q"};
  if (fsType_ == "xfs") mkfs.insert(mkfs.end(), {"-m", "reflink=1"});
  mkfs.push_back(image_);
  VMCKPT_TRY(runTool(mkfs, 60s));

  auto dev = runTool({"losetup", "--find", "--show", image_}, 15s);
  if (!dev) return fail(dev.error());
  device_ = std::string(trim(*dev));
  if (!startsWith(device_, "/dev/loop"))
    return fail(Errc::processFailed, cat("losetup printed no loop device: ", *dev));

  if (::mount(device_.c_str(), mountPoint_.c_str(), fsType_.c_str(), 0, nullptr) != 0)
    return failErrno(cat("mount ", device_, " on ", mountPoint_), errno);
  mounted_ = true;
  return {};
}

void LoopFs::unmount() {
  // EBUSY right after a test usually means a closing fd or a udev probe: retry briefly.
  auto deadline = Deadline::in(5s);
  for (;;) {
    if (::umount2(mountPoint_.c_str(), 0) == 0) return;
    int err = errno;
    if (err == EINVAL || err == ENOENT) return;  // not mounted (anymore)
    if (err != EBUSY || deadline.expired()) {
      std::cerr << "LoopFs: umount " << mountPoint_ << ": " << std::strerror(err)
                << "; detaching lazily\n";
      if (::umount2(mountPoint_.c_str(), MNT_DETACH) != 0)
        std::cerr << "LoopFs: umount -l " << mountPoint_ << ": " << std::strerror(errno) << "\n";
      return;
    }
    std::this_thread::sleep_for(100ms);
  }
}

LoopFs::~LoopFs() {
  if (mounted_) unmount();
  if (!device_.empty()) {
    // After a lazy unmount the kernel frees the device when its last user goes.
    if (auto r = runTool({"losetup", "-d", device_}, 15s); !r)
      std::cerr << "LoopFs: " << r.error().message() << "\n";
  }
  if (!image_.empty() && ::unlink(image_.c_str()) != 0)
    std::cerr << "LoopFs: unlink " << image_ << ": " << std::strerror(errno) << "\n";
  // rmdir, not rm -rf: if the filesystem is somehow still mounted, its content is left alone.
  if (!mountPoint_.empty() && ::rmdir(mountPoint_.c_str()) != 0)
    std::cerr << "LoopFs: rmdir " << mountPoint_ << ": " << std::strerror(errno) << "\n";
  if (!dir_.empty() && ::rmdir(dir_.c_str()) != 0)
    std::cerr << "LoopFs: rmdir " << dir_ << ": " << std::strerror(errno) << "\n";
}

}  // namespace vmckpt::test
