#include "vmm/disk_image.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

#include "common/child_process.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm {

Result<DiskArg> parseDiskArg(std::string_view s) {
  DiskArg d;
  auto parts = split(s, ',');
  d.path = parts[0];
  if (d.path.empty()) return fail(Errc::invalidArgument, "disk path is empty");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (startsWith(parts[i], "format=")) {
      auto f = parseDiskFormat(parts[i].substr(7));
      if (!f) return fail(f.error());
      d.format = *f;
    } else {
      return fail(Errc::invalidArgument, cat("disk option '", parts[i], "' is not known (use format=raw|qcow2)"));
    }
  }
  return d;
}

Result<DiskFormat> detectDiskFormat(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return fail(Errc::notFound, cat("disk ", path, ": no such file"), err);
    return failErrno(cat("open disk ", path), err);
  }
  unsigned char h[20] = {};
  ssize_t n = ::pread(fd.get(), h, sizeof h, 0);
  if (n < 0) return failErrno(cat("read disk ", path), errno);
  if (n >= 20 && h[0] == 'Q' && h[1] == 'F' && h[2] == 'I' && h[3] == 0xfb) {
    std::uint64_t backing = 0;
    for (int i = 8; i < 16; ++i) backing = (backing << 8) | h[i];  // big-endian backing_file_offset
    if (backing != 0)
      return fail(Errc::unsupported,
                  cat("disk ", path, " is a qcow2 with a backing file; flatten it first (qemu-img convert -O qcow2)"));
    return DiskFormat::qcow2;
  }
  return DiskFormat::raw;
}

Result<std::uint64_t> diskVirtualSize(const std::string& path, DiskFormat format) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failErrno(cat("open disk ", path), errno);
  if (format == DiskFormat::raw) {
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return failErrno(cat("stat disk ", path), errno);
    return static_cast<std::uint64_t>(st.st_size);
  }
  unsigned char h[32] = {};
  ssize_t n = ::pread(fd.get(), h, sizeof h, 0);
  if (n < 0) return failErrno(cat("read disk ", path), errno);
  if (n < 32 || h[0] != 'Q' || h[1] != 'F' || h[2] != 'I' || h[3] != 0xfb)
    return fail(Errc::corrupt, cat("disk ", path, " has no qcow2 header"));
  std::uint64_t size = 0;
  for (int i = 24; i < 32; ++i) size = (size << 8) | h[i];  // big-endian virtual size
  return size;
}

Status createEmptyDisk(const std::string& path, DiskFormat format, std::uint64_t virtualSize) {
  if (format == DiskFormat::raw) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return failErrno(cat("create disk ", path), errno);
    if (::ftruncate(fd.get(), static_cast<off_t>(virtualSize)) != 0) return failErrno(cat("ftruncate disk ", path), errno);
    return {};
  }
  auto img = findExecutable("qemu-img");
  if (!img) return fail(Errc::notFound, "qemu-img not found in PATH (install qemu-utils)");
  auto r = runCommand({*img, "create", "-q", "-f", "qcow2", path, std::to_string(virtualSize)},
                      Deadline::in(std::chrono::seconds(30)));
  if (!r) return fail(r.error().context(cat("qemu-img create ", path)));
  if (!r->status.success())
    return fail(Errc::processFailed, cat("qemu-img create ", path, ": ", trim(r->err).substr(0, 300)));
  return {};
}

}  // namespace vmckpt::vmm
