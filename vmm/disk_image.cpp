#include "vmm/disk_image.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

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

}  // namespace vmckpt::vmm
